"""MemoryStore: keys to serialized payloads under a byte (and/or entry) budget, with TTLs.

The store never looks inside a payload: callers serialize (the Django backend pickles),
which gives both isolation from later mutation and an exact size for the budget. Every
operation is O(1) amortized: a dict lookup, O(1) policy bookkeeping, and an expiry sweep
that runs only when a bucket of expiry times is due and takes a bounded batch.

An optional ``on_evict`` listener hears of every entry that leaves without a caller
deleting or overwriting it, with its cause; see :class:`MemoryStore`.
"""

from __future__ import annotations

import gc
import heapq
import logging
import sys
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sized
from itertools import islice
from typing import Any

from .expiry import INF, ExpiryBuckets
from .policy import DEFAULT_POLICY, make_policy
from .sizing import ENTRY_OVERHEAD, KEY_ALLOWANCE, TAG_OVERHEAD, long_key_excess
from .stats import Stats
from .tags import TagIndex

logger = logging.getLogger("django_smartcache")

# An entry is a small list, mutated in place: [payload, expires_at, size, hits, tags,
# reads]. ``expires_at`` is ``inf`` for "never"; ``size`` is the accounted bytes; ``tags``
# is the tuple of tag ids the entry is indexed under in ``_tag_index`` (None: untagged);
# ``hits`` counts every read (statistics); ``reads`` is the eviction policy's 2-bit read
# counter (S3-FIFO's, kept here so that a hit touches no structure of the policy's:
# ``S3FIFOPolicy.attach``), bumped up to 3 on each hit. The hot paths index the entry
# with literals (0..5, named in comments): module-level constants cost a global lookup.

#: Where an entry keeps the policy's read counter (see above).
READS_SLOT = 5

#: At most this many expired keys are reclaimed per call by the incremental sweeper.
SWEEP_BATCH = 32

#: At most this many queued keys of invalidated tags are purged per write. Reads never
#: purge (a removal costs ~1-2 us, which would multiply a get-hit); a write over
#: budget purges invalidated entries before the policy evicts any live one.
PURGE_BATCH = 8
#: At most this many keys of orphaned tags (``tag_keys``) are removed per write.
ORPHAN_BATCH = 32
#: A tag's key leaves this long after its tag was orphaned: a writer that has just
#: read the version (``set(..., tags=...)`` after a delete) stores its entry first.
ORPHAN_GRACE = 1.0
#: ...or this long after a bookkeeping read of it since (``counted=False``): the
#: version a computation read before it began (an entry's expiry, then get_or_set).
ORPHAN_HOLD = 60.0

#: A key refused as too large is logged at WARNING at most once in this many seconds
#: (at DEBUG otherwise): a multi-level cache promoting a large L2 value, or a
#: memoized function returning one, retries the write on every read.
REFUSAL_LOG_INTERVAL = 60.0
#: The keys whose refusal was logged are remembered up to this many (oldest forgotten).
REFUSALS_REMEMBERED = 1024
#: Ends a refusal's WARNING: its repeats go to DEBUG.
REPEATS_AT_DEBUG = f" (again within {REFUSAL_LOG_INTERVAL:.0f} s: logged at DEBUG)"


class RefusalLog:
    """The keys whose refusal was logged at WARNING in the last
    :data:`REFUSAL_LOG_INTERVAL` seconds (up to :data:`REFUSALS_REMEMBERED`, the oldest
    forgotten): a repeat within it is logged at DEBUG. Not locked: its owner's lock."""

    __slots__ = ("_logged",)

    def __init__(self) -> None:
        self._logged: OrderedDict[Hashable, float] = OrderedDict()

    def quiet(self, key: Hashable, now: float) -> bool:
        """Whether ``key``'s refusal at ``now`` is a repeat (DEBUG); else noted."""
        logged = self._logged
        last = logged.get(key)
        if last is not None and now - last < REFUSAL_LOG_INTERVAL:
            return True
        logged[key] = now
        logged.move_to_end(key)
        if len(logged) > REFUSALS_REMEMBERED:
            logged.popitem(last=False)
        return False


_UNLIMITED = sys.maxsize

#: A batch method (``get_many``, ``set_many``, ``delete_many``) takes the lock once per
#: this many keys, not once for the whole batch: a 200,000-key ``set_many`` held it for
#: a second, and every other thread (an event loop's async calls, which run inline)
#: waited that long. Django promises no atomicity for batches (LocMemCache locks per key).
HOLD_BATCH = 512


def _batches(items: Iterable[Any]) -> Iterable[Iterable[Any]]:
    """``items`` in batches of at most :data:`HOLD_BATCH`; a sized collection that
    small (the usual dict of made keys) as is, with no copy and no pause."""
    if isinstance(items, Sized) and len(items) <= HOLD_BATCH:
        return (items,)
    return _sliced(iter(items))


def _sliced(items: Iterator[Any]) -> Iterator[list[Any]]:
    batch = list(islice(items, HOLD_BATCH))
    while batch:
        yield batch
        batch = list(islice(items, HOLD_BATCH))
        if batch:
            # Between two critical sections: let a thread waiting for the lock take
            # it (a lock is not handed over; this thread would take it straight back).
            time.sleep(0)


#: The causes an eviction is reported with; ``stats()`` counts each as ``evictions_<cause>``.
EVICTION_CAUSES = ("capacity", "expired", "invalidated")

#: Receives a batch of ``(key, cause)`` evictions, called with the store's lock released.
EvictionListener = Callable[[list[tuple[Hashable, str]]], None]


