"""``incr``/``decr`` of a tagged value: the envelope is kept; a stale one is absent.

A tagged counter (``set("views", 0, tags=[model_tag(book)])``) is incremented in
place, keeping its tags. SQLiteCache and MultiLevelCache raised ``TypeError`` (the
envelope, not its number, was added to); SmartCache incremented an envelope gone
stale, answering the number for a key ``get`` and ``has_key`` said was absent, and
the next ``get`` dropped it (concurrency probe: increments lost, and whether ``incr``
raised depended on another thread's write draining the purge queue). A stale one is
now a missing key for ``incr`` too: dropped, ``ValueError``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

pytestmark = pytest.mark.django_db(transaction=True)

backends = pytest.mark.parametrize(
    "tagged_cache", ["smart", "sqlite", "multilevel"], indirect=True
)


@backends
def test_a_tagged_counter_is_incremented_with_its_tags(tagged_cache: Any) -> None:
    cache = tagged_cache
    cache.set("views", 10, tags=["book:1"])
    assert cache.incr("views") == 11
    assert cache.decr("views", 3) == 8
    assert asyncio.run(cache.aincr("views", 2)) == 10
    assert cache.get("views") == 10
    cache.invalidate_tags("book:1")  # its tags were kept: it goes with them
    assert cache.get("views") is None


@backends
@pytest.mark.parametrize("op", ["incr", "decr", "aincr"])
def test_a_stale_tagged_counter_is_a_missing_key(tagged_cache: Any, op: str) -> None:
    cache = tagged_cache
    cache.set("views", 10, tags=["book:1"])
    cache.invalidate_tags("book:1")
    with pytest.raises(ValueError, match="not found"):
        if op == "aincr":
            asyncio.run(cache.aincr("views"))
        else:
            getattr(cache, op)("views")
    assert cache.get("views") is None
    assert not cache.has_key("views")
    cache.set("views", 1, tags=["book:1"])  # counted again from a fresh value
    assert cache.incr("views") == 2


@backends
def test_a_stale_dependency_makes_the_counter_missing(tagged_cache: Any) -> None:
    cache = tagged_cache
    cache.set("dep", "a")
    cache.set("count", 1, depends_on=["dep"])
    assert cache.incr("count") == 2
    cache.set("dep", "b")
    with pytest.raises(ValueError):
        cache.incr("count")


@backends
@pytest.mark.parametrize("how", ["incr_version", "decr_version", "aincr_version"])
def test_a_version_move_keeps_the_tags(tagged_cache: Any, how: str) -> None:
    """Django's incr_version moves the value by get/set/delete: a tagged value arrived
    at its new version as a bare value, no longer following its tags, and was served
    after a save (aliases probe). Its envelope moves now; a stale one is missing."""
    cache = tagged_cache
    version = 5
    cache.set("t", "old", tags=["book:1"], version=version)
    if how == "aincr_version":
        moved = asyncio.run(cache.aincr_version("t", version=version))
    else:
        moved = getattr(cache, how)("t", version=version)
    assert moved == (4 if how == "decr_version" else 6)
    assert cache.get("t", version=version) is None
    assert cache.get("t", version=moved) == "old"
    cache.invalidate_tags("book:1")
    assert cache.get("t", version=moved) is None
    with pytest.raises(ValueError, match="not found"):
        cache.incr_version("t", version=moved)
    cache.set("plain", 1, version=version)  # untagged: Django's own path
    assert cache.incr_version("plain", version=version) == version + 1
    assert cache.get("plain", version=version + 1) == 1


@backends
def test_a_stale_entry_is_dropped_by_a_version_move(tagged_cache: Any) -> None:
    """It raised ValueError but left the stale envelope stored (review), where get()
    and incr() drop it."""
    cache = tagged_cache
    cache.set("t", "old", tags=["book:1"])
    cache.invalidate_tags("book:1")
    with pytest.raises(ValueError):
        cache.incr_version("t")
    assert cache._read_bookkeeping(["t"]) == {}


@backends
@pytest.mark.parametrize("value", ["text", [1]])
def test_a_stale_tagged_value_that_is_not_a_number_is_a_missing_key(
    tagged_cache: Any, value: Any
) -> None:
    """A stale tagged number raised ValueError, a stale tagged str TypeError: the
    key is missing either way (differential probe against LocMemCache)."""
    cache = tagged_cache
    cache.set("k", value, tags=["book:1"])
    with pytest.raises(TypeError):
        cache.incr("k")  # current: not a number, as Django says
    assert cache.get("k") == value
    cache.invalidate_tags("book:1")
    with pytest.raises(ValueError, match="not found"):
        cache.incr("k")
    assert cache.get("k") is None
    assert cache.add("k", 1) is True
