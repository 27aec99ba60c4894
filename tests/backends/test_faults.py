"""A lower level that fails: MultiLevelCache keeps serving, logs once, counts, recovers.

Real faults only: a redis-server stopped and restarted, a Redis that refuses writes
(``maxmemory``), a file cache whose directory became a file.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from django_smartcache.backends.multilevel import MultiLevelCache
from tests.backends.conftest import RETRY
from tests.backends.test_multilevel import FILES, REDIS, SMART
from tests.fixtures.waiting import wait_until

pytestmark = pytest.mark.redis


def _set_until_landed(
    cache: MultiLevelCache, key: str, value: Any, landed: Callable[[], bool]
) -> None:
    """After RETRY_INTERVAL, set ``key`` until the write reaches the level that was
    down (``landed``), for up to 10 s. Until that level's repair has run, a write skips
    it by design; the repair may be the background timer's, slower on a loaded machine
    (CI failed once when the first write after one interval skipped it)."""
    deadline = time.monotonic() + 10
    while True:
        time.sleep(RETRY * 1.5)
        cache.set(key, value)
        if landed() or time.monotonic() > deadline:
            return


def _read_from_l2(cache: MultiLevelCache, key: str) -> Any:
    """``key`` read through the cache with L1 emptied first (so from a lower level)."""
    cache.levels[0].clear()
    return cache.get(key)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]  # nothing listens there once closed
    return port


def _failure_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == "django_smartcache.multilevel"
        and "failed during" in r.getMessage()
    ]


def test_redis_stopped_and_restarted(
    private_redis: Any,
    make_cache: Callable[..., MultiLevelCache],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="django_smartcache.multilevel")
    cache = make_cache({"BACKEND": REDIS, "LOCATION": private_redis.url})
    # Subscribing flushes L1 (messages may have been missed before): wait for it first.
    wait_until(lambda: cache.stats()["coherence"]["connected"])
    cache.set("kept", "in L1 and L2")

    private_redis.stop()
    assert cache.get("kept") == "in L1 and L2"  # L1 keeps serving
    for i in range(50):
        assert cache.get(f"absent-{i}", "default") == "default"  # L2 down: a miss
    cache.set("written", "during the outage")  # skipped in L2, kept in L1
    assert cache.get("written") == "during the outage"
    assert cache.get_many(["kept", "written", "nope"]) == {
        "kept": "in L1 and L2",
        "written": "during the outage",
    }
    cache.delete("kept")
    assert cache.get("kept") is None

    stats = cache.stats()
    l2 = stats["levels"][1]
    assert l2["errors"] >= 1 and stats["errors"] == l2["errors"]
    assert l2["down"] is True
    assert "ConnectionError" in l2["last_error"]
    assert l2["pending_repairs"] == 2  # "written" and "kept" may be stale in L2
    assert len(_failure_warnings(caplog)) == 1  # one warning per interval, not per call

    private_redis.start()  # an empty server on the same port
    client = redis.Redis.from_url(private_redis.url)
    landed = lambda: client.exists(cache.make_key("after")) == 1  # noqa: E731
    _set_until_landed(cache, "after", "recovered", landed)
    assert landed()
    stats = cache.stats()
    assert stats["levels"][1]["down"] is False
    assert stats["levels"][1]["recoveries"] == 1
    assert stats["levels"][1]["pending_repairs"] == 0
    # The listener resubscribed by itself, and flushed L1 (messages may have been lost).
    wait_until(lambda: cache.stats()["coherence"]["subscriptions"] >= 2)
    wait_until(lambda: cache.stats()["coherence"]["connected"])
    assert cache.get("written") is None


def test_writes_refused_never_leave_a_stale_value(
    redis_url: str, make_cache: Callable[..., MultiLevelCache]
) -> None:
    cache = make_cache({"BACKEND": REDIS, "LOCATION": redis_url})
    l1, _ = cache.levels
    key = cache.make_key("k")
    client = redis.Redis.from_url(redis_url)
    cache.set("k", "old")
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", 1)  # Redis now refuses every write (OOM), reads work
    try:
        cache.set("k", "new")
        assert cache.get("k") == "new"  # L1
        l1.delete(key)  # as if evicted from L1 during the outage
        assert cache.get("k") is None  # L2 is skipped while down, not read stale
        assert cache.stats()["levels"][1]["errors"] >= 1
    finally:
        client.config_set("maxmemory", 0)
    time.sleep(RETRY * 1.5)
    # Recovery deletes the keys written while L2 refused them before serving from it.
    assert cache.get("k") is None
    assert client.exists(key) == 0
    cache.set("k", "newest")
    assert cache.get("k") == "newest" and client.exists(key) == 1


def test_raise_errors_option(
    private_redis: Any, make_cache: Callable[..., MultiLevelCache]
) -> None:
    cache = make_cache(
        {"BACKEND": REDIS, "LOCATION": private_redis.url},
        RAISE_ERRORS=True,
        COHERENCE="none",
    )
    cache.set("k", 1)
    cache.levels[0].clear()
    private_redis.stop()
    with pytest.raises(redis.exceptions.ConnectionError):
        cache.get("k")
    with pytest.raises(redis.exceptions.ConnectionError):
        cache.set("k", 2)
    # has_key took the fault for a value it could not unpickle: True, for a key never
    # written (an outside fuzz). It raises as get() does.
    with pytest.raises(redis.exceptions.ConnectionError):
        cache.has_key("never-written")
    with pytest.raises(redis.exceptions.ConnectionError):
        asyncio.run(cache.ahas_key("never-written"))
    assert cache.stats()["levels"][1]["errors"] == 4
    private_redis.start()
    cache.set("k", 3)  # no waiting for RETRY_INTERVAL when errors raise
    assert cache.get("k") == 3


def test_unwritable_file_level(
    tmp_path: Path, make_cache: Callable[..., MultiLevelCache]
) -> None:
    directory = tmp_path / "cache"
    cache = make_cache({"BACKEND": FILES, "LOCATION": str(directory)}, COHERENCE="none")
    cache.set("k", "v")
    shutil.rmtree(directory)
    directory.write_text("not a directory any more")  # every read and write now fails

    assert cache.get("k") == "v"  # L1
    cache.set("k2", "v2")
    assert cache.get("k2") == "v2"
    cache.levels[0].clear()
    assert cache.get("k", "miss") == "miss"
    assert cache.stats()["levels"][1]["errors"] >= 1

    directory.unlink()
    _set_until_landed(cache, "k3", "v3", lambda: _read_from_l2(cache, "k3") == "v3")
    assert _read_from_l2(cache, "k3") == "v3"
    assert cache.stats()["levels"][1]["recoveries"] == 1


def test_unreachable_redis_from_the_start(
    make_cache: Callable[..., MultiLevelCache],
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens there once closed
    cache = make_cache({"BACKEND": REDIS, "LOCATION": f"redis://127.0.0.1:{port}/0"})
    cache.set("k", "v")
    assert cache.get("k") == "v"
    assert cache.incr_version("k") == 2  # built on get/set/delete
    assert cache.get("k", version=2) == "v"
    assert cache.stats()["levels"][1]["errors"] >= 1


def test_an_idle_writer_repairs_the_level_by_itself(
    redis_url: str, make_cache: Callable[..., MultiLevelCache]
) -> None:
    """A process wrote through an outage, then made no more calls: the values its
    writes replaced stayed in the shared level, read by every other process, until
    its next call (none: no time bound). A timer repairs it once the level is back."""
    cache = make_cache({"BACKEND": REDIS, "LOCATION": redis_url})
    key = cache.make_key("k")
    gone = cache.make_key("gone")
    client = redis.Redis.from_url(redis_url)
    cache.set("k", "old")
    cache.set("gone", "old")
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", 1)  # Redis refuses every write (OOM), reads work
    try:
        cache.set("k", "new")  # refused below: "old" stays there
        cache.delete("gone")
        assert cache.stats()["levels"][1]["pending_repairs"] == 2
    finally:
        client.config_set("maxmemory", 0)
    # No call to ``cache`` from here on.
    wait_until(lambda: client.exists(key) == 0 and client.exists(gone) == 0)
    stats = cache.stats()["levels"][1]
    assert stats["pending_repairs"] == 0 and stats["down"] is False


def test_sqlite_level_unusable_from_the_start(
    tmp_path: Path, make_cache: Callable[..., MultiLevelCache]
) -> None:
    """A worker started while the file cannot be created (here its directory is a
    file; read-only mounts and permissions fail alike) used to raise
    ImproperlyConfigured from every call: the level is down instead, then recovers."""
    blocker = tmp_path / "cache"
    blocker.write_text("not a directory")
    location = str(blocker / "cache.sqlite3")
    cache = make_cache(
        {"BACKEND": "django_smartcache.backends.SQLiteCache", "LOCATION": location}
    )
    cache.set("k", "v")  # L1 only
    assert cache.get("k") == "v"
    assert cache.get("absent", "miss") == "miss"
    assert cache.stats()["levels"][1]["errors"] >= 1

    blocker.unlink()
    _set_until_landed(cache, "k2", "v2", lambda: _read_from_l2(cache, "k2") == "v2")
    assert _read_from_l2(cache, "k2") == "v2"  # from the SQLite level, back by itself
    assert cache.get("k", "repaired") == "repaired"  # written while down: not stale


def test_sqlite_alone_still_names_an_unusable_location(tmp_path: Path) -> None:
    from django.core.exceptions import ImproperlyConfigured

    from django_smartcache.backends import SQLiteCache

    blocker = tmp_path / "cache"
    blocker.write_text("not a directory")
    with pytest.raises(ImproperlyConfigured, match="LOCATION"):
        SQLiteCache(str(blocker / "c.sqlite3"), {}).get("k")


def test_background_repair_reuses_one_level_and_retries_every_interval(
    make_cache: Callable[..., MultiLevelCache],
) -> None:
    """While the level stays down, the repair timer retries with one level instance
    (not one per attempt, each a new client left unclosed), every RETRY_INTERVAL: it
    used to back off (doubling), so after a long outage an idle writer repaired long
    after the level's return while other processes read what its writes replaced."""
    port = _closed_port()
    cache = make_cache({"BACKEND": REDIS, "LOCATION": f"redis://127.0.0.1:{port}/0"})
    health = cache._health[1]
    built: list[Any] = []
    attempts: list[float] = []
    rebuild, repair = health._rebuild, health.repair
    assert rebuild is not None

    def counting() -> Any:
        built.append(rebuild())
        return built[-1]

    def counted_repair(level: Any) -> None:
        attempts.append(time.monotonic())
        repair(level)

    health._rebuild = counting
    health.repair = counted_repair  # type: ignore[method-assign]
    cache.set("k", "v")  # L2 unreachable: a suspect, a repair timer armed
    time.sleep(RETRY * 8)
    assert len(built) == 1
    assert len(attempts) >= 5  # at RETRY, 2x, 3x...: doubling made it 3
    health.stop()
    assert health._timer is None


