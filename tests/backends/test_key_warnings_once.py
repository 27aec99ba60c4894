"""One ``CacheKeyWarning`` per call, as LocMemCache gives, whatever the KEY_FUNCTION.

An ``add`` that finds the key taken reads the occupant back (a stale tagged envelope
must not block it); that read must not warn a second time.
"""

from __future__ import annotations

import asyncio
import warnings

import pytest
from django.core.cache.backends.base import CacheKeyWarning
from django.core.cache.backends.locmem import LocMemCache

from django_smartcache.backends import MultiLevelCache, SmartCache, SQLiteCache

BACKENDS = [LocMemCache, SmartCache, SQLiteCache, MultiLevelCache]


def dashed(key, key_prefix, version):
    return f"{key_prefix}-{version}-{key}"


def make(backend, tmp_path):
    params = {"KEY_FUNCTION": dashed}
    if backend is LocMemCache:
        return LocMemCache("key-warnings-reference", params)
    return backend(str(tmp_path / "c.sqlite3"), params)


def warned(call):
    """(the result, how many CacheKeyWarnings it gave). Other warnings are not counted:
    catch_warnings records every thread's, and one matrix run (Django 6.1, Python
    3.13, the whole suite) counted 5 for LocMemCache's aadd, which gives 1 alone."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = call()
    return result, sum(issubclass(w.category, CacheKeyWarning) for w in caught)


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.__name__)
def test_add_of_a_taken_key_warns_once_with_a_custom_key_function(backend, tmp_path):
    cache = make(backend, tmp_path)
    warned(lambda: cache.set("a key", 1))
    assert warned(lambda: cache.add("a key", 2)) == (False, 1)
    assert warned(lambda: asyncio.run(cache.aadd("a key", 2))) == (False, 1)
    assert warned(lambda: cache.get_many(["a key", "b key"])) == ({"a key": 1}, 2)


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.__name__)
@pytest.mark.parametrize("tags", [None, ["t"]], ids=["plain", "tagged"])
def test_incr_version_warns_as_djangos_read_write_and_delete(backend, tags, tmp_path):
    """Django's incr_version warns three times for a bad key (its get, set and
    delete), once when the key is missing; its own reads of the key (the tag check,
    the shared level's answer) add none."""
    cache = make(backend, tmp_path)
    cache.clear()  # (LocMemCache's store is shared with the tests above)
    assert (
        warned(lambda: pytest.raises(ValueError, cache.incr_version, "a key"))[1] == 1
    )
    if tags is None or backend is not LocMemCache:
        kwargs = {} if tags is None else {"tags": tags}
        warned(lambda: cache.set("a key", 1, **kwargs))
        assert warned(lambda: cache.incr_version("a key")) == (2, 3)
        assert warned(lambda: cache.get("a key", version=2)) == (1, 1)
