"""Keep each process's L1 coherent with the shared lowest level of a MultiLevelCache.

One ``Coherence`` object exists per process and per MultiLevelCache configuration;
Django's per-thread backend instances share it. Every channel ends in the same place,
``invalidate(keys)`` / ``flush()``, which bump ``generation`` under ``lock``: a thread
that read a lower level before an invalidation compares generations before promoting,
so an old value read concurrently with an invalidation never lands in L1.

- ``NoCoherence``: a single process (or a lower level with no channel); only the
  local generation guard, and ``L1_MAX_TTL`` bounds staleness.
- ``SQLiteChangeLog``: polls SQLiteCache's change log at most every ``interval`` seconds,
  from the calling thread (a monotonic-clock comparison per call otherwise). The cursor
  is a ``ChangeCursor``: it names the file it counts in, so after the file at LOCATION
  was replaced (moved aside as damaged, deleted) the next poll answers "drop
  everything" and the cursor starts over in the new file's log.
- ``RedisPubSub``: a daemon listener thread per process subscribed to a channel; writers
  publish the keys they changed. On every (re)subscription L1 is flushed, because
  messages sent while disconnected are lost. Restarted lazily in a forked child.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from ._level_health import _PIPELINE_ERROR, _no_permission
from ._level_ttl import raw_redis_client
from .base import evictions_held


def _unknown_command(exc: BaseException) -> bool:
    """The server does not know the command: disabled or renamed by the operator
    (``rename-command SUBSCRIBE ""``), as much a standing answer as a NOPERM."""
    try:
        from redis.exceptions import ResponseError
    except ImportError:  # pragma: no cover - redis is an optional dependency
        return False
    if not isinstance(exc, ResponseError):
        return False
    text = str(exc).lower()
    # A pipeline's: "Command # 1 (PUBLISH ...) of pipeline caused error: unknown ..."
    text = text.partition(_PIPELINE_ERROR)[2] or text
    return text.startswith(("unknown command", "err unknown command"))


def _refused(exc: BaseException) -> bool:
    """A refusal the same call meets again at once (NOPERM, an unknown command):
    waited for, not retried 4 times a second."""
    return _no_permission(exc) or _unknown_command(exc)


logger = logging.getLogger("django_smartcache.multilevel")

_monotonic = time.monotonic


def _new_token() -> str:
    """Identifies one L1 (a configuration in a process) in published messages, so it
    skips its own (already applied) but not those of another configuration of the same
    process with an L1 of its own. Regenerated in a forked child."""
    return os.urandom(8).hex()


#: Message kinds on the Redis channel: one key, or "drop everything".
_KIND_KEY = "k"
_KIND_CLEAR = "c"
#: One key whose copies above the lowest level changed but whose value in the lowest
#: level did not (a ``touch``, a write with ``levels`` < the number of levels): drop
#: the L1 copy, and do not take it for another process's write of the lowest level,
#: which would spare the key this process's repair. Older readers, which know "k"
#: and "c" only, read it as "k": the same key, dropped from L1.
_KIND_COPY = "t"
#: Follows ``_KIND_CLEAR`` when the level itself was cleared (not only many keys
#: deleted): it subsumes a clear another process missed. Older readers see "c".
_CLEARED = "cleared"

_ALL_STATES: weakref.WeakSet[Coherence] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for state in list(_ALL_STATES):
        state.forked()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _never() -> bool:
    return False


#: The publisher's pool holds at most this many connections (fewer when the level's own
#: pool is bounded lower)...
PUBLISH_POOL_SIZE = 100
#: ...and a writer finding them all busy waits this long for one before its publish
#: counts as failed. A plain ConnectionPool refuses the 101st at once: redis-py 8 bounds
#: pools at 100 by default, and under ASGI each concurrent request's sync calls run in
#: a thread of their own, so a burst of 150 writers would drop 60-180 invalidations
#: (other processes then keeping their old L1 copies up to L1_MAX_TTL).
PUBLISH_POOL_WAIT = 1.0


def _publisher_pool_size(level_pool: Any) -> int:
    """The level pool's bound when it has a lower one than ours (its owner's choice of
    how many connections this process may open), else :data:`PUBLISH_POOL_SIZE`.
    Never the level's own when higher: before redis-py 8 it was 2**31, and a blocking
    pool fills a queue of that many slots."""
    bound = getattr(level_pool, "max_connections", None)
    if isinstance(bound, int) and not isinstance(bound, bool) and bound > 0:
        return min(bound, PUBLISH_POOL_SIZE)
    return PUBLISH_POOL_SIZE


#: Keys whose last change a process remembers (``Coherence.changed``), so that a write
#: racing another process's write of the same key is told apart from one that raced
#: an unrelated invalidation. Past this many it forgets them all at once.
CHANGED_KEYS_KEPT = 4096


class Coherence:
    """Local generation guard shared by the threads of one process."""

    kind = "none"

    def __init__(self, l1: Any) -> None:
        self.l1 = l1
        #: Held while L1 is written in step with the generation (``promote``,
        #: ``write_above``, ``invalidate``, ``flush``). The evictions of those L1
        #: writes are signalled after it is released (``evictions_held``), so an
        #: ``entry_evicted`` receiver may use the cache (the signal's promise).
        #: Re-entrant all the same (a plain lock would hang a receiver's write there).
        self.lock = threading.RLock()
        self.generation = 0
        #: Key -> the generation of its last change (an invalidation heard, a write of
        #: this process); a key not listed changed last at ``changed_floor`` at most.
        #: Bounded: past :data:`CHANGED_KEYS_KEPT` keys it is emptied and the floor
        #: raised, which only makes :meth:`write_above` drop a copy it could have kept.
        self.changed: dict[str, int] = {}
        self.changed_floor = 0
        #: ``refresh()`` runs when ``monotonic() >= deadline``; inf = never.
        self.deadline = float("inf")
        self.invalidations = 0
        self.flushes = 0
        self.errors = 0
        #: Counts what the channel heard from other processes (see ``LevelHealth``).
        self.epoch = 0
        #: ``heard(keys or None, epoch)``: another process changed (None: cleared) the
        #: lowest level's values (Redis only); ``reached()``: the channel reached the lowest level's server.
        self.heard: Callable[[list[str] | None, int], None] | None = None
        self.reached: Callable[[], None] | None = None
        #: ``repairing()``: the lowest level has a repair pending (its return is
        #: worth watching for).
        self.repairing: Callable[[], bool] = _never
        _ALL_STATES.add(self)

    def watch(
        self,
        heard: Callable[[list[str] | None, int], None],
        reached: Callable[[], None],
        repairing: Callable[[], bool] = _never,
    ) -> None:
        """Tell the lowest level's health what the channel learns about the level."""
        self.heard = heard
        self.reached = reached
        self.repairing = repairing

    def refresh(self, lowest: Any) -> None:
        """Bring L1 up to date with the shared level; ``lowest`` is the caller's instance."""
        self.deadline = float("inf")

    def forked(self) -> None:
        """Runs in a forked child: the lock may be held by a thread that no longer exists."""
        self.lock = threading.RLock()

    def _changing(self, keys: list[str]) -> None:
        """Bump the generation for a change of ``keys`` (lock held)."""
        self.generation += 1
        changed = self.changed
        if len(changed) + len(keys) > CHANGED_KEYS_KEPT:
            changed.clear()
            self.changed_floor = self.generation - 1
        generation = self.generation
        for key in keys:
            changed[key] = generation

    def _forget_changes(self) -> None:
        """Every key changed now (lock held): a clear, a flush."""
        self.generation += 1
        self.changed.clear()
        self.changed_floor = self.generation

    def invalidate(self, keys: Iterable[str]) -> None:
        keys = list(keys)
        if not keys:
            return
        with evictions_held(), self.lock:
            self._changing(keys)
            self.invalidations += len(keys)
            self.l1.delete_many(keys)

    def flush(self) -> None:
        with evictions_held(), self.lock:
            self._forget_changes()
            self.flushes += 1
            self.l1.clear()

    def local_write(self, keys: list[str] | None = None) -> None:
        """This process changed the shared level (``keys``; None: any key; ``[]``:
        none to mark, a bump only): in-flight promotions must not land."""
        with self.lock:
            if keys is None:
                self._forget_changes()
            else:
                self._changing(keys)

    def write_above(
        self,
        since: int,
        keys: list[str],
        write: Callable[[], object],
        drop: Callable[[], object],
    ) -> bool:
        """After this process wrote ``keys`` to the shared level: ``write`` them into
        L1, unless one of them changed since ``since`` (the generation before that
        write): another process's write heard meanwhile, or another thread's. Its
        shared write may have landed after ours, and L1 would keep the value the
        shared level no longer holds until ``L1_MAX_TTL``: ``drop`` the copies
        instead (the next read takes the shared level's)."""
        with evictions_held(), self.lock:
            changed = self.changed_floor > since or any(
                self.changed.get(key, 0) > since for key in keys
            )
            self._changing(keys)
            if changed:
                drop()
                return False
            write()
            return True

    def promote(self, generation: int, write: Callable[[], object]) -> bool:
        """Run ``write`` (fill L1) unless an invalidation happened since ``generation``."""
        with evictions_held(), self.lock:
            if self.generation != generation:
                return False
            write()
            return True

    def publish(self, keys: Iterable[str], written: bool = True) -> None:
        """Tell the other processes that ``keys`` changed (no-op without a broadcast);
        ``written``: their values in the lowest level, not only their expiry or the
        levels above."""

    def publish_failed(self, exc: BaseException) -> None:
        """A publish raised: the other processes keep their copies until L1_MAX_TTL."""
        self.errors += 1

    def publish_clear(self, cleared: bool = False) -> None:
        """Tell the other processes to drop their whole L1 (``cleared``: the level was
        cleared too)."""

    def stop(self) -> None:
        """Release threads and connections (tests; a process normally keeps them)."""

    def snapshot(self) -> dict[str, Any]:
        return {
            "channel": self.kind,
            "invalidations_applied": self.invalidations,
            "flushes": self.flushes,
            "errors": self.errors,
        }


