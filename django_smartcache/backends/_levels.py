"""The levels of MultiLevelCache: raw values through L1, L2, ... (``multilevel.py``
adds tags, single flight and the async fast paths on top).

Reads try the levels in order and promote a lower-level hit into the levels above with
the remaining TTL (never extending it, and at most ``L1_MAX_TTL``); writes go to every
level, lowest (the shared, persistent one) first. A lower level that fails is skipped
for ``RETRY_INTERVAL`` and treated as a miss. Counts per level are kept for ``stats()``.
"""

from __future__ import annotations

import logging
import os
import pickle
import threading
import time
from collections.abc import Iterable
from functools import partial
from typing import Any

from asgiref.sync import sync_to_async
from django.core.cache.backends.base import DEFAULT_TIMEOUT, BaseCache
from django.core.cache.backends.locmem import LocMemCache

from .. import conf
from ..core.patterns import KeyPattern
from ..core.tags import Tagged
from . import _coherence, _level_config
from ._level_health import (
    FAULTS,
    LevelHealth,
    RepairDeferred,
    _caller_error,
    _no_permission,
)
from ._level_incr import level_incr
from ._level_patterns import check_matching, delete_matching
from ._level_tally import _Tally
from ._level_ttl import _NO_EXPIRY, _remaining_ttls
from .base import (
    SmartCacheKeyMixin,
    ThreadedIncrMixin,
    UnpicklableValueError,
    dumps,
    warn_if_on_event_loop,
)
from .sqlite import BaseSQLiteCache

logger = logging.getLogger("django_smartcache.multilevel")

_MISSING = object()
_monotonic = time.monotonic
_perf_ns = time.perf_counter_ns

#: L1 hits are counted exactly but timed one in this many (the other levels: every call).
L1_LATENCY_SAMPLE = 16

#: delete_pattern() publishes at most this many keys; beyond, it tells the other
#: processes to drop their whole L1 (one message instead of thousands).
PUBLISH_KEYS_MAX = 1000


#: What a level's own pickling raises for a value it cannot pickle (Django's RedisCache
#: and memcached: TypeError or PicklingError; a local object: AttributeError).
_PICKLING_ERRORS = (TypeError, AttributeError, pickle.PicklingError)


def _unpicklable(items: Iterable[tuple[str, Any]], exc: BaseException) -> None:
    """Raise :class:`UnpicklableValueError` (from ``exc``, a level's own error) if one
    of ``items``' values cannot be pickled; return if they all can (``exc`` was
    something else: the caller re-raises it). The lowest level is written first, so
    such an error leaves every level unchanged, as SmartCache and SQLiteCache do."""
    for key, value in items:
        try:
            dumps(key, value)
        except UnpicklableValueError as error:
            raise error from exc


class _Shared:
    """What the per-thread instances of one configuration share within a process."""

    def __init__(self, levels: int) -> None:
        self.health: list[LevelHealth] = []
        self.coherence: _coherence.Coherence | None = None
        self.tally = _Tally(levels)


_SHARED: dict[str, _Shared] = {}
_SHARED_LOCK = threading.Lock()


def _renew_locks_in_child() -> None:
    """In a forked child, a lock that a parent thread held at ``fork()`` would stay held
    forever: the shared state's locks start free (coherence renews its own)."""
    global _SHARED_LOCK
    _SHARED_LOCK = threading.Lock()
    for shared in _SHARED.values():
        shared.tally.forked()
        for health in shared.health:
            health.forked()


if hasattr(os, "register_at_fork"):  # POSIX; elsewhere there is no fork
    os.register_at_fork(after_in_child=_renew_locks_in_child)


