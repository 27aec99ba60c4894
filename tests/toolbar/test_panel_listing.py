"""Panel fixes: the Cache-panel note, MultiLevelCache.aget_or_set answers, keys given
as iterators, the L1/L2 split after a get_or_set miss, compute time of get_or_set."""

from __future__ import annotations

import time
from typing import Any

import pytest
from django.core.cache import caches
from django.http import HttpRequest, HttpResponse
from django.test import RequestFactory, override_settings

from tests.toolbar.test_panel import PANEL_ID, alias, run, toolbar_get, valid_html
from tests.toolbar.views import page

pytestmark = pytest.mark.usefixtures("toolbar_settings_on")


def _content(client: Any, response: Any) -> str:
    with override_settings(DEBUG=True):
        return client.get(
            "/__debug__/render_panel/",
            {"request_id": response.headers["djdt-request-id"], "panel_id": PANEL_ID},
        ).json()["content"]


def test_note_goes_when_the_cache_panel_is_unticked(client: Any) -> None:
    """The toolbar leaves its wrappers on the instances when its Cache panel is turned
    off (``_djdt_panel = None``): they only call through, so there is no note."""
    on = _content(client, toolbar_get(client, "/lookups/"))
    assert 'class="djdt-smartcache-nested"' in on
    client.cookies["djdtCachePanel"] = "off"  # what unticking the panel sets
    response = toolbar_get(client, "/lookups/")
    assert caches["smart"]._djdt_panel is None  # its wrappers are still there
    off = _content(client, response)
    assert "djdt-smartcache-nested" not in off
    assert '<code class="djdt-smartcache-key">greeting</code>' in off  # still recorded
    client.cookies["djdtCachePanel"] = "on"
    assert 'class="djdt-smartcache-nested"' in _content(
        client, toolbar_get(client, "/lookups/")
    )


def _async_stats(view: Any) -> dict[str, Any]:
    from asgiref.sync import async_to_sync
    from debug_toolbar.toolbar import DebugToolbar

    request = RequestFactory().get("/")

    async def flow() -> Any:
        toolbar = DebugToolbar(request, view)
        panel = toolbar.get_panel_by_id(PANEL_ID)
        panel.enable_instrumentation()
        try:
            response = await view(request)
        finally:
            panel.disable_instrumentation()
        panel.generate_stats(request, response)
        return panel.get_stats()

    return async_to_sync(flow)()  # type: ignore[no-any-return]


async def multi_aget_or_set(request: HttpRequest) -> HttpResponse:
    multi = caches["multi"]
    await multi.adelete("aos")
    await multi.aget_or_set("aos", lambda: "computed")  # miss
    await multi.aget_or_set("aos", lambda: "again")  # an L1 hit, on the fast path
    return page("aos", "done")


def test_multilevel_aget_or_set_hit_is_a_hit() -> None:
    stats = _async_stats(multi_aget_or_set)
    or_sets = [
        (c["op"], c["hit"], c["hits"], c["misses"])
        for c in stats["calls"]
        if c["op"] == "aget_or_set"
    ]
    assert or_sets == [("aget_or_set", False, 0, 1), ("aget_or_set", True, 1, 0)]
    multi = alias(stats, "multi")
    assert (multi["hits"], multi["misses"]) == (1, 1)
    # The split agrees with the row: one L1 hit (the read-back after storing is not one).
    assert [lv["hits"] for lv in multi["levels"]] == [1, 0]


async def multi_aget_or_set_plain_default(request: HttpRequest) -> HttpResponse:
    multi = caches["multi"]
    await multi.adelete("aos")
    await multi.adelete("none")
    await multi.aget_or_set("aos", "stored")  # a miss: stored, read back (not a hit)
    await multi.aget_or_set("aos", "other")  # an L1 hit on the fast path, no lookup
    await multi.aget_or_set("none", None)  # a miss
    return page("aos", "done")


def test_multilevel_aget_or_set_with_a_plain_default_adds_up_with_the_split() -> None:
    """A default that is not callable cannot tell the fast path's hit: the level hits
    before and after do, so the row's hits and the L1/L2 split agree."""
    stats = _async_stats(multi_aget_or_set_plain_default)
    or_sets = [
        (c["keys"], c["hit"], c["hits"], c["misses"])
        for c in stats["calls"]
        if c["op"] == "aget_or_set"
    ]
    assert or_sets == [
        (["aos"], False, 0, 1),
        (["aos"], True, 1, 0),
        (["none"], False, 0, 1),
    ]
    multi = alias(stats, "multi")
    assert (multi["hits"], multi["misses"]) == (1, 2)
    assert [lv["hits"] for lv in multi["levels"]] == [1, 0]


