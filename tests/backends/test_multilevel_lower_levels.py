"""MultiLevelCache over kinds of lower level found wanting by an outside probe:
django-redis, a shared or aliased L1, duplicated and DummyCache levels, and the
``levels=`` keyword on the async deletes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from django.core.cache import caches
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from django_smartcache.backends.multilevel import MultiLevelCache
from tests.backends.test_multilevel import LOCMEM, REDIS, SMART, _unique, make

DJANGO_REDIS = "django_redis.cache.RedisCache"


def _stop(cache: MultiLevelCache) -> None:
    cache._co.stop()
    for health in cache._health:
        health.stop()
    cache.close()


# -- configuration -----------------------------------------------------------------


@pytest.mark.redis
def test_a_shared_l1_is_refused(redis_url: str) -> None:
    """L1 is cleared whenever the process may have missed an invalidation (at start-up,
    on each reconnection): a Redis L1 lost every key of its database, others' too."""
    with pytest.raises(
        ImproperlyConfigured, match=r"LEVELS'\]\[0\] must be an in-process"
    ):
        make([{"BACKEND": REDIS, "LOCATION": redis_url}, {"BACKEND": LOCMEM}]).get("k")


def test_a_dummy_level_is_refused() -> None:
    dummy = "django.core.cache.backends.dummy.DummyCache"
    with pytest.raises(ImproperlyConfigured, match="DummyCache, which keeps nothing"):
        make([{"BACKEND": SMART}, {"BACKEND": dummy}]).get("k")


@pytest.mark.redis
def test_one_store_listed_twice_is_refused(redis_url: str) -> None:
    """The lowest copy written with the caller's timeout, then overwritten by the
    level above with L1_MAX_TTL's: the value was gone after a second."""
    level = {"BACKEND": REDIS, "LOCATION": redis_url}
    with pytest.raises(ImproperlyConfigured, match=r"LEVELS\[1\]"):
        make([{"BACKEND": SMART}, level, dict(level)]).get("k")
    config = {"r": level, "ml": {"BACKEND": "django_smartcache.backends.MultiLevelCache",
                                  "OPTIONS": {"LEVELS": [{"BACKEND": SMART}, "r", "r"]}}}  # fmt: skip
    with override_settings(CACHES=config), pytest.raises(ImproperlyConfigured):
        caches["ml"].get("k")


def test_an_aliased_l1_is_a_store_of_its_own() -> None:
    """Levels are built afresh: a SmartCache alias as L1 used to be the alias's own
    store (shared by LOCATION), flushed with L1 and serving the alias's writes."""
    location = _unique()
    config = {
        "default": {"BACKEND": LOCMEM},
        "local": {"BACKEND": SMART, "LOCATION": location},
        "ml": {
            "BACKEND": "django_smartcache.backends.MultiLevelCache",
            "OPTIONS": {
                "LEVELS": ["local", {"BACKEND": LOCMEM, "LOCATION": _unique()}]
            },
        },
    }
    with override_settings(CACHES=config):
        local, ml = caches["local"], caches["ml"]
        local.set("mine", "alias")
        assert ml.levels[0]._store is not local._store
        ml.clear()
        assert local.get("mine") == "alias"  # not flushed with L1
        assert ml.get("mine") is None  # never served from the alias's store
        _stop(ml)


def test_async_deletes_take_levels() -> None:
    lower = {"BACKEND": LOCMEM, "LOCATION": _unique()}
    cache = make([{"BACKEND": SMART}, lower], L1_MAX_TTL=1000)
    cache.set_many({"a": 1, "b": 2, "c": 3})

    async def scenario() -> None:
        assert await cache.adelete("a", levels=1) is True
        await cache.adelete_many(["b"], levels=1)

    asyncio.run(scenario())
    # Deleted from L1 only: the level below still has them.
    finals = [cache.make_key(k) for k in "abc"]
    assert cache.levels[1].get_many(finals) == dict(zip(finals, [1, 2, 3], strict=True))
    assert cache.get("a", levels=1) is None
    _stop(cache)


# -- Django's RedisCache ------------------------------------------------------------


@pytest.mark.redis
def test_touch_without_expiry_of_a_key_that_has_none_over_redis_is_true(
    redis_url: str,
) -> None:
    """Django's RedisCache answers touch(key, None) with PERSIST's 0 when the key has
    no expiry already: MultiLevelCache said False for a live key (every other backend
    says True). (The L1 copy is dropped by any touch now, and read again from below.)"""
    cache = make([{"BACKEND": SMART}, {"BACKEND": REDIS, "LOCATION": redis_url}])
    try:
        cache.set("k", "v", timeout=None)
        assert cache.get("k") == "v"
        hits = cache.stats()["levels"][0]["hits"]
        assert cache.touch("k", None) is True
        assert cache.get("k") == "v"
        assert cache.stats()["levels"][0]["hits"] == hits  # read from Redis again
        assert cache.touch("gone", None) is False
    finally:
        _stop(cache)