class _MultiLevelBase(SmartCacheKeyMixin, ThreadedIncrMixin, BaseCache):
    """The levels themselves: raw values (a tag envelope is just a value here).

    :class:`MultiLevelCache` puts tags and single flight on top; ``TaggingMixin``
    reaches these methods through ``super()``.
    """

    def __init__(self, location: str, params: dict[str, Any]) -> None:
        options = _level_config.parse(location, params, _MultiLevelBase)
        # BaseCache reads OPTIONS for MAX_ENTRIES/CULL_FREQUENCY, which we do not use.
        super().__init__({**params, "OPTIONS": {}})
        self._location = _level_config.location_text(location)
        self._l1_max_ttl = options.l1_max_ttl
        self._interval = options.interval
        self._raise = options.raise_errors
        self._name = options.name
        alias = _level_config.alias_of(params)
        #: How warnings name this cache: its file, its alias (repr), or the hash of
        #: its configuration (a cache built directly, with LEVELS and no LOCATION).
        self._shown = self._location or (repr(alias) if alias else self._name)
        self._levels: list[BaseCache] = [
            _level_config.build_level(
                i, config, self._name, options.retry, alias, options.listed
            )
            for i, config in enumerate(options.configs)
        ]
        self._labels = [
            _level_config.label(i, config) for i, config in enumerate(options.configs)
        ]
        self._last = len(self._levels) - 1
        self._l1 = self._levels[0]
        #: A key every level can store: UTF-8 once a level keeps keys outside the
        #: process (refused before L1 holds what the shared level cannot).
        self._utf8_keys = any(
            not isinstance(level, LocMemCache) and _in_process_store(level) is None
            for level in self._levels
        )
        #: The lowest level says which values it refused (SQLiteCache: larger than
        #: MAX_SIZE, older value deleted): the levels above must not keep them either.
        self._reports_refusals = self._last > 0 and isinstance(
            self._levels[-1], BaseSQLiteCache
        )
        #: L1's store when L1 is a SmartCache: read on the event loop by the async twins.
        self._l1_store = _in_process_store(self._l1)
        self._l1_payload, self._loads = _fast_reader(self._l1, self._l1_store)
        #: L1 read for the tagging layer's bookkeeping: an access for L1's policy, not a
        #: hit or a miss in L1's own statistics (SmartCache); a counted read otherwise.
        self._l1_quiet = _quiet_reader(self._l1, self._l1_store)

        with _SHARED_LOCK:
            shared = _SHARED.get(self._name)
            if shared is None:
                # Shared only once complete: a refused channel (COHERENCE "redis"
                # without a URL) raises here for every instance, not just the first.
                shared = _Shared(len(self._levels))
                shared.coherence = _level_config.make_coherence(options, self._levels)
                shared.health = [
                    LevelHealth(
                        label,
                        options.retry,
                        options.log_interval,
                        options.max_suspects,
                        partial(
                            _level_config.build_level,
                            i,
                            config,
                            self._name,
                            options.retry,
                        ),
                    )
                    for i, (label, config) in enumerate(
                        zip(self._labels, options.configs, strict=True)
                    )
                ]
                if len(shared.health) > 1:
                    # What the channel hears of the lowest level decides its repair.
                    lowest = shared.health[-1]
                    co = shared.coherence
                    lowest.epoch = lambda: co.epoch
                    co.watch(lowest.heard, lowest.reachable, lowest.repairing)
                    for health in shared.health[1:]:
                        health.announce = partial(_announce_repair, co)
                _SHARED[self._name] = shared
        self._health = shared.health
        namespace = _namespace(self)
        for health in self._health[1:]:
            health.namespaces.add(namespace)
        self._co: _coherence.Coherence = shared.coherence  # type: ignore[assignment]
        # Start listening now rather than at the first read: fewer missed messages.
        # Not the SQLite change log: its first poll opens (makes) the file, and
        # Django's system checks build every alias, migrate as root too (the
        # workers then got a file they could not write). It keeps what changed
        # meanwhile, and L1 is empty until the first call, which polls first.
        if self._co.kind != "sqlite":
            self._poll_if_due()
        # Counters of this instance (one per thread), kept by the shared tally after
        # the instance is gone; stats() reports the tally's total.
        self._tally = shared.tally
        counts = self._tally.enlist(self)
        self._hits = counts.hits
        self._lat_ns = counts.lat_ns
        self._lat_calls = counts.lat_calls
        self._misses = counts.misses
        self._sample = L1_LATENCY_SAMPLE

    # -- timeouts --------------------------------------------------------------------
    def _timeouts(self, timeout: Any) -> tuple[float | None, float | None]:
        """(timeout for the lowest level, timeout for the levels above it); a NaN
        raises here (``_ttl``), before any level is written."""
        timeout = self._ttl(timeout)
        if timeout is None:
            return None, self._l1_max_ttl
        if timeout <= 0:
            return timeout, timeout
        return timeout, min(timeout, self._l1_max_ttl)

    def _upper_timeout(self, remaining: float | None) -> float:
        """Promotion timeout from a lower level's remaining TTL (None: unknown/forever)."""
        if remaining is None:
            return self._l1_max_ttl
        return min(remaining, self._l1_max_ttl)

    # -- error handling --------------------------------------------------------------
    def _usable(self, index: int) -> bool:
        health = self._health[index]
        if health.down_until == 0.0:
            return True
        if self._raise:
            health.probing()
        elif not health.claim_probe(_monotonic()):
            return False
        try:
            # A refusal (NOPERM) is worked round or abandoned there (see ``repair``);
            # a slow way round is the background repair's, and the level is skipped.
            # (RAISE_ERRORS: the caller waits for the whole repair, as it did: a
            # level skipped there would be a write silently not made.)
            health.repair(self._levels[index], inline=not self._raise)
        except RepairDeferred:
            return False
        except FAULTS as exc:
            health.failed(exc, "recovery")
            if self._raise:
                raise
            return False
        return True

    def _up(self, index: int) -> bool:
        """Whether level ``index`` counts as up, without claiming its probe (a message
        on its server's channel: a probe spent on one would mark nothing back)."""
        return self._health[index].down_until == 0.0

    def _ok(self, index: int) -> None:
        """A call to level ``index`` succeeded: if it was down, it is back when this
        call was the probe (``LevelHealth.probed``)."""
        health = self._health[index]
        if health.down_until != 0.0:
            health.probed()

    def _usable_for(self, index: int, key: str) -> bool:
        """``_usable``, and no repair is pending there for ``key``: the level may hold
        the value a write of it replaced (repaired at once; read, incremented or
        touched until then, it would serve or keep that value)."""
        if not self._usable(index):
            return False
        health = self._health[index]
        return not (health.repairing() and health.pending(key))

    def _fault(
        self,
        index: int,
        exc: BaseException,
        op: str,
        missed: list[str] | None = None,
        *,
        cleared: bool = False,
    ) -> None:
        """Level ``index`` raised ``exc`` during ``op``: a caller's error is raised,
        anything else marks the level down and remembers what it missed (``missed``
        keys, or a clear). A caller's error leaves no suspect: the level is up and
        refused the call, so the value it holds is still valid (made a suspect, a set
        whose timeout Redis refused would have a repair delete the key's old value)."""
        if _caller_error(exc):
            self._ok(index)  # it answered (a probe's answer marks it back)
            raise exc  # the level works; the call was wrong (incr of a non-integer)
        health = self._health[index]
        health.failed(exc, op)
        if cleared:
            # A clear() is the whole level (FLUSHDB, as clear() itself); another
            # (delete_pattern) only this cache's keys.
            health.missed_clear(
                f"a {op}() missed during the outage", everything=op == "clear"
            )
        elif missed:
            health.missed(missed)
        if self._raise:
            raise exc

    # -- reads -----------------------------------------------------------------------
    def get(
        self,
        key: Any,
        default: Any = None,
        version: Any = None,
        *,
        levels: int | None = None,
    ) -> Any:
        key = self._key(key, version)
        if levels is not None:
            self._depth(levels)  # a bad value raises whether or not L1 holds the key
        co = self._co
        if co.deadline <= _monotonic():
            co.refresh(self._levels[-1])
        self._sample -= 1
        payload = self._l1_payload(key) if self._sample else self._timed_l1(key)
        if payload is not None:
            self._hits[0] += 1
            return self._loads(payload)
        return self._get_below(key, default, self._depth(levels))

    def _poll_if_due(self) -> None:
        """Apply what other processes changed, when the coherence check is due.

        Called before L1 is read; ``get`` keeps these lines inline (its hit path).
        """
        co = self._co
        if co.deadline <= _monotonic():
            co.refresh(self._levels[-1])

    def _timed_l1(self, key: str) -> Any:
        """One L1 read in ``L1_LATENCY_SAMPLE`` is timed: a clock read costs ~10% of a hit."""
        self._sample = L1_LATENCY_SAMPLE
        start = _perf_ns()
        payload = self._l1_payload(key)
        self._lat_ns[0] += _perf_ns() - start
        self._lat_calls[0] += 1
        return payload

    def _depth(self, levels: int | None) -> int:
        if levels is None:
            return len(self._levels)
        if (
            isinstance(levels, bool)
            or not isinstance(levels, int)
            or not 1 <= levels <= len(self._levels)
        ):
            raise ValueError(
                f"levels must be an int from 1 to {len(self._levels)}, got {levels!r}"
            )
        return levels

    def _get_below(
        self, key: str, default: Any, depth: int, promote: bool = True
    ) -> Any:
        return self._get_below_at(key, default, depth, promote)[0]

    def _get_below_at(
        self,
        key: str,
        default: Any,
        depth: int,
        promote: bool = True,
        counted: bool = True,
    ) -> tuple[Any, int]:
        """``_get_below``, and the level that answered (0: none did); ``counted=False``
        counts neither a hit nor a miss (``has_key`` is not a read)."""
        generation, read_at = self._co.generation, _monotonic()
        for i in range(1, depth):
            if not self._usable_for(i, key):
                continue
            level = self._levels[i]
            start = _perf_ns()
            try:
                value = level.get(key, _MISSING)
            except FAULTS as exc:
                self._fault(i, exc, "get")
                continue
            finally:
                self._lat_ns[i] += _perf_ns() - start
                self._lat_calls[i] += 1
            self._ok(i)
            if value is not _MISSING:
                if counted:
                    self._hits[i] += 1
                if promote:
                    self._promote(i, {key: value}, generation, read_at)
                return value, i
        if counted:
            self._misses[0] += 1
        return default, 0

    def _promote(
        self, index: int, found: dict[str, Any], generation: int, read_at: float
    ) -> None:
        """Copy hits from level ``index`` into the levels above, never extending a TTL.

        A copy lives at most ``L1_MAX_TTL`` from ``read_at`` (``monotonic()`` before
        the read), not from the copy: a process frozen whole between the two (SIGSTOP,
        a paused container or VM) has its listener frozen too, so no invalidation
        stops the copy, which would serve a value replaced ~3 s before for up to
        14 ms after the resume (Redis). Past the bound, no copy."""
        ttls_at = _monotonic()  # the TTLs read are true at least until then
        if ttls_at - read_at >= self._l1_max_ttl:
            return
        try:
            remaining = _remaining_ttls(self._levels[index], list(found))
        except FAULTS as exc:
            if not _no_permission(exc):
                self._fault(index, exc, "ttl")
                return
            # The cache's own command (PTTL), not the caller's: raised, a NOPERM
            # would fail the caller's get() after the value was read. Promoted with
            # L1_MAX_TTL, as for a level that cannot tell its TTLs.
            self._health[index].refused(exc, "ttl")
            remaining = {}
        groups: dict[float, dict[str, Any]] = {}
        for key, value in found.items():
            ttl = remaining.get(key)
            if ttl is not None and ttl is not _NO_EXPIRY and ttl <= 0:
                continue  # expired while we read it
            timeout = self._upper_timeout(
                None if ttl is _NO_EXPIRY or ttl is None else ttl
            )
            groups.setdefault(timeout, {})[key] = value
        if not groups:
            return

        def write() -> None:
            # Measured again here: the TTLs' read (a Redis round trip) and the lock
            # are time a frozen process can spend too, and the lower copies' TTLs
            # ran on meanwhile (a copy must not outlive them).
            now = _monotonic()
            left = self._l1_max_ttl - (now - read_at)
            if left <= 0:
                return
            timeouts = {t: min(t - (now - ttls_at), left) for t in groups}
            for i in range(index - 1, -1, -1):
                if i and not self._usable(i):
                    continue
                for timeout, data in groups.items():
                    if timeouts[timeout] <= 0:
                        continue
                    try:
                        self._levels[i].set_many(data, timeouts[timeout])
                    except FAULTS as exc:
                        if _no_permission(exc):
                            # The cache's own write, not the caller's: skipped.
                            self._health[i].refused(exc, "promote")
                        else:
                            self._fault(i, exc, "promote")
                        break
                else:
                    if i:
                        self._ok(i)

        self._co.promote(generation, write)

    def get_many(
        self, keys: Iterable[Any], version: Any = None, *, levels: int | None = None
    ) -> dict[Any, Any]:
        return self._read_many(keys, version, levels)[0]

    def _finals(self, keys: Iterable[Any], version: Any) -> dict[str, Any]:
        """Final key -> the caller's key, for the batch reads."""
        by_final: dict[str, Any] = {}
        for key in keys:
            by_final[self._key(key, version)] = key
        return by_final

    def _read_many(
        self,
        keys: Iterable[Any],
        version: Any,
        levels: int | None,
        origin: dict[str, int] | None = None,
    ) -> tuple[dict[Any, Any], dict[str, Any]]:
        """``get_many``'s values by the caller's keys, and the final keys they map from
        (``origin``: see ``_read_levels``)."""
        depth = self._depth(levels)
        by_final = self._finals(keys, version)
        if not by_final:
            return {}, by_final
        self._poll_if_due()
        found = self._read_levels(list(by_final), {}, 0, depth, origin)
        return {by_final[k]: v for k, v in found.items()}, by_final

    def _recount_stale(self, level: int, reads: int = 1) -> None:
        """``reads`` hits at ``level`` were envelopes gone stale: the caller got a miss."""
        self._hits[level] -= reads
        self._misses[0] += reads

    def _read_levels(
        self,
        missing: list[str],
        found: dict[str, Any],
        first: int,
        depth: int,
        origin: dict[str, int] | None = None,
        counted: bool = True,
    ) -> dict[str, Any]:
        """Ask levels ``first`` to ``depth - 1`` in turn for the final keys ``missing``.

        Hits land in ``found`` (returned) and are promoted into the levels above;
        what no level has is counted as a miss (``counted=False``: neither is
        counted, for the tagging layer's own reads). ``origin``, when given, records
        the level each hit came from (see ``_recount_stale``).
        """
        warn_if_on_event_loop("MultiLevelCache", self._shown)
        generation, read_at = self._co.generation, _monotonic()
        for i in range(first, depth):
            if i and not self._usable(i):
                continue
            asked = missing
            if i and self._health[i].repairing():
                # Keys whose value there a write replaced: skipped until repaired.
                asked = [k for k in missing if not self._health[i].pending(k)]
                if not asked:
                    continue
            start = _perf_ns()
            try:
                if i == 0 and not counted:
                    got = self._l1_quiet(missing)
                else:
                    got = self._levels[i].get_many(asked)
            except FAULTS as exc:
                if i == 0:
                    raise
                self._fault(i, exc, "get_many")
                continue
            finally:
                self._lat_ns[i] += _perf_ns() - start
                self._lat_calls[i] += 1
            if i:
                self._ok(i)
            if got:
                if counted:
                    self._hits[i] += len(got)
                found.update(got)
                if origin is not None:
                    origin.update(dict.fromkeys(got, i))
                if i:
                    self._promote(i, got, generation, read_at)
                missing = [k for k in missing if k not in got]
                if not missing:
                    break
        if counted:
            self._misses[0] += len(missing)
        return found

    def has_key(
        self, key: Any, version: Any = None, *, levels: int | None = None
    ) -> bool:
        key = self._key(key, version)
        self._poll_if_due()
        for i in range(self._depth(levels)):
            if i and not self._usable_for(i, key):
                continue
            try:
                found = self._levels[i].has_key(key)
            except FAULTS as exc:
                if i == 0:
                    raise
                self._fault(i, exc, "has_key")
                continue
            if i:
                self._ok(i)
            if found:
                return True
        return False

    # -- writes ----------------------------------------------------------------------
    def _write(self, op: str, keys: list[str], depth: int, call: Any) -> Any:
        """Run ``call(level, index)`` lowest level first; return the lowest level's answer.

        A level that is down is skipped and remembers ``keys`` as suspect. The generation
        is bumped once the shared level is written, so concurrent promotions of the old
        value are dropped, and the other processes are told afterwards.
        """
        # (The first poll of a SQLite change log flushes L1: it must come before this
        # writes L1, and the cache does not poll when it is built.)
        warn_if_on_event_loop("MultiLevelCache", self._shown)
        self._poll_if_due()
        result: Any = _MISSING
        since = self._co.generation
        for i in range(depth - 1, -1, -1):
            if i == 0:
                if result is not _MISSING:
                    # A level below took the write: L1 follows it unless another
                    # writer's change of these keys was heard meanwhile (its shared
                    # write may be the later one: then L1 drops its copies).
                    l1 = self._levels[0]
                    self._co.write_above(
                        since,
                        keys,
                        partial(call, l1, 0),
                        partial(l1.delete_many, keys),
                    )
                    continue
                self._co.local_write(keys)
                answer = call(self._levels[0], 0)
            else:
                usable = (
                    self._usable_for(i, keys[0]) if op == "touch" else self._usable(i)
                )
                if not usable:
                    self._health[i].missed(keys)
                    continue
                try:
                    answer = call(self._levels[i], i)
                except FAULTS as exc:
                    self._fault(i, exc, op, keys)
                    continue
                self._ok(i)
                if op != "touch":
                    self._health[i].written(keys)
            if result is _MISSING:
                result = answer
        # Another process takes a write of the lowest level's value for a change newer
        # than its own outage writes, and spares the key its repair; a touch (the
        # expiry only) or a write that stopped above the lowest level is no such
        # change (sparing the key would keep the value an outage write replaced, a
        # touch even extending it). Both drop the other processes' L1 copies.
        self._publish(keys, op != "touch" and depth == len(self._levels))
        return result

    def _publish(self, keys: list[str], written: bool = True) -> None:
        if self._co.kind != "redis" or not self._up(self._last):
            return
        try:
            self._co.publish(keys, written)
        except FAULTS as exc:
            # The channel's failure, not the level's: the level took the write. Marking
            # it down made every later write skip a healthy Redis (a password in the
            # level's OPTIONS the channel lacked, an ACL without channel rights).
            self._co.publish_failed(exc)

    def set(
        self,
        key: Any,
        value: Any,
        timeout: Any = DEFAULT_TIMEOUT,
        version: Any = None,
        *,
        levels: int | None = None,
    ) -> None:
        key = self._key(key, version)
        low, high = self._timeouts(timeout)
        last = self._last
        if type(value) is Tagged:
            value = _to_level(value)
        reports = self._reports_refusals
        refused = False

        def call(level: BaseCache, i: int) -> None:
            nonlocal refused
            if i == last and reports:
                # set_many names a refused key (set would not): same statement below.
                refused = bool(level.set_many({key: value}, low))
            elif refused:
                # Kept above, the writer alone would serve it (up to L1_MAX_TTL) while
                # every other process misses: drop the older copy instead, as below.
                level.delete(key)
            else:
                level.set(key, value, low if i == last else high)

        try:
            self._write("set", [key], self._depth(levels), call)
        except _PICKLING_ERRORS as exc:
            _unpicklable([(key, value)], exc)
            raise

    def add(
        self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None
    ) -> bool:
        key = self._key(key, version)
        low, high = self._timeouts(timeout)
        self._poll_if_due()  # (see _write)
        if type(value) is Tagged:
            value = _to_level(value)
        # The lowest working level decides atomically; the levels above follow it.
        # A level below the decider, skipped or failing, is not made to forget the key
        # on recovery: what it holds then is older than this add (which would have
        # lost to it) or another process's later write (a lock taken once the level
        # was back: deleting it would let a third process take the lock too). An add
        # that timed out and that the level applies after all makes this process the
        # holder there too. Only the levels above the decider, which follow it, may be
        # stale.
        decided: bool | None = None
        since = self._co.generation  # (see _write: L1 follows unless key changed)
        for i in range(self._last, -1, -1):
            # (Not ``_usable_for``: a level with this key pending holds a value an
            # outage write replaced, and refusing the add then is the safe way for a
            # lock; deciding above it instead let another process take it there too.)
            if i and not self._usable(i):
                if decided is not None:
                    self._health[i].missed([key])
                continue
            level = self._levels[i]
            try:
                if decided is None:
                    if i == 0:
                        self._co.local_write([key])
                    try:
                        decided = level.add(
                            key, value, low if i == self._last else high
                        )
                    except _PICKLING_ERRORS as exc:
                        _unpicklable([(key, value)], exc)
                        raise
                    if decided and i:
                        # In-flight promotions must not land; the key is not marked
                        # changed by it (L1's own write below checks the others').
                        self._co.local_write([])
                        self._health[i].written([key])
                elif decided and i == 0:
                    # Another writer's change of the key heard since this add won
                    # below (it deleted and wrote it after): L1 drops its copy.
                    self._co.write_above(
                        since,
                        [key],
                        partial(level.set, key, value, high),
                        partial(level.delete, key),
                    )
                elif decided:
                    level.set(key, value, high)
                else:
                    level.delete(key)  # whatever it holds may be older than the winner
            except FAULTS as exc:
                if i == 0:
                    raise
                self._fault(i, exc, "add", None if decided is None else [key])
            else:
                if i:
                    self._ok(i)
        if decided:
            self._publish([key])
        return bool(decided)

    def touch(
        self, key: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None
    ) -> bool:
        key = self._key(key, version)
        low, high = self._timeouts(timeout)
        last = self._last
        answers: list[bool] = []

        def call(level: BaseCache, i: int) -> bool:
            if answers:
                # A copy above the lowest level that answered is dropped, never
                # re-armed: it lives L1_MAX_TTL from its read below, and re-armed it
                # would serve a value replaced since for as long as the key is touched
                # (4 s and counting, with COHERENCE "none", a level with no channel,
                # or a middle level that other machines' writes never reach). The
                # next read refills it with the new expiry. (Gone below:
                # it must not outlive that either.)
                level.delete(key)
                return answers[0]
            seconds = low if i == last else high
            answer = bool(level.touch(key, seconds))
            if not answer and seconds is None:
                # Django's RedisCache answers touch(key, None) with PERSIST's 0 for a
                # key that has no expiry already: there, the key is what tells.
                answer = bool(level.has_key(key))
            answers.append(answer)
            return answer

        return bool(self._write("touch", [key], len(self._levels), call))

    def delete(
        self, key: Any, version: Any = None, *, levels: int | None = None
    ) -> bool:
        key = self._key(key, version)
        answers: list[bool] = []

        def call(level: BaseCache, i: int) -> bool:
            answer = bool(level.delete(key))
            answers.append(answer)
            return answer

        self._write("delete", [key], self._depth(levels), call)
        # The lowest level that answered, as for touch and add: a copy above it (up to
        # the coherence delay old) made two processes' deletes of one key both True.
        return bool(answers) and answers[0]

    def incr(self, key: Any, delta: int = 1, version: Any = None) -> Any:
        key = self._key(key, version)
        self._poll_if_due()  # (see _write)
        # Atomic on the lowest working level; the copies above are dropped, not
        # rewritten, so they are refilled with that level's own TTL.
        for i in range(self._last, -1, -1):
            if i and not self._usable_for(i, key):
                continue
            try:
                if i == 0 and self._last:
                    value = self._incr_l1(key, delta)
                else:
                    value = level_incr(self._levels[i], key, delta)
            except (ValueError, TypeError) as exc:
                if i:
                    # "Not found", "not a number": answers (a probe's marks it back).
                    self._ok(i)
                    if isinstance(exc, ValueError):
                        # Gone from the level that counts (culled, evicted): a copy
                        # above must not go on answering get() for it meanwhile
                        # (nor a promotion in flight put it back: first the bump).
                        self._co.local_write([key])
                        self._drop_above(i, key)
                raise
            except FAULTS as exc:
                if i == 0:
                    raise
                self._fault(i, exc, "incr")
                continue
            if i:
                self._ok(i)
            for j in range(self._last, i, -1):
                self._health[j].missed([key])
            # The bump first (as _write does): a promotion in flight of the value
            # before the incr, landing after the drop, is refused.
            self._co.local_write([key])
            self._drop_above(i, key)
            self._publish([key])
            return value
        raise AssertionError("unreachable: level 0 is always tried")

    def _drop_above(self, i: int, key: str) -> None:
        """Delete ``key`` from the levels above level ``i`` (``incr``'s copies)."""
        for j in range(i - 1, -1, -1):
            if j and not self._usable(j):
                self._health[j].missed([key])
                continue
            try:
                self._levels[j].delete(key)
            except FAULTS as exc:
                self._fault(j, exc, "incr", [key])
            else:
                if j:
                    self._ok(j)

    def _incr_l1(self, key: str, delta: int) -> Any:
        """Every lower level is down: count in L1 (bounded by L1_MAX_TTL) rather than fail."""
        self._co.local_write([key])
        return self._l1.incr(key, delta)

    def set_many(
        self,
        data: dict[Any, Any],
        timeout: Any = DEFAULT_TIMEOUT,
        version: Any = None,
        *,
        levels: int | None = None,
    ) -> list[Any]:
        by_final = {self._key(k, version): k for k in data}
        finals = {
            final: _to_level(v) if type(v := data[key]) is Tagged else v
            for final, key in by_final.items()
        }
        if not finals:
            return []
        low, high = self._timeouts(timeout)
        last = self._last
        refused: set[str] = set()

        def call(level: BaseCache, i: int) -> list[Any]:
            if i == last:
                failed = level.set_many(finals, low) or []
                if self._reports_refusals:
                    refused.update(failed)
                return failed
            if not refused:
                return level.set_many(finals, high) or []
            # Values the shared level refused are not kept above it either (see set).
            kept = {k: v for k, v in finals.items() if k not in refused}
            failed = (level.set_many(kept, high) or []) if kept else []
            level.delete_many(list(refused))
            return failed

        try:
            failed = self._write("set_many", list(finals), self._depth(levels), call)
        except _PICKLING_ERRORS as exc:
            _unpicklable(finals.items(), exc)
            raise
        return [by_final.get(k, k) for k in failed or []]

    def delete_many(
        self, keys: Iterable[Any], version: Any = None, *, levels: int | None = None
    ) -> None:
        finals = [self._key(k, version) for k in keys]
        if not finals:
            return

        def call(level: BaseCache, i: int) -> None:
            level.delete_many(finals)

        self._write("delete_many", finals, self._depth(levels), call)

    def clear(self) -> None:
        for i in range(self._last, 0, -1):
            if not self._usable(i):
                self._health[i].missed_clear()
                continue
            try:
                self._levels[i].clear()
            except FAULTS as exc:
                self._fault(i, exc, "clear", cleared=True)
            else:
                self._ok(i)
                self._health[i].written(None)
        self._co.flush()
        if self._co.kind == "redis" and self._up(self._last):
            try:
                self._co.publish_clear(cleared=True)
            except FAULTS as exc:
                self._co.publish_failed(exc)

    def drop_copies(self) -> bool:
        """Drop L1's copies, in this process and (over Redis) in every other: after a
        lower level was changed past this cache (its own alias cleared, a ``FLUSHDB``),
        which the coherence channel did not carry. (Over SQLite the file's change log
        carries a clear already.) The other levels are left as they are.

        Whether the other processes are told: False with ``COHERENCE="none"``, or a
        Redis channel that is down or refused the message (their copies then live
        out ``L1_MAX_TTL``)."""
        self._co.flush()
        if self._co.kind == "sqlite":
            return True
        if self._co.kind != "redis" or not self._up(self._last):
            return False
        try:
            self._co.publish_clear()
        except FAULTS as exc:
            self._co.publish_failed(exc)
            return False
        return True

    def delete_pattern(
        self, pattern: str, *, regex: bool = False, version: Any = None
    ) -> int:
        """Delete the keys matching a glob (or ``regex=True``: a regex) from every level.

        ``KEY_PREFIX`` and ``version`` are honoured; tag version keys are kept, but a
        SQLiteCache level deletes those matching, and then so do the levels above it
        (the tagged entries read as misses).
        Lowest level first (Redis: ``SCAN``/``UNLINK`` in batches), then upwards; the
        other processes drop their L1 copies through the coherence channel. Returns
        the number of distinct live keys removed: the union of the keys each level
        says it deleted (a level that only gives a number, through its own
        ``delete_pattern()``, makes it at least that number). See ``docs/multilevel.md``.
        """
        kp = self.key_pattern(pattern, regex=regex, version=version)
        self._check_pattern(kp)  # a level that would refuse it: before any delete
        keep = kp.head + conf.get("TAG_KEY_PREFIX")
        removed: set[str] = set()
        counted = 0
        for i in range(self._last, -1, -1):
            if i == 0:
                self._co.local_write()
            elif not self._usable(i):
                # Which keys it would have lost is unknown: clear it on recovery.
                self._health[i].missed_clear(
                    "a delete_pattern() missed during the outage", everything=False
                )
                continue
            try:
                got = delete_matching(self._levels[i], kp, self._labels[i], keep)
                # A level below (SQLiteCache) deleted tag version keys: the levels
                # above drop their copies too, as the other processes' L1 do.
                tags = [key for key in removed if key.startswith(keep)]
                if tags:
                    self._levels[i].delete_many(tags)
            except FAULTS as exc:
                if i == 0:
                    raise
                self._fault(i, exc, "delete_pattern", cleared=True)
                continue
            if i:
                self._ok(i)
            if isinstance(got, set):
                removed |= got
            else:  # a number only: which keys they were (and overlaps) is unknown
                counted = max(counted, got)
        if self._co.kind == "redis" and self._up(self._last):
            try:
                if len(removed) > PUBLISH_KEYS_MAX:
                    self._co.publish_clear()
                elif removed:
                    self._co.publish(removed)
            except FAULTS as exc:
                self._co.publish_failed(exc)
        return max(counted, len(removed))

    def check_pattern(
        self, pattern: str, *, regex: bool = False, version: Any = None
    ) -> None:
        """Raise what ``delete_pattern()`` would raise for these arguments before it
        deletes anything, and delete nothing: ``ValueError`` (an invalid glob or
        regex, a ``KEY_FUNCTION`` that cannot be inverted) or ``NotImplementedError``
        (a level that cannot list its keys, or whose own ``delete_pattern()`` cannot
        be given this regex: a lookbehind). Every level is asked, a level that is down
        too. ``manage.py smartcache_invalidate`` asks it before it changes anything."""
        self._check_pattern(self.key_pattern(pattern, regex=regex, version=version))

    def _check_pattern(self, kp: KeyPattern) -> None:
        for level, label in zip(self._levels, self._labels, strict=True):
            check_matching(level, kp, label)

    async def adelete_pattern(
        self, pattern: str, *, regex: bool = False, version: Any = None
    ) -> int:
        return await sync_to_async(self.delete_pattern, thread_sensitive=True)(
            pattern, regex=regex, version=version
        )

    def close(self, **kwargs: Any) -> None:
        # Every level is closed even if one fails: Django calls this at the end of
        # each request, and an exception here stopped the levels (and the aliases)
        # after the failing one from closing. A level's failure is logged, not raised.
        for level in self._levels:
            try:
                level.close(**kwargs)
            except Exception as exc:  # noqa: BLE001 - closing: nothing to return
                logger.warning(
                    "smartcache level %s failed to close (%s: %s).",
                    type(level).__name__,
                    type(exc).__name__,
                    exc,
                )

    # -- introspection ---------------------------------------------------------------
    @property
    def levels(self) -> tuple[BaseCache, ...]:
        """The level backends, fastest first (they take final keys: see the module doc)."""
        return tuple(self._levels)

    def stats(self) -> dict[str, Any]:
        """Hits per level, misses, latency per level, errors: this process, every thread.

        Includes the instances already dropped (one per finished request thread under a
        threaded server): see :class:`_Tally`.
        """
        n = len(self._levels)
        total = self._tally.total()
        hits, lat, calls = total.hits, total.lat_ns, total.lat_calls
        misses = total.misses[0]
        now = _monotonic()
        levels = []
        for i in range(n):
            health = self._health[i]
            levels.append(
                {
                    "level": self._labels[i],
                    "hits": hits[i],
                    "timed_calls": calls[i],
                    "mean_latency_ns": lat[i] // calls[i] if calls[i] else None,
                    "errors": health.errors,
                    "down": health.down_until != 0.0 and now < health.down_until,
                    "recoveries": health.recoveries,
                    "pending_repairs": len(health.suspects)
                    + (1 if health.clear_pending else 0),
                    "last_error": health.last_error or None,
                }
            )
        total_hits = sum(hits)
        lookups = total_hits + misses
        return {
            "hits": total_hits,
            "misses": misses,
            "hit_rate": total_hits / lookups if lookups else None,
            "errors": sum(h.errors for h in self._health),
            "levels": levels,
            "coherence": self._co.snapshot(),
        }


