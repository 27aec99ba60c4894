"""A Redis ACL user that may not do everything the cache asks: the configuration's
error, not an outage (outside probe, session 12).

Real redis-server (the session's, ``tests/fixtures/redis_server.py``); each test makes
its ACL user with ``ACL SETUSER`` and deletes it afterwards.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from django_smartcache.backends.multilevel import MultiLevelCache
from tests.backends.test_faults_repair import OneProcessOutage
from tests.backends.test_multilevel import REDIS
from tests.fixtures.waiting import eventually

pytestmark = pytest.mark.redis


@pytest.fixture
def acl(redis_url: str) -> Iterator[Callable[..., dict[str, Any]]]:
    """``acl(*rules, backend=REDIS)``: a level config whose connections log in as a new
    ACL user ``app`` with ``rules``; the user is deleted after the test."""
    admin = redis.Redis.from_url(redis_url)

    def make(*rules: str, backend: str = REDIS) -> dict[str, Any]:
        admin.execute_command("ACL", "SETUSER", "app", "reset", "on", ">pw", *rules)
        return {
            "BACKEND": backend,
            "LOCATION": redis_url,
            "OPTIONS": {"username": "app", "password": "pw"},
        }

    yield make
    admin.execute_command("ACL", "DELUSER", "app")
    admin.close()


def _level(cache: MultiLevelCache) -> dict[str, Any]:
    return cache.stats()["levels"][1]  # type: ignore[no-any-return]


def test_a_refused_flushdb_is_raised_and_leaves_the_level_up(
    redis_url: str, acl: Callable[..., dict[str, Any]], make_cache: Any
) -> None:
    """A user without ``@dangerous`` (no FLUSHDB): clear() returned normally, the level
    was marked down and a "clear on recovery" repair was retried for good, failing each
    time; every later write stayed in the writer's L1 (probe: the other process read
    the old value 7 reads of 7). Now clear() raises NoPermissionError, as Django's
    RedisCache alone does, and the level stays up."""
    cache = make_cache(acl("~*", "&*", "+@all", "-@dangerous"))
    reader = make_cache({"BACKEND": REDIS, "LOCATION": redis_url}, cache.key_prefix)
    cache.set("k", "v1")
    with pytest.raises(redis.exceptions.NoPermissionError):
        cache.clear()
    level = _level(cache)
    assert (level["errors"], level["down"], level["pending_repairs"]) == (0, False, 0)
    cache.set("k", "v2")  # reaches Redis: the level is up
    assert reader.get("k") == "v2"
    time.sleep(0.5)  # past RETRY_INTERVAL (0.2 s): no repair was queued either
    assert _level(cache)["errors"] == 0
    assert reader.get("k") == "v2"


def test_a_refused_key_raises_and_leaves_the_level_up(
    redis_url: str, acl: Callable[..., dict[str, Any]], make_cache: Any
) -> None:
    """A key outside the user's ``~pattern``: the write returned normally, the level was
    marked down (its next writes, to allowed keys, skipped it) and the key was queued
    for a repair refused the same way. Now the write raises, the level stays up, and
    the next write of an allowed key reaches Redis at once."""
    cache = make_cache(acl("~site:1:ok*", "&*", "+@all"), "site")
    reader = make_cache({"BACKEND": REDIS, "LOCATION": redis_url}, "site")
    with pytest.raises(redis.exceptions.NoPermissionError):
        cache.set("refused", 1)
    with pytest.raises(redis.exceptions.NoPermissionError):
        cache.set_many({"ok1": 1, "refused": 2})  # a pipeline: still a NOPERM
    level = _level(cache)
    assert (level["errors"], level["down"], level["pending_repairs"]) == (0, False, 0)
    cache.set("ok", "reached")
    assert reader.get("ok") == "reached"


def test_a_repair_refused_by_the_acl_is_abandoned_not_retried_for_good(
    redis_url: str,
    acl: Callable[..., dict[str, Any]],
    make_cache: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A clear() missed in a real outage is repaired by a FLUSHDB the user may not run:
    that repair was retried every RETRY_INTERVAL for good, failing the same way, the
    level down meanwhile. Now it is abandoned at its first refusal, logged at ERROR,
    and the level serves again."""
    OneProcessOutage.failing = False
    cache = make_cache(
        acl(
            "~*",
            "&*",
            "+@all",
            "-@dangerous",
            backend=OneProcessOutage.__module__ + ".OneProcessOutage",
        )
    )
    reader = make_cache({"BACKEND": REDIS, "LOCATION": redis_url}, cache.key_prefix)
    try:
        OneProcessOutage.failing = True
        cache.clear()  # missed: a clear is queued for the level's return
        assert _level(cache)["pending_repairs"] == 1
    finally:
        OneProcessOutage.failing = False
    with caplog.at_level(logging.ERROR, "django_smartcache.multilevel"):
        assert eventually(lambda: _level(cache)["pending_repairs"] == 0, 5.0)
        errors = _level(cache)["errors"]
        time.sleep(1.0)  # five RETRY_INTERVALs: no retry
        assert _level(cache)["errors"] == errors
    assert any("abandoned" in r.getMessage() for r in caplog.records)
    cache.set("k", "after")
    assert not _level(cache)["down"]
    assert reader.get("k") == "after"


