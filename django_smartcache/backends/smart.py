"""SmartCache: an in-process cache with a memory budget in bytes and smarter eviction.

A thin Django adapter over :class:`~django_smartcache.core.store.MemoryStore`. As with
LocMemCache, every instance with the same ``LOCATION`` (and the same budget options) in
a process shares one store, so a value set in one thread is a hit in every other.
Values are pickled on write, outside the store's lock.

Three layers, so that the generic mixins wrap the raw primitives and untagged calls
still take the short path: ``_StoreCache`` (raw primitives; it indexes the tags of
tagged envelopes in the store), ``_TaggedStoreCache`` (``TaggingMixin`` plus fast
paths that only fall back to the mixin for tagged values, and inline async twins)
and ``SmartCache`` (single-flight ``get_or_set`` in front of it all).

The store reports evictions to a listener set when it is created, which sends
``signals.entry_evicted`` only while that signal has receivers.
"""

from __future__ import annotations

import functools
import math
import os
import pickle
import threading
import time
from collections.abc import Collection, Iterable, Mapping, Sequence, Set as AbstractSet
from typing import Any, cast

from asgiref.sync import sync_to_async
from django.core.cache.backends.base import DEFAULT_TIMEOUT, BaseCache
from django.core.exceptions import ImproperlyConfigured

from .. import conf
from .._incr_envelopes import failed_envelope, incremented, note_incremented
from .._key_warnings import key_warnings_given
from .._transactions import has_sync_caller, nothing_pending, sync_caller_dirty
from ..core.policy import DEFAULT_POLICY, POLICIES
from ..core.singleflight import computed_elsewhere, leading
from ..core.store import ENTRY_OVERHEAD, HOLD_BATCH, EvictionListener, MemoryStore
from ..core.tags import Tagged
from ..signals import entry_evicted
from ..tagging import TaggingMixin, VersionKeys
from ._async import in_worker
from .base import (
    SingleFlightMixin,
    SmartCacheKeyMixin,
    check_options,
    django_int,
    dumps,
    held_evictions,
    option_choice,
    option_size,
    option_timeout,
    options_given,
)

#: Budget when ``OPTIONS["MAX_MEMORY"]`` is not given.
DEFAULT_MAX_MEMORY = 64 * 1024 * 1024

#: OPTIONS read by SmartCache. ``CULL_FREQUENCY`` is Django's generic option; a byte
#: budget evicts one victim at a time instead of culling, so it is checked and ignored.
OPTIONS = ("MAX_MEMORY", "MAX_ENTRIES", "MAX_ITEM_SIZE", "POLICY", "CULL_FREQUENCY")

_BACKEND = "SmartCache"
#: The accounted size of the smallest entry: the overhead plus the shortest pickle
#: (``None``, 4 bytes), pickled as every write is. A budget below it could never
#: store anything.
_SMALLEST_ENTRY = ENTRY_OVERHEAD + len(dumps(None, None))

# Stores shared per process, keyed by LOCATION and budget options (locmem.py's pattern).
_stores: dict[tuple[Any, ...], MemoryStore] = {}
_stores_lock = threading.Lock()

_loads = pickle.loads


def _check_cull_frequency(value: Any) -> None:
    """Not used (SmartCache evicts one victim at a time), but read as Django reads it,
    ``int()`` of it (``"3"`` from an environment variable is 3), and refused when
    Django's caches would mean nothing by it (silently using 3 instead)."""
    number = django_int(value)
    if number is None or number < 0:
        raise ImproperlyConfigured(
            f"{_BACKEND}: OPTIONS['CULL_FREQUENCY'] must be an integer >= 0, got {value!r}"
        )


def _max_entries(value: Any) -> int | None:
    """``MAX_ENTRIES`` read as Django's backends read it, ``int()`` of it (``"500"``
    from an environment variable is 500), as SQLiteCache reads it; None: no limit."""
    if value is None:
        return None
    number = django_int(value)
    if number is None or number < 1:
        raise ImproperlyConfigured(
            f"{_BACKEND}: OPTIONS['MAX_ENTRIES'] must be an integer >= 1 or None, "
            f"got {value!r}"
        )
    return number


def _holds_write(wid: bytes, payload: bytes) -> bool:
    """Whether ``payload`` is the envelope written as ``wid`` (a stale-drop's check).

    The write id (random, 33 ASCII characters) is in the pickle verbatim: a search
    of the bytes, not an unpickling of a value of any size under the store's lock.
    """
    return wid in payload


