"""The default coherence channel is per Redis database (outside probe, session 12).

Redis pub/sub is server-wide, not per database: two sites on databases 0 and 1 of one
server shared the one default channel, and each took the other's messages for changes
of its own level. Real redis-server (the session's); the two sites are two
MultiLevelCache configurations of this process, as two processes would be.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis

from django_smartcache.backends._level_config import DEFAULTS
from django_smartcache.backends.multilevel import MultiLevelCache
from tests.backends.test_faults_repair import OneProcessOutage
from tests.backends.test_multilevel import REDIS
from tests.fixtures.waiting import eventually

pytestmark = pytest.mark.redis

DJANGO_REDIS = "django_redis.cache.RedisCache"
OLD_DEFAULT = "django_smartcache:invalidate"


def _db(url: str, db: int) -> str:
    return url.rsplit("/", 1)[0] + f"/{db}"


@pytest.mark.parametrize("backend", [REDIS, DJANGO_REDIS])
def test_the_default_channel_names_the_database(
    redis_url: str, make_cache: Callable[..., MultiLevelCache], backend: str
) -> None:
    on_0 = make_cache({"BACKEND": backend, "LOCATION": _db(redis_url, 0)})
    on_1 = make_cache({"BACKEND": backend, "LOCATION": _db(redis_url, 1)})
    on_3 = make_cache(
        {"BACKEND": backend, "LOCATION": redis_url.rsplit("/", 1)[0] + "/?db=3"}
    )
    assert DEFAULTS["CHANNEL"] == OLD_DEFAULT
    # Database 0 keeps the old name: a rolling upgrade of a one-database site still
    # hears its older processes.
    assert on_0._co.channel == OLD_DEFAULT
    assert on_1._co.channel == OLD_DEFAULT + ":db1"
    assert on_3._co.channel == OLD_DEFAULT + ":db3"


def test_a_db_in_the_levels_options_names_the_channel(
    redis_url: str, make_cache: Callable[..., MultiLevelCache]
) -> None:
    """Django's RedisCache passes its OPTIONS to the connection pool: a ``db`` there
    (and none in the URL, whose own wins) is the database written to, and the
    channel follows it."""
    server = redis_url.rsplit("/", 1)[0]
    cache = make_cache({"BACKEND": REDIS, "LOCATION": server, "OPTIONS": {"db": 2}})
    assert cache._co.channel == OLD_DEFAULT + ":db2"
    cache.set("k", 1)
    assert redis.Redis.from_url(_db(redis_url, 2)).exists(cache.make_key("k"))


def test_an_explicit_channel_wins(
    redis_url: str, make_cache: Callable[..., MultiLevelCache]
) -> None:
    level = {"BACKEND": REDIS, "LOCATION": _db(redis_url, 1)}
    assert make_cache(level, CHANNEL="mine")._co.channel == "mine"
    # The old default's text, given, is kept as given (an upgrade may pin it).
    assert make_cache(level, CHANNEL=OLD_DEFAULT)._co.channel == OLD_DEFAULT


def test_a_clear_of_one_database_does_not_flush_the_other_sites_l1(
    redis_url: str, make_cache: Callable[..., MultiLevelCache]
) -> None:
    """Every clear() of site A (db 0) flushed every L1 of site B (db 1). A clear of B's
    own database by another B process still does (the control)."""
    a = make_cache({"BACKEND": REDIS, "LOCATION": _db(redis_url, 0)})
    b = make_cache({"BACKEND": REDIS, "LOCATION": _db(redis_url, 1)}, "site-b")
    b2 = make_cache({"BACKEND": REDIS, "LOCATION": _db(redis_url, 1)}, "site-b")
    for cache in (a, b, b2):
        assert eventually(lambda c=cache: c.stats()["coherence"]["connected"])
    assert a._co.channel != b._co.channel
    b.set("k", "b's")
    flushes = b.stats()["coherence"]["flushes"]
    a.clear()
    time.sleep(0.3)  # a message is heard within milliseconds
    assert b.stats()["coherence"]["flushes"] == flushes
    assert b.get("k", levels=1) == "b's"  # still in b's L1
    b2.clear()  # the control: b's own database
    assert eventually(lambda: b.stats()["coherence"]["flushes"] > flushes)
    assert b.get("k", levels=1) is None


@pytest.mark.parametrize("change", ["write", "clear"])
def test_the_other_databases_changes_do_not_spare_a_pending_repair(
    redis_url: str, make_cache: Callable[..., MultiLevelCache], change: str
) -> None:
    """Site B (db 1) wrote ``k`` through an outage of its own; site A (db 0, no prefix
    either: same key names) then wrote ``k``, or cleared its database. B took that for
    a change of *its* level made after its outage write, dropped the suspect, and db 1
    kept the value B's write replaced, served to every B process with no time bound
    (probe: crossdb_channel.py). Now B does not hear A, and repairs."""
    OneProcessOutage.failing = False
    outage = f"{OneProcessOutage.__module__}.OneProcessOutage"
    a = make_cache({"BACKEND": REDIS, "LOCATION": _db(redis_url, 0)}, "site")
    b = make_cache(
        {"BACKEND": outage, "LOCATION": _db(redis_url, 1)}, "site", RETRY_INTERVAL=2.0
    )
    reader = make_cache({"BACKEND": REDIS, "LOCATION": _db(redis_url, 1)}, "site")
    for cache in (a, b):
        assert eventually(lambda c=cache: c.stats()["coherence"]["connected"])
    b.set("k", "old")
    try:
        OneProcessOutage.failing = True
        b.set("k", "new")  # the level down for b: a suspect
        assert b.stats()["levels"][1]["pending_repairs"] == 1
    finally:
        OneProcessOutage.failing = False
    if change == "write":
        a.set("k", "site A's")
    else:
        a.clear()
    assert eventually(lambda: b.stats()["levels"][1]["pending_repairs"] == 0, 10.0)
    assert reader.get("k") is None  # "old" was repaired away


def test_the_channel_follows_the_levels_database_with_redis_url(
    redis_url: str, make_cache: Callable[..., MultiLevelCache]
) -> None:
    """REDIS_URL names where to publish; the dataset is still the level's database."""
    level = {"BACKEND": REDIS, "LOCATION": _db(redis_url, 1)}
    cache = make_cache(level, REDIS_URL=_db(redis_url, 0))
    assert cache._co.channel == OLD_DEFAULT + ":db1"