# -- django-redis ------------------------------------------------------------------


@pytest.fixture
def over_django_redis(redis_url: str) -> Iterator[MultiLevelCache]:
    pytest.importorskip("django_redis")
    cache = make(
        [{"BACKEND": SMART}, {"BACKEND": DJANGO_REDIS, "LOCATION": redis_url}],
        L1_MAX_TTL=30,
    )
    yield cache
    _stop(cache)


@pytest.mark.redis
def test_django_redis_gets_the_pub_sub_channel(
    over_django_redis: MultiLevelCache,
) -> None:
    """Its LOCATION is ``_server`` (Django's RedisCache: ``_servers``): no channel was
    found, and another process served its L1 copy until L1_MAX_TTL."""
    assert type(over_django_redis._co).__name__ == "RedisPubSub"


@pytest.mark.redis
def test_django_redis_promotion_keeps_the_remaining_ttl_in_milliseconds(
    over_django_redis: MultiLevelCache, redis_url: str
) -> None:
    """django-redis's ttl() rounds to whole seconds (0.7 s left became 1.0 s in L1;
    1.7 s, as here, 2.0 s; 1.7 s gives a loaded machine time to read it)."""
    cache = over_django_redis
    final = cache.make_key("k")
    raw = redis.Redis.from_url(redis_url)
    cache.set("k", "v", timeout=30)
    raw.pexpire(final, 1700)
    cache.levels[0].delete(final)
    commands_before = raw.info("commandstats")
    assert cache.get_many(["k"]) == {"k": "v"}
    expires_at = cache.levels[0]._store._data[final][1]  # the L1 entry's expiry
    assert 0 < expires_at - time.monotonic() <= 1.7  # the store's clock is monotonic
    stats = raw.info("commandstats")
    ttl_calls = stats.get("cmdstat_ttl", {}).get("calls", 0) - commands_before.get(
        "cmdstat_ttl", {}
    ).get("calls", 0)
    assert ttl_calls == 0  # one pipelined PTTL, not a TTL (and an EXISTS) per key
    time.sleep(1.8)
    assert cache.get("k") is None  # L1's copy did not outlive the level's
    raw.close()


@pytest.mark.redis
def test_django_redis_patterns_are_ours(
    over_django_redis: MultiLevelCache, redis_url: str
) -> None:
    """django-redis's own delete_pattern took no regex= and used Redis's glob."""
    cache = over_django_redis
    cache.set_many({"dp:é": 1, "dp:[a": 2, "dp:12": 3, "other": 4})
    assert cache.delete_pattern("dp:?") == 1  # one character, é included
    assert cache.delete_pattern(r"^dp:\d+$", regex=True) == 1
    assert cache.delete_pattern("dp:[a") == 1  # an unclosed "[" is literal
    assert (
        cache.levels[1].get_many(
            [cache.make_key(k) for k in ("dp:é", "dp:[a", "dp:12")]
        )
        == {}
    )
    assert cache.get("other") == 4


def test_a_url_as_the_default_locations_file_is_refused() -> None:
    """It was taken as a relative path: a SQLite file under ./redis:/127.0.0.1:.../0."""
    with pytest.raises(ImproperlyConfigured, match="not a URL"):
        MultiLevelCache("redis://127.0.0.1:6379/0", {})


def test_touch_never_keeps_a_stale_copy_past_l1_max_ttl(tmp_path) -> None:
    """touch() re-armed the copies above the lowest level to min(timeout, L1_MAX_TTL):
    a process that kept touching a key served a value another process had replaced
    for as long as it touched (an outside probe: 4 s and counting with COHERENCE
    "none", a level with no channel, or a middle level other machines write). The
    copies above are dropped now, and read again from below."""
    from tests.backends.test_multilevel import FILES

    cache = make(
        [{"BACKEND": SMART}, {"BACKEND": FILES, "LOCATION": str(tmp_path)}],
        L1_MAX_TTL=0.3,
    )
    try:
        cache.set("k", "old", 60)
        assert cache.get("k") == "old"
        # Another process's write: straight into the shared level, no channel.
        cache.levels[1].set(cache.make_key("k"), "new", 60)
        deadline = time.monotonic() + 0.9
        while time.monotonic() < deadline:
            assert cache.touch("k", 60) is True
            time.sleep(0.05)
        assert cache.get("k") == "new"
    finally:
        _stop(cache)