def remove_writes(
    store: MemoryStore, writes: dict[str, str], *, invalidated: bool = True
) -> int:
    """Remove each made key of ``writes`` that still holds the envelope written as its
    ``wid`` (``MemoryStore.remove_unchanged``); how many went."""
    return store.remove_unchanged(
        {
            made: functools.partial(_holds_write, wid.encode())
            for made, wid in writes.items()
        },
        invalidated=invalidated,
    )


# Each store's eviction listener, installed on the store only while ``entry_evicted``
# has receivers: otherwise the store records nothing.
_listeners: dict[tuple[Any, ...], EvictionListener] = {}
_listening = False


#: Expired entries each store reclaims when another store is made (``_store_for``).
RECLAIM_ON_NEW_STORE = 4096


def _store_for(config: tuple[Any, ...], creator: BaseCache) -> MemoryStore:
    with _stores_lock:
        store = _stores.get(config)
        if store is not None:
            return store
        others = list(_stores.values())
        store = _new_store(config, creator)
    # A new configuration (a test's CACHES, a tenant's LOCATION) is when the older
    # ones may have gone idle: no call of theirs sweeps what expired in them. Kept
    # for the process like LocMemCache's (a later instance finds its data), they would
    # hold it all: 60 MultiLevelCache configurations closed and deleted kept 174 MiB of
    # L1 copies expired long ago. Reclaimed here, a bounded slice of each (all at once
    # holds a store's lock 374 ms for 175,000 expired entries).
    for other in others:
        other.reclaim(RECLAIM_ON_NEW_STORE)
    return store


def _new_store(config: tuple[Any, ...], creator: BaseCache) -> MemoryStore:
    """(With ``_stores_lock`` held.)"""
    _, max_bytes, max_entries, max_item_size, policy = config
    listener = _listeners[config] = _eviction_sender(creator)
    store = _stores[config] = MemoryStore(
        max_bytes,
        max_entries,
        max_item_size=max_item_size,
        policy=policy,
        on_evict=listener if _listening else None,
        tag_keys=True,  # the store's tags are the made keys of version keys
    )
    return store


def _hold_for_fork() -> None:
    """Before ``fork()``: wait until no thread is inside a store, and keep them out.

    A child inherits locks as they were: one held by another thread mid-call would stay
    held forever there (and the store half-changed). Holding them all across the fork
    hands the child consistent, unlocked stores; no code holds one store's lock while
    taking another's or ``_stores_lock``, so this order cannot deadlock.
    """
    _stores_lock.acquire()
    for store in _stores.values():
        store.lock.acquire()


def _release_after_fork() -> None:
    for store in _stores.values():
        store.lock.release()
    _stores_lock.release()


if hasattr(os, "register_at_fork"):  # POSIX; elsewhere there is no fork
    os.register_at_fork(
        before=_hold_for_fork,
        after_in_parent=_release_after_fork,
        after_in_child=_release_after_fork,
    )


def _listening_changed(listening: bool) -> None:
    """Switch every store's eviction recording on or off with ``entry_evicted``'s receivers."""
    global _listening
    with _stores_lock:
        _listening = listening
        for config, store in _stores.items():
            store.on_evict = _listeners[config] if listening else None


entry_evicted.watch(_listening_changed)


def _eviction_sender(cache: BaseCache) -> EvictionListener:
    """The store's listener: ``entry_evicted`` per evicted key, only if anyone listens.

    ``cache`` is the instance that created the store; it reports for every alias
    sharing it (documented on the signal).
    """
    sender = type(cache)
    send = entry_evicted.send

    def deliver(batch: list[tuple[Any, str]]) -> None:
        for key, cause in batch:
            send(sender=sender, cache=cache, key=key, cause=cause)

    def on_evict(batch: list[tuple[Any, str]]) -> None:
        if entry_evicted.receivers:
            held = held_evictions()
            if held is not None:
                held.append((deliver, batch))
            else:
                deliver(batch)

    return on_evict


#: An awaited batch of more keys than this (one critical section of the store), and
#: ``aclear``/``adelete_pattern`` on a store of more entries, run in a worker thread,
#: as Django's ``a*`` methods do; smaller ones inline, which is faster.
INLINE_BATCH = HOLD_BATCH


