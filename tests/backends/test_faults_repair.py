"""What the repair after a lower level's outage deletes, and what it must leave alone.

A process remembers the keys it wrote while a level was down ("suspects") and deletes
them from the level once it is back, so the level never serves the values those writes
replaced. These tests check the repair deletes nothing else: not the old value of a
write the level refused as the caller's error, not another process's newer write.
Real redis-servers (``tests/fixtures/redis_server.py``), real processes where the
defect needs them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
from django.core.cache.backends.redis import RedisCache

from django_smartcache.backends._coherence import SQLiteChangeLog
from django_smartcache.backends._level_health import LevelHealth
from django_smartcache.backends.multilevel import MultiLevelCache
from django_smartcache.backends.smart import SmartCache
from django_smartcache.backends.sqlite import SQLiteCache
from tests.backends.conftest import RETRY
from tests.backends.test_multilevel import REDIS, SMART, _unique
from tests.fixtures.waiting import eventually

pytestmark = pytest.mark.redis


def test_a_write_refused_as_the_callers_error_leaves_no_suspect(
    redis_url: str, make_cache: Callable[..., MultiLevelCache]
) -> None:
    """Redis refuses an expiry of 1e20 s (``value is not an integer or out of range``):
    the set raised, as it should, but the key was also remembered as a suspect
    (``pending_repairs: 1`` with ``errors: 0``) and the repair deleted its old, valid
    value about a RETRY_INTERVAL later."""
    cache = make_cache({"BACKEND": REDIS, "LOCATION": redis_url})
    client = redis.Redis.from_url(redis_url)
    cache.set("one", "old", None)
    cache.set("many", "old", None)
    with pytest.raises(redis.exceptions.ResponseError, match="not an integer"):
        cache.set("one", "new", 1e20)
    with pytest.raises(redis.exceptions.ResponseError, match="not an integer"):
        cache.set_many({"many": "new"}, 1e20)
    stats = cache.stats()["levels"][1]
    assert stats["errors"] == 0 and stats["down"] is False
    assert stats["pending_repairs"] == 0
    time.sleep(RETRY * 4)  # a repair would have run by now
    assert client.get(cache.make_key("one")) is not None
    # (Django's RedisCache.set_many pipelines SET then EXPIRE: the SET took effect.)
    assert client.get(cache.make_key("many")) is not None
    cache.levels[0].clear()
    assert cache.get("one") == "old"


# -- another process's write after the level came back -------------------------------


def _worker(url: str, prefix: str, retry: float, commands: Any, results: Any) -> None:
    """A separate process with its own MultiLevelCache over Redis at ``url``: runs
    ``(method, *args)`` from ``commands`` and puts each answer in ``results``."""
    import django

    django.setup()
    cache = MultiLevelCache(
        "",
        {
            "KEY_PREFIX": prefix,
            "OPTIONS": {
                "LEVELS": [{"BACKEND": SMART}, {"BACKEND": REDIS, "LOCATION": url}],
                "RETRY_INTERVAL": retry,
            },
        },
    )
    cache.get("warm-up")  # starts the listener
    while True:
        command = commands.get()
        if command[0] == "quit":
            return
        if command[0] == "connected":
            deadline = time.monotonic() + 10
            while not cache._co.connected and time.monotonic() < deadline:
                time.sleep(0.01)
            results.put(cache._co.connected)
        else:
            results.put(getattr(cache, command[0])(*command[1:]))


class _Processes:
    """Named worker processes (spawned: no state inherited from the test runner)."""

    def __init__(self, names: str, url: str, prefix: str, retry: float) -> None:
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        self.queues = {name: (context.Queue(), context.Queue()) for name in names}
        self.processes = [
            context.Process(target=_worker, args=(url, prefix, retry, *self.queues[n]))
            for n in names
        ]
        for process in self.processes:
            process.start()

    def __call__(self, name: str, *command: Any) -> Any:
        commands, results = self.queues[name]
        commands.put(command)
        return results.get(timeout=30)

    def stop(self) -> None:
        for commands, _ in self.queues.values():
            commands.put(("quit",))
        for process in self.processes:
            process.join(10)
            if process.is_alive():
                process.kill()


def test_an_add_during_an_outage_never_deletes_a_later_holders_lock(
    private_redis: Any,
) -> None:
    """Redis down, process A's add wins in its L1 (documented: each process may win
    while the level is down). Redis back, B (which met no outage) takes the lock in
    Redis. A's repair, within RETRY_INTERVAL, deleted B's lock as a suspect of A's
    add, and C's add won as well: two holders (outside probe, 3 runs of 3)."""
    client = redis.Redis.from_url(private_redis.url)
    run = _Processes("ABC", private_redis.url, _unique(), retry=1.0)
    try:
        for name in "ABC":
            assert run(name, "connected")
        private_redis.stop()
        assert run("A", "add", "lock", "A", 60) is True  # L1 alone decided
        private_redis.start()  # empty
        assert run("B", "add", "lock", "B", 60) is True  # the lock, in Redis
        time.sleep(1.5)  # A's repair runs within RETRY_INTERVAL of the return
        assert run("C", "add", "lock", "C", 60) is False
        assert run("C", "get", "lock") == "B"
        assert client.exists(run("C", "make_key", "lock")) == 1
    finally:
        run.stop()