#: Evictions for the entry limit between two checks that the policy's byte capacity
#: still fits the entries held (``MemoryStore._fit_policy``).
FIT_EVERY = 32


def _capacity(max_bytes: int | None, max_entries: int | None) -> int:
    """The policy's capacity: bytes under a byte budget, else entries (weight 1 each)."""
    if max_bytes is not None:
        return max_bytes
    if max_entries is not None:
        return max_entries
    raise ValueError("a store needs max_bytes, max_entries, or both")


_CONTAINERS = (dict, set, list, deque)
#: Objects freed per C call by :func:`_release`: about a millisecond's work.
_FREE_CHUNK = 4096
#: A store of at most this many entries is freed at once by ``clear()``: a few
#: milliseconds' stall, cheaper for the caller than :func:`_release`.
CLEAR_AT_ONCE = 65536


def _release(data: dict[Hashable, list[Any]], rest: tuple[Any, ...]) -> None:
    """Free a cleared store's ``data`` and the ``rest`` of its structures without
    holding the GIL for long. Freeing a large container is one C call that holds it
    throughout (a store of 1M entries: 76-110 ms in which no other thread, nor an
    event loop, ran). Here the entries and keys are moved to lists, the containers
    emptied (each one C pass: ``data`` and a dict or set only drop references the
    lists keep, 13-25 ms at 1M; a policy's OrderedDict also frees its 1M nodes, 15-56
    ms: the longest stall left), then the lists are cut from the end a chunk at a
    time: other threads run in between. It costs the caller 1.3-1.8x the one-call
    free (measured at 1M entries: 133-220 ms vs 76-105 ms, more when other threads
    take their turns), hence only above ``CLEAR_AT_ONCE`` entries."""
    entries, keys = list(data.values()), list(data)
    data.clear()
    stack: list[Any] = list(rest)
    seen: set[int] = set()
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))  # (all stay alive, held by rest, until the end)
        if isinstance(obj, _CONTAINERS) and len(obj) > HOLD_BATCH:
            obj.clear()
        elif isinstance(obj, (*_CONTAINERS, tuple)) or type(obj).__module__.startswith(
            _PACKAGE
        ):
            stack.extend(
                inner
                for inner in gc.get_referents(obj)
                if isinstance(inner, _CONTAINERS)
                or type(inner).__module__.startswith(_PACKAGE)
            )
    del stack, rest
    for held in (entries, keys):
        while held:
            del held[-_FREE_CHUNK:]


_PACKAGE = __name__.rpartition(".")[0]


