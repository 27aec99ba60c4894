"""An unpicklable value through MultiLevelCache raises UnpicklableValueError on every
lower level, and leaves every level unchanged (outside probe, session 16).

Over SQLite it did; over Django's RedisCache the level's own ``TypeError`` came out
instead, so code catching the documented error (``pickle.PicklingError``) missed it.
Real redis-server (the session's) and a real SQLite file.
"""

from __future__ import annotations

import asyncio
import pickle
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from django_smartcache.backends.base import UnpicklableValueError
from django_smartcache.backends.multilevel import MultiLevelCache
from tests.backends.test_multilevel import REDIS

SQLITE = "django_smartcache.backends.SQLiteCache"


@pytest.fixture(params=["redis", "sqlite"])
def cache(
    request: pytest.FixtureRequest,
    make_cache: Callable[..., MultiLevelCache],
    tmp_path: Path,
) -> MultiLevelCache:
    if request.param == "redis":
        request.applymarker(pytest.mark.redis)
        url: str = request.getfixturevalue("redis_url")
        return make_cache({"BACKEND": REDIS, "LOCATION": url})
    return make_cache({"BACKEND": SQLITE, "LOCATION": str(tmp_path / "l2.sqlite3")})


WRITES: dict[str, Callable[[MultiLevelCache, Any], Any]] = {
    "set": lambda c, v: c.set("k", v),
    "add": lambda c, v: c.add("new", v),
    "set_many": lambda c, v: c.set_many({"k": "fine", "other": v}),
    "aset": lambda c, v: asyncio.run(c.aset("k", v)),
}


@pytest.mark.parametrize("write", WRITES)
def test_every_level_raises_the_documented_error_and_keeps_its_values(
    cache: MultiLevelCache, write: str
) -> None:
    cache.set_many({"k": "before", "other": "before"})
    with pytest.raises(UnpicklableValueError, match="cannot be pickled") as info:
        WRITES[write](cache, threading.Lock())
    assert isinstance(info.value, pickle.PicklingError)
    assert cache.get_many(["k", "other", "new"]) == {"k": "before", "other": "before"}
    lowest = cache._levels[-1]
    assert lowest.get_many([cache.make_key(k) for k in ("k", "other", "new")]) == {
        cache.make_key("k"): "before",
        cache.make_key("other"): "before",
    }
    assert cache.stats()["errors"] == 0


def test_a_level_error_that_is_not_about_pickling_is_left_alone(
    cache: MultiLevelCache,
) -> None:
    """A TypeError of the level's own with a picklable value is not renamed."""
    lowest = cache._levels[-1]

    def broken(*args: Any, **kwargs: Any) -> None:
        raise TypeError("the level's own")

    lowest.set = lowest.set_many = broken  # type: ignore[method-assign]
    with pytest.raises(TypeError, match="the level's own") as info:
        cache.set("k", "picklable")
    assert not isinstance(info.value, UnpicklableValueError)


@pytest.mark.parametrize("kind", ["sqlite", "multilevel"])
def test_get_or_set_with_an_async_function_says_to_await_it(
    kind: str, tmp_path
) -> None:
    """aget_or_set(key, async_fn) stores what the call returns, a coroutine: refused
    as unpicklable, with a RuntimeWarning 'never awaited' on top (an outside probe).
    It is closed now, and the error says what to do."""
    import asyncio
    import warnings

    from django_smartcache.backends import SQLiteCache
    from django_smartcache.backends.multilevel import MultiLevelCache

    location = str(tmp_path / "c.sqlite3")
    cache = (SQLiteCache if kind == "sqlite" else MultiLevelCache)(location, {})

    async def make() -> str:
        return "computed"

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "never awaited" would be an error here
        with pytest.raises(
            UnpicklableValueError, match="await it and cache its result"
        ):
            asyncio.run(cache.aget_or_set("k", make))
        import gc

        gc.collect()
    assert cache.get("k") is None
    cache.close()