def test_sites_on_other_servers_sharing_a_pubsub_server_do_not_hear_each_other(
    redis_url: str, private_redis: Any, make_cache: Callable[..., MultiLevelCache]
) -> None:
    """Two sites whose levels are on different servers (both database 0), with
    REDIS_URL naming one pub/sub server (here B's own): the default channel named the
    database only, so both used "django_smartcache:invalidate" there, and A's clear()
    flushed B's L1 and A's writes of a same-named key counted as changes of B's level
    (sparing B's pending repair). A channel on another server than the level's now
    names the level's server; on the level's own server database 0 keeps the old
    name."""
    pubsub = private_redis.url
    a = make_cache({"BACKEND": REDIS, "LOCATION": redis_url}, "s", REDIS_URL=pubsub)
    b = make_cache({"BACKEND": REDIS, "LOCATION": pubsub}, "s", REDIS_URL=pubsub)
    port = redis_url.rsplit(":", 1)[1].split("/")[0]
    assert a._co.channel == f"{OLD_DEFAULT}:127.0.0.1:{port}:db0"
    assert b._co.channel == OLD_DEFAULT
    for cache in (a, b):
        assert eventually(lambda c=cache: c.stats()["coherence"]["connected"])
    b.set("k", "from-b")
    before = b.stats()["coherence"]
    for i in range(5):
        a.set("k", f"from-a-{i}")
    a.clear()
    time.sleep(0.3)  # a message is heard within milliseconds
    after = b.stats()["coherence"]
    assert after["invalidations_applied"] == before["invalidations_applied"]
    assert after["flushes"] == before["flushes"]
    assert b.get("k", levels=1) == "from-b"


def test_a_sharded_django_redis_level_gets_no_channel_and_says_so(
    redis_url: str,
    make_cache: Callable[..., MultiLevelCache],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """django-redis' ShardClient has no single redis-py client (``get_client`` raises
    NotImplementedError, and only TypeError was caught): every write raised it from
    the publish, and the listener thread died with a traceback and was restarted
    every 0.5 s. Now the channel is not used, one ERROR says so (L1_MAX_TTL bounds
    staleness), and the cache works; with REDIS_URL the channel works."""
    crashes: list[str] = []
    monkeypatch.setattr(
        threading, "excepthook", lambda args: crashes.append(repr(args.exc_value))
    )
    level = {
        "BACKEND": DJANGO_REDIS,
        "LOCATION": [_db(redis_url, 0), _db(redis_url, 1)],
        "OPTIONS": {"CLIENT_CLASS": "django_redis.client.ShardClient"},
    }
    with caplog.at_level(logging.ERROR, "django_smartcache.multilevel"):
        cache = make_cache(level, "shard", L1_MAX_TTL=0.5)
        for i in range(10):
            cache.set(f"k{i}", i)
            assert cache.get(f"k{i}") == i
            time.sleep(0.1)  # past CHECK_INTERVAL: a dead listener was restarted
        cache.delete_pattern("k*")
    assert crashes == []
    assert cache.stats()["coherence"]["channel"] == "none"
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(logged) == 1 and "ShardClient" in logged[0], logged
    assert "L1_MAX_TTL" in logged[0] and "REDIS_URL" in logged[0]
    with_url = make_cache(level, "shard2", REDIS_URL=redis_url)
    other = make_cache(level, "shard2", REDIS_URL=redis_url)
    assert eventually(lambda: with_url.stats()["coherence"]["connected"])
    with_url.set("k", 1)
    assert with_url.get("k", levels=1) == 1
    other.set("k", 2)
    assert eventually(lambda: with_url.get("k", levels=1) is None, 2.0)
    assert crashes == []


def test_a_redis_url_naming_the_levels_server_still_hints_its_repair(
    redis_url: str,
    make_cache: Callable[..., MultiLevelCache],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A review: with REDIS_URL set, the channel's subscription and PONGs never told
    the lowest level's health that its server answers, so a pending repair waited for
    its timer: another process read a replaced value for a full RETRY_INTERVAL after
    an outage (2.003 s in 5 of 5 runs; now 0.005 s). A REDIS_URL naming that server
    hints it as the level's own client does; one naming another server does not."""
    from django_smartcache.backends._level_health import LevelHealth

    hinted: list[str] = []
    monkeypatch.setattr(LevelHealth, "reachable", lambda self: hinted.append(self.name))
    same = make_cache(
        {"BACKEND": REDIS, "LOCATION": redis_url},
        COHERENCE="redis",
        REDIS_URL=_db(redis_url, 5),
    )
    same.get("k")  # starts the listener
    assert eventually(lambda: same._co.connected, 5.0)
    assert eventually(lambda: bool(hinted), 5.0)
    elsewhere = make_cache(
        {"BACKEND": REDIS, "LOCATION": redis_url},
        COHERENCE="redis",
        REDIS_URL="redis://127.0.0.2:1/0",
    )
    assert elsewhere._co.on_level_server is False and same._co.on_level_server