NoCoherence = Coherence


class SQLiteChangeLog(Coherence):
    """Poll ``changes_since(cursor)`` of a SQLiteCache level, at most every ``interval``."""

    kind = "sqlite"

    def __init__(self, l1: Any, lowest: Any, interval: float) -> None:
        super().__init__(l1)
        self.interval = interval
        self._poll_lock = threading.Lock()
        self.cursor: int | None = None
        self.deadline = 0.0
        self.last_error: BaseException | None = None

    def refresh(self, lowest: Any) -> None:
        """Poll, the deadline passed (the caller checked). One thread polls; the others
        serve L1 meanwhile (made to wait, every L1 hit waited out the poll's share of
        each interval, and polls slower than the interval ran back to back in every
        waiting thread: 4 threads, 60 ms polls, 194 gets in 3 s instead of 9,557). The
        next deadline counts from the poll's start, so L1 answers at most the interval
        plus one poll after another process's change (from its end, up to two polls
        more: 72-120 ms with the 50 ms default, polls of up to 19 ms under load)."""
        if not self._poll_lock.acquire(blocking=False):
            return
        try:
            started = _monotonic()
            if started < self.deadline:
                return
            try:
                self._poll(lowest)
            finally:
                self.deadline = started + self.interval
        finally:
            self._poll_lock.release()

    def _poll(self, lowest: Any) -> None:
        try:
            if self.cursor is None:
                cursor = lowest.change_cursor()
                self.flush()  # whatever L1 holds predates the cursor
                self.cursor = cursor
                self._reached()
                return
            # This process's own writes went through its L1: not dropped from it.
            cursor, keys = lowest.changes_since(self.cursor, skip_own=True)
        except (OSError, sqlite3.Error) as exc:
            # The level is down: nobody can write it either, and L1_MAX_TTL bounds
            # what L1 keeps serving meanwhile.
            self.errors += 1
            self.last_error = exc
            return
        if keys is None:
            self.flush()  # a clear, or too much: not known to be a clear
        else:
            # Not ``heard``: the log names the key of a touch (an UPDATE of the expiry
            # only) as of a write, and a touch leaves the value an outage write of
            # this process replaced, which its repair must delete (a touch taken for
            # a write spared it, even extended). Another process's write is deleted
            # by the repair (a miss), which runs at this poll (``reached``).
            self.invalidate(keys)
        self.cursor = cursor
        self._reached()

    def _reached(self) -> None:
        if self.reached is not None:
            self.reached()

    def forked(self) -> None:
        super().forked()
        self._poll_lock = threading.Lock()
        self.deadline = 0.0