def test_incr_version_reads_the_lowest_level_not_a_stale_copy(tmp_path) -> None:
    """incr_version() read through L1: a value another process had just deleted (a
    logout) was moved to version + 1 in every level with the default timeout, where
    one shared cache raises ValueError (an outside fuzz: 20 runs of 20)."""
    from tests.backends.test_multilevel import SQLITE

    cache = make(
        [{"BACKEND": SMART}, {"BACKEND": SQLITE, "LOCATION": str(tmp_path / "c.db")}],
        L1_MAX_TTL=60,
        COHERENCE_INTERVAL=60,
    )
    try:
        cache.set("session", "logged in", 600)
        assert cache.get("session") == "logged in"  # (a copy in L1)
        # Another process's delete, not yet heard of here.
        cache.levels[1].delete(cache.make_key("session"))
        with pytest.raises(ValueError, match="not found"):
            cache.incr_version("session")
        assert cache.get("session", version=2) is None
        cache.set("kept", "v", 600)
        assert cache.incr_version("kept") == 2
        assert cache.get("kept", version=2) == "v"
        # Written above the shared level only: not moved, and not lost (a review).
        cache.set("local", "v", levels=1)
        with pytest.raises(ValueError, match="not found"):
            cache.incr_version("local")
        assert cache.get("local") == "v"
    finally:
        _stop(cache)


def test_delete_answers_for_the_lowest_level(tmp_path) -> None:
    """delete() said any level's answer: a stale L1 copy of a key another process had
    deleted made this one's delete True too (an outside fuzz: both of two processes'
    deletes of one lock said True, where one shared cache tells one of them False)."""
    from tests.backends.test_multilevel import SQLITE

    cache = make(
        [{"BACKEND": SMART}, {"BACKEND": SQLITE, "LOCATION": str(tmp_path / "c.db")}],
        L1_MAX_TTL=60,
        COHERENCE_INTERVAL=60,
    )
    try:
        cache.set("lock", "held", 600)
        assert cache.get("lock") == "held"  # (a copy in L1)
        cache.levels[1].delete(cache.make_key("lock"))  # another process's delete
        assert cache.delete("lock") is False
        assert cache.get("lock") is None
        cache.set("lock", "held", 600)
        assert cache.delete("lock") is True
    finally:
        _stop(cache)


@pytest.mark.parametrize(
    "backend",
    [
        "django_smartcache.backends.SmartCache",
        "django_smartcache.backends.SQLiteCache",
        "django_smartcache.backends.MultiLevelCache",
    ],
)
@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"OPTIONS": []}, "OPTIONS must be a dict"),
        ({"OPTIONS": ""}, "OPTIONS must be a dict"),
        ({"TIMEOUT": True}, "TIMEOUT must be a number of seconds"),
    ],
)
def test_empty_non_dict_options_and_a_bool_timeout_are_refused(
    backend: str, params: dict, named: str, tmp_path
) -> None:
    """``OPTIONS: []`` was taken for no options (``or {}``) and ``TIMEOUT: True`` for
    1 s, where ``MAX_ENTRIES: True`` is refused (ops probe). None is still none."""
    from django.utils.module_loading import import_string

    cls = import_string(backend)
    location = str(tmp_path / "c.sqlite3")
    with pytest.raises(ImproperlyConfigured, match=named):
        cls(location, dict(params))
    cls(location, {"OPTIONS": None}).close()