def test_a_channel_the_user_may_not_use_is_tried_again_slowly_and_logged_once(
    redis_url: str,
    acl: Callable[..., dict[str, Any]],
    make_cache: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A user without channel rights (``resetchannels``, Redis 7's default): the
    listener reconnected, AUTHed and SUBSCRIBEd 4 times a second for good, each refused
    (probe: 4.0 connections a second from one idle process), every write's refused
    publish counted an error, and the log said "lost ... until it reconnects". Now both
    wait 1, 2, 4, ... up to 60 s, one ERROR each names the channel and L1_MAX_TTL, and
    staleness stays bounded by L1_MAX_TTL; granted the channel, it subscribes again."""
    admin = redis.Redis.from_url(redis_url)
    prefix = "nochannel"
    with caplog.at_level(logging.INFO, "django_smartcache.multilevel"):
        cache = make_cache(acl("~*", "resetchannels", "+@all"), prefix, L1_MAX_TTL=0.5)
        other = make_cache({"BACKEND": REDIS, "LOCATION": redis_url}, prefix)
        cache.set("k", "v1")
        assert cache.get("k") == "v1"  # in its L1 now
        time.sleep(0.5)
        admin.execute_command("ACL", "LOG", "RESET")
        errors = cache.stats()["coherence"]["errors"]
        for i in range(100):  # 3 s of writes
            cache.set(f"w{i}", i)
            time.sleep(0.03)
        refused = sum(entry["count"] for entry in admin.acl_log())
        assert refused <= 6, refused  # was ~12 SUBSCRIBEs + 100 PUBLISHes
        assert cache.stats()["coherence"]["errors"] - errors <= 6
        assert cache.stats()["coherence"]["permission_denied"]
        logged = [
            r.getMessage()
            for r in caplog.records
            if r.levelno == logging.ERROR and "no permission" in r.getMessage()
        ]
        assert 1 <= len(logged) <= 2  # subscribing, publishing
        assert all(cache._co.channel in m and "L1_MAX_TTL" in m for m in logged)
        other.set("k", "v2")  # unheard: bounded by L1_MAX_TTL (0.5 s)
        time.sleep(0.6)
        assert cache.get("k") == "v2"
        admin.execute_command("ACL", "SETUSER", "app", "&*")
        assert eventually(lambda: cache.stats()["coherence"]["connected"], 20.0)

        def published() -> bool:
            cache.set("again", 1)
            return not cache.stats()["coherence"]["permission_denied"]

        assert eventually(published, 20.0, poll=0.1)
    assert any("permitted" in r.getMessage() for r in caplog.records)
    admin.close()