def _collected(keys: Iterable[Any]) -> Collection[Any]:
    """``keys`` as a collection whose size is known (a generator is read once here)."""
    return keys if isinstance(keys, Collection) else list(keys)


class _StoreCache(SmartCacheKeyMixin, BaseCache):
    """The raw primitives over the shared store: values are returned as stored.

    A :class:`~django_smartcache.core.tags.Tagged` envelope written here is indexed
    under its tags in the store (in the same critical section as the write), so that
    ``invalidate_tags()`` can free its bytes.
    """

    pickle_protocol = pickle.HIGHEST_PROTOCOL

    def __init__(self, location: str, params: dict[str, Any]) -> None:
        option_timeout(_BACKEND, params)
        options = options_given(params)
        if not isinstance(options, Mapping):
            raise ImproperlyConfigured(
                f"{_BACKEND}: OPTIONS must be a dict, got {options!r}"
            )
        check_options(_BACKEND, options, OPTIONS)
        # Every entry costs its payload plus ENTRY_OVERHEAD: below that nothing fits.
        why = (
            ", the smallest entry (every entry is accounted as its pickled value plus "
            f"an overhead of {ENTRY_OVERHEAD} bytes)"
        )
        max_bytes = option_size(
            _BACKEND,
            options,
            "MAX_MEMORY",
            DEFAULT_MAX_MEMORY,
            allow_none=True,
            minimum=_SMALLEST_ENTRY,
            why=why,
        )
        max_entries = _max_entries(options.get("MAX_ENTRIES"))
        max_item_size = option_size(
            _BACKEND,
            options,
            "MAX_ITEM_SIZE",
            None,
            allow_none=True,
            minimum=_SMALLEST_ENTRY,
            why=why,
        )
        policy = option_choice(_BACKEND, options, "POLICY", DEFAULT_POLICY, POLICIES)
        _check_cull_frequency(options.get("CULL_FREQUENCY", 3))
        # After our checks: Django's own reads MAX_ENTRIES/CULL_FREQUENCY with int(),
        # whose OverflowError (for inf) would name no option.
        super().__init__({**params, "OPTIONS": options})
        if max_bytes is None and max_entries is None:
            raise ImproperlyConfigured(
                f"{_BACKEND}: OPTIONS['MAX_MEMORY'] may be None only when "
                "OPTIONS['MAX_ENTRIES'] sets an entry budget"
            )
        self._store_config = (location, max_bytes, max_entries, max_item_size, policy)
        self._store = _store_for(self._store_config, self)

    # -- the primitives ------------------------------------------------------------------

    def get(self, key: Any, default: Any = None, version: Any = None) -> Any:
        payload = self._store.get(self._key(key, version))
        if payload is None:
            return default
        return _loads(payload)

    def set(
        self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None
    ) -> None:
        made = self._key(key, version)
        tags = self._tag_ids(value.versions) if type(value) is Tagged else None
        self._store.set(made, dumps(made, value), self._ttl(timeout), tags)

    def add(
        self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None
    ) -> bool:
        made = self._key(key, version)
        tags = self._tag_ids(value.versions) if type(value) is Tagged else None
        return self._store.add(made, dumps(made, value), self._ttl(timeout), tags)

    def touch(
        self, key: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None
    ) -> bool:
        return self._store.touch(self._key(key, version), self._ttl(timeout))

    def delete(self, key: Any, version: Any = None) -> bool:
        return self._store.delete(self._key(key, version))

    def has_key(self, key: Any, version: Any = None) -> bool:
        return self._store.has(self._key(key, version))

    def incr(self, key: Any, delta: int = 1, version: Any = None) -> Any:
        made = self._key(key, version)
        result: list[Any] = []
        bumped: list[Tagged] = []

        def bump(payload: bytes) -> bytes:
            old = _loads(payload)
            if isinstance(old, Tagged):  # keep the envelope: its tags and validity
                value = incremented(old, delta)
                result.append(value)
                bumped.append(type(old)(value, old.versions, old.deps, old.wid))
                return dumps(made, bumped[0])
            value = old + delta
            result.append(value)
            return dumps(made, value)

        try:
            self._store.transform(made, bump)
        except KeyError:
            raise ValueError(f"Key '{made}' not found") from None
        except TypeError as exc:
            envelope = failed_envelope(exc)
            if envelope is not None:  # stale: ValueError, as for a stale number
                self._incremented_envelope(key, version, envelope)
            raise
        if bumped:
            self._incremented_envelope(key, version, bumped[0])
        return result[0]

    def _incremented_envelope(self, key: Any, version: Any, envelope: Tagged) -> None:
        """A tagged value was incremented (its envelope kept): the tagging layer
        (``TaggingMixin``) judges it; a store without tags hands it to its owner."""
        note_incremented(envelope)

    def clear(self) -> None:
        self._store.clear()

    # -- batches: one key pass, one critical section per 512 keys (HOLD_BATCH) -------------

    def get_many(self, keys: Iterable[Any], version: Any = None) -> dict[Any, Any]:
        made = self._keys(keys, version)
        return {
            made[key]: _loads(payload)
            for key, payload in self._store.get_many(made).items()
        }

    def set_many(
        self,
        data: Mapping[Any, Any],
        timeout: Any = DEFAULT_TIMEOUT,
        version: Any = None,
    ) -> list[Any]:
        return self._set_many(data, timeout, version, plain=False)

    def _set_many(
        self, data: Mapping[Any, Any], timeout: Any, version: Any, *, plain: bool
    ) -> list[Any]:
        """``set_many``; ``plain``: the caller knows no value is :class:`Tagged` (an
        untagged call of SmartCache's own), so the values are not looked at."""
        made = self._keys(data, version)
        # Pickle everything first: an unpicklable value leaves the cache unchanged.
        items = [(key, dumps(key, data[orig])) for key, orig in made.items()]
        ttl = self._ttl(timeout)
        if plain or not any(type(v) is Tagged for v in data.values()):
            refused = self._store.set_many(items, ttl)
        else:  # TaggingMixin.set_many: one tag set for all, but look at each anyway
            refused = []
            ids: dict[tuple[str, ...], tuple[str, ...]] = {}
            for item, orig in zip(items, made.values(), strict=True):
                value = data[orig]
                tags = None
                if type(value) is Tagged:
                    names = tuple(value.versions)
                    tags = ids.get(names)
                    if tags is None:
                        tags = ids[names] = self._tag_ids(names)
                if not self._store.set(item[0], item[1], ttl, tags):
                    refused.append(item[0])
        return [made[key] for key in refused]

    def delete_many(self, keys: Iterable[Any], version: Any = None) -> None:
        self._store.delete_many(self._keys(keys, version))

    def ttl(self, key: Any, version: Any = None) -> float | None:
        """Seconds ``key`` has left; ``None`` if it never expires; ``0.0`` if it is
        absent or expired (as SQLiteCache and django-redis answer). Not an access."""
        return self.ttl_many([key], version).get(key, 0.0)

    def ttl_many(
        self, keys: Iterable[Any], version: Any = None
    ) -> dict[Any, float | None]:
        """:meth:`ttl` of the live ``keys`` (absent and expired ones left out): what a
        MultiLevelCache promoting a hit from this level keeps, never more."""
        made = self._keys(keys, version)
        return {
            made[key]: None if left == math.inf else left
            for key, left in self._store.remaining(made).items()
        }

    # -- async twins: in-memory work never waits on I/O, so no thread hop --------------------

    async def aget(self, key: Any, default: Any = None, version: Any = None) -> Any:
        return self.get(key, default, version)

    async def aset(
        self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None
    ) -> None:
        self.set(key, value, timeout, version)

    async def aadd(
        self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None
    ) -> bool:
        return self.add(key, value, timeout, version)

    async def atouch(
        self, key: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None
    ) -> bool:
        return self.touch(key, timeout, version)

    async def adelete(self, key: Any, version: Any = None) -> bool:
        return self.delete(key, version)

    async def ahas_key(self, key: Any, version: Any = None) -> bool:
        return self.has_key(key, version)

    async def aincr(self, key: Any, delta: int = 1, version: Any = None) -> Any:
        return self.incr(key, delta, version)

    # Batches above INLINE_BATCH keys go to a thread: 100k keys inline stalled the loop
    # 220-1030 ms.

    async def aget_many(
        self, keys: Iterable[Any], version: Any = None
    ) -> dict[Any, Any]:
        keys = _collected(keys)
        if len(keys) > INLINE_BATCH:
            return await in_worker(self.get_many)(keys, version)
        return self.get_many(keys, version)

    async def aset_many(
        self, data: dict[Any, Any], timeout: Any = DEFAULT_TIMEOUT, version: Any = None
    ) -> list[Any]:
        if len(data) > INLINE_BATCH:
            return await in_worker(self.set_many)(data, timeout, version)
        return self.set_many(data, timeout, version)

    async def adelete_many(self, keys: Iterable[Any], version: Any = None) -> None:
        keys = _collected(keys)
        if len(keys) > INLINE_BATCH:
            await in_worker(self.delete_many)(keys, version)
            return
        self.delete_many(keys, version)

    async def aclear(self) -> None:
        if len(self._store) > INLINE_BATCH:
            await in_worker(self.clear)()
            return
        self.clear()

    # -- beyond Django's API -------------------------------------------------------------

    def _tag_ids(self, tags: Iterable[str]) -> tuple[str, ...]:
        """Tags as indexed in the shared store: the made key of each tag's version key,
        so aliases sharing a store but not a ``KEY_PREFIX`` never purge each other's."""
        prefix = conf.get("TAG_KEY_PREFIX")
        return tuple(self._key(f"{prefix}{tag}") for tag in tags)

    def delete_pattern(
        self, pattern: str, *, regex: bool = False, version: Any = None
    ) -> int:
        """Delete the keys matching a glob (or a regex on the key with ``regex=True``).

        ``KEY_PREFIX`` and ``version`` (default: this cache's ``VERSION``) are honoured;
        tag version keys are never matched. O(n) in the resident keys, no value is
        unpickled; returns how many live keys were removed. See ``docs/backends.md``.
        """
        kp = self.key_pattern(pattern, regex=regex, version=version)
        internal = kp.head + conf.get("TAG_KEY_PREFIX")
        matches = kp.matches
        return self._store.delete_matching(
            kp.literal_prefix,
            lambda made: matches(made) and not made.startswith(internal),
        )

    async def adelete_pattern(
        self, pattern: str, *, regex: bool = False, version: Any = None
    ) -> int:
        if len(self._store) > INLINE_BATCH:  # O(n) in the resident keys
            return await in_worker(self.delete_pattern)(
                pattern, regex=regex, version=version
            )
        return self.delete_pattern(pattern, regex=regex, version=version)

    def stats(self) -> dict[str, Any]:
        """Exact counters of the shared store: hits, misses, hit_rate, evictions by cause..."""
        return self._store.stats()

    def clear_expired(self) -> int:
        """Purge every expired entry now; return how many were removed."""
        return self._store.clear_expired()