def test_the_writer_repairs_as_soon_as_the_channel_is_back(
    private_redis: Any, make_cache: Callable[..., MultiLevelCache]
) -> None:
    """The repair waited for the retry timer, up to RETRY_INTERVAL after Redis came
    back, and deleted what other processes wrote meanwhile (a write this process does
    not hear: made before its listener subscribed again). It now runs when the
    listener subscribes again: a write made after that is left alone."""
    cache = make_cache(
        {"BACKEND": REDIS, "LOCATION": private_redis.url}, RETRY_INTERVAL=6.0
    )
    key = cache.make_key("k")
    assert eventually(lambda: cache.stats()["coherence"]["connected"])
    private_redis.stop()
    cache.set("k", "during the outage")  # a suspect; the writer then goes idle
    assert cache.stats()["levels"][1]["pending_repairs"] == 1
    private_redis.start()
    back = time.monotonic()
    assert eventually(lambda: cache.stats()["levels"][1]["pending_repairs"] == 0, 2.0)
    assert time.monotonic() - back < 3.0  # not RETRY_INTERVAL (6 s) later
    client = redis.Redis.from_url(private_redis.url)
    client.set(key, b"another process's")  # unheard: not published
    time.sleep(6.5)  # past the retry timer's own time
    assert client.get(key) == b"another process's"