def _namespace(cache: BaseCache) -> str:
    """How every key of ``cache`` starts in its levels, whatever its version: the
    common start of its heads for versions 1 and 2 (``"prefix:"`` with Django's key
    function); ``""`` (every key) for a key function that makes no such head."""
    try:
        heads = [cache.key_pattern("*", version=v).head for v in (1, 2)]  # type: ignore[attr-defined]
    except ValueError:
        return ""
    return os.path.commonprefix(heads)


def _announce_repair(co: _coherence.Coherence, keys: list[str] | None) -> None:
    """``LevelHealth.announce``: the other processes drop their L1 copies of what a
    repair deleted (a no-op but over Redis: SQLite's change log says so itself).
    Published as copies, not writes: a repair's delete is no newer value, so it spares
    no other process's suspect."""
    try:
        if keys is None:
            co.publish_clear()
        elif keys:
            co.publish(keys, written=False)
    except FAULTS as exc:
        co.publish_failed(exc)


def _fast_reader(l1: BaseCache, store: Any) -> tuple[Any, Any]:
    """(payload getter, loads) for the L1 hit path.

    With L1's ``store`` (a SmartCache), its serialized payload by final key (no second
    key pass); for any other backend, its ``get`` wrapped so that a miss is None.
    """
    if store is not None:
        from .smart import _loads

        return store.get, _loads

    def payload(key: str) -> Any:
        value = l1.get(key, _MISSING)
        return None if value is _MISSING else (value,)

    def loads(boxed: Any) -> Any:
        return boxed[0]

    return payload, loads