def test_an_idle_writer_repairs_within_an_interval_of_a_long_outages_end(
    private_redis: Any, make_cache: Callable[..., MultiLevelCache]
) -> None:
    import signal

    cache = make_cache(
        {
            "BACKEND": REDIS,
            "LOCATION": private_redis.url,
            "OPTIONS": {"socket_timeout": 0.1, "socket_connect_timeout": 0.1},
        }
    )
    client = redis.Redis.from_url(private_redis.url)
    wait_until(lambda: cache.stats()["coherence"]["connected"])
    cache.set("k", "before")
    private_redis.process.send_signal(signal.SIGSTOP)  # hangs, keeps its data
    try:
        cache.set("k", "during")  # times out in L2: a suspect; the writer goes idle
        time.sleep(RETRY * 12)  # repairs fail all along
    finally:
        private_redis.process.send_signal(signal.SIGCONT)
    back = time.monotonic()
    # Redis still holds "before" (or the hung write's "during": redis-py had sent it).
    wait_until(lambda: client.exists(cache.make_key("k")) == 0, timeout=RETRY * 10)
    assert time.monotonic() - back < RETRY * 3


# -- the channel is not the level (outside probe, session 6) -------------------------


def test_the_channel_uses_the_levels_password(
    private_redis: Any, make_cache: Callable[..., MultiLevelCache]
) -> None:
    """A password in the level's OPTIONS: the channel was built from the URL alone,
    its publish failed, and that failure marked the healthy level down (3 writes of
    60 reached Redis; add() as a lock said True to two holders)."""
    admin = redis.Redis.from_url(private_redis.url)
    admin.config_set("requirepass", "s3cret")
    try:
        cache = make_cache(
            {
                "BACKEND": REDIS,
                "LOCATION": private_redis.url,
                "OPTIONS": {"password": "s3cret"},
            }
        )
        wait_until(lambda: cache.stats()["coherence"]["connected"])
        for i in range(20):
            cache.set(f"k{i}", i)
        stats = cache.stats()
        assert stats["levels"][1]["errors"] == 0
        assert stats["coherence"]["errors"] == 0
        assert cache.levels[1].get_many([cache.make_key(f"k{i}") for i in range(20)])
        assert (
            len(cache.levels[1].get_many([cache.make_key(f"k{i}") for i in range(20)]))
            == 20
        )
    finally:
        authed = redis.Redis.from_url(private_redis.url, password="s3cret")
        authed.config_set("requirepass", "")
        authed.close()
        admin.close()


