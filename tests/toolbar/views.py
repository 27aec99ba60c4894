"""Views that use the caches the way an application does, for the panel tests."""

from __future__ import annotations

import contextvars
import threading
import time

from django.core.cache import caches
from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import cache_page

PAGE = "<!DOCTYPE html><html><head><title>{title}</title></head><body><p>{body}</p></body></html>"


def page(title: str, body: str) -> HttpResponse:
    return HttpResponse(PAGE.format(title=title, body=body))


def lookups(request: HttpRequest) -> HttpResponse:
    """Misses then hits on SmartCache, a stored ``None`` (a hit the toolbar's heuristic
    calls a miss), get_many, get_or_set, a tag invalidation, and a MultiLevelCache read."""
    smart = caches["smart"]
    smart.delete_many(["greeting", "nothing", "computed", "page"])
    smart.get("greeting")  # miss
    smart.set("greeting", "hello", timeout=60)
    smart.get("greeting")  # hit
    smart.set("nothing", None)
    smart.get("nothing", "fallback")  # hit: None is stored
    smart.get_many(["greeting", "nothing", "absent"])  # 2 hits, 1 miss
    smart.get_or_set("computed", lambda: 42)  # miss, computed
    smart.get_or_set("computed", lambda: 43)  # hit
    smart.set("page", "<p>book</p>", tags=["book:1"])
    smart.invalidate_tags("book:1", reason="book 1 saved")
    multi = caches["multi"]
    multi.set("level", "value")
    multi.get("level")  # an L1 hit
    return page("lookups", "done")


def evictions(request: HttpRequest) -> HttpResponse:
    """Overfill a 4 KB SmartCache: entries are evicted for capacity; read the last two."""
    tiny = caches["tiny"]
    tiny.clear()
    for i in range(20):
        tiny.set(f"blob:{i}", "x" * 600)
    tiny.get("blob:19")
    tiny.get("blob:19")
    tiny.get("blob:18")  # two keys in top_accessed
    return page("evictions", "done")


def stampede(request: HttpRequest) -> HttpResponse:
    """Two threads ask for one missing key at once: the second waits for the first."""
    smart = caches["smart"]
    smart.delete("slow")
    computing = threading.Event()
    release = threading.Event()

    def compute() -> str:
        computing.set()
        release.wait(10)
        return "computed once"

    def first() -> None:
        smart.get_or_set("slow", compute)

    def second() -> None:
        smart.get_or_set("slow", lambda: "computed twice")

    a = threading.Thread(target=contextvars.copy_context().run, args=(first,))
    a.start()
    computing.wait(10)
    b = threading.Thread(target=contextvars.copy_context().run, args=(second,))
    b.start()
    # Release the first caller only once the second is waiting for it.
    flight = smart._singleflight
    flight_key = (smart.singleflight_scope(), smart.make_key("slow"))
    deadline = time.monotonic() + 10
    while not flight.waiting(flight_key) and time.monotonic() < deadline:
        time.sleep(0.001)
    release.set()
    a.join(10)
    b.join(10)
    return page("stampede", smart.get("slow"))


async def async_lookups(request: HttpRequest) -> HttpResponse:
    smart = caches["smart"]
    await smart.adelete("async-key")
    await smart.aget("async-key")  # miss
    await smart.aset("async-key", 1)
    await smart.aget("async-key")  # hit
    return page("async", "done")


def no_cache(request: HttpRequest) -> HttpResponse:
    return page("nothing", "no cache calls")


def multi_hit(request: HttpRequest) -> HttpResponse:
    """One L1 hit on the MultiLevelCache."""
    multi = caches["multi"]
    multi.set("k", 1)
    multi.get("k")
    return page("multi", "one L1 hit")


@cache_page(60, cache="smart")
def cached_page(request: HttpRequest) -> HttpResponse:
    """A ``cache_page`` view: its keys are long and have no space."""
    caches["smart"].get_many([f"{request.path}?q={i}" * 4 for i in range(3)])
    return page("cached", "a cached page")


def strict_csp(request: HttpRequest) -> HttpResponse:
    """``cached_page`` under a Content-Security-Policy that refuses inline styles."""
    response = cached_page(request)
    response["Content-Security-Policy"] = "style-src 'self'"
    return response
