"""A ``get_or_set`` whose callable asks for its own key, as LocMemCache answers it.

Single flight must not make the computation wait for itself: the nested call computes
and stores its value, the outer ``add`` loses, and the stored value is returned.
"""

from __future__ import annotations

import asyncio

import pytest
from django.core.cache.backends.locmem import LocMemCache

from django_smartcache.backends import MultiLevelCache, SmartCache, SQLiteCache

BACKENDS = [LocMemCache, SmartCache, SQLiteCache, MultiLevelCache]


def make(backend, tmp_path):
    if backend is LocMemCache:
        return LocMemCache("nested-reference", {})
    return backend(str(tmp_path / "c.sqlite3"), {})


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.__name__)
def test_a_callable_asking_for_its_own_key(backend, tmp_path) -> None:
    cache = make(backend, tmp_path)
    cache.delete("menu")
    depth = 0

    def compute() -> str:
        nonlocal depth
        depth += 1
        if depth == 1:
            return "outer(" + cache.get_or_set("menu", compute) + ")"
        return "leaf"

    assert cache.get_or_set("menu", compute) == "leaf"
    assert cache.get("menu") == "leaf"


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.__name__)
def test_a_callable_asking_for_its_own_key_async(backend, tmp_path) -> None:
    cache = make(backend, tmp_path)
    depth = 0

    def compute() -> str:
        nonlocal depth
        depth += 1
        if depth == 1:
            return "outer(" + cache.get_or_set("menu", compute) + ")"
        return "leaf"

    async def scenario() -> object:
        await cache.adelete("menu")
        return await cache.aget_or_set("menu", compute)

    assert asyncio.run(scenario()) == "leaf"
    assert cache.get("menu") == "leaf"