@pytest.mark.redis
def test_incr_over_djangos_redis_cache_never_recreates_an_expired_key(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Django's RedisCache.incr is EXISTS then INCRBY: a key expiring between the two
    came back as ``delta`` with no expiry (an outside fuzz: a rate-limit counter that
    never expired, 15 runs of 20). A MultiLevelCache runs them as one script. The
    expiry is made to land exactly between Django's two steps: after its EXISTS."""
    from django.core.cache.backends.redis import RedisCacheClient

    cache = make([{"BACKEND": SMART}, {"BACKEND": REDIS, "LOCATION": redis_url}])
    raw = redis.Redis.from_url(redis_url)
    real_get_client = RedisCacheClient.get_client

    def get_client(self: Any, key: Any = None, *, write: bool = False) -> Any:
        client = real_get_client(self, key, write=write)
        exists = client.exists

        def exists_then_expire(*names: Any) -> Any:
            found = exists(*names)
            raw.delete(*names)  # the window closes right after EXISTS
            return found

        client.exists = exists_then_expire
        return client

    monkeypatch.setattr(RedisCacheClient, "get_client", get_client)
    try:
        cache.add("window", 0, 60)
        final = cache.levels[1].make_and_validate_key(cache.make_key("window"))
        cache.incr("window")
        assert raw.pttl(final) > 0  # one step: nothing to expire in between
    finally:
        raw.delete(final)
        _stop(cache)


@pytest.mark.redis
@pytest.mark.parametrize(
    "start, delta", [(2**63 - 1, -1), (2**53, 1), (10**17 + 1, 2), (-(2**63) + 1, -1)]
)
def test_incr_over_djangos_redis_cache_answers_exactly_past_2_53(
    redis_url: str, start: int, delta: int
) -> None:
    """The script's INCRBY reply passes through Lua, whose numbers are doubles: the
    answer is read back as the stored string, exact as Django's RedisCache's."""
    cache = make([{"BACKEND": SMART}, {"BACKEND": REDIS, "LOCATION": redis_url}])
    try:
        cache.set("big", start)
        assert cache.incr("big", delta) == start + delta
        assert cache.decr("big", delta) == start
        assert cache.levels[1].get(cache.make_key("big")) == start
    finally:
        cache.delete("big")
        _stop(cache)


class JsonishSerializer:
    """A serializer of Django's RedisCache that is not pickle (for the test below)."""

    def dumps(self, obj: Any) -> bytes:
        import json

        return json.dumps(obj).encode()

    def loads(self, data: bytes) -> Any:
        import json

        return json.loads(data)


@pytest.mark.parametrize(
    ("level", "named"),
    [
        (
            {
                "BACKEND": "django_redis.cache.RedisCache",
                "OPTIONS": {
                    "SERIALIZER": "django_redis.serializers.json.JSONSerializer"
                },
            },
            "OPTIONS\\['SERIALIZER'\\]",
        ),
        (
            {
                "BACKEND": "django_redis.cache.RedisCache",
                "OPTIONS": {"IGNORE_EXCEPTIONS": True},
            },
            "OPTIONS\\['IGNORE_EXCEPTIONS'\\]",
        ),
        (
            {
                "BACKEND": REDIS,
                "OPTIONS": {"serializer": f"{__name__}.JsonishSerializer"},
            },
            "OPTIONS\\['serializer'\\]",
        ),
    ],
)
def test_a_redis_level_that_would_change_values_or_hide_failures_is_refused(
    level: dict, named: str
) -> None:
    """A JSON serializer gave a tuple back as a list and a Decimal as a str once the
    L1 copy had gone; IGNORE_EXCEPTIONS kept the level from ever being marked down, and
    a write during an outage was lost (an outside probe). Refused when built."""
    with pytest.raises(ImproperlyConfigured, match=named):
        make([{"BACKEND": SMART}, {**level, "LOCATION": "redis://127.0.0.1:1/0"}])
    # The defaults (pickle; failures raised) are fine. (An L1 LOCATION of its own:
    # a MultiLevelCache's shared state is per configuration in the process, and
    # another test builds this one without redis-py, expecting it built afresh.)
    fine = make(
        [
            {"BACKEND": SMART, "LOCATION": "lossy-redis-level-defaults"},
            {"BACKEND": level["BACKEND"], "LOCATION": "redis://127.0.0.1:1/0"},
        ]
    )
    _stop(fine)


def test_the_global_django_redis_ignore_exceptions_is_refused_too() -> None:
    with (
        override_settings(DJANGO_REDIS_IGNORE_EXCEPTIONS=True),
        pytest.raises(ImproperlyConfigured, match="DJANGO_REDIS_IGNORE_EXCEPTIONS"),
    ):
        make(
            [
                {"BACKEND": SMART},
                {
                    "BACKEND": "django_redis.cache.RedisCache",
                    "LOCATION": "redis://127.0.0.1:1/0",
                },
            ]
        )


def test_a_level_that_turns_ignore_exceptions_off_is_accepted() -> None:
    """The level's own option wins over DJANGO_REDIS_IGNORE_EXCEPTIONS, as django-redis
    reads it (a review: a level that turned it off was refused all the same)."""
    with override_settings(DJANGO_REDIS_IGNORE_EXCEPTIONS=True):
        fine = make(
            [
                {"BACKEND": SMART, "LOCATION": "ignore-exceptions-turned-off"},
                {
                    "BACKEND": "django_redis.cache.RedisCache",
                    "LOCATION": "redis://127.0.0.1:1/0",
                    "OPTIONS": {"IGNORE_EXCEPTIONS": False},
                },
            ]
        )
        _stop(fine)


def test_a_pickling_serializer_given_as_an_instance_is_accepted() -> None:
    """Django's client takes a serializer instance or a factory too (a review: an
    instance of its own RedisSerializer was refused)."""
    from django.core.cache.backends.redis import RedisSerializer

    for serializer in (RedisSerializer(protocol=4), lambda: RedisSerializer()):
        fine = make(
            [
                {"BACKEND": SMART, "LOCATION": "serializer-instance"},
                {
                    "BACKEND": REDIS,
                    "LOCATION": "redis://127.0.0.1:1/0",
                    "OPTIONS": {"serializer": serializer},
                },
            ]
        )
        _stop(fine)
