"""LevelHealth's repair bookkeeping on its own (no server): one repair at a time, and a
deferral that never outlives what it deferred (outside review of ba7b9a4)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from django_smartcache.backends._level_health import LevelHealth
from tests.fixtures.waiting import eventually


class SlowLevel:
    """A level whose clear() takes a while and counts how many run at once."""

    def __init__(self) -> None:
        self.running = 0
        self.peak = 0
        self.clears = 0
        self.guard = threading.Lock()

    def clear(self) -> None:
        with self.guard:
            self.running += 1
            self.peak = max(self.peak, self.running)
        time.sleep(0.2)
        with self.guard:
            self.running -= 1
            self.clears += 1

    def close(self, **kwargs: Any) -> None:
        pass


def _health() -> LevelHealth:
    return LevelHealth("L2 test", retry=0.2, log_interval=60, max_suspects=100)


def test_a_deferral_with_nothing_left_to_repair_does_not_skip_the_level() -> None:
    # The pending repair was dropped (another process's writes heard) before the
    # background repair ran: the deferral stayed set, and every caller skipped a
    # healthy level for good.
    health = _health()
    health._deferred = True
    health.repair(SlowLevel(), inline=True)  # nothing pending: no RepairDeferred
    assert health._deferred is False


def test_repairs_run_one_at_a_time_and_a_second_finds_nothing_left() -> None:
    # RAISE_ERRORS callers repaired inline in several threads at once; one's clear
    # (a SCAN+UNLINK there) deleted writes made after another had finished.
    health, level = _health(), SlowLevel()
    health.clear_pending = True
    health.down_until = time.monotonic()
    threads = [threading.Thread(target=health.repair, args=(level,)) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert level.peak == 1
    assert level.clears == 1
    assert not health.clear_pending


class HungLevel(SlowLevel):
    """A level whose clear() waits out a client timeout, then fails (a hung server)."""

    def clear(self) -> None:
        super().clear()
        raise ConnectionError("timed out (test)")


def test_waiters_do_not_each_retry_a_repair_that_met_an_outage() -> None:
    # RAISE_ERRORS callers queued on the one-repair-at-a-time lock each tried the
    # repair again in turn, against a hung server each waiting out the client's
    # timeout after the others (review: the sixth of six calls took 6 timeouts).
    health, level = _health(), HungLevel()
    health.clear_pending = True
    health.down_until = time.monotonic()
    errors: list[BaseException] = []

    def call() -> None:
        try:
            health.repair(level)
        except ConnectionError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert len(errors) == 4
    assert len({id(exc) for exc in errors}) == 4  # each its own: no shared traceback
    assert level.clears == 1  # one attempt; the waiters raised its outage
    assert health.clear_pending  # still to do: the next probe tries again
    health.repair(SlowLevel())  # a later repair (no outage since) does try
    assert not health.clear_pending
    # A success forgets the outage: a waiter that queued before it never raises it
    # for a level that is back (review: the background repair marked it down again).
    assert health._repair_fault is None


def _raised(exc: BaseException, cause: BaseException | None = None) -> BaseException:
    try:
        raise exc from cause
    except BaseException as caught:  # noqa: BLE001 - returned for inspection
        return caught


def test_the_copy_a_waiter_raises_keeps_the_message_and_drops_the_traceback() -> None:
    """django-redis's ConnectionInterrupted takes ``connection=`` by keyword and reads
    its cause in its message: copy.copy cannot rebuild it, so every waiter raised the
    original object (one traceback for all); a copy without the cause said 'Redis
    NoneType: None'."""
    import redis
    from django_redis.exceptions import ConnectionInterrupted

    from django_smartcache.backends._level_health import _bare_copy

    interrupted = _raised(
        ConnectionInterrupted(connection=object()),
        _raised(redis.ConnectionError("Timeout reading from socket")),
    )
    copied = _bare_copy(interrupted)
    assert copied is not interrupted and type(copied) is ConnectionInterrupted
    assert (
        str(copied)
        == str(interrupted)
        == "Redis ConnectionError: Timeout reading from socket"
    )
    assert copied.__traceback__ is None and copied.__cause__.__traceback__ is None
    missing = _raised(FileNotFoundError(2, "No such file", "/tmp/x.sqlite3"))
    again = _bare_copy(missing)
    assert again is not missing and again.filename == "/tmp/x.sqlite3"
    assert again.__traceback__ is None


def test_a_fault_that_cannot_be_rebuilt_faithfully_is_raised_as_it_is() -> None:
    """Rebuilt without ``__init__``, a keyword-only OSError subclass lost its errno and
    message, and a slotted one's ``str()`` raised (review of bf28df9); a non-list
    ``__notes__`` made the copy itself raise. The original is raised then."""
    from django_smartcache.backends._level_health import _bare_copy

    class KeywordOSError(OSError):
        def __init__(self, *, path: str) -> None:
            super().__init__(13, "Permission denied", path)

    denied = _raised(KeywordOSError(path="/var/cache/l2.sqlite3"))
    assert str(_bare_copy(denied)) == str(denied)
    noted = _raised(ConnectionError("gone"))
    noted.__notes__ = 5  # type: ignore[attr-defined]
    assert str(_bare_copy(noted)) == "gone"


