"""SmartCache: an in-process cache with a memory budget in bytes and smarter eviction.

A thin Django adapter over :class:`~django_smartcache.core.store.MemoryStore`. As with
LocMemCache, every instance with the same ``LOCATION`` (and the same budget options) in
a process shares one store, so a value set in one thread is a hit in every other.
Values are pickled on write, outside the store's lock.
"""

from __future__ import annotations

import pickle
import threading
from collections.abc import Iterable
from typing import Any

from django.core.cache.backends.base import DEFAULT_TIMEOUT, BaseCache
from django.core.exceptions import ImproperlyConfigured

from ..core.policy import DEFAULT_POLICY, POLICIES
from ..core.store import MemoryStore
from .base import (
    SmartCacheKeyMixin,
    check_options,
    dumps,
    option_choice,
    option_int,
    option_size,
)

#: Budget when ``OPTIONS["MAX_MEMORY"]`` is not given.
DEFAULT_MAX_MEMORY = 64 * 1024 * 1024

#: OPTIONS read by SmartCache. ``CULL_FREQUENCY`` is Django's generic option; a byte
#: budget evicts one victim at a time instead of culling, so it is accepted and ignored.
OPTIONS = ("MAX_MEMORY", "MAX_ENTRIES", "MAX_ITEM_SIZE", "POLICY", "CULL_FREQUENCY")

_BACKEND = "SmartCache"

# Stores shared per process, keyed by LOCATION and budget options (locmem.py's pattern).
_stores: dict[tuple[Any, ...], MemoryStore] = {}
_stores_lock = threading.Lock()

_loads = pickle.loads


def _store_for(config: tuple[Any, ...]) -> MemoryStore:
    with _stores_lock:
        store = _stores.get(config)
        if store is None:
            _, max_bytes, max_entries, max_item_size, policy = config
            store = _stores[config] = MemoryStore(
                max_bytes, max_entries, max_item_size=max_item_size, policy=policy
            )
        return store


class SmartCache(SmartCacheKeyMixin, BaseCache):
    """``django_smartcache.backends.SmartCache``; options are documented in ``docs/backends.md``."""

    pickle_protocol = pickle.HIGHEST_PROTOCOL

    def __init__(self, location: str, params: dict[str, Any]) -> None:
        super().__init__(params)
        options = params.get("OPTIONS") or {}
        check_options(_BACKEND, options, OPTIONS)
        max_bytes = option_size(
            _BACKEND, options, "MAX_MEMORY", DEFAULT_MAX_MEMORY, allow_none=True
        )
        max_entries = option_int(_BACKEND, options, "MAX_ENTRIES", None)
        max_item_size = option_size(
            _BACKEND, options, "MAX_ITEM_SIZE", None, allow_none=True
        )
        policy = option_choice(_BACKEND, options, "POLICY", DEFAULT_POLICY, POLICIES)
        if max_bytes is None and max_entries is None:
            raise ImproperlyConfigured(
                f"{_BACKEND}: OPTIONS['MAX_MEMORY'] may be None only when "
                "OPTIONS['MAX_ENTRIES'] sets an entry budget"
            )
        self._store = _store_for(
            (location, max_bytes, max_entries, max_item_size, policy)
        )

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
        self._store.set(made, dumps(made, value), self._ttl(timeout))

    def add(
        self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None
    ) -> bool:
        made = self._key(key, version)
        return self._store.add(made, dumps(made, value), self._ttl(timeout))

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

        def bump(payload: bytes) -> bytes:
            value = _loads(payload) + delta
            result.append(value)
            return dumps(made, value)

        try:
            self._store.transform(made, bump)
        except KeyError:
            raise ValueError(f"Key '{made}' not found") from None
        return result[0]

    def clear(self) -> None:
        self._store.clear()

    # -- batches: one key pass, one critical section ----------------------------------------

    def get_many(self, keys: Iterable[Any], version: Any = None) -> dict[Any, Any]:
        made = self._keys(keys, version)
        return {
            made[key]: _loads(payload)
            for key, payload in self._store.get_many(made).items()
        }

    def set_many(
        self, data: dict[Any, Any], timeout: Any = DEFAULT_TIMEOUT, version: Any = None
    ) -> list[Any]:
        made = self._keys(data, version)
        # Pickle everything first: an unpicklable value leaves the cache unchanged.
        items = [(key, dumps(key, data[orig])) for key, orig in made.items()]
        refused = self._store.set_many(items, self._ttl(timeout))
        return [made[key] for key in refused]

    def delete_many(self, keys: Iterable[Any], version: Any = None) -> None:
        self._store.delete_many(self._keys(keys, version))

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

    async def aget_many(
        self, keys: Iterable[Any], version: Any = None
    ) -> dict[Any, Any]:
        return self.get_many(keys, version)

    async def aset_many(
        self, data: dict[Any, Any], timeout: Any = DEFAULT_TIMEOUT, version: Any = None
    ) -> list[Any]:
        return self.set_many(data, timeout, version)

    async def adelete_many(self, keys: Iterable[Any], version: Any = None) -> None:
        self.delete_many(keys, version)

    async def aclear(self) -> None:
        self.clear()

    # -- beyond Django's API -------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Exact counters of the shared store: hits, misses, hit_rate, evictions by cause..."""
        return self._store.stats()

    def clear_expired(self) -> int:
        """Purge every expired entry now; return how many were removed."""
        return self._store.clear_expired()