class MemoryStore:
    """A thread-safe, budgeted key -> bytes store; see ``docs/backends.md``.

    ``max_bytes`` bounds the sum of accounted sizes (payload length +
    :data:`~django_smartcache.core.sizing.ENTRY_OVERHEAD`); ``max_entries`` bounds the
    count. At least one is required. ``max_item_size`` refuses larger entries outright.
    ``clock`` returns seconds (monotonic by default) and is injectable for tests.

    ``on_evict`` (also settable later as the attribute of that name) is called with
    the list of ``(key, cause)`` of the entries evicted by an operation, ``cause``
    one of :data:`EVICTION_CAUSES`, exactly what the ``evictions_*`` counters count.
    It is called after the lock is released, so it may use the store; normally by
    the thread whose operation evicted, but a thread finishing at the same moment
    may deliver another's batch. An exception it raises reaches that caller, and
    that batch is lost. Without a listener, nothing is recorded: every operation
    pays one attribute truthiness check.

    ``tag_keys``: a tag that is also a key names that key's bookkeeping (a tagging
    layer's version key): once no entry carries the tag any more (they expired, were
    evicted or deleted), that key leaves too, counted as invalidated. Otherwise the
    version keys of tags used once (``user:<id>`` on entries with a timeout) stay
    until the policy evicts them: 42% of a 16 MB budget after a long run.
    """

    def __init__(
        self,
        max_bytes: int | None = None,
        max_entries: int | None = None,
        *,
        max_item_size: int | None = None,
        policy: str = DEFAULT_POLICY,
        clock: Callable[[], float] = time.monotonic,
        sweep_batch: int = SWEEP_BATCH,
        on_evict: EvictionListener | None = None,
        tag_keys: bool = False,
    ) -> None:
        if max_bytes is None and max_entries is None:
            raise ValueError("a store needs max_bytes, max_entries, or both")
        for name, value in (
            ("max_bytes", max_bytes),
            ("max_entries", max_entries),
            ("max_item_size", max_item_size),
        ):
            if value is not None and (isinstance(value, bool) or value < 1):
                raise ValueError(
                    f"{name} must be a positive integer or None, got {value!r}"
                )
        self.policy_name = policy
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self.max_item_size = max_item_size
        self._weigh_bytes = max_bytes is not None
        self.tag_keys = tag_keys
        self._start_empty()
        self._clock = clock
        self._sweep_batch = sweep_batch
        self._set_limits()
        #: Held for every operation; callers may hold it to compose operations atomically.
        self.lock = threading.Lock()
        self.counters = Stats()
        #: See the class docstring; None: evictions are only counted.
        self.on_evict = on_evict
        # Evictions not yet delivered to on_evict; appended to with the lock held.
        self._evicted: list[tuple[Hashable, str]] = []
        self._refusals_logged = RefusalLog()

    def _start_empty(self) -> None:
        """Empty structures and a fresh policy: at construction, and swapped in by
        ``clear()``."""
        self._policy = make_policy(
            self.policy_name, _capacity(self.max_bytes, self.max_entries)
        )
        self._data: dict[Hashable, list[Any]] = {}
        attach = getattr(self._policy, "attach", None)
        if attach is not None:
            attach(self._data, READS_SLOT)
        self._expiry = ExpiryBuckets()
        self._tag_index = TagIndex(track_orphans=self.tag_keys)
        #: Orphaned tags (``tag_keys``) -> when their key may leave, one FIFO per
        #: delay so that each is in due order: ``_orphan_due`` those in their grace
        #: (``ORPHAN_GRACE``), ``_orphan_held`` those held since (``ORPHAN_HOLD``). A
        #: key is in at most one. One FIFO for both would let a held key at its head
        #: (due in 60 s) block every grace key behind it: ~60 s of orphans, outside
        #: the budget (384,086 of 398,623 queued past due, RSS 6.2x the budget).
        self._orphan_due: OrderedDict[Hashable, float] = OrderedDict()
        self._orphan_held: OrderedDict[Hashable, float] = OrderedDict()
        # Key sets of invalidated tags, with the index stamp at invalidation; drained
        # by _sweep a batch at a time (invalidation itself stays O(1) per tag).
        self._purge: deque[tuple[set[Hashable], int]] = deque()
        self._bytes = 0
        self._fit_countdown = 0  # the policy has the full capacity: refit when it binds

    def _log_refusal(self, key: Hashable, size: int, now: float) -> None:
        """A WARNING for a key refused as too large, then DEBUG for its repeats within
        :data:`REFUSAL_LOG_INTERVAL` (``stats()["refused"]`` counts every one)."""
        quiet = self._refusals_logged.quiet(key, now)
        logger.log(
            logging.DEBUG if quiet else logging.WARNING,
            "django_smartcache: not caching %r: its entry is %d bytes, over the "
            "limit of %d bytes (MAX_ITEM_SIZE or MAX_MEMORY)%s",
            key,
            size,
            self._item_limit,
            "" if quiet else REPEATS_AT_DEBUG,
        )

    def _set_limits(self) -> None:
        self._byte_limit = self.max_bytes if self.max_bytes is not None else _UNLIMITED
        self._entry_limit = (
            self.max_entries if self.max_entries is not None else _UNLIMITED
        )
        self._item_limit = min(
            self._byte_limit,
            self.max_item_size if self.max_item_size is not None else _UNLIMITED,
        )

    # -- reads ---------------------------------------------------------------------------

    def get(self, key: Hashable) -> bytes | None:
        """The payload of a live ``key``, or None; counts a hit or a miss."""
        try:
            with self.lock:
                now = self._clock()
                if now >= self._expiry.next_due:
                    self._sweep(now)
                entry = self._data.get(key)
                if entry is None or entry[1] <= now:
                    if entry is not None:
                        self._expire(key, entry)
                    self.counters.misses += 1
                    self._policy.record_miss(key)
                    return None
                entry[3] += 1  # hits
                if entry[5] < 3:  # reads, the policy's counter
                    entry[5] += 1
                self.counters.hits += 1
                self._policy.record_hit(key)
                return entry[0]  # type: ignore[no-any-return]
        finally:
            if self._evicted:
                self._deliver()

    def get_many(
        self, keys: Iterable[Hashable], *, counted: bool = True
    ) -> dict[Hashable, bytes]:
        """Payloads of the live ``keys`` (one critical section per :data:`HOLD_BATCH`).

        ``counted=False`` is for a caller's own bookkeeping (a tagging layer reading its
        tag versions): still an access for the eviction policy, which keeps those keys
        hot, but not a hit or a miss in the statistics, which count the caller's reads.
        """
        found: dict[Hashable, bytes] = {}
        for batch in _batches(keys):
            hits = misses = 0
            with self.lock:
                # Read under the lock: clear() swaps them between two batches.
                data, record_hit = self._data, self._policy.record_hit
                now = self._clock()
                if now >= self._expiry.next_due:
                    self._sweep(now)
                for key in batch:
                    entry = data.get(key)
                    if entry is None or entry[1] <= now:
                        if entry is not None:
                            self._expire(key, entry)
                        misses += 1
                        self._policy.record_miss(key)
                    else:
                        if counted:
                            entry[3] += 1  # hits
                        if entry[5] < 3:  # reads, the policy's counter
                            entry[5] += 1
                        hits += 1
                        record_hit(key)
                        found[key] = entry[0]  # payload
                if counted:
                    self.counters.hits += hits
                    self.counters.misses += misses
                elif found and (
                    self._orphan_due or self._orphan_held or self._tag_index.orphans
                ):
                    self._hold_orphans(batch, now)
        if self._evicted:
            self._deliver()
        return found

    def count_hits(self, reads: int) -> None:
        """``reads`` the caller asked for that got a value found here by another
        caller's read (a caller that joined another's ``get_or_set`` hit)."""
        with self.lock:
            self.counters.hits += reads

    def count_misses(self, reads: int) -> None:
        """``reads`` the caller asked for that found nothing here without reading the
        store (a caller that waited for another's computation of the value)."""
        with self.lock:
            self.counters.misses += reads

    def recount_as_misses(self, reads: int) -> None:
        """``reads`` counted as hits gave the caller nothing (a value found invalid above
        the store, such as a tagged entry whose tag moved on): count them as misses."""
        with self.lock:
            # A reset_stats() between the read and this zeroed the hits it counted:
            # never below zero (stats() showed hits -1 and a hit rate of -1.0).
            reads = min(reads, self.counters.hits)
            self.counters.hits -= reads
            self.counters.misses += reads

    def has(self, key: Hashable) -> bool:
        """Whether ``key`` is live; not counted as a read and not an access for the policy."""
        try:
            with self.lock:
                return self._live_entry(key, self._clock()) is not None
        finally:
            if self._evicted:
                self._deliver()

    def peek(self, key: Hashable) -> tuple[bytes, bool] | None:
        """A live ``key``'s payload and whether it is tagged; neither a read nor an access."""
        with self.lock:
            entry = self._data.get(key)
            if entry is None or entry[1] <= self._clock():
                return None
            return entry[0], entry[4] is not None

    def remaining(self, keys: Iterable[Hashable]) -> dict[Hashable, float]:
        """Seconds each live key of ``keys`` has left (``inf``: no expiry); absent and
        expired keys are left out. Neither a read nor an access."""
        with self.lock:
            now, data = self._clock(), self._data
            left: dict[Hashable, float] = {}
            for key in keys:
                entry = data.get(key)
                if entry is not None and entry[1] > now:
                    left[key] = entry[1] - now
            return left

    def __len__(self) -> int:
        return len(self._data)

    # -- writes --------------------------------------------------------------------------

    def set(
        self,
        key: Hashable,
        payload: bytes,
        ttl: float | None = None,
        tags: tuple[str, ...] | None = None,
    ) -> bool:
        """Store ``payload`` for ``ttl`` seconds (None: no expiry; <= 0: expires at once).

        Returns False when the entry is refused as too large (and any older value of
        ``key`` is dropped, since it is stale).
        """
        try:
            with self.lock:
                now = self._clock()
                self._before_write(now)
                return self._store(
                    key, payload, INF if ttl is None else now + ttl, now, tags
                )
        finally:
            if self._evicted:
                self._deliver()

    def set_many(
        self,
        items: Iterable[tuple[Hashable, bytes]],
        ttl: float | None = None,
        tags: tuple[str, ...] | None = None,
        *,
        counted: bool = True,
    ) -> list[Hashable]:
        """Store every ``(key, payload)`` (all with ``tags``); return the keys refused as too large.

        ``counted=False``: a caller's own bookkeeping (a tagging layer's version keys),
        not counted in ``sets``.
        """
        refused: list[Hashable] = []
        expires = None
        for batch in _batches(items):
            size = len(batch)  # type: ignore[arg-type]
            with self.lock:
                now = self._clock()
                self._before_write(now, size)
                if expires is None:  # one expiry for the whole batch
                    expires = INF if ttl is None else now + ttl
                for key, payload in batch:
                    if not self._store(key, payload, expires, now, tags, counted):
                        refused.append(key)
        if self._evicted:
            self._deliver()
        return refused

    def add(
        self,
        key: Hashable,
        payload: bytes,
        ttl: float | None = None,
        tags: tuple[str, ...] | None = None,
        *,
        counted: bool = True,
    ) -> bool:
        """Store ``payload`` only if ``key`` is not live; atomic. False if present or refused.

        ``counted=False``: bookkeeping, as in :meth:`set_many`.
        """
        try:
            with self.lock:
                now = self._clock()
                self._before_write(now)
                expires = INF if ttl is None else now + ttl
                return self._add(key, payload, expires, now, tags, counted)
        finally:
            if self._evicted:
                self._deliver()

    def add_many(
        self,
        items: Iterable[tuple[Hashable, bytes]],
        ttl: float | None = None,
        *,
        counted: bool = True,
        keep: Iterable[Hashable] = (),
    ) -> list[Hashable]:
        """:meth:`add` of each ``(key, payload)`` in one critical section; the keys added.

        A tagging layer creates a value's new tag version keys with it (``counted=
        False``): the eviction a later key causes sets the earlier ones aside, and
        ``keep`` (the value's version keys that exist already), as the value's own
        write then does, or the value would read as stale at once.
        """
        added: list[Hashable] = []
        try:
            with self.lock:
                now = self._clock()
                self._before_write(now)
                expires = INF if ttl is None else now + ttl
                shield: list[Hashable] | None = (
                    list(keep) if not counted and self.tag_keys else None
                )
                for key, payload in items:
                    if self._add(key, payload, expires, now, None, counted, shield):
                        added.append(key)
                        if shield is not None:
                            shield.append(key)
                return added
        finally:
            if self._evicted:
                self._deliver()

    def touch(self, key: Hashable, ttl: float | None = None) -> bool:
        """Give a live ``key`` a new ``ttl``; False if it is absent or expired."""
        try:
            with self.lock:
                now = self._clock()
                entry = self._live_entry(key, now)
                if entry is None:
                    return False
                expires = INF if ttl is None else now + ttl
                if expires <= now:
                    self._expire(key, entry)
                    return True
                self._expiry.refile(key, entry[1], expires)
                entry[1] = expires
                return True
        finally:
            if self._evicted:
                self._deliver()

    def transform(self, key: Hashable, fn: Callable[[bytes], bytes]) -> bytes:
        """Replace a live ``key``'s payload by ``fn(payload)`` atomically, keeping its expiry.

        Raises ``KeyError`` if ``key`` is not live. ``fn`` runs with the lock held; if it
        raises, the store is unchanged. A new payload refused as too large drops the old
        one, as a refused ``set`` does, and raises ``ValueError``. Used for ``incr``/``decr``.
        """
        try:
            with self.lock:
                now = self._clock()
                entry = self._live_entry(key, now)
                if entry is None:
                    raise KeyError(key)
                payload = fn(entry[0])
                if not self._store(key, payload, entry[1], now, entry[4]):
                    raise ValueError(
                        f"the new value of {key!r} is larger than the store allows"
                    )
                return payload
        finally:
            if self._evicted:
                self._deliver()

    def delete(self, key: Hashable) -> bool:
        """Remove ``key``; True if it was live."""
        try:
            with self.lock:
                entry = self._live_entry(key, self._clock())
                if entry is None:
                    return False
                self._deleted(key, entry)
                return True
        finally:
            if self._evicted:
                self._deliver()

    def delete_many(self, keys: Iterable[Hashable]) -> int:
        """Remove every key; return how many were live."""
        return self._remove_live(keys, self._deleted)

    def clear(self) -> None:
        """Drop every entry. Counters are cumulative and survive; see :meth:`reset_stats`.

        The structures are swapped for empty ones under the lock, and freed after it:
        clearing them in place held it for the whole clear (1M entries: 184 ms in which
        every other thread's, and an event loop's inline, operation waited). Above
        ``CLEAR_AT_ONCE`` entries they are freed in chunks (:func:`_release`: other
        threads wait 17-72 ms at most at 1M instead of 76-110), at or below it at once
        (a few milliseconds, and cheaper). The eviction policy starts afresh too (its
        history went with its queues), refitted at the next eviction.
        """
        with self.lock:
            data = self._data
            rest = (self._expiry, self._policy, self._tag_index, self._purge)
            self._start_empty()
        if len(data) > CLEAR_AT_ONCE:
            _release(data, rest)
        del data, rest  # (at once, or what _release emptied)

    # -- tags and patterns -----------------------------------------------------------------

    def invalidate_tags(self, tags: Iterable[str]) -> int:
        """Queue the entries written with any of ``tags`` for removal; O(1) per tag.

        The entries leave a bounded batch per later write, and before any live entry
        is evicted for room (counted as ``evictions_invalidated``);
        :meth:`purge_invalidated` drains the queue now.
        An entry written again after this call is not touched. Returns how many
        keys were queued.
        """
        queued = 0
        with self.lock:
            for tag in tags:
                keys, stamp = self._tag_index.detach(tag)
                if keys:
                    self._purge.append((keys, stamp))
                    queued += len(keys)
        return queued

    def remove_unchanged(
        self,
        expected: Mapping[Hashable, Callable[[bytes], bool]],
        *,
        invalidated: bool = True,
    ) -> int:
        """Remove the keys whose payload still passes its test, in one critical
        section; how many left. A caller above the store that judged a value it read
        stale (its tags moved on) removes that value, never one another thread stored
        since (a lost write). Counted as ``evictions_invalidated`` (and reported to
        ``on_evict``), or as deletes when not ``invalidated`` (a copy of a value
        kept elsewhere, as in a multi-level cache's L1)."""
        remove = self._invalidate if invalidated else self._deleted
        removed = 0
        with self.lock:
            now = self._clock()
            for key, unchanged in expected.items():
                entry = self._live_entry(key, now)
                if entry is not None and unchanged(entry[0]):
                    remove(key, entry)
                    removed += 1
        if self._evicted:
            self._deliver()
        return removed

    def _remove_live(
        self, keys: Iterable[Hashable], remove: Callable[[Hashable, list[Any]], None]
    ) -> int:
        """``remove(key, entry)`` for each live key (one critical section per
        :data:`HOLD_BATCH`); how many."""
        removed = 0
        for batch in _batches(keys):
            with self.lock:
                now = self._clock()
                for key in batch:
                    entry = self._live_entry(key, now)
                    if entry is not None:
                        remove(key, entry)
                        removed += 1
        if self._evicted:
            self._deliver()
        return removed

    def purge_invalidated(self, limit: int = _UNLIMITED) -> int:
        """Remove up to ``limit`` queued entries of invalidated tags now; return how many."""
        try:
            with self.lock:
                return self._drain(limit)
        finally:
            if self._evicted:
                self._deliver()

    def delete_matching(self, prefix: str, predicate: Callable[[str], bool]) -> int:
        """Delete every live str key starting with ``prefix`` for which ``predicate`` holds.

        O(n) in the resident keys: the keys are copied under the lock (one C-level
        pass), matched outside it (other threads keep going), then deleted a
        :data:`HOLD_BATCH` per critical section. A key written after the copy is not deleted. Returns how
        many live keys were removed.
        """
        with self.lock:
            keys = list(self._data)
        matched = [
            key
            for key in keys
            if type(key) is str and key.startswith(prefix) and predicate(key)
        ]
        return self.delete_many(matched) if matched else 0

    def reclaim(self, limit: int = SWEEP_BATCH) -> None:
        """Reclaim up to ``limit`` expired entries (and keys of orphaned tags) now, as
        a write would: for a store whose own calls have stopped."""
        try:
            with self.lock:
                now = self._clock()
                if now >= self._expiry.next_due:
                    self._sweep(now, limit)
                if self._orphan_due or self._orphan_held or self._tag_index.orphans:
                    self._drop_orphans(limit, now)
        finally:
            if self._evicted:
                self._deliver()

    def clear_expired(self) -> int:
        """Reclaim every expired entry now; return how many were removed. (With
        ``tag_keys``, the keys of the tags they orphaned leave too, not counted.)

        One critical section per :data:`HOLD_BATCH` keys, as the other O(n) calls:
        the whole pass under the lock made another thread's get wait 650-850 ms for
        291,000 expired entries (an event loop's inline ``aget`` as long).
        """
        removed = 0
        now = self._clock()
        try:
            while True:
                with self.lock:
                    keys = self._expiry.pop_due(now, HOLD_BATCH)
                    removed += self._expire_keys(keys, now)
                if len(keys) < HOLD_BATCH:
                    break
                time.sleep(0)  # let a waiting thread take the lock (see _sliced)
            # The current second's bucket: those of its keys already expired.
            with self.lock:
                current = self._expiry.bucket_of(now)
            for batch in _batches(current):
                with self.lock:
                    removed += self._expire_keys(batch, now)
            while True:
                with self.lock:
                    if not self._drop_orphans(HOLD_BATCH, now):
                        break
                time.sleep(0)
        finally:
            if self._evicted:
                self._deliver()
        return removed

    def _expire_keys(self, keys: Iterable[Hashable], now: float) -> int:
        """Expire those of ``keys`` whose entry has expired by ``now``; how many."""
        removed = 0
        data = self._data
        for key in keys:
            entry = data.get(key)
            if entry is not None and entry[1] <= now:
                self._expire(key, entry)
                removed += 1
        return removed

    def resize(
        self, max_bytes: int | None = None, max_entries: int | None = None
    ) -> None:
        """Change the budgets (same kind as at creation), evicting if now over."""
        if (max_bytes is None) != (self.max_bytes is None):
            raise ValueError("resize() cannot switch between byte and entry budgets")
        try:
            with self.lock:
                self.max_bytes, self.max_entries = max_bytes, max_entries
                self._set_limits()
                self._policy.resize(_capacity(max_bytes, max_entries))
                self._fit_countdown = 0
                self._evict(self._clock())
        finally:
            if self._evicted:
                self._deliver()

    # -- statistics ----------------------------------------------------------------------

    def stats(self, top: int = 10) -> dict[str, Any]:
        """Exact counters and gauges, and the ``top`` most read live keys with their hits."""
        with self.lock:
            snapshot = self.counters.as_dict()
            snapshot.update(
                entries=len(self._data),
                tagged_entries=len(self._tag_index),
                tags_indexed=self._tag_index.tag_count,
                purge_pending=sum(len(keys) for keys, _ in self._purge),
                bytes_used=self._bytes,
                max_bytes=self.max_bytes,
                max_entries=self.max_entries,
                max_item_size=self.max_item_size,
                entry_overhead=ENTRY_OVERHEAD,
                policy=self.policy_name,
            )
            # Two C-level copies under the lock, of the keys and of the entries: no
            # object per entry. Copying items() would make a tuple per entry, each
            # tracked by the garbage collector, whose collections then run inside the
            # lock: held 1.4-1.9 s at 10^6 entries (a get in another thread waits
            # 1.2 s), 100 ms for a full 64 MB budget of small values. The ranking (a
            # Python key per entry) runs after it, so other calls do not wait for it.
            # The read counts are read unlocked: a count a moment newer is harmless.
            keys = list(self._data) if top > 0 else []
            entries = list(self._data.values()) if top > 0 else []
        snapshot["top_accessed"] = [
            (key, hits)
            for key, hits in heapq.nlargest(
                top,
                zip(keys, [entry[3] for entry in entries], strict=True),
                key=_second,
            )
            if hits
        ]
        return snapshot

    def reset_stats(self) -> None:
        """Zero the counters (not the gauges), and each entry's read count
        (``top_accessed``): O(n) in the entries, under the lock."""
        with self.lock:
            self.counters.reset()
            for entry in self._data.values():
                entry[3] = 0

    @property
    def bytes_used(self) -> int:
        return self._bytes

    # -- internals (lock held) -----------------------------------------------------------

    def _store(
        self,
        key: Hashable,
        payload: bytes,
        expires: float,
        now: float,
        tags: Any,
        counted: bool = True,
        shield: list[Hashable] | None = None,
    ) -> bool:
        """Store one entry (lock held); False if refused as too large.

        ``shield``: keys written just before in the same :meth:`add_many` of version
        keys, set aside by the eviction this write causes, as the entry's own tag keys
        are."""
        size = len(payload) + ENTRY_OVERHEAD
        if type(key) is str and len(key) > KEY_ALLOWANCE:
            size += long_key_excess(key)
        if tags:  # what the tag index keeps for it (sizing.TAG_OVERHEAD)
            size += len(tags) * TAG_OVERHEAD
        data = self._data
        old = data.get(key)
        if old is not None and old[1] <= now:
            # Expired, not yet swept: it leaves as an expiry, counted as one.
            self._expire(key, old)
            old = None
        if size > self._item_limit:
            self.counters.refused += 1
            if old is not None:
                self._invalidate(key, old)
            self._log_refusal(key, size, now)
            return False
        if counted:
            self.counters.sets += 1
        if expires <= now:
            # Django semantics for a zero/negative timeout: written, and expired at once.
            if old is not None:
                self._remove(key, old)
            self._expired(key)
            return True
        weight = size if self._weigh_bytes else 1
        if old is not None:
            self._bytes += size - old[2]
            self._expiry.refile(key, old[1], expires)
            old[0] = payload
            old[1] = expires
            old[2] = size
            if tags is not None:
                tags = self._tag_index.add(key, tags)
            elif old[4] is not None:
                self._tag_index.discard(key)
            old[4] = tags
            self._policy.update(key, weight)
        else:
            if tags is not None:
                tags = self._tag_index.add(key, tags)
            data[key] = [payload, expires, size, 0, tags, 0]
            self._bytes += size
            self._policy.insert(key, weight)
            if expires != INF:
                self._expiry.add(key, expires)
        if (self._orphan_due or self._orphan_held) and (
            key in self._orphan_due or key in self._orphan_held
        ):
            # An orphaned tag's own key written anew (its version made again after it
            # left): the writer that made it stores its entry with it next. Held as a
            # bookkeeping read holds it, or the next sweep (this write's own eviction
            # included) would remove it first, and the entry, stored with a version no
            # longer there, would miss at once.
            self._hold_orphan(key, now)
        if self._bytes > self._byte_limit or len(data) > self._entry_limit:
            keep = tags if tags and self.tag_keys else ()
            if shield:
                keep = (*keep, *shield)
            self._evict(now, (key, weight, keep) if keep else None)
        return True

    def _add(
        self,
        key: Hashable,
        payload: bytes,
        expires: float,
        now: float,
        tags: Any,
        counted: bool,
        shield: list[Hashable] | None = None,
    ) -> bool:
        """:meth:`add` of one entry (lock held): False if ``key`` is live or the entry
        is not stored."""
        entry = self._data.get(key)
        if entry is not None and entry[1] > now:
            return False
        stored = self._store(key, payload, expires, now, tags, counted, shield)
        # The policy may turn the newcomer away at once (TinyLFU admission): then
        # nothing was added, and add() must not say it was (a lock taken with add()
        # would have two holders). A timeout <= 0 is added and expired at once, True
        # as in Django.
        if stored and key not in self._data and expires > now:
            self._unadd(key, counted)
            return False
        return stored

    def _unadd(self, key: Hashable, counted: bool) -> None:
        """An ``add`` whose newcomer the policy turned away at once: nothing was added,
        so it is neither a set nor an eviction (``stats()`` counted both), and no
        ``entry_evicted`` is sent for a key that was never in the cache."""
        if counted:
            self.counters.sets -= 1
        self.counters.evictions_capacity -= 1
        pending = self._evicted
        for i in range(len(pending) - 1, -1, -1):
            if pending[i] == (key, "capacity"):
                del pending[i]
                break

    def _evict(
        self,
        now: float,
        written: tuple[Hashable, int, tuple[Hashable, ...]] | None = None,
    ) -> None:
        """Evict what the policy chooses until both budgets hold.

        ``written``: the entry whose write this is (key, policy weight, the keys to
        keep: its tag keys, and the keys an add_many of version keys wrote before it).
        The policy shields only the key written last, but without its tags' version
        keys (written just before it, new and never read) the entry reads as stale:
        the value just written would be a miss (W-TinyLFU with a window under one
        entry turned every new tag's key away at its value's write). So such a key
        the policy picks is set aside and the next victim asked for; once the budgets
        hold, those keys go back to the policy as newcomers, judged at a later write,
        the written key still the newest. Only when nothing else is left do they go.
        """
        data, policy, counters = self._data, self._policy, self.counters
        aside: list[Hashable] = []
        if (
            self._purge
            or self._orphan_due
            or self._orphan_held
            or self._tag_index.orphans
            or now >= self._expiry.next_due
        ):
            self._drop_dead_weight(now)  # (most evictions: none, one test, no call)
        if self._weigh_bytes and len(data) > self._entry_limit:
            self._fit_countdown -= 1
            if self._fit_countdown < 0:  # the first time, then every FIT_EVERY
                self._fit_countdown = FIT_EVERY
                self._fit_policy(len(data) - self._entry_limit)
        elif self._bytes > self._byte_limit and policy.capacity < self._byte_limit:
            policy.resize(self._byte_limit)  # the bytes bind again: all of them
        while data and (
            self._bytes > self._byte_limit or len(data) > self._entry_limit
        ):
            if aside and len(data) == len(aside):
                victim = aside.pop()  # nothing else left to go
            else:
                victim = policy.evict()
                if written is not None and victim in written[2]:
                    aside.append(victim)
                    continue
            entry = data.pop(victim)
            self._bytes -= entry[2]
            if entry[1] != INF:
                self._expiry.discard(victim, entry[1])
            if entry[4] is not None:
                self._tag_index.discard(victim)
            if entry[1] <= now:  # the policy's victim had expired this second
                self._expired(victim)
                continue
            counters.evictions_capacity += 1
            if self.on_evict is not None:
                self._evicted.append((victim, "capacity"))
        if aside:
            weigh = self._weigh_bytes
            for key in aside:
                policy.insert(key, data[key][2] if weigh else 1)
            assert written is not None
            if written[0] in data:  # the written key is the newest again
                policy.update(written[0], written[1])

    def _drop_dead_weight(self, now: float) -> None:
        """Before the policy evicts a live entry: invalidated entries are dead weight,
        they go first..."""
        data = self._data
        while self._purge and (
            self._bytes > self._byte_limit or len(data) > self._entry_limit
        ):
            self._drain(PURGE_BATCH)
        while (
            self._bytes > self._byte_limit or len(data) > self._entry_limit
        ) and self._drop_orphans(ORPHAN_BATCH, now):
            pass
        # ...and so are the expired ones of the seconds past, all of them if need be:
        # the sweep's batches alone left them holding the budget while live entries
        # were evicted. Each is swept once, so this stays O(1) amortized.
        while now >= self._expiry.next_due and (
            self._bytes > self._byte_limit or len(data) > self._entry_limit
        ):
            self._sweep(now)

    def _fit_policy(self, excess: int) -> None:
        """With both budgets, the policy works in bytes; when the entry limit is the one
        that binds, its capacity is the bytes of ``max_entries`` entries as held now,
        not ``max_bytes``. Sized by a byte budget it is far from, it sized its window
        and queues for entries it never holds, evicted whatever the store asked next,
        and its shadows never filled: LRU-like hit ratios (up to 20 points below
        W-TinyLFU). Resized only on a drift of 1/16, so it keeps what it learnt."""
        count = len(self._data)
        fitted = min(self._byte_limit, self._bytes * (count - excess) // count)
        capacity = self._policy.capacity
        if abs(fitted - capacity) > capacity >> 4:
            self._policy.resize(max(1, fitted))

    # One helper per cause: the counter and the listener's record never part ways.

    def _expire(self, key: Hashable, entry: list[Any]) -> None:
        self._remove(key, entry)
        self._expired(key)

    def _expired(self, key: Hashable) -> None:
        self.counters.evictions_expired += 1
        if self.on_evict is not None:
            self._evicted.append((key, "expired"))

    def _deleted(self, key: Hashable, entry: list[Any]) -> None:
        self._remove(key, entry)
        self.counters.deletes += 1

    def _invalidate(self, key: Hashable, entry: list[Any]) -> None:
        self._remove(key, entry)
        self.counters.evictions_invalidated += 1
        if self.on_evict is not None:
            self._evicted.append((key, "invalidated"))

    def _deliver(self) -> None:
        """Hand the pending evictions to ``on_evict``; called with the lock released."""
        with self.lock:
            batch, self._evicted = self._evicted, []
        listener = self.on_evict
        if batch and listener is not None:
            listener(batch)

    def _live_entry(self, key: Hashable, now: float) -> list[Any] | None:
        """``key``'s entry if it is live; an expired one is reclaimed (counted) first.

        The hot read paths (``get``, ``get_many``) keep this test inline.
        """
        entry = self._data.get(key)
        if entry is not None and entry[1] <= now:
            self._expire(key, entry)
            return None
        return entry

    def _remove(self, key: Hashable, entry: list[Any]) -> None:
        del self._data[key]
        self._bytes -= entry[2]
        if entry[1] != INF:
            self._expiry.discard(key, entry[1])
        if entry[4] is not None:
            self._tag_index.discard(key)
        self._policy.remove(key)

    def _before_write(self, now: float, size: int = 0) -> None:
        """A write's housekeeping (lock held): the expiry sweep when due, a batch of
        invalidated entries, orphaned tags' keys. ``size``: a batch's, so each does as
        much as the batch writes (one sweep per call let a stream of large batches
        outrun it, and expired entries held the budget)."""
        if now >= self._expiry.next_due:
            self._sweep(now, max(self._sweep_batch, size))
        if self._purge:
            self._drain(PURGE_BATCH)
        if self._orphan_due or self._orphan_held or self._tag_index.orphans:
            self._drop_orphans(max(ORPHAN_BATCH, size), now)

    def _sweep(self, now: float, limit: int = 0) -> None:
        self._expire_keys(self._expiry.pop_due(now, limit or self._sweep_batch), now)

    def _adopt_orphans(self, now: float) -> None:
        """Give the tags orphaned since the last call their grace (``ORPHAN_GRACE``)."""
        due, held = self._orphan_due, self._orphan_held
        orphans = self._tag_index.orphans
        for tag in orphans:
            if tag not in due and tag not in held:
                due[tag] = now + ORPHAN_GRACE
        orphans.clear()

    def _hold_orphans(self, keys: Iterable[Hashable], now: float) -> None:
        """A bookkeeping read of ``keys``: those of orphaned tags stay ``ORPHAN_HOLD``
        (a computation read the version it will store its entry with)."""
        if self._tag_index.orphans:
            self._adopt_orphans(now)
        due, held = self._orphan_due, self._orphan_held
        for key in keys:
            if key in due or key in held:
                self._hold_orphan(key, now)

    def _hold_orphan(self, key: Hashable, now: float) -> None:
        """Queue ``key`` (an orphaned tag's, in either FIFO) last in the held FIFO, due
        in ``ORPHAN_HOLD``: it leaves the grace FIFO, or moves to the held one's end."""
        self._orphan_due.pop(key, None)
        held = self._orphan_held
        held[key] = now + ORPHAN_HOLD
        held.move_to_end(key)

    def _drop_orphans(self, limit: int, now: float) -> bool:
        """Remove up to ``limit`` keys named by tags no entry carries any more
        (``tag_keys``) whose grace is over; whether any was due. A key tagged itself
        is no tag's bookkeeping, and stays."""
        if self._tag_index.orphans:
            self._adopt_orphans(now)
        due, held = self._orphan_due, self._orphan_held
        index, data = self._tag_index, self._data
        progressed = False
        while limit > 0:
            # The sooner due of the two heads (each FIFO is in due order).
            if due:
                queue = due
                tag = next(iter(due))
                if held:
                    other = next(iter(held))
                    if held[other] < due[tag]:
                        queue, tag = held, other
            elif held:
                queue = held
                tag = next(iter(held))
            else:
                break
            if queue[tag] > now:
                break
            del queue[tag]
            progressed = True
            limit -= 1
            if index.carried(tag):
                continue  # carried again since
            entry = data.get(tag)
            if entry is not None and entry[4] is None:
                if entry[1] <= now:
                    self._expire(tag, entry)
                else:
                    self._invalidate(tag, entry)
        return progressed

    def _drain(self, limit: int) -> int:
        """Remove up to ``limit`` queued keys that still hold an invalidated write."""
        data, index, purge = self._data, self._tag_index, self._purge
        removed = taken = 0
        while purge and taken < limit:
            keys, stamp = purge[0]
            while keys and taken < limit:
                key = keys.pop()
                taken += 1
                if index.tagged_before(key, stamp):
                    self._invalidate(key, data[key])
                    removed += 1
            if not keys:
                purge.popleft()
        return removed


def _second(item: tuple[Any, int]) -> int:
    return item[1]
