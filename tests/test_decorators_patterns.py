"""``@cached`` and pattern deletion: a glob over a function's entries reaches its
entries only (not the decorator's own ``:void`` and ``:lock`` tokens), and
``invalidate_all()`` drops every call of one function."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.core.cache import caches

from django_smartcache.decorators import cached
from tests.fixtures.tagged_caches import TAGGED_BACKENDS

#: The backends with delete_pattern() (all of TAGGED_BACKENDS but the test-only one).
on_every_pattern_backend = pytest.mark.parametrize(
    "tagged_cache",
    [kind for kind in TAGGED_BACKENDS if kind != "locmem"],
    indirect=True,
)

WAIT = 30.0


def _slow(name: str) -> tuple[dict[str, str], threading.Event, threading.Event, Any]:
    """A data source and a memoized reader of it that blocks until released."""
    data = {"v": "old"}
    entered, release = threading.Event(), threading.Event()

    @cached(using="tagged", name=name, timeout=300)
    def reader(x):
        value = data["v"]  # read before the change...
        entered.set()
        release.wait(WAIT)
        return value  # ...returned after it

    return data, entered, release, reader


@on_every_pattern_backend
def test_the_function_glob_leaves_the_void_token_of_an_invalidate(tagged_cache):
    """``invalidate()`` voids a computation running; the documented glob over the
    function's entries then deleted the ``<key>:void`` token too, so the computation
    saw no token before or after and stored its stale result (probe p4: "old")."""
    data, entered, release, reader = _slow("t.patterns.void")
    release.set()
    reader(2)  # an entry, for the count below
    entered.clear()
    release.clear()
    results: dict[str, str] = {}
    first = threading.Thread(target=lambda: results.setdefault("first", reader(1)))
    first.start()
    assert entered.wait(WAIT)
    data["v"] = "new"
    reader.invalidate(1)
    # Only the entry of reader(2): neither the token nor anything else internal.
    assert tagged_cache.delete_pattern("smartcache.memo:t.patterns.void:*") == 1
    release.set()
    first.join(WAIT)
    assert results == {"first": "old"}  # its own caller gets what it computed...
    assert reader(1) == "new"  # ...but it did not store it


@on_every_pattern_backend
def test_the_function_glob_counts_entries_only(tagged_cache):
    @cached(using="tagged", name="t.patterns.count", lock=True)
    def square(x):
        return x * x

    square(1), square(2)
    square.invalidate(1)  # leaves a :void token
    square(1)
    assert tagged_cache.delete_pattern("smartcache.memo:t.patterns.count:*") == 2


# -- invalidate_all() ------------------------------------------------------------------

#: Longer than keys.MAX_NAME_LENGTH (120): cut in the keys (probe p11).
LONG_NAME = (
    "shop.reporting.services.quarterly.QuarterlyRevenueReportBuilder."
    "build_for_region_and_currency_and_channel_breakdown_by_week"
)


@on_every_pattern_backend
def test_invalidate_all_drops_every_call_of_the_function(tagged_cache):
    runs: list[int] = []

    @cached(using="tagged", name="t.patterns.all", lock=True)
    def square(x):
        runs.append(x)
        return x * x

    @cached(using="tagged", name="t.patterns.all2")
    def other(x):
        return x

    square(1), square(2), other(1)
    square.invalidate(1)
    square(1)  # (a :void token, a lock taken and released: not counted)
    assert square.invalidate_all() == 2
    assert square.invalidate_all() == 0
    square(1), square(2)
    assert runs == [1, 2, 1, 1, 2]
    assert tagged_cache.get(other.key(1)) is not None  # another function's entry


@on_every_pattern_backend
def test_invalidate_all_with_a_long_name_or_glob_characters(tagged_cache):
    """A name over 120 characters is cut in the keys: the documented recipe with
    the whole name deleted nothing (p11). A name with glob characters matched
    other functions' keys."""
    assert len(LONG_NAME) > 120
    long = cached(using="tagged", name=LONG_NAME)(lambda x: x)
    starry = cached(using="tagged", name="t.patterns.*")(lambda x: x)
    bracket = cached(using="tagged", name="t.patterns.[ab]", prefix="m?")(lambda x: x)
    plain = cached(using="tagged", name="t.patterns.a")(lambda x: x)
    other = cached(using="tagged", name="t.patterns.a", prefix="mX")(lambda x: x)
    for function in (long, starry, bracket, plain, other):
        function(1), function(2)
    assert long.invalidate_all() == 2
    assert starry.invalidate_all() == 2
    assert bracket.invalidate_all() == 2
    assert [tagged_cache.get(f.key(1)) is None for f in (plain, other)] == [False] * 2
    assert plain.invalidate_all() == 2