class OneProcessOutage(RedisCache):
    """Django's RedisCache that fails with a ``ConnectionError`` while ``failing``:
    the level down for the configurations built over it (the repair's own instance
    too), as a connection refused or a command timing out under load would be, while
    their listener and the other configurations keep theirs. (The tests made it with
    an ACL that refused the keys and FLUSHDB; a NOPERM is now the caller's error, no
    outage.)"""

    failing = False

    def __init__(self, server: str, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        for name in (
            "add", "get", "set", "touch", "delete", "get_many", "has_key", "incr",
            "set_many", "delete_many", "clear",
        ):  # fmt: skip
            setattr(self, name, self._failing(getattr(self, name)))

    @classmethod
    def _failing(cls, method: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            if cls.failing:
                raise redis.ConnectionError("one process's outage (test)")
            return method(*args, **kwargs)

        return call


def _down_for_one_process(
    server: Any, make_cache: Callable[..., MultiLevelCache]
) -> tuple[MultiLevelCache, MultiLevelCache, Callable[[bool], None]]:
    """Caches ``a`` and ``b`` over one Redis, and ``down(True/False)``: the level fails
    for ``a`` only (:class:`OneProcessOutage`), while ``a``'s listener keeps hearing
    ``b``. ``b`` is another configuration: an L1, a token and a health of its own
    (another process), on the same channel and keys."""
    OneProcessOutage.failing = False
    prefix = _unique()
    outage = f"{__name__}.OneProcessOutage"
    a = make_cache({"BACKEND": outage, "LOCATION": server.url}, prefix,
                   RETRY_INTERVAL=2.0)  # fmt: skip
    b = make_cache({"BACKEND": REDIS, "LOCATION": server.url}, prefix,
                   MAX_SUSPECT_KEYS=1000)  # fmt: skip
    assert eventually(lambda: a.stats()["coherence"]["connected"])
    assert eventually(lambda: b.stats()["coherence"]["connected"])

    def down(yes: bool) -> None:
        OneProcessOutage.failing = yes

    return a, b, down


def test_a_write_heard_from_another_process_is_not_repaired_away(
    private_redis: Any, make_cache: Callable[..., MultiLevelCache]
) -> None:
    """Another process wrote a key this process had written through its outage, after
    the level was back for it: the repair deleted that newer write. A change heard
    after the suspect was recorded now takes the key off the suspects."""
    a, b, down = _down_for_one_process(private_redis, make_cache)
    a.set("k", "before")
    down(True)
    a.set("k", "A during its outage")  # refused: a suspect, the level down for a
    assert a.stats()["levels"][1]["pending_repairs"] == 1
    down(False)
    b.set("k", "B after")  # heard by a
    # (Heard within milliseconds; a broken hearing is caught below: the repair at
    # a's retry timer then deletes b's write.)
    assert eventually(lambda: a.stats()["levels"][1]["pending_repairs"] == 0, 10.0)
    time.sleep(2.5)  # past a's retry: a repair would have run
    a.levels[0].clear()
    assert a.get("k") == "B after"


def test_a_clear_heard_from_another_process_subsumes_a_missed_clear(
    private_redis: Any, make_cache: Callable[..., MultiLevelCache]
) -> None:
    """A clear() this process missed was repaired by clearing the level on its return,
    deleting everything the others wrote since; another process's clear after it
    already did what was asked."""
    a, b, down = _down_for_one_process(private_redis, make_cache)
    down(True)
    a.clear()  # missed: the level is to be cleared on its return
    assert a.stats()["levels"][1]["pending_repairs"] == 1
    down(False)
    b.clear()  # heard by a
    # (Heard within milliseconds; a broken hearing is caught below: the repair at
    # a's retry timer then deletes b's write.)
    assert eventually(lambda: a.stats()["levels"][1]["pending_repairs"] == 0, 10.0)
    b.set("k", "B after the clear")
    time.sleep(2.5)  # past a's retry: a repair would have run
    a.levels[0].clear()
    assert a.get("k") == "B after the clear"


@pytest.mark.parametrize("change", ["touch", "levels=1"])
def test_a_touch_or_an_l1_write_heard_from_another_process_is_no_write(
    private_redis: Any, make_cache: Callable[..., MultiLevelCache], change: str
) -> None:
    """Every write was published as a change of the lowest level, a touch and a write
    limited to L1 (``levels=1``) included: the process that wrote the key through its
    outage dropped its suspect, and Redis kept serving every process the value the
    outage write replaced (a touch even extended it). Now they drop the L1 copies of
    the others and leave their suspects (reviewer's reproducer; the control, a write
    of Redis heard, is ``test_a_write_heard_from_another_process_...``)."""
    a, b, down = _down_for_one_process(private_redis, make_cache)
    a.set("k", "before")
    down(True)
    a.set("k", "A during its outage")  # refused: a suspect, the level down for a
    down(False)
    applied = a.stats()["coherence"]["invalidations_applied"]
    if change == "touch":
        assert b.touch("k", 300)  # extends Redis' "before"
    else:
        b.set("k", "B in its L1 only", levels=1)  # Redis untouched
    # a's listener handles b's message (it drops a's L1 copy)...
    assert eventually(lambda: a.stats()["coherence"]["invalidations_applied"] > applied)
    # ... then a repairs, at its retry timer (2 s after the outage write).
    assert eventually(lambda: a.stats()["levels"][1]["pending_repairs"] == 0, 30.0)
    reader = make_cache({"BACKEND": REDIS, "LOCATION": private_redis.url}, a.key_prefix)
    assert reader.get("k") is None  # "before" is gone


def test_a_touch_in_the_sqlite_change_log_is_not_taken_for_a_write(
    tmp_path: Any,
) -> None:
    """SQLite's change log names the key of a touch (an UPDATE of the expiry) as of a
    write: heard, it spared a suspect the value its outage write replaced. The log
    does not tell them apart, so what it names no longer spares suspects."""
    location = str(tmp_path / "cache.sqlite3")
    mine, other = SQLiteCache(location, {}), SQLiteCache(location, {})
    co = SQLiteChangeLog(SmartCache(_unique(), {}), mine, interval=0.0)
    health = LevelHealth("L2", retry=60.0, log_interval=60.0, max_suspects=10)
    health.epoch = lambda: co.epoch
    co.watch(health.heard, health.reachable)
    key = mine.make_key("k")
    other.set("k", "before")
    co.refresh(mine)  # the cursor
    health.failed(OSError("disk I/O error"), "set")
    health.missed([key])  # this process's write of "k" failed
    co.refresh(mine)  # the level answers again: a poll after the suspect
    co.l1.set(key, "an L1 copy")
    assert other.touch("k", 300)
    co.refresh(mine)
    assert co.l1.get(key) is None  # the touch dropped the L1 copy, as before
    assert health.suspects.keys() == {key}  # and left the suspect


# -- how soon the repair runs, and what it tells the others --------------------------


def test_the_writer_repairs_as_soon_as_a_hung_redis_answers(
    private_redis: Any, make_cache: Callable[..., MultiLevelCache]
) -> None:
    """A Redis that hangs (SIGSTOP, a stalled disk) keeps the listener's subscription,
    so no new subscription told the writer it was back: the repair waited for its
    timer, up to RETRY_INTERVAL after the return, while every other process read the
    value the outage write replaced (outside probe: stale reads up to 2.3 s after the
    commit, with a 1 s bound). While a repair is pending the listener now PINGs; the
    answer brings the repair forward."""
    import signal

    level = {
        "BACKEND": REDIS,
        "LOCATION": private_redis.url,
        "OPTIONS": {"socket_timeout": 0.2, "socket_connect_timeout": 0.2},
    }
    cache = make_cache(level, RETRY_INTERVAL=10.0)
    assert eventually(lambda: cache.stats()["coherence"]["connected"])
    cache.set("k", "before")
    assert private_redis.process is not None
    private_redis.process.send_signal(signal.SIGSTOP)
    try:
        cache.set("k", "during the outage")  # times out: a suspect
        assert cache.stats()["levels"][1]["pending_repairs"] == 1
        time.sleep(1.0)  # hung for a while (under the listener's PONG_WITHIN)
    finally:
        private_redis.process.send_signal(signal.SIGCONT)
    back = time.monotonic()
    assert eventually(lambda: cache.stats()["levels"][1]["pending_repairs"] == 0, 10.0)
    assert time.monotonic() - back < 5.0  # not at the timer, 10 s after the write
    cache.levels[0].clear()
    assert cache.get("k") is None  # "before" was deleted from Redis


def test_the_writer_repairs_soon_while_other_processes_keep_the_channel_busy(
    private_redis: Any, make_cache: Callable[..., MultiLevelCache]
) -> None:
    """The listener PINGs for the level's return only after 0.25 s of silence on the
    channel; while other processes kept writing, it was never silent, and the repair
    of this process's outage writes waited for its timer (RETRY_INTERVAL) while every
    other process read the values they replaced (Redis probe: up to 4.97 s old with
    RETRY_INTERVAL 5). A message heard on the channel says the server answers too."""
    import threading

    OneProcessOutage.failing = False
    prefix = _unique()
    outage = f"{__name__}.OneProcessOutage"
    a = make_cache({"BACKEND": outage, "LOCATION": private_redis.url}, prefix,
                   RETRY_INTERVAL=10.0)  # fmt: skip
    b = make_cache({"BACKEND": REDIS, "LOCATION": private_redis.url}, prefix)
    assert eventually(lambda: a.stats()["coherence"]["connected"])
    assert eventually(lambda: b.stats()["coherence"]["connected"])
    a.set("k", "before")
    OneProcessOutage.failing = True
    a.set("k", "A during its outage")  # refused: a suspect
    assert a.stats()["levels"][1]["pending_repairs"] == 1
    OneProcessOutage.failing = False
    stop = threading.Event()

    def busy() -> None:  # another process writing all the time
        i = 0
        while not stop.wait(0.02):
            b.set(f"noise:{i % 50}", i)
            i += 1

    writer = threading.Thread(target=busy)
    back = time.monotonic()
    writer.start()
    try:
        assert eventually(lambda: a.stats()["levels"][1]["pending_repairs"] == 0, 12.0)
        took = time.monotonic() - back
    finally:
        stop.set()
        writer.join()
    assert took < 5.0  # not at the timer, 10 s after the write
    assert b.get("k") is None  # "before" was deleted from Redis


def test_what_a_repair_deletes_leaves_the_other_processes_l1(
    private_redis: Any, make_cache: Callable[..., MultiLevelCache]
) -> None:
    """Another process that read the key's old value from the level (before the
    writer's repair, or before the outage) kept its L1 copy up to L1_MAX_TTL after the
    repair deleted the value from the level: the repair's deletes were not published.
    They are now (as copies: they drop L1 entries and spare no one's suspects)."""
    a, b, down = _down_for_one_process(private_redis, make_cache)
    a.set("k", "before")
    assert b.get("k") == "before"  # b's L1 copy (L1_MAX_TTL 1000 s here)
    down(True)
    a.set("k", "A during its outage")  # refused: a suspect, unpublished
    down(False)
    applied = b.stats()["coherence"]["invalidations_applied"]
    assert eventually(lambda: a.stats()["levels"][1]["pending_repairs"] == 0, 30.0)
    assert eventually(lambda: b.stats()["coherence"]["invalidations_applied"] > applied)
    assert b.get("k") is None


# -- a missed delete_pattern() or too many suspects: this cache's keys, not the level --


@pytest.mark.parametrize("missed", ["delete_pattern", "too many suspects", "clear"])
def test_a_repair_clears_only_this_caches_keys_unless_a_clear_was_missed(
    private_redis: Any, make_cache: Callable[..., MultiLevelCache], missed: str
) -> None:
    """A delete_pattern() the level missed (or more suspects than MAX_SUSPECT_KEYS)
    was repaired with the level's clear(): a FLUSHDB, which took every other alias's
    keys in the database (pattern probe: another alias's 5 sessions gone, on Redis
    and on a shared SQLite file). Only a missed clear() (itself a FLUSHDB) clears it
    all now; the rest deletes this cache's keys."""
    import signal

    level = {
        "BACKEND": REDIS,
        "LOCATION": private_redis.url,
        "OPTIONS": {"socket_timeout": 0.2, "socket_connect_timeout": 0.2},
    }
    cache = make_cache(level, _unique(), RETRY_INTERVAL=0.2, MAX_SUSPECT_KEYS=3)
    sessions = RedisCache(private_redis.url, {"KEY_PREFIX": "sessions"})
    sessions.set_many({f"s{i}": "logged in" for i in range(5)})
    cache.set_many({"user:1": 1, "page:home": "html"})
    assert private_redis.process is not None
    private_redis.process.send_signal(signal.SIGSTOP)  # hangs: every call times out
    try:
        if missed == "delete_pattern":
            cache.delete_pattern("user:*")
        elif missed == "clear":
            cache.clear()
        else:
            cache.set_many({f"w{i}": i for i in range(5)})  # 5 suspects > 3
        assert cache.stats()["levels"][1]["pending_repairs"] >= 1
    finally:
        private_redis.process.send_signal(signal.SIGCONT)
    assert eventually(lambda: cache.stats()["levels"][1]["pending_repairs"] == 0, 10.0)
    lowest = cache.levels[1]
    assert lowest.get(cache.make_key("user:1")) is None
    assert lowest.get(cache.make_key("page:home")) is None  # this cache's: all
    kept = sessions.get_many([f"s{i}" for i in range(5)])
    assert len(kept) == (0 if missed == "clear" else 5)


def test_a_missed_delete_pattern_on_a_shared_sqlite_file_spares_other_aliases(
    tmp_path: Any, make_cache: Callable[..., MultiLevelCache]
) -> None:
    import sqlite3

    location = str(tmp_path / "shared.sqlite3")
    level = {
        "BACKEND": "django_smartcache.backends.SQLiteCache",
        "LOCATION": location,
        "OPTIONS": {"BUSY_TIMEOUT": 0.2},
    }
    cache = make_cache(level, "site", RETRY_INTERVAL=0.2)
    sessions = SQLiteCache(location, {"KEY_PREFIX": "sessions"})
    sessions.set_many({f"s{i}": "logged in" for i in range(5)})
    cache.set_many({"user:1": 1, "page:home": "html"})
    holder = sqlite3.connect(location, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # a long write elsewhere: the level refuses
    try:
        cache.delete_pattern("user:*")
        assert cache.stats()["levels"][1]["pending_repairs"] == 1
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert eventually(lambda: cache.stats()["levels"][1]["pending_repairs"] == 0, 10.0)
    assert cache.levels[1].get(cache.make_key("user:1")) is None
    assert len(sessions.get_many([f"s{i}" for i in range(5)])) == 5
    sessions.close()