def _quiet_reader(l1: BaseCache, store: Any) -> Any:
    """``keys -> {key: value}`` of L1 for bookkeeping reads (see ``_l1_quiet``)."""
    if store is None:
        return l1.get_many
    from .smart import _loads

    def quiet(keys: Iterable[str]) -> dict[str, Any]:
        found = store.get_many(keys, counted=False)
        return {key: _loads(payload) for key, payload in found.items()}

    return quiet


def _in_process_store(l1: BaseCache) -> Any:
    """L1's ``MemoryStore`` when L1 is a SmartCache (reading it never waits on I/O)."""
    from .smart import SmartCache

    return getattr(l1, "_store", None) if isinstance(l1, SmartCache) else None


# -- tag envelopes as the levels store them --------------------------------------------


class _LevelTagged(Tagged):
    """A tag envelope as the levels store it: opaque to a level's own ``TaggingMixin``.

    A level that takes tags itself (SmartCache, SQLiteCache) checks ``type(v) is Tagged``
    against *its* version keys, which MultiLevelCache never writes (its version keys are
    made with its own prefix); this subclass keeps such a level from judging, or
    dropping, MultiLevelCache's envelopes. MultiLevelCache checks them itself.
    """

    __slots__ = ()


# Pickled into the shared levels (SQLite files, Redis) under the module it was first
# defined in; kept, so that processes of different versions (a rolling deploy) and
# entries written before the move all read each other's envelopes.
_LevelTagged.__module__ = "django_smartcache.backends.multilevel"


def _raw(value: Any) -> Any:
    return _from_level(value) if type(value) is _LevelTagged else value


def _to_level(env: Tagged) -> _LevelTagged:
    stored = _LevelTagged.__new__(_LevelTagged)
    stored.__setstate__(env.__getstate__())
    return stored


def _from_level(stored: _LevelTagged) -> Tagged:
    env = Tagged.__new__(Tagged)
    env.__setstate__(stored.__getstate__())
    return env