_MISSING = object()


class _TaggedStoreCache(TaggingMixin, _StoreCache):
    """Tags (``TaggingMixin``) with fast paths: untagged values never enter the mixin."""

    def _tags_invalidated(self, tags: Sequence[str]) -> None:
        # O(1) per tag: the store queues the keys and frees them a batch per operation.
        self._store.invalidate_tags(self._tag_ids(tags))

    def __init__(self, location: str, params: dict[str, Any]) -> None:
        super().__init__(location, params)
        self._version_keys = VersionKeys(self._key)

    def _read_bookkeeping(
        self, keys: Sequence[str], version: int | None = None
    ) -> dict[str, Any]:
        # An access for the policy (tag versions stay hot), not a hit or a miss.
        made = self._keys(keys, version)
        return {
            made[key]: _loads(payload)
            for key, payload in self._store.get_many(made, counted=False).items()
        }

    def _stale_reads(self, keys: Sequence[str], version: int | None) -> None:
        self._store.recount_as_misses(len(keys))

    # Tag version writes are bookkeeping: not counted as sets.
    def _add_bookkeeping(self, key: str, value: str, timeout: Any) -> bool:
        made = self._key(key)
        return self._store.add(
            made, dumps(made, value), self._ttl(timeout), counted=False
        )

    def _add_many_bookkeeping(
        self, data: dict[str, str], timeout: Any, present: Sequence[str] = ()
    ) -> AbstractSet[str]:
        made = {self._key(key): key for key in data}
        added = self._store.add_many(
            [(m, dumps(m, data[key])) for m, key in made.items()],
            self._ttl(timeout),
            counted=False,
            keep=[self._key(key) for key in present],
        )
        return {made[m] for m in added}

    def _write_bookkeeping(self, data: dict[str, str], timeout: Any) -> None:
        items = []
        for key, value in data.items():
            made = self._key(key)
            items.append((made, dumps(made, value)))
        self._store.set_many(items, self._ttl(timeout), counted=False)

    def _delete_stale(self, writes: dict[str, str], version: int | None) -> None:
        # A stale envelope read is an invalidated entry leaving, not a caller's delete;
        # compared and removed under the store's lock (a write since is kept).
        made = self._keys(list(writes), version)
        remove_writes(self._store, {m: writes[key] for m, key in made.items()})

    def _unwrap(self, key: Any, env: Tagged, default: Any, version: Any) -> Any:
        if env.deps or not nothing_pending():
            valid = bool(self._valid({key: env}))
        else:
            # The common hit: the versions straight from the store, one critical
            # section, no sets or dicts built (``_valid`` decides the same).
            versions = env.versions
            made = self._version_keys(tuple(versions))
            found = self._store.get_many(made, counted=False)
            valid = len(found) == len(made)
            if valid:
                for made_key, ver in zip(made, versions.values(), strict=True):
                    if _loads(found[made_key]) != ver:
                        valid = False
                        break
        if valid:
            return env.value
        self._stale_reads([key], version)
        self._drop_stale({key: env}, version)
        return default

    def get(self, key: Any, default: Any = None, version: Any = None) -> Any:
        payload = self._store.get(self._key(key, version))
        if payload is None:
            return default
        value = _loads(payload)
        if type(value) is Tagged:
            return self._unwrap(key, value, default, version)
        return value

    def get_many(self, keys: Iterable[Any], version: Any = None) -> dict[Any, Any]:
        made = self._keys(keys, version)
        found = {
            made[key]: _loads(payload)
            for key, payload in self._store.get_many(made).items()
        }
        for value in found.values():
            if type(value) is Tagged:
                return self._unwrap_many(found, version)
        return found

    def has_key(self, key: Any, version: Any = None) -> bool:
        peeked = self._store.peek(self._key(key, version))
        if peeked is None:
            return False
        if not peeked[1]:
            return True
        value = _loads(peeked[0])
        return type(value) is not Tagged or bool(self._valid({key: value}))

    def set(
        self,
        key: Any,
        value: Any,
        timeout: Any = DEFAULT_TIMEOUT,
        version: Any = None,
        tags: Iterable[str] | None = None,
        depends_on: Iterable[str] | None = None,
    ) -> None:
        if tags is None and depends_on is None:
            made = self._key(key, version)
            self._store.set(made, dumps(made, value), self._ttl(timeout))
            return
        TaggingMixin.set(self, key, value, timeout, version, tags, depends_on)

    def add(
        self,
        key: Any,
        value: Any,
        timeout: Any = DEFAULT_TIMEOUT,
        version: Any = None,
        tags: Iterable[str] | None = None,
        depends_on: Iterable[str] | None = None,
    ) -> bool:
        if tags is None and depends_on is None:
            made = self._key(key, version)
            if self._store.add(made, dumps(made, value), self._ttl(timeout)):
                return True
            peeked = self._store.peek(made)
            if peeked is None or not peeked[1]:
                return False
            # A tagged occupant: the mixin lets a stale one not block the add (the
            # key's warning, if any, was given above).
            with key_warnings_given():
                return TaggingMixin.add(
                    self, key, value, timeout, version, tags, depends_on
                )
        return TaggingMixin.add(self, key, value, timeout, version, tags, depends_on)

    def set_many(
        self,
        data: Mapping[Any, Any],
        timeout: Any = DEFAULT_TIMEOUT,
        version: Any = None,
        tags: Iterable[str] | None = None,
        depends_on: Iterable[str] | None = None,
    ) -> list[Any]:
        if tags is None and depends_on is None:
            return self._set_many(data, timeout, version, plain=True)
        return TaggingMixin.set_many(self, data, timeout, version, tags, depends_on)

    # -- async twins: in-memory work never waits on I/O, so no thread hop --------------------
    # Except for a coroutine that async_to_sync runs for a thread with dirty tags (writes
    # in its open transaction; the coroutine's ORM calls run there): its reads and tagged
    # writes hop to that thread, which neither reads nor stores those tags' entries.
    # Untagged writes never look; the rest pay one dict check while no thread is dirty.

    async def aget(self, key: Any, default: Any = None, version: Any = None) -> Any:
        if sync_caller_dirty():
            return await sync_to_async(self.get, thread_sensitive=True)(
                key, default, version
            )
        return self.get(key, default, version)

    async def aget_many(
        self, keys: Iterable[Any], version: Any = None
    ) -> dict[Any, Any]:
        if sync_caller_dirty():
            return await sync_to_async(self.get_many, thread_sensitive=True)(
                keys, version
            )
        return await _StoreCache.aget_many(self, keys, version)

    async def ahas_key(self, key: Any, version: Any = None) -> bool:
        if sync_caller_dirty():
            return await sync_to_async(self.has_key, thread_sensitive=True)(
                key, version
            )
        return self.has_key(key, version)

    async def aset(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None, **kwargs: Any) -> None:  # fmt: skip
        if kwargs and sync_caller_dirty():
            await sync_to_async(self.set, thread_sensitive=True)(
                key, value, timeout, version, **kwargs
            )
            return
        self.set(key, value, timeout, version, **kwargs)

    async def aadd(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None, **kwargs: Any) -> bool:  # fmt: skip
        if kwargs and sync_caller_dirty():
            return await sync_to_async(self.add, thread_sensitive=True)(
                key, value, timeout, version, **kwargs
            )
        return self.add(key, value, timeout, version, **kwargs)

    async def aset_many(self, data: Mapping[Any, Any], timeout: Any = DEFAULT_TIMEOUT, version: Any = None, **kwargs: Any) -> list[Any]:  # fmt: skip
        if kwargs and sync_caller_dirty():
            return await sync_to_async(self.set_many, thread_sensitive=True)(
                data, timeout, version, **kwargs
            )
        if len(data) > INLINE_BATCH:  # see _StoreCache.aget_many
            return await in_worker(self.set_many)(data, timeout, version, **kwargs)
        return self.set_many(data, timeout, version, **kwargs)

    async def aget_or_set(self, key: Any, default: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None, **kwargs: Any) -> Any:  # fmt: skip
        """The async single flight (one per loop) runs in front of this; here the
        coroutine joins the threads' one, so that a thread's ``get_or_set`` and a
        coroutine's ``aget_or_set`` of one key compute once. It leads on the loop
        (in-memory work), or awaits a thread's computation without blocking it."""
        if sync_caller_dirty():
            # Computed and stored (or not) in the caller's thread: see aget.
            return await sync_to_async(self.get_or_set, thread_sensitive=True)(
                key, default, timeout, version, **kwargs
            )
        get_or_set = functools.partial(TaggingMixin.get_or_set, self)
        flight = cast(Any, self)
        if not callable(default) or not flight.singleflight_allowed():
            return get_or_set(key, default, timeout, version, **kwargs)
        full_key = self.make_key(key, version=version)
        started = time.monotonic()
        (result, computed), shared = await flight._singleflight.ado(
            (flight.singleflight_scope(), full_key),
            lambda: leading(get_or_set, key, default, (timeout, version), kwargs),
            flight._waited_for_error(full_key, started),
        )
        if shared:
            flight._joined(full_key, computed, time.monotonic() - started)
            if computed:
                computed_elsewhere(default)
        return result

    async def ainvalidate_tags(self, *tags: str, **kwargs: Any) -> None:
        if has_sync_caller():
            # In the thread async_to_sync blocks in: its open transaction marks the
            # tags dirty and repeats them at commit (TaggingMixin.ainvalidate_tags).
            # Inline, neither is done: a value cached before the commit would be
            # served after it, an uncommitted one after a rollback.
            await sync_to_async(self.invalidate_tags, thread_sensitive=True)(
                *tags, **kwargs
            )
            return
        self.invalidate_tags(*tags, **kwargs)


class SmartCache(SingleFlightMixin, _TaggedStoreCache):
    """``django_smartcache.backends.SmartCache``; options are documented in ``docs/backends.md``.

    ``set``/``add``/``set_many``/``get_or_set`` take ``tags=`` (and ``depends_on=``);
    ``invalidate_tags()`` frees the entries' bytes (``docs/tagging.md``);
    ``get_or_set`` with a callable computes once per process for concurrent misses
    (a caller that waited sends ``signals.stampede_wait``); evictions send
    ``signals.entry_evicted``;
    ``delete_pattern()`` deletes by glob or regex.
    """

    def singleflight_scope(self) -> Any:
        # What picks the store (LOCATION *and* the budgets, as _store_for does): two
        # aliases with the default LOCATION and other budgets have two stores, and
        # must not hand each other a computation of the same made key.
        return ("django_smartcache.SmartCache", self._store_config)

    def _waited_read(self) -> None:
        self._store.count_misses(1)

    def _shared_hit(self) -> None:
        self._store.count_hits(1)