def test_a_failing_channel_does_not_take_the_level_down(
    private_redis: Any, make_cache: Callable[..., MultiLevelCache]
) -> None:
    """Publishing to a channel server that is down is the channel's error: the level
    took the write, and keeps taking them."""
    dead = f"redis://127.0.0.1:{_closed_port()}/0"
    cache = make_cache(
        {"BACKEND": REDIS, "LOCATION": private_redis.url}, REDIS_URL=dead
    )
    for i in range(10):
        cache.set(f"k{i}", i)
    finals = [cache.make_key(f"k{i}") for i in range(10)]
    assert len(cache.levels[1].get_many(finals)) == 10
    stats = cache.stats()
    assert stats["levels"][1]["errors"] == 0
    assert not stats["levels"][1]["down"]
    assert stats["coherence"]["errors"] >= 1


def test_a_silent_subscription_is_pinged_and_renewed(
    private_redis: Any, make_cache: Callable[..., MultiLevelCache], monkeypatch: Any
) -> None:
    """A subscription whose connection died without a FIN or RST raised nothing: the
    listener is deaf for good. Silence now gets a PING; no answer, a new subscription."""
    from django_smartcache.backends import _coherence

    monkeypatch.setattr(_coherence.RedisPubSub, "PING_AFTER", 0.2)
    monkeypatch.setattr(_coherence.RedisPubSub, "PONG_WITHIN", 0.5)
    cache = make_cache({"BACKEND": REDIS, "LOCATION": private_redis.url})
    wait_until(lambda: cache.stats()["coherence"]["connected"])
    time.sleep(1.0)  # silence answered by PONGs: still the first subscription
    assert cache.stats()["coherence"]["subscriptions"] == 1
    admin = redis.Redis.from_url(private_redis.url)
    admin.execute_command("CLIENT", "PAUSE", 1500, "ALL")  # no answer to the PING
    wait_until(lambda: cache.stats()["coherence"]["subscriptions"] >= 2, timeout=10)
    admin.close()