@on_every_pattern_backend
def test_invalidate_all_leaves_a_function_whose_name_extends_this_ones(tagged_cache):
    """A review: ``name=`` may hold ``:``, and the glob ``<head>*`` of "rep" matched
    the keys of "rep:daily" (6 entries dropped for 3, and "rep:daily" recomputed)."""
    runs: list[str] = []

    @cached(using="tagged", name="t.patterns.rep")
    def rep(x):
        runs.append("rep")
        return x

    @cached(using="tagged", name="t.patterns.rep:daily")
    def daily(x):
        runs.append("daily")
        return x

    for x in (1, 2, 3):
        rep(x), daily(x)
    assert rep.invalidate_all() == 3
    daily(1)
    assert runs.count("daily") == 3
    assert daily.invalidate_all() == 3


@on_every_pattern_backend
def test_invalidate_all_voids_the_computations_running(tagged_cache):
    data = {"v": "old"}
    entered = threading.Semaphore(0)
    gates = [threading.Event(), threading.Event()]  # one per computation, in order

    @cached(using="tagged", name="t.patterns.void_all", timeout=300)
    def reader(x):
        value = data["v"]
        gate = gates.pop(0)
        entered.release()
        gate.wait(WAIT)
        return value

    old_gate, new_gate = gates
    results: dict[str, str] = {}
    first = threading.Thread(target=lambda: results.setdefault("first", reader(1)))
    first.start()
    assert entered.acquire(timeout=WAIT)
    data["v"] = "new"
    assert reader.invalidate_all() == 0
    # A caller after it starts its own computation, not the old one's.
    second = threading.Thread(target=lambda: results.setdefault("second", reader(1)))
    second.start()
    assert entered.acquire(timeout=WAIT)
    new_gate.set()
    second.join(WAIT)
    old_gate.set()  # the old computation ends last: it would overwrite "new"
    first.join(WAIT)
    assert results == {"first": "old", "second": "new"}
    assert reader(1) == "new"


@on_every_pattern_backend
def test_invalidate_all_of_async_functions_and_methods(tagged_cache):
    @cached(using="tagged", name="t.patterns.async")
    async def double(x):
        return 2 * x

    class Shelf:
        def __init__(self, label):
            self.label = label

        def __cache_key__(self):
            return self.label

        @cached(using="tagged", name="t.patterns.method")
        def item(self, x):
            return f"{self.label}:{x}"

    async def scenario():
        await double(1), await double(2)
        assert await double.invalidate_all() == 2  # a coroutine, in a loop
        await double(1)
        assert await double.ainvalidate_all() == 1

    asyncio.run(scenario())
    double_sync = async_to_sync(double)
    double_sync(3)
    assert double.invalidate_all() == 1  # from sync code: done now
    top, bottom = Shelf("top"), Shelf("bottom")
    top.item(1), bottom.item(1)
    assert top.item.invalidate_all() == 2  # every instance's, as lru_cache's


def test_invalidate_all_needs_delete_pattern(settings):
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    }

    @cached(name="t.patterns.locmem")
    def f(x):
        return x

    f(1)
    with pytest.raises(NotImplementedError, match=r"t\.patterns\.locmem.*'default'"):
        f.invalidate_all()
    assert caches["default"].get(f.key(1)) is not None  # nothing was touched
