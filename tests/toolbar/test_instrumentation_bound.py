"""The recorder's wrappers on a cache instance look like the bound methods they replace:
Django 6.1's async defaults (``aget_many``, ``aget_or_set``, ``ahas_key``, ``aincr``,
``aset_many``, ``adelete_many``, ``aincr_version``) read ``self.<method>.__func__`` to
choose their path, and must choose the one they take without the panel."""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.cache import caches
from django.test import override_settings

from django_smartcache.instrumentation import WRAPPED_METHODS, Recorder

pytestmark = pytest.mark.usefixtures("toolbar_settings_on")

ALIASES = ("default", "file", "sqlite", "smart", "multi")


@pytest.fixture
def more_caches(toolbar_settings_on: Any, tmp_path: Path) -> Iterator[None]:
    extra = {
        "file": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(tmp_path / "fb"),
        },
        "sqlite": {
            "BACKEND": "django_smartcache.backends.SQLiteCache",
            "LOCATION": str(tmp_path / "c.sqlite3"),
        },
    }
    with override_settings(CACHES={**settings.CACHES, **extra}):
        yield
    for cache in caches.all(initialized_only=True):
        cache.close()


def _methods(cache: Any) -> list[str]:
    names = [m for name in WRAPPED_METHODS for m in (name, "a" + name)]
    return [m for m in names if hasattr(cache, m)]


@pytest.mark.usefixtures("more_caches")
@pytest.mark.parametrize("alias_name", ALIASES)
def test_wrapped_methods_look_like_the_methods_they_replace(alias_name: str) -> None:
    cache = caches[alias_name]
    before = {m: getattr(cache, m) for m in _methods(cache)}
    recorder = Recorder()
    recorder.start()
    try:
        for name, method in before.items():
            wrapped = getattr(cache, name)
            assert wrapped is not method and name in vars(cache)
            # What Django 6.1 compares (``self.get_many.__func__ is BaseCache.get_many``):
            # the same answer as without the panel.
            assert wrapped.__func__ is method.__func__, name
            assert wrapped.__self__ is cache
            assert wrapped.__name__ == method.__name__
            assert inspect.iscoroutinefunction(wrapped) is (
                inspect.iscoroutinefunction(method)
            ), name
        # sync_to_async(self.get), as Django's aget does, copies the wrapper's
        # __dict__ and marks the copy a coroutine function: not the backend's get.
        sync_to_async(cache.get)
        assert not inspect.iscoroutinefunction(type(cache).get)
        assert not inspect.iscoroutinefunction(cache.get)
    finally:
        recorder.stop()
    assert not any(name in vars(cache) for name in before)


def test_a_wrapper_under_ours_gives_its_method() -> None:
    """Someone else's ``functools.wraps`` wrapper (the toolbar's Cache panel, listed
    first) is a plain function: ours finds the method through ``__wrapped__``."""
    cache = caches["default"]
    original = cache.get_many

    @functools.wraps(original)
    def theirs(*args: Any, **kwargs: Any) -> Any:
        return original(*args, **kwargs)

    cache.get_many = theirs
    recorder = Recorder()
    recorder.start()
    try:
        assert cache.get_many.__func__ is type(cache).get_many
        cache.set("k", 1)
        assert cache.get_many(["k", "x"]) == {"k": 1}
    finally:
        recorder.stop()
        del cache.get_many
    assert recorder.calls[-1]["op"] == "get_many"
    assert (recorder.calls[-1]["hits"], recorder.calls[-1]["misses"]) == (1, 1)


CALLS: dict[str, Any] = {
    "aget_many": lambda c: c.aget_many(["a", "b"]),
    "aget_or_set": lambda c: c.aget_or_set("g", 1),
    "ahas_key": lambda c: c.ahas_key("a"),
    "aincr": lambda c: c.aincr("n"),
    "aset_many": lambda c: c.aset_many({"a": 1}),
    "adelete_many": lambda c: c.adelete_many(["a"]),
}


@pytest.mark.usefixtures("more_caches")
@pytest.mark.parametrize("alias_name", ALIASES)
def test_django_async_defaults_run_under_the_recorder(alias_name: str) -> None:
    """Raised AttributeError ('function' object has no attribute '__func__') on
    Django 6.1 for Django's own backends and SQLiteCache.adelete_many."""
    cache = caches[alias_name]

    async def flow() -> list[tuple[str, Any]]:
        results = []
        for name, call in CALLS.items():
            await cache.aset("n", 1)
            recorder = Recorder()
            recorder.start()
            try:
                results.append((name, await call(cache)))
            finally:
                recorder.stop()
            assert [c["op"] for c in recorder.calls] == [name]
            assert recorder.calls[0]["error"] is None
        return results

    results = dict(asyncio.run(flow()))
    assert results["aincr"] == 2
    assert results["aget_or_set"] == 1
    assert results["ahas_key"] is False  # aset_many comes after it