def test_redis_url_must_be_a_url() -> None:
    from django.core.exceptions import ImproperlyConfigured

    with pytest.raises(ImproperlyConfigured, match="REDIS_URL"):
        MultiLevelCache("", {"OPTIONS": {"LEVELS": [{"BACKEND": SMART}, {"BACKEND": FILES, "LOCATION": "/tmp/x"}], "REDIS_URL": "127.0.0.1:6379"}})  # fmt: skip


def test_one_caller_per_retry_interval_tries_a_down_level(
    make_cache: Callable[..., MultiLevelCache],
) -> None:
    """Once RETRY_INTERVAL had passed, every arriving thread tried the level, each
    waiting out the client's timeout against a server that hangs (8 threads spent 5 s
    of every 6 blocked). One caller per interval tries it now; the others skip it."""
    import threading

    port = _closed_port()
    cache = make_cache(
        {"BACKEND": REDIS, "LOCATION": f"redis://127.0.0.1:{port}/0"},
        RETRY_INTERVAL=2.0,
    )
    cache.get("first")  # the level fails: down for RETRY_INTERVAL
    assert cache.stats()["levels"][1]["errors"] == 1
    health = cache._health[1]
    health.down_until = time.monotonic() - 0.01  # the interval has passed
    barrier = threading.Barrier(8)

    def read() -> None:
        barrier.wait()
        for i in range(20):
            cache.get(f"k{i}")

    threads = [threading.Thread(target=read) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert cache.stats()["levels"][1]["errors"] == 2  # one probe, not one per thread


def test_a_timeout_redis_refuses_in_set_many_is_the_callers_error(
    redis_url: str, make_cache: Callable[..., MultiLevelCache]
) -> None:
    # Django's RedisCache.set_many sends a pipeline: Redis' answer to EXPIRE comes back
    # wrapped ("Command # 2 (EXPIRE ...) of pipeline caused error: value is not an
    # integer ..."). It is the call's fault, as for set(): raised, the level stays up.
    cache = make_cache({"BACKEND": REDIS, "LOCATION": redis_url})
    client = redis.Redis.from_url(redis_url)
    for call in (
        lambda: cache.set("one", 1, timeout=2**63),
        lambda: cache.set_many({"many": 1}, timeout=2**63),
    ):
        with pytest.raises(redis.exceptions.ResponseError, match="not an integer"):
            call()
    assert cache.stats()["levels"][1]["down"] is False
    cache.set("after", "shared", timeout=300)  # reaches Redis: not skipped as down
    assert client.exists(cache.make_key("after")) == 1
    assert cache.add("lock", 1, timeout=300) is True
    assert client.exists(cache.make_key("lock")) == 1


def test_shared_reads_fall_back_to_the_levels_above_when_no_shared_level_works(
    make_cache: Callable[..., MultiLevelCache],
) -> None:
    # @cached's tokens and locks are read from the shared level (shared_get_many);
    # with Redis unreachable, what this process holds answers, as a read would.
    cache = make_cache(
        {"BACKEND": REDIS, "LOCATION": f"redis://127.0.0.1:{_closed_port()}/0"}
    )
    cache.set("token", "mine")
    assert cache.shared_get_many(["token", "absent"]) == {"token": "mine"}
    assert cache.stats()["levels"][1]["errors"] >= 1


def test_shared_reads_ask_the_lowest_level_not_l1(
    make_cache: Callable[..., MultiLevelCache], redis_url: str
) -> None:
    cache = make_cache({"BACKEND": REDIS, "LOCATION": redis_url})
    cache.set("token", "old")
    assert cache.get("token") == "old"  # (a copy in L1)
    # Another process's write, not yet heard of here: straight into Redis.
    cache.levels[1].set(cache.make_key("token"), "new")
    assert cache.shared_get_many(["token"]) == {"token": "new"}
    assert cache.get("token", levels=1) == "old"  # L1 left alone: no promotion