class DeletingLevel(SlowLevel):
    """A level that records its deletes; ``during`` runs inside the first one (a
    write that another thread skips the level with while the repair runs)."""

    def __init__(self, during: Any = None) -> None:
        super().__init__()
        self.deleted: list[list[str]] = []
        self.during = during

    def delete_many(self, keys: list[str]) -> None:
        self.deleted.append(sorted(keys))
        during, self.during = self.during, None
        if during is not None:
            during()


def _down_with(health: LevelHealth, *keys: str) -> None:
    health.failed(ConnectionError("refused (test)"), "set")
    health.missed(keys)


def _timed(level: SlowLevel, retry: float = 30.0) -> LevelHealth:
    """A health whose background repair runs on ``level``; its timer alone would wait
    ``retry`` (long: what runs sooner was made due at once)."""
    return LevelHealth(
        "L2 test", retry=retry, log_interval=60, max_suspects=100, rebuild=lambda: level
    )


def test_a_call_in_flight_when_another_failed_does_not_mark_the_level_back() -> None:
    # Outside review: a read in flight when another thread's write failed returned
    # a moment later and marked the level back, that write's key unrepaired: the
    # level served the value it replaced. Marked back then and repaired at once, it
    # flapped where reads are answered and writes refused (Redis OOM: 215 returns,
    # 63 repairs a second). Only the probe's success marks it back.
    health = _health()
    _down_with(health, "k")
    health.probed()  # the in-flight call's success: it claimed no probe
    assert health.down_until != 0.0 and health.repairing()
    health.down_until = time.monotonic()  # RETRY_INTERVAL later
    assert health.claim_probe(time.monotonic())
    level = DeletingLevel()
    health.repair(level, inline=True)
    assert level.deleted == [["k"]] and health.down_until == 0.0


def test_a_repair_during_which_a_write_failed_leaves_the_level_down() -> None:
    # The repair's deletes answered, a write meanwhile was refused (Redis OOM with
    # noeviction answers DEL): marking the level back there made it flap.
    health = _health()
    _down_with(health, "k")
    level = DeletingLevel(during=lambda: _down_with(health, "other"))
    health.repair(level, inline=True)
    assert level.deleted == [["k"]]
    assert health.down_until > time.monotonic() and health.recoveries == 0
    assert health.pending("other") and not health.pending("k")


def test_writes_skipped_during_a_repair_are_repaired_at_once_after_it() -> None:
    # Outside review: a write that skipped the level while a repair ran stayed a
    # suspect until the timer, the level back and serving the value it replaced.
    # (Repairing in rounds until none was recorded kept it skipped under load.)
    level = DeletingLevel()
    health = _timed(level)
    try:
        _down_with(health, "k")
        level.during = lambda: health.missed(["other"])
        health.repair(level, inline=True)
        assert health.down_until == 0.0 and health.recoveries == 1
        assert health.pending("other")  # reads skip it meanwhile
        assert eventually(lambda: level.deleted == [["k"], ["other"]], 5.0)
        assert eventually(lambda: not health.repairing(), 5.0)
        assert health.recoveries == 1  # one outage, one return
    finally:
        health.stop()


def test_a_key_written_again_during_its_repair_is_deleted_again() -> None:
    # Outside review: the repair forgot a suspect whose mark was unchanged, and the
    # mark was the coherence epoch, always 0 but for a Redis lowest level. Deleted,
    # then written by another process, then skipped by this one's newer write: the
    # level kept the other process's older value.
    level = DeletingLevel()
    health = _timed(level)
    try:
        _down_with(health, "k")
        level.during = lambda: health.missed(["k"])
        health.repair(level, inline=True)
        assert health.pending("k")
        assert eventually(lambda: level.deleted == [["k"], ["k"]], 5.0)
    finally:
        health.stop()


def test_a_clear_missed_during_a_clear_repair_clears_again() -> None:
    clears: list[int] = []

    class Clearing(SlowLevel):
        def clear(self) -> None:
            clears.append(1)
            if len(clears) == 1:
                health.missed_clear()  # another thread's clear, skipped meanwhile

    level = Clearing()
    health = _timed(level)
    try:
        health.failed(ConnectionError("refused (test)"), "clear")
        health.missed_clear()
        health.repair(level, inline=True)
        assert health.pending("any key")
        assert eventually(lambda: len(clears) == 2 and not health.repairing(), 5.0)
    finally:
        health.stop()