def iterator_keys(request: HttpRequest) -> HttpResponse:
    smart = caches["smart"]
    smart.set("a", 1)
    smart.get_many(k for k in ("a", "b"))
    smart.delete_many(iter(["a", "b"]))
    smart.get_many(keys=iter(["a"]))
    return page("iter", "done")


def test_keys_given_as_an_iterator_are_listed() -> None:
    panel = run(iterator_keys)
    calls = [
        (c["op"], c["keys"], c["hits"], c["misses"]) for c in panel.get_stats()["calls"]
    ]
    assert calls == [
        ("set", ["a"], 0, 0),
        ("get_many", ["a", "b"], 1, 1),
        ("delete_many", ["a", "b"], 0, 0),
        ("get_many", ["a"], 0, 1),
    ]
    assert caches["smart"].get("a") is None  # the backend got the keys too


async def async_iterator_keys(request: HttpRequest) -> HttpResponse:
    smart = caches["smart"]
    await smart.aset("a", 1)
    await smart.aget_many(k for k in ("a", "b"))
    await smart.adelete_many(iter(["a", "b"]))
    return page("iter", "done")


def test_async_keys_given_as_an_iterator_are_listed() -> None:
    stats = _async_stats(async_iterator_keys)
    calls = [(c["op"], c["keys"]) for c in stats["calls"]]
    assert calls == [
        ("aset", ["a"]),
        ("aget_many", ["a", "b"]),
        ("adelete_many", ["a", "b"]),
    ]


def multi_get_or_set_miss(request: HttpRequest) -> HttpResponse:
    multi = caches["multi"]
    multi.delete("gos")
    multi.get_or_set("gos", lambda: "computed")  # miss: computed, stored, read back
    return page("gos", "done")


def test_served_by_counts_only_the_listed_lookups() -> None:
    panel = run(multi_get_or_set_miss)
    stats = panel.get_stats()
    multi = alias(stats, "multi")
    assert (multi["hits"], multi["misses"]) == (0, 1)
    assert [lv["hits"] for lv in multi["levels"]] == [0, 0]
    assert sum(lv["hits"] for lv in multi["levels"]) == multi["hits"]


def slow_get_or_set(request: HttpRequest) -> HttpResponse:
    smart = caches["smart"]
    smart.delete("slow-value")

    def compute() -> str:
        time.sleep(0.02)
        return "value"

    smart.get_or_set("slow-value", compute)  # miss: computes
    smart.get_or_set("slow-value", compute)  # hit: does not
    smart.get_or_set("plain", "not callable")
    return page("slow", "done")


def test_get_or_set_compute_time_is_shown_apart() -> None:
    panel = run(slow_get_or_set)
    calls = [c for c in panel.get_stats()["calls"] if c["op"] == "get_or_set"]
    miss, hit, plain = calls
    assert miss["hit"] is False and miss["compute_ms"] >= 20
    assert miss["ms"] >= miss["compute_ms"]
    assert hit["hit"] is True and hit["compute_ms"] is None
    assert plain["compute_ms"] is None
    content = panel.content
    valid_html(content)
    assert f"{miss['compute_ms']:.3f} ms computing" in content


def test_server_timing_entry_name_as_documented(client: Any) -> None:
    """docs/debug-toolbar.md names the entry: the toolbar prefixes the panel's id."""
    header = toolbar_get(client, "/lookups/").headers["Server-Timing"]
    entry = next(e for e in header.split(", ") if "Smart cache" in e)
    assert entry.startswith("SmartCachePanel_smartcache;dur=")


def test_sqlite_bytes_and_max_bytes_share_a_row(tmp_path: Any) -> None:
    """SQLiteCache reports ``bytes`` (not ``bytes_used``): one "X of Y (n%)" row too."""
    from django_smartcache.backends import SQLiteCache
    from django_smartcache.contrib.debug_toolbar.panel import _lifetime_rows
    from django_smartcache.instrumentation import jsonable

    cache = SQLiteCache(str(tmp_path / "c.sqlite3"), {"OPTIONS": {"MAX_SIZE": "1MB"}})
    cache.set("k", "v" * 100)
    stats = jsonable(cache.stats())
    rows = {row["name"]: row.get("text") for row in _lifetime_rows(stats)}
    assert "max_bytes" not in rows and "bytes_used" not in rows
    used, cap = stats["bytes_used"], stats["max_bytes"]
    assert (
        rows["bytes_used / max_bytes"]
        == (f"{used / 1024:.1f} KiB" if used >= 1024 else f"{used} B")
        + f" of {cap / 1024 / 1024:.1f} MiB ({used * 100 / cap:.0f}%)"
    )
    cache.close()
