"""MultiLevelCache: fast levels in front of slower shared ones, coherent across processes.

Reads try the levels in order and promote a lower-level hit into the levels above with
the remaining TTL (never extending it, and at most ``L1_MAX_TTL``); writes go to every
level, lowest (the shared, persistent one) first. A lower level that fails is skipped
for ``RETRY_INTERVAL`` and treated as a miss; see ``docs/multilevel.md``.

Keys: MultiLevelCache applies its own ``KEY_PREFIX``/``VERSION``/``KEY_FUNCTION`` once,
and builds every level with an identity key function, so all levels store the same
final key. That is what lets the Redis messages and the SQLite change log name L1 keys.

The levels themselves (reads, writes, promotion, faults, coherence, counts) are
``_levels._MultiLevelBase``, which stores raw values; this module adds tags, single
flight and the async fast paths.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from django.core.cache.backends.base import DEFAULT_TIMEOUT, BaseCache

from .._incr_envelopes import INCREMENTED_ENVELOPES
from .._key_warnings import key_warnings_given
from .._transactions import dirty_tags, nothing_pending
from ..core.tags import Tagged
from ..tagging import TaggingMixin, VersionKeys, delete_unchanged
from ._async import in_thread
from ._level_health import FAULTS
from ._levels import (
    _MISSING,
    _in_process_store,
    _LevelTagged,
    _monotonic,
    _MultiLevelBase,
    _raw,
)
from .base import SingleFlightMixin
from .smart import INLINE_BATCH, _collected, remove_writes
from .sqlite import SQLiteCache


class MultiLevelCache(SingleFlightMixin, TaggingMixin, _MultiLevelBase):
    """Levels fastest first; see the module docstring and ``docs/multilevel.md``.

    Tags (``TaggingMixin``): version keys are ordinary entries, read through L1 and kept
    coherent by the same channel as every other key (a bump is a ``set_many``, so it is
    published or logged like any write). ``get_or_set`` with a callable is single-flight
    per process (``SingleFlightGetOrSetMixin``, outermost, so one computation also
    covers the tag bookkeeping).
    """

    def _own(self, name: str) -> Any:
        """Our own method ``name``, bound, past any wrapper set on the instance.

        The async twins run the synchronous method in a thread: through the instance
        attribute, a debug-toolbar panel (which wraps methods on the instance) would
        see a second call inside the first, and take its level hits for a read-back.
        """
        return getattr(type(self), name).__get__(self)

    def _waited_read(self) -> None:
        self._misses[0] += 1

    def _shared_hit(self) -> None:
        self._hits[0] += 1  # the value came from the leader's read: counted at L1

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._version_keys = VersionKeys(self._key)

    def singleflight_scope(self) -> Any:
        # LOCATION is often "" with explicit LEVELS: group by the levels' configuration.
        return ("django_smartcache.MultiLevelCache", self._name)

    def _drop_stale(self, stale: Mapping[str, Tagged], version: Any) -> None:
        """Drop stale envelopes read: from L1, and from the levels below only once the
        lowest level's versions confirm them stale; each only where it still is.

        This process judged them by its L1 copies of the tag versions, which may lag
        the shared level by the coherence delay: an envelope another process has just
        written can look stale here. Deleted from the shared levels on that judgement
        alone, that fresh write would be lost for every process.
        """
        if not stale or dirty_tags():
            return
        finals = self._finals(list(stale), version)
        self._drop_everywhere({final: stale[key] for final, key in finals.items()})

    def _clear_stale_occupant(self, key: Any, occupant: Tagged, version: Any) -> None:
        """For an ``add``: the occupant goes from every level, on the same terms."""
        self._drop_everywhere({self._key(key, version): occupant})

    def _drop_everywhere(self, envelopes: dict[str, Tagged]) -> None:
        _delete_unchanged(self._l1, {f: env.wid for f, env in envelopes.items()})
        below = self._stale_below(envelopes)
        if below:
            for index in range(1, len(self._levels)):
                if self._usable(index):
                    try:
                        _delete_unchanged(self._levels[index], below)
                    except FAULTS as exc:
                        self._fault(index, exc, "delete")
                    else:
                        self._ok(index)

    def _stale_below(self, envelopes: dict[str, Tagged]) -> dict[str, str]:
        """``final -> wid`` of the envelopes the lowest level's tag versions say are
        stale: one read of all their version keys, skipped while that level is down.
        Envelopes with dependencies are left to expire there (judging them needs the
        dependencies' values, another read of each)."""
        judged = {f: env for f, env in envelopes.items() if not env.deps}
        if not judged or not self._last or not self._usable(self._last):
            return {}
        made = {f: self._version_keys(tuple(env.versions)) for f, env in judged.items()}
        wanted = list(dict.fromkeys(k for keys in made.values() for k in keys))
        health = self._health[self._last]
        if health.repairing() and any(health.pending(k) for k in wanted):
            return {}  # a version there may be older than a write's: not judged now
        try:
            found = self._levels[-1].get_many(wanted)
        except FAULTS as exc:
            self._fault(self._last, exc, "get_many")
            return {}
        self._ok(self._last)
        return {
            final: env.wid
            for final, env in judged.items()
            if any(
                found.get(made_key) != ver
                for made_key, ver in zip(
                    made[final], env.versions.values(), strict=True
                )
            )
        }

    # -- the tagging layer's own reads (envelopes back to plain Tagged) ---------------
    def _read_bookkeeping(
        self, keys: Sequence[str], version: int | None = None
    ) -> dict[str, Any]:
        """Tag versions, dependencies, an ``add``'s occupant: read through the levels
        (promoted like any read) but not counted as the caller's hits or misses."""
        keys = list(keys)
        self._poll_if_due()
        by_final = self._finals(keys, version)
        if len(keys) <= 4:  # the usual tag versions: all in L1
            in_l1 = self._l1_quiet(list(by_final))
            if len(in_l1) == len(by_final):
                return {by_final[final]: _raw(v) for final, v in in_l1.items()}
        found = self._read_levels(
            list(by_final), {}, 0, len(self._levels), counted=False
        )
        return {by_final[final]: _raw(value) for final, value in found.items()}

    def incr_version(self, key: Any, delta: int = 1, version: Any = None) -> int:
        """Django's, the value read from the lowest working level: the copies above it
        are dropped first. Read from an L1 copy up to the coherence delay old, a value
        another process has just deleted would be moved to ``version + delta`` in
        every level with the default timeout, where one shared cache raises
        ``ValueError``. A key the lowest level does not hold raises ``ValueError`` and
        is left as it is (else a ``levels=1`` write is dropped with the copies, and
        lost)."""
        if version is None:
            version = self.version
        lowest = next((i for i in range(self._last, 0, -1) if self._up(i)), 0)
        with key_warnings_given():  # Django's own, below, warns as it reads and writes
            held = not lowest or key in self.shared_get_many([key], version)
            made = self._key(key, version)
        if not held:
            # Not in the shared level: gone there (a copy above is stale), or written
            # above it only (levels=n): not moved, and not destroyed either.
            self.make_and_validate_key(key, version=version)  # (its read's warning)
            raise ValueError(f"Key '{key}' not found")
        # A promotion of the old copy in flight must not land.
        self._co.local_write([made])
        self._drop_above(lowest, made)
        return super().incr_version(key, delta, version)  # type: ignore[no-any-return]

    # -- coordination reads (@cached's tokens and locks) --------------------------------
    def shared_get_many(
        self, keys: Iterable[Any], version: Any = None
    ) -> dict[Any, Any]:
        """What the level every process shares holds for ``keys``: the lowest working
        level's answer, never a copy held above it; nothing promoted or counted.

        For values read to make a decision once, which a copy up to the coherence
        delay old would get wrong: ``@cached``'s ``:void`` tokens and locks (read from
        its L1, a computation would miss the newer token another process wrote 10 ms
        before, and store its stale result after ``invalidate()`` returned). A level
        being repaired for one of the keys is passed over; with no shared level
        working, the levels above answer, as a read would.
        """
        keys = _collected(keys)
        by_final = self._finals(keys, version)
        finals = list(by_final)
        for i in range(len(self._levels) - 1, 0, -1):
            health = self._health[i]
            if not self._usable(i) or (
                health.repairing() and any(health.pending(f) for f in finals)
            ):
                continue
            try:
                got = self._levels[i].get_many(finals)
            except FAULTS as exc:
                self._fault(i, exc, "get_many")
                continue
            self._ok(i)
            return {by_final[final]: _raw(value) for final, value in got.items()}
        return self._read_bookkeeping(keys, version)

    async def ashared_get_many(
        self, keys: Iterable[Any], version: Any = None
    ) -> dict[Any, Any]:
        """:meth:`shared_get_many`, in Django's thread for sync cache calls."""
        return await in_thread(self.shared_get_many)(_collected(keys), version)

    # -- reads -------------------------------------------------------------------------
    def get(
        self,
        key: Any,
        default: Any = None,
        version: Any = None,
        *,
        levels: int | None = None,
    ) -> Any:
        final = self._key(key, version)
        if levels is not None:
            self._depth(levels)  # a bad value raises whether or not L1 holds the key
        co = self._co
        if co.deadline <= _monotonic():
            co.refresh(self._levels[-1])
        self._sample -= 1
        payload = self._l1_payload(final) if self._sample else self._timed_l1(final)
        if payload is None:
            return self._get_after_l1(key, final, default, version, self._depth(levels))
        self._hits[0] += 1
        value = self._loads(payload)
        if type(value) is not _LevelTagged:
            return value
        return self._unwrap_level(key, value, default, version)

    def _unwrap_level(
        self, key: Any, env: _LevelTagged, default: Any, version: Any, level: int = 0
    ) -> Any:
        """A tagged entry's value while its tags are current; else drop it: ``default``
        (and the hit counted at ``level``, where it was found, becomes a miss)."""
        if self._current(key, env):
            return env.value
        self._recount_stale(level)
        self._drop_stale({key: env}, version)
        return default

    def _get_after_l1(
        self, key: Any, final: str, default: Any, version: Any, depth: int
    ) -> Any:
        """``get`` after L1 missed: the levels below, then the tags' check."""
        value, level = self._get_below_at(final, _MISSING, depth)
        if value is _MISSING:
            return default
        if type(value) is not _LevelTagged:
            return value
        return self._unwrap_level(key, value, default, version, level)

    def _stale_reads(self, keys: Sequence[str], version: int | None) -> None:
        """Nothing here: the readers recount at the level each stale hit came from."""

    def _current(self, key: Any, env: _LevelTagged) -> bool:
        """``_valid`` for one envelope; the common hit (no dependencies, nothing
        pending, every version key in L1) reads them straight from L1, no sets built
        (bookkeeping: not counted as the caller's hits)."""
        if env.deps or not nothing_pending():
            return bool(self._valid({key: env}))
        versions = env.versions
        made = self._version_keys(tuple(versions))
        self._poll_if_due()
        in_l1 = self._l1_quiet(made)
        if len(in_l1) < len(made):  # not all in L1: the levels below decide
            return bool(self._valid({key: env}))
        for made_key, ver in zip(made, versions.values(), strict=True):
            if in_l1[made_key] != ver:
                return False
        return True

    def get_many(
        self, keys: Iterable[Any], version: Any = None, *, levels: int | None = None
    ) -> dict[Any, Any]:
        origin: dict[str, int] = {}
        raw, by_final = self._read_many(keys, version, levels, origin)
        for value in raw.values():
            if type(value) is _LevelTagged:
                return self._unwrap_levels(raw, version, by_final, origin)
        return raw

    def _unwrap_levels(
        self,
        raw: dict[Any, Any],
        version: Any,
        by_final: dict[str, Any],
        origin: dict[str, int],
    ) -> dict[Any, Any]:
        """``_unwrap_many``, each stale envelope's hit recounted as a miss at its level."""
        out = self._unwrap_many(raw, version, _LevelTagged)
        if len(out) < len(raw):
            for final, key in by_final.items():
                if key in raw and key not in out:
                    self._recount_stale(origin[final])
        return out

    def has_key(
        self, key: Any, version: Any = None, *, levels: int | None = None
    ) -> bool:
        # Like the levels' has_key: no promotion (a promotion without a known TTL
        # would keep the key for L1_MAX_TTL); a tagged entry must still be current.
        final = self._key(key, version)
        depth = self._depth(levels)
        self._poll_if_due()
        payload = self._l1_payload(final)
        if payload is None:
            return self._has_after_l1(key, final, depth)
        value = self._loads_for_has_key(payload)
        return type(value) is not _LevelTagged or self._still_valid(key, value)

    def _loads_for_has_key(self, payload: bytes) -> Any:
        """The value, to see whether it is a tagged envelope; one that cannot be
        unpickled (its class gone) is there all the same: True, as every other backend
        answers, and only ``get`` raises."""
        try:
            return self._loads(payload)
        except Exception:  # noqa: BLE001 - whatever unpickling raises
            return None

    def _has_after_l1(self, key: Any, final: str, depth: int) -> bool:
        """``has_key`` after L1 missed: the levels below, without promotion."""
        try:
            value, _ = self._get_below_at(final, _MISSING, depth, False, False)
        except FAULTS:
            # A level's failure reaches here only with RAISE_ERRORS (else the read
            # skipped that level): raised, as get() raises it. Taken for an
            # unpicklable value, it would answer True for a key never written while
            # Redis was down.
            raise
        except Exception:  # noqa: BLE001 - a level's value that cannot be unpickled
            return True
        if value is _MISSING:
            return False
        return type(value) is not _LevelTagged or self._still_valid(key, value)

    def _still_valid(self, key: Any, env: _LevelTagged) -> bool:
        return bool(self._valid({key: env}))

    # -- async reads: an L1 hit is answered on the event loop -----------------------------
    # With a SmartCache L1 and no coherence poll due, reading L1 waits on no I/O, so the
    # async twins read it in place (a thread hop costs ~80 us, 35x an L1 hit); whatever
    # needs a lower level (a miss, a tag check, the poll) runs in a thread, as Django's
    # own async cache methods do. Each read of L1 is counted once.

    def _l1_in_place(self) -> Any:
        """L1's store if it may be read on the event loop now, else None."""
        store = self._l1_store
        if store is None or self._co.deadline <= _monotonic():
            return None
        return store

    async def aget(
        self,
        key: Any,
        default: Any = None,
        version: Any = None,
        *,
        levels: int | None = None,
    ) -> Any:
        store = self._l1_in_place()
        if store is None:
            return await in_thread(self._own("get"))(
                key, default, version, levels=levels
            )
        final = self._key(key, version)
        depth = self._depth(levels)
        payload = store.get(final)
        if payload is None:
            return await in_thread(self._get_after_l1)(
                key, final, default, version, depth
            )
        self._hits[0] += 1
        value = self._loads(payload)
        if type(value) is not _LevelTagged:
            return value
        return await in_thread(self._unwrap_level)(key, value, default, version)

    async def aget_many(
        self, keys: Iterable[Any], version: Any = None, *, levels: int | None = None
    ) -> dict[Any, Any]:
        keys = _collected(keys)
        store = self._l1_in_place()
        # Reading and unpickling more than INLINE_BATCH keys in place stalled the
        # loop as SmartCache's batches did (100,000 keys: 1.4 s): a thread then.
        if store is None or len(keys) > INLINE_BATCH:
            return await in_thread(self._own("get_many"))(keys, version, levels=levels)
        depth = self._depth(levels)
        by_final = self._finals(keys, version)
        if not by_final:
            return {}
        loads = self._loads
        found = {k: loads(p) for k, p in store.get_many(by_final).items()}
        self._hits[0] += len(found)
        origin = dict.fromkeys(found, 0)
        if len(found) < len(by_final):
            missing = [k for k in by_final if k not in found]
            found = await in_thread(self._read_levels)(missing, found, 1, depth, origin)
        raw = {by_final[k]: v for k, v in found.items()}
        for value in raw.values():
            if type(value) is _LevelTagged:
                return await in_thread(self._unwrap_levels)(
                    raw, version, by_final, origin
                )
        return raw

    async def ahas_key(
        self, key: Any, version: Any = None, *, levels: int | None = None
    ) -> bool:
        store = self._l1_in_place()
        if store is None:
            return await in_thread(self._own("has_key"))(key, version, levels=levels)
        final = self._key(key, version)
        depth = self._depth(levels)
        payload = store.get(final)
        if payload is None:
            return await in_thread(self._has_after_l1)(key, final, depth)
        value = self._loads_for_has_key(payload)
        if type(value) is not _LevelTagged:
            return True
        return await in_thread(self._still_valid)(key, value)

    async def adelete(
        self, key: Any, version: Any = None, *, levels: int | None = None
    ) -> bool:
        """``delete`` in a thread, ``levels=`` included (Django's own drops it)."""
        return await in_thread(self._own("delete"))(key, version, levels=levels)  # type: ignore[no-any-return]

    async def adelete_many(
        self, keys: Iterable[Any], version: Any = None, *, levels: int | None = None
    ) -> None:
        await in_thread(self._own("delete_many"))(keys, version, levels=levels)

    async def aget_or_set(self, key: Any, default: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None, **kwargs: Any) -> Any:  # fmt: skip
        store = self._l1_in_place()
        # A key that warns takes the slow path only, which warns as Django does.
        final = None if store is None else self._quiet_key(key, version)
        if store is not None and final is not None:
            peeked = store.peek(final)
            if peeked is not None:
                value = self._loads(peeked[0])
                if type(value) is not _LevelTagged:
                    store.get(final)  # counted as a read: statistics, eviction policy
                    self._hits[0] += 1
                    return value
        # A miss or a tagged entry: single flight, the levels below, in a thread.
        return await super().aget_or_set(key, default, timeout, version, **kwargs)

    # -- async writes: in Django's thread, waited for when cancelled (in_thread) --------
    # The reads above answer an L1 hit on the loop: a write that a cancellation let run
    # on in the thread was overtaken by the same task's next read. These wait for it.

    async def aset(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None, **kwargs: Any) -> None:  # fmt: skip
        await in_thread(self.set)(key, value, timeout, version, **kwargs)

    async def aadd(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None, **kwargs: Any) -> bool:  # fmt: skip
        return await in_thread(self.add)(key, value, timeout, version, **kwargs)

    async def aset_many(self, data: Mapping[Any, Any], timeout: Any = DEFAULT_TIMEOUT, version: Any = None, **kwargs: Any) -> list[Any]:  # fmt: skip
        return await in_thread(self.set_many)(data, timeout, version, **kwargs)  # type: ignore[arg-type]

    async def atouch(
        self, key: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None
    ) -> bool:
        return await in_thread(self.touch)(key, timeout, version)

    async def aincr(self, key: Any, delta: int = 1, version: Any = None) -> Any:
        return await in_thread(self.incr)(key, delta, version)

    async def aincr_version(self, key: Any, delta: int = 1, version: Any = None) -> int:
        return await in_thread(self.incr_version)(key, delta, version)

    async def aclear(self) -> None:
        await in_thread(self.clear)()

    async def adelete_pattern(
        self, pattern: str, *, regex: bool = False, version: Any = None
    ) -> int:
        return await in_thread(self.delete_pattern)(
            pattern, regex=regex, version=version
        )

    async def ainvalidate_tags(self, *tags: str, **kwargs: Any) -> None:
        await in_thread(self.invalidate_tags)(*tags, **kwargs)

    # -- writes ------------------------------------------------------------------------
    def incr(self, key: Any, delta: int = 1, version: Any = None) -> Any:
        """The levels' atomic ``incr``; a tagged value's envelope is kept, and judged
        here: stale, the key was absent for ``get``, so it is for ``incr`` too
        (dropped, ``ValueError``). (A level's envelope raised a ``TypeError``.)"""
        bumped: list[Tagged] = []
        token = INCREMENTED_ENVELOPES.set(bumped)
        try:
            value = _MultiLevelBase.incr(self, key, delta, version)
        except TypeError:
            # A tagged value that is not a number (the level noted its envelope):
            # stale, it is a missing key, as a stale number is.
            self._judge_incremented(key, bumped, version)
            raise
        finally:
            INCREMENTED_ENVELOPES.reset(token)
        self._judge_incremented(key, bumped, version)
        return value

    def _judge_incremented(self, key: Any, bumped: list[Tagged], version: Any) -> None:
        """``ValueError`` (the entry dropped) when the envelope a level incremented, or
        failed to, is stale."""
        if bumped:
            envelope = _raw(bumped[-1])
            if self._incremented_stale(key, envelope):
                self._clear_stale_occupant(key, envelope, version)
                raise ValueError(f"Key '{key}' not found")

    def set(
        self,
        key: Any,
        value: Any,
        timeout: Any = DEFAULT_TIMEOUT,
        version: Any = None,
        tags: Iterable[str] | None = None,
        depends_on: Iterable[str] | None = None,
        *,
        levels: int | None = None,
    ) -> None:
        if tags is None and depends_on is None:
            _MultiLevelBase.set(self, key, value, timeout, version, levels=levels)
            return
        if levels is None:
            TaggingMixin.set(self, key, value, timeout, version, tags, depends_on)
            return
        prepared = self._prepare(tags, depends_on)
        if prepared is None:
            _MultiLevelBase.set(self, key, value, timeout, version, levels=levels)
            return
        env = self._envelope(value, *prepared)
        if self._is_dirty(env.versions):
            _MultiLevelBase.delete(self, key, version, levels=levels)
            return
        _MultiLevelBase.set(self, key, env, timeout, version, levels=levels)

    def set_many(
        self,
        data: dict[Any, Any],
        timeout: Any = DEFAULT_TIMEOUT,
        version: Any = None,
        tags: Iterable[str] | None = None,
        depends_on: Iterable[str] | None = None,
        *,
        levels: int | None = None,
    ) -> list[Any]:
        if tags is None and depends_on is None:
            return _MultiLevelBase.set_many(self, data, timeout, version, levels=levels)
        if levels is None:
            return TaggingMixin.set_many(self, data, timeout, version, tags, depends_on)
        prepared = self._prepare(tags, depends_on)
        if prepared is None:
            return _MultiLevelBase.set_many(self, data, timeout, version, levels=levels)
        envelopes = {k: self._envelope(v, *prepared) for k, v in data.items()}
        if envelopes and self._is_dirty(next(iter(envelopes.values())).versions):
            _MultiLevelBase.delete_many(self, list(envelopes), version, levels=levels)
            return []
        return _MultiLevelBase.set_many(
            self, envelopes, timeout, version, levels=levels
        )


def _delete_unchanged(level: BaseCache, expected: dict[str, str]) -> None:
    """Delete from ``level`` each final key still holding the envelope written as
    its ``wid``: atomically on SmartCache and SQLiteCache, by re-read elsewhere."""
    store = _in_process_store(level)
    if store is not None:
        # A level's copy: deleted, as a delete() would, not an invalidation.
        remove_writes(store, expected, invalidated=False)
    elif isinstance(level, SQLiteCache):
        level._delete_stale(expected, None)  # identity keys: final keys as given
    else:
        delete_unchanged(expected, level.get_many, level.delete_many)