def test_a_write_skipped_during_a_clear_repair_is_deleted_after_it() -> None:
    # The clear under way may have passed the key already: another process's write
    # since then would be served in place of this one's (skipped) newer write.
    class Clearing(DeletingLevel):
        def clear(self) -> None:
            if not self.deleted:
                health.missed(["k"])

    level = Clearing()
    health = _timed(level)
    try:
        health.failed(ConnectionError("refused (test)"), "clear")
        health.missed_clear()
        health.repair(level, inline=True)
        assert eventually(lambda: level.deleted == [["k"]], 5.0)
        assert eventually(lambda: not health.repairing(), 5.0)
    finally:
        health.stop()


def test_frequent_reachable_calls_never_postpone_the_background_repair() -> None:
    # Outside review: each reachable() cancelled the armed timer and re-armed it a
    # little later; calls more often than retry/4 (SQLite's change-log poll under
    # traffic) postponed the repair for good.
    level = DeletingLevel()
    health = LevelHealth(
        "L2 test", retry=0.4, log_interval=60, max_suspects=100, rebuild=lambda: level
    )
    try:
        health.suspects = {"k": (0, 1)}
        health._hinted = time.monotonic()  # it has just brought a repair forward
        deadline = time.monotonic() + 1.5
        while not level.deleted and time.monotonic() < deadline:
            health.reachable()
            time.sleep(0.02)
        assert level.deleted == [["k"]]
    finally:
        health.stop()


def _over_sqlite(make_cache: Any, tmp_path: Any) -> Any:
    """A MultiLevelCache (tests/backends/conftest.py's make_cache) over a SQLite file."""
    return make_cache(
        {
            "BACKEND": "django_smartcache.backends.SQLiteCache",
            "LOCATION": str(tmp_path / "l2.sqlite3"),
        }
    )


def test_reads_skip_a_level_for_the_keys_a_repair_has_pending(
    tmp_path: Any, make_cache: Any
) -> None:
    # The level is back and a key's repair still pending (a write failed while a
    # read was in flight; a write skipped it while a repair ran): with L1's copy
    # gone, get/get_many/has_key read the value that write replaced.
    cache = _over_sqlite(make_cache, tmp_path)
    cache.set("k", "old", None)
    cache.set("kept", "there", None)
    cache.set("n", 5, None)
    health = cache._health[1]
    health.stop()  # no background repair: the pending state stays for the reads
    final = cache.make_key("k")
    health.missed([final, cache.make_key("n")])  # writes skipped it; the level is up
    assert health.down_until == 0.0 and health.repairing()
    cache.levels[0].clear()  # L1's copy is gone (evicted, L1_MAX_TTL)
    assert cache.get("k") is None
    assert cache.get_many(["k", "kept"]) == {"kept": "there"}
    assert cache.has_key("k") is False
    with pytest.raises(ValueError):
        cache.incr("n")  # not 6: the level's 5 was replaced (reviewer: incr read it)
    health.repair(cache.levels[1])  # what the background repair would do
    assert not health.repairing() and cache.get("k") is None


def test_a_probe_answered_with_not_found_or_a_callers_error_marks_the_level_back(
    tmp_path: Any, make_cache: Any
) -> None:
    # Outside review: the probe's claim was spent by an incr the level answered "not
    # found" (a rate limiter's new keys) or a caller's error, which never reported
    # the answer: every RETRY_INTERVAL the same, the level skipped for good.
    cache = _over_sqlite(make_cache, tmp_path)
    cache.set("text", "not a number", None)
    health = cache._health[1]
    health.stop()
    for call, error in (
        (lambda: cache.incr("new-visitor"), ValueError),
        (lambda: cache.incr("text"), (TypeError, ValueError)),
    ):
        health.failed(ConnectionError("refused (test)"), "get")
        health.down_until = time.monotonic()  # its RETRY_INTERVAL over: a probe is due
        with pytest.raises(error):
            call()
        assert health.down_until == 0.0


def test_a_flapping_level_logs_is_back_once_per_failure_logged(caplog: Any) -> None:
    """A level whose reads answer while its writes are refused (Redis OOM under
    noeviction) came back and failed twice a second: one WARNING per interval, but an
    INFO "is back" at every return, telling the operator the opposite of what was
    happening (Redis probe: 23 in 10 s). Now one "is back" per failure logged."""
    import logging

    health = LevelHealth("L2 test", retry=60.0, log_interval=60.0, max_suspects=10)
    logger = "django_smartcache.multilevel"
    with caplog.at_level(logging.DEBUG, logger=logger):
        for _ in range(5):
            health.failed(OSError("OOM command not allowed"), "set")
            health.recovered()
    own = [r for r in caplog.records if r.name == logger]
    infos = [r for r in own if r.levelno == logging.INFO]
    warnings = [r for r in own if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert [r.getMessage() for r in infos] == [
        "smartcache level L2 test is back (0 keys repaired)"
    ]
    assert health.recoveries == 5
    health._last_log = float("-inf")  # the interval has passed
    with caplog.at_level(logging.DEBUG, logger=logger):
        caplog.clear()
        health.failed(OSError("OOM command not allowed"), "set")
        health.recovered()
    assert [r.levelno for r in caplog.records if r.name == logger] == [
        logging.WARNING,
        logging.INFO,
    ]
