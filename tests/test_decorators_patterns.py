"""``@cached`` and pattern deletion: a glob over a function's entries reaches its
entries only (not the decorator's own ``:void`` and ``:lock`` tokens), and
``invalidate_all()`` drops every call of one function."""

from __future__ import annotations

import threading
from typing import Any

import pytest

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
