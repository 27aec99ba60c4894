"""``TIMEOUT`` is read as Django's ``BaseCache`` reads it, and refused when it cannot be."""

from __future__ import annotations

import pytest
from django.core.cache.backends.locmem import LocMemCache
from django.core.exceptions import ImproperlyConfigured

from django_smartcache.backends import MultiLevelCache, SmartCache, SQLiteCache

BACKENDS = [SmartCache, SQLiteCache, MultiLevelCache]


def make(backend, tmp_path, timeout):
    return backend(str(tmp_path / "c.sqlite3"), {"TIMEOUT": timeout})


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("timeout", ["1", 1, 1.9, "0", -5, None])
def test_timeout_as_django_reads_it(backend, tmp_path, timeout) -> None:
    # Django's cache test suite configures TIMEOUT="1"; LocMemCache is the reference.
    expected = LocMemCache("ref", {"TIMEOUT": timeout}).default_timeout
    assert make(backend, tmp_path, timeout).default_timeout == expected


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("timeout", ["soon", "1.5", [1], float("inf")])
def test_a_timeout_int_refuses_is_an_error_not_300(backend, tmp_path, timeout) -> None:
    with pytest.raises(ImproperlyConfigured, match=rf"{backend.__name__}: TIMEOUT"):
        make(backend, tmp_path, timeout)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_nan_timeout_is_refused_before_anything_is_written(backend, tmp_path) -> None:
    cache = make(backend, tmp_path, 300)
    cache.set("k", "old")
    nan = float("nan")
    for call in (
        lambda: cache.set("k", "new", nan),
        lambda: cache.add("fresh", 1, nan),
        lambda: cache.set_many({"k": "new", "m": 1}, nan),
        lambda: cache.touch("k", nan),
    ):
        with pytest.raises(ValueError, match="NaN"):
            call()
    assert cache.get_many(["k", "fresh", "m"]) == {"k": "old"}