class RedisPubSub(Coherence):
    """Broadcast changed keys on a Redis channel; a listener thread applies the others'."""

    kind = "redis"

    #: How often the hot path checks that the listener thread is alive (seconds).
    CHECK_INTERVAL = 0.5

    #: Silence on the subscription after which the listener sends a PING...
    PING_AFTER = 10.0
    #: ...and how long it waits for the answer before it reconnects: a connection
    #: dropped without a FIN or RST (a NAT timeout, a partition) raises nothing, and
    #: the listener sat on it for good, deaf to every invalidation.
    PONG_WITHIN = 5.0
    #: While this process has a repair of the level pending, the listener PINGs after
    #: this much silence (a message heard says as much, see ``_handle``): the answer
    #: tells that the server is back (a Redis that hung,
    #: SIGSTOP or a stalled disk, keeps the subscription, so no new one says so), and
    #: the repair runs then rather than at its timer, up to ``RETRY_INTERVAL`` later,
    #: while the other processes read the values the outage writes replaced.
    REPAIR_PING_AFTER = 0.25

    #: A channel the Redis user may not use (NOPERM: Redis 7's ``resetchannels``
    #: default, ``-@pubsub``) is tried again after 1 s, then 2, 4, ... up to 60 s, both
    #: by the listener and by the publisher (which skips publishing meanwhile), else
    #: the listener would reconnect, AUTH and SUBSCRIBE 4 times a second for good, and
    #: every write's refused publish count an error (~90 a second).
    DENIED_FIRST = 1.0
    DENIED_MAX = 60.0
    #: A subscription that held this long resets the listener's wait (a refusal
    #: after a shorter one keeps doubling it, with no new ERROR).
    DENIED_STABLE = 60.0

    def __init__(
        self,
        l1: Any,
        url: str,
        channel: str,
        options: dict[str, Any],
        log_interval: float = 60.0,
        level: Any = None,
        on_level_server: bool = False,
    ) -> None:
        super().__init__(l1)
        self.log_interval = log_interval
        #: The Redis level whose connection settings (credentials, socket, TLS) the
        #: channel uses; None when REDIS_URL names the server.
        self.level = level
        #: The channel's server is the lowest level's (its own client, or a REDIS_URL
        #: naming it): a subscription or a PONG says the level answers (``reached``),
        #: with a REDIS_URL too: else another process reads a replaced value for a
        #: full RETRY_INTERVAL after an outage.
        self.on_level_server = level is not None or on_level_server
        self.url = url
        self.channel = channel
        self.options = options
        self.deadline = 0.0
        self.connected = False
        self.reconnects = 0
        #: A forked child's L1 holds what the parent cached: flushed at its first call
        #: (``refresh``), not when its listener subscribes, some milliseconds later.
        self._inherited = False
        self._publisher: Any = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._start_lock = threading.Lock()
        self._last_log = float("-inf")
        self.token = _new_token()
        #: Refused with NOPERM: the listener's next wait, the publisher's next wait
        #: and the time until which it skips publishing (0.0: permitted).
        self._listen_denied = 0.0
        self._publish_denied = 0.0
        self._publish_denied_until = 0.0
        #: SUBSCRIBE is refused now (``_listen_denied`` is the wait, kept until a
        #: subscription is stable); when the last subscription was confirmed.
        self._listen_refused = False
        self._subscribed_at = 0.0
        #: The user may not PING: the keep-alive is a SUBSCRIBE to the channel again,
        #: which the server answers too (see ``_listen``).
        self._ping_refused = False

    # -- hot path -----------------------------------------------------------------
    def refresh(self, lowest: Any) -> None:
        if self._inherited:
            # The parent's copies: nobody will tell this process of the changes made
            # before its listener subscribes (gunicorn --preload, a parent that cached
            # at import: they were read up to 56 ms after another worker's set).
            self.flush()
            self._inherited = False  # (after: another thread's first call flushes too)
        thread = self._thread
        if thread is None or not thread.is_alive():
            self._start()
        self.deadline = _monotonic() + self.CHECK_INTERVAL

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stopping.clear()
            self._thread = threading.Thread(
                target=self._listen,
                name=f"smartcache-coherence:{self.channel}",
                daemon=True,
            )
            self._thread.start()

    def forked(self) -> None:
        super().forked()
        self.token = _new_token()
        self._start_lock = threading.Lock()
        self._thread = None
        self._publisher = None
        self.connected = False
        self.deadline = 0.0
        self._ping_refused = False
        self._inherited = True

    def stop(self) -> None:
        self._stopping.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout=5)
        self._thread = None

    # -- publishing ---------------------------------------------------------------
    def _new_client(self, **overrides: Any) -> Any:
        """A client of the channel's server: the level's connection settings when it
        is the level's (a password or username in its OPTIONS, a unix socket, TLS),
        else ``REDIS_URL``'s; ``options`` fill in what they leave unset."""
        import redis

        raw = (
            raw_redis_client(self.level, write=True) if self.level is not None else None
        )
        pool = getattr(raw, "connection_pool", None)
        kwargs = getattr(pool, "connection_kwargs", None)
        size = _publisher_pool_size(pool)
        if isinstance(kwargs, dict):
            merged = {**self.options, **kwargs, **overrides}
            if "path" in merged:  # a unix socket: no TCP keepalive to set
                merged.pop("socket_keepalive", None)
            return redis.Redis(
                connection_pool=redis.BlockingConnectionPool(
                    connection_class=pool.connection_class,
                    max_connections=size,
                    timeout=PUBLISH_POOL_WAIT,
                    **merged,
                )
            )
        if self.url.startswith("unix://"):
            overrides.pop("socket_keepalive", None)
        return redis.Redis(
            connection_pool=redis.BlockingConnectionPool.from_url(
                self.url,
                max_connections=size,
                timeout=PUBLISH_POOL_WAIT,
                **{**self.options, **overrides},
            )
        )

    def _client(self) -> Any:
        if self._publisher is None:
            self._publisher = self._new_client()
        return self._publisher

    def _failed(self, message: str, exc: BaseException) -> None:
        """Count a channel error; warn (``message`` % channel, error) once per interval."""
        self.errors += 1
        now = _monotonic()
        if now - self._last_log >= self.log_interval:
            self._last_log = now
            logger.warning(message, self.channel, exc)

    def publish_failed(self, exc: BaseException) -> None:
        if _refused(exc):
            # Counted once per wait, not per write: publishing is skipped meanwhile.
            self.errors += 1
            first = not self._publish_denied
            self._publish_denied = self._next_wait(self._publish_denied)
            self._publish_denied_until = _monotonic() + self._publish_denied
            if first:
                self._log_denied("publish on", exc)
            return
        self._failed(
            "smartcache coherence channel %r: publishing failed (%s); other "
            "processes keep their L1 copies up to L1_MAX_TTL",
            exc,
        )

    def _next_wait(self, wait: float) -> float:
        return min(wait * 2, self.DENIED_MAX) if wait else self.DENIED_FIRST

    def _log_denied(self, what: str, exc: BaseException) -> None:
        if _unknown_command(exc):
            logger.error(
                "smartcache coherence channel %r: the Redis server does not know the "
                "command to %s it (%s: disabled or renamed by rename-command?); the "
                "L1 copies of this cache are now kept coherent by L1_MAX_TTL only, in "
                "every process. Give the server back PUBLISH and SUBSCRIBE, or set "
                "COHERENCE to 'none' to say so; tried again after 1 s, then up to "
                "every %s s",
                self.channel,
                what,
                exc,
                self.DENIED_MAX,
            )
            return
        logger.error(
            "smartcache coherence channel %r: the Redis user has no permission to %s "
            "it (%s); the L1 copies of this cache are now kept coherent by "
            "L1_MAX_TTL only, in every process. Grant the user the channel (ACL "
            "SETUSER <user> &%s, Redis 7 grants none by default) or set CHANNEL to "
            "one it may use; tried again after 1 s, then up to every %s s",
            self.channel,
            what,
            exc,
            self.channel,
            self.DENIED_MAX,
        )

    def _permitted(self, what: str) -> None:
        logger.info(
            "smartcache coherence channel %r: permitted to %s it again",
            self.channel,
            what,
        )

    def publish(self, keys: Iterable[str], written: bool = True) -> None:
        if self._publish_denied and _monotonic() < self._publish_denied_until:
            return  # refused (NOPERM): L1_MAX_TTL bounds the others' copies
        prefix = self.token + (_KIND_KEY if written else _KIND_COPY)
        pipe = self._client().pipeline(transaction=False)
        for key in keys:
            pipe.publish(self.channel, prefix + key)
        pipe.execute()
        self._published()

    def publish_clear(self, cleared: bool = False) -> None:
        if self._publish_denied and _monotonic() < self._publish_denied_until:
            return
        message = self.token + _KIND_CLEAR + (_CLEARED if cleared else "")
        self._client().publish(self.channel, message)
        self._published()

    def _published(self) -> None:
        if self._publish_denied:
            self._publish_denied = 0.0
            self._permitted("publish on")

    # -- listener thread ----------------------------------------------------------
    def _listen(self) -> None:
        import redis

        backoff = 0.05
        while not self._stopping.is_set():
            pubsub = None
            # What the last keep-alive was ("ping", "subscribe", "": none yet), and
            # whether this connection's subscription was confirmed: a NOPERM answers
            # the SUBSCRIBE only before that, or a keep-alive SUBSCRIBE.
            probe, confirmed = "", False
            try:
                client = self._new_client(socket_timeout=None, socket_keepalive=True)
                pubsub = client.pubsub()
                pubsub.subscribe(self.channel)
                heard, pinged = _monotonic(), 0.0
                while not self._stopping.is_set():
                    try:
                        message = pubsub.get_message(timeout=0.5)
                    except redis.ResponseError as exc:
                        if not (confirmed and probe == "ping" and _refused(exc)):
                            raise
                        # The user may not PING (an ACL without @connection), or the
                        # server renamed it: not a refused channel. Kept alive by a
                        # SUBSCRIBE again from now on.
                        self._ping_refused = True
                        logger.warning(
                            "smartcache coherence channel %r: PING refused (%s); "
                            "the listener checks its connection with a SUBSCRIBE "
                            "to the channel again instead",
                            self.channel,
                            exc,
                        )
                        message = {"type": "pong"}  # the server answered
                    now = _monotonic()
                    if message is not None:
                        heard, pinged = now, 0.0
                        if message.get("type") == "subscribe":
                            if confirmed:
                                message = {"type": "pong"}  # a keep-alive's answer
                            confirmed = True
                        self._handle(message)
                        backoff = 0.05
                    elif pinged:
                        if now - pinged > self.PONG_WITHIN:
                            raise redis.ConnectionError(
                                f"no answer to a PING in {self.PONG_WITHIN} s"
                            )
                    elif now - heard > self.PING_AFTER or (
                        now - heard > self.REPAIR_PING_AFTER and self.repairing()
                    ):
                        if self._ping_refused:
                            probe = "subscribe"
                            pubsub.subscribe(self.channel)
                        else:
                            probe = "ping"
                            pubsub.ping()
                        pinged = now
                    if (
                        self._listen_denied
                        and confirmed
                        and now - self._subscribed_at >= self.DENIED_STABLE
                    ):
                        self._listen_denied = 0.0  # stable: a refusal is news again
            except (redis.RedisError, OSError) as exc:
                self.connected = False
                if _refused(exc):
                    # SUBSCRIBE refused, not lost: the same answer 4 times a second
                    # helps no one. Counted and waited for, logged once (ERROR) until
                    # a subscription has held for DENIED_STABLE.
                    self.errors += 1
                    if not self._listen_denied:
                        self._log_denied("subscribe to", exc)
                    self._listen_refused = True
                    self._listen_denied = self._next_wait(self._listen_denied)
                    self._stopping.wait(self._listen_denied)
                    continue
                self._failed(
                    "smartcache coherence channel %r lost (%s); L1 entries are "
                    "bounded by L1_MAX_TTL until it reconnects",
                    exc,
                )
                self._stopping.wait(backoff)
                # At most 0.25 s: the level's return is noticed that soon, and this
                # process's repair of it follows (``reached``).
                backoff = min(backoff * 2, 0.25)
            finally:
                self.connected = False
                if pubsub is not None:
                    with contextlib.suppress(redis.RedisError, OSError):
                        pubsub.close()

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "subscribe":
            # Messages sent while we were not subscribed are lost: start from empty.
            self.flush()
            self.connected = True
            self._subscribed_at = _monotonic()
            if self._listen_refused:
                self._listen_refused = False
                self._permitted("subscribe to")
            self.reconnects += 1
            if self.on_level_server and self.reached is not None:
                self.reached()  # the level's own server answers: repair it now
            return
        if kind != "message":
            if kind == "pong" and self.on_level_server and self.reached is not None:
                self.reached()  # the level's server answers (see REPAIR_PING_AFTER)
            return
        data = message["data"]
        if isinstance(data, bytes):
            data = data.decode("utf-8", "surrogateescape")
        if data[:16] == self.token:
            return  # our own: it may be one sent before the outage, delivered late
        self.epoch += 1
        heard = self.heard
        if data[16:17] == _KIND_CLEAR:
            self.flush()
            if heard is not None and data[17:] == _CLEARED:
                heard(None, self.epoch)
        else:
            key = data[17:]
            self.invalidate((key,))
            if heard is not None and data[16:17] != _KIND_COPY:
                heard([key], self.epoch)
        if self.on_level_server and self.reached is not None:
            # Another process's message, just delivered, says the server answers as
            # well as a PONG: a channel kept busy by other processes' writes is never
            # silent long enough for the PING, and the repair then waited for its
            # timer. After ``heard``: the write it names is no longer a suspect, or
            # the repair this brings forward could delete it. (Cheap: ``reachable``
            # returns at once without a repair pending, and brings one forward at
            # most 4 times per RETRY_INTERVAL.)
            self.reached()

    def snapshot(self) -> dict[str, Any]:
        snap = super().snapshot()
        snap.update(
            connected=self.connected,
            subscriptions=self.reconnects,
            permission_denied=bool(self._listen_refused or self._publish_denied),
        )
        return snap
