"""The warmer registry: named callables that fill a cache before traffic does.

A warmer is registered with ``@warmer(name, caches=..., tags=...)`` in an installed
app's ``cache_warmers`` module (imported by ``SmartCacheConfig.ready()``, the way the
admin finds ``admin`` modules) and run by ``manage.py smartcache_warm`` or
:func:`run`. It is called with the cache to fill; what it writes through that cache
is counted, and carries the warmer's ``tags``, so invalidating one of them drops the
warmed entries and ``smartcache_warm --tag`` fills them again.
"""

from __future__ import annotations

import inspect
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from asgiref.sync import async_to_sync
from django.conf import settings
from django.core.cache import DEFAULT_CACHE_ALIAS, caches
from django.core.cache.backends.base import DEFAULT_TIMEOUT, BaseCache
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import autodiscover_modules

from .core.tags import InvalidTag, normalize_tags

__all__ = [
    "Result",
    "Warmer",
    "WarmerRegistry",
    "autodiscover",
    "registry",
    "run",
    "warmer",
]

#: The module each installed app may define its warmers in.
MODULE_NAME = "cache_warmers"


@dataclass(frozen=True)
class Warmer:
    """A registered warmer; ``caches=None`` means the default alias (or ``--cache``)."""

    name: str
    func: Callable[[Any], object]
    caches: tuple[str, ...] | None
    tags: tuple[str, ...]

    @property
    def doc(self) -> str:
        """First line of the function's docstring, for ``smartcache_warm --list``."""
        lines = (self.func.__doc__ or "").strip().splitlines()
        return lines[0].strip() if lines else ""

    def aliases(self, chosen: Iterable[str] | None = None) -> tuple[str, ...]:
        """The aliases this warmer fills, limited to ``chosen`` when given."""
        chosen = tuple(chosen or ())
        if self.caches is None:
            return chosen or (DEFAULT_CACHE_ALIAS,)
        if not chosen:
            return self.caches
        return tuple(alias for alias in self.caches if alias in chosen)


class WarmerRegistry:
    """Warmers by name; registering one name twice is a configuration error."""

    def __init__(self) -> None:
        self._warmers: dict[str, Warmer] = {}

    def register(
        self,
        name: str,
        func: Callable[[Any], object],
        *,
        caches: str | Iterable[str] | None = None,
        tags: str | Iterable[str] | None = None,
    ) -> Warmer:
        if not isinstance(name, str) or not name.strip() or name != name.strip():
            raise ImproperlyConfigured(
                f"warmer name must be a non-empty string without surrounding spaces, not {name!r}"
            )
        if not callable(func):
            raise ImproperlyConfigured(f"warmer {name!r}: {func!r} is not callable")
        if isinstance(caches, str):
            caches = (caches,)
        if caches is not None:
            caches = tuple(caches)
            if not caches or not all(isinstance(a, str) and a for a in caches):
                raise ImproperlyConfigured(
                    f"warmer {name!r}: caches must be None or cache aliases, not {caches!r}"
                )
            # Each alias once, like ``--cache default --cache default``: the warmer
            # fills it once, not once per repetition.
            caches = tuple(dict.fromkeys(caches))
        try:
            tags = normalize_tags(tags)
        except (InvalidTag, TypeError, ValueError) as exc:
            raise ImproperlyConfigured(f"warmer {name!r}: tags: {exc}") from exc
        entry = Warmer(name, func, caches, tags)
        existing = self._warmers.get(name)
        if existing is not None and existing != entry:
            if not _same_function(existing.func, func):
                raise ImproperlyConfigured(
                    f"warmer {name!r} is already registered by {_where(existing.func)}"
                )
            if (existing.caches, existing.tags) != (caches, tags):
                raise ImproperlyConfigured(
                    f"warmer {name!r} is already registered by {_where(func)} with "
                    f"caches={existing.caches!r}, tags={existing.tags!r}"
                )
        self._warmers[name] = entry
        return entry

    def unregister(self, name: str) -> None:
        """Remove a warmer (``KeyError`` if unknown); for tests and reloads."""
        del self._warmers[name]

    def __contains__(self, name: object) -> bool:
        return name in self._warmers

    def __iter__(self) -> Iterator[Warmer]:
        return iter(sorted(self._warmers.values(), key=lambda w: w.name))

    def __len__(self) -> int:
        return len(self._warmers)

    def get(self, name: str) -> Warmer:
        """The warmer called ``name``; ``LookupError`` naming the known ones."""
        try:
            return self._warmers[name]
        except KeyError:
            known = ", ".join(sorted(self._warmers)) or "none registered"
            raise LookupError(f"unknown warmer {name!r}; known: {known}") from None

    def select(
        self, names: Iterable[str] = (), tags: Iterable[str] = ()
    ) -> list[Warmer]:
        """The named warmers (all without names), keeping those with one of ``tags``."""
        names = list(dict.fromkeys(names))
        chosen = [self.get(n) for n in names] if names else list(self)
        tags = set(tags)
        if tags:
            chosen = [w for w in chosen if tags.intersection(w.tags)]
        return chosen


def _same_function(a: Callable[..., object], b: Callable[..., object]) -> bool:
    """Whether ``b`` is ``a`` registered again: the same object, or the same module-level
    function of a module imported twice, under one name (a reload) or two (Django's
    classic double import, ``proj.shop.cache_warmers`` and ``shop.cache_warmers``). So
    the module name is not compared: the qualified name and where the code is (file and
    first line) are. Lambdas, and functions defined inside a function (a factory's),
    share all that without being the same."""
    if a is b:
        return True
    qualname = getattr(a, "__qualname__", None)
    if qualname is None or "<lambda>" in qualname or "<locals>" in qualname:
        return False
    source = _source(a)
    return (
        source is not None
        and qualname == getattr(b, "__qualname__", None)
        and source == _source(b)
    )


def _source(func: Callable[..., object]) -> tuple[str, int] | None:
    """(file, first line) of ``func``'s code; None without a code object."""
    code = getattr(inspect.unwrap(func), "__code__", None)
    if code is None:
        return None
    return os.path.realpath(code.co_filename), code.co_firstlineno


def _where(func: Callable[..., object]) -> str:
    module = getattr(func, "__module__", "?")
    return f"{module}.{getattr(func, '__qualname__', repr(func))}"


#: The registry ``@warmer`` and ``smartcache_warm`` use.
registry = WarmerRegistry()


def warmer(
    name: str,
    *,
    caches: str | Iterable[str] | None = None,
    tags: str | Iterable[str] | None = None,
) -> Callable[[Callable[[Any], object]], Callable[[Any], object]]:
    """Register the decorated ``func(cache)`` as warmer ``name``; returns it unchanged."""

    def decorate(func: Callable[[Any], object]) -> Callable[[Any], object]:
        registry.register(name, func, caches=caches, tags=tags)
        return func

    return decorate


_discovered = False


def autodiscover() -> None:
    """Import every installed app's ``cache_warmers`` module, once."""
    global _discovered
    if not _discovered:
        autodiscover_modules(MODULE_NAME)
        _discovered = True


# -- running -----------------------------------------------------------------


class _Counting:
    """The cache a warmer gets: the real one, counting the keys written through it and
    adding the warmer's tags to every write (the backend must take ``tags=``): ``set``,
    ``add``, ``set_many``, ``get_or_set`` and their async twins. Other methods go
    straight to the backend.

    The warmer's tags are pinned at their versions when this is made, before the
    warmer is called (and so before it reads any row), as ``get_or_set`` and
    ``@cached`` read theirs before computing: a write landing while the warmer runs
    makes what it writes afterwards stale at once, never valid."""

    def __init__(self, cache: BaseCache, tags: tuple[str, ...]) -> None:
        self._cache = cache
        self._tags = tags
        self._pinned: dict[str, str] = (
            cache.tag_versions(tags) if tags else {}  # type: ignore[attr-defined]
        )
        self.keys_set = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cache, name)

    def invalidate_tags(self, *tags: str, **kwargs: Any) -> None:
        """The backend's; then the warmer's own tags among ``tags`` are pinned again.
        A warmer that drops its old entries before rewriting them (a refresh) wrote
        nothing valid otherwise: its writes kept the versions from before its own
        invalidation. Only through the cache it is given: an invalidation from
        anywhere else (a save's signal, another thread) is a change of the data."""
        self._cache.invalidate_tags(*tags, **kwargs)  # type: ignore[attr-defined]
        self._repin(tags)

    async def ainvalidate_tags(self, *tags: str, **kwargs: Any) -> None:
        await self._cache.ainvalidate_tags(*tags, **kwargs)  # type: ignore[attr-defined]
        self._repin(tags)

    def _repin(self, tags: tuple[str, ...]) -> None:
        own = [tag for tag in tags if tag in self._pinned]
        if own:
            self._pinned.update(self._cache.tag_versions(own))  # type: ignore[attr-defined]

    def invalidated_since_pinned(self) -> tuple[str, ...]:
        """The warmer's tags whose versions moved since they were pinned."""
        if not self._pinned:
            return ()
        now = self._cache.tag_versions(list(self._pinned))  # type: ignore[attr-defined]
        return tuple(tag for tag, ver in self._pinned.items() if now.get(tag) != ver)

    def _stores(self, timeout: Any) -> bool:
        """Whether a write with ``timeout`` stores anything, as Django reads a timeout:
        ``DEFAULT_TIMEOUT`` is the cache's ``TIMEOUT``, None is forever, and 0 or less
        is "do not cache" (the backend deletes the key, or stores it already expired;
        ``add`` still returns True)."""
        if timeout is DEFAULT_TIMEOUT:
            timeout = getattr(self._cache, "default_timeout", None)
        try:
            return timeout is None or timeout > 0
        except TypeError:  # a timeout of another type the backend took: its own reading
            return True

    def _kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        if self._tags:
            given = kwargs.get("tags")
            if isinstance(given, Mapping):
                # Versions the warmer pinned itself (``cache.tag_versions()``, read
                # before it read its rows) are kept, for the warmer's tags too: a long
                # warmer re-pins them per batch, so a write during an earlier batch
                # does not make the later ones miss.
                kwargs["tags"] = {**self._pinned, **given}
            elif given is not None:
                # Tags given as names keep their meaning: read now by a ``set``
                # (``get_or_set`` would read them before computing: it computes after
                # this). The warmer's own stay pinned, even if named again.
                current = self._cache.tag_versions(given)  # type: ignore[attr-defined]
                kwargs["tags"] = {**current, **self._pinned}
            else:
                kwargs["tags"] = dict(self._pinned)
        return kwargs

    # ``set`` goes through ``set_many``, which names a value the backend refused (too
    # large for SmartCache's MAX_ITEM_SIZE, over SQLiteCache's MAX_SIZE); ``set`` would
    # not, and a refused write would be counted. ``_levels`` does the same.
    def set(
        self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None, **kwargs: Any
    ) -> None:  # fmt: skip
        self.set_many({key: value}, timeout, version, **kwargs)

    def add(
        self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None, **kwargs: Any
    ) -> bool:  # fmt: skip
        added = bool(
            self._cache.add(key, value, timeout, version, **self._kwargs(kwargs))
        )
        self.keys_set += added and self._stores(timeout)
        return added

    def set_many(
        self, data: Mapping[Any, Any], timeout: Any = DEFAULT_TIMEOUT, version: Any = None, **kwargs: Any
    ) -> list[Any]:  # fmt: skip
        failed = self._cache.set_many(data, timeout, version, **self._kwargs(kwargs))
        if self._stores(timeout):
            self.keys_set += len(data) - len(failed or ())
        return failed

    def get_or_set(
        self, key: Any, default: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None, **kwargs: Any
    ) -> Any:  # fmt: skip
        present = self._cache.has_key(key, version)
        value = self._cache.get_or_set(
            key, default, timeout, version, **self._kwargs(kwargs)
        )
        # Counted when stored: a value the backend refused (over SmartCache's
        # MAX_ITEM_SIZE) is returned all the same, and must not be counted.
        self.keys_set += not present and self._cache.has_key(key, version)
        return value

    # The async twins: the same counting and tags (a warmer may write through them).
    async def aset(
        self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None, **kwargs: Any
    ) -> None:  # fmt: skip
        await self.aset_many({key: value}, timeout, version, **kwargs)

    async def aadd(
        self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None, **kwargs: Any
    ) -> bool:  # fmt: skip
        added = bool(
            await self._cache.aadd(key, value, timeout, version, **self._kwargs(kwargs))
        )
        self.keys_set += added and self._stores(timeout)
        return added

    async def aset_many(
        self, data: Mapping[Any, Any], timeout: Any = DEFAULT_TIMEOUT, version: Any = None, **kwargs: Any
    ) -> list[Any]:  # fmt: skip
        failed = await self._cache.aset_many(
            data, timeout, version, **self._kwargs(kwargs)
        )
        if self._stores(timeout):
            self.keys_set += len(data) - len(failed or ())
        return failed  # type: ignore[no-any-return]

    async def aget_or_set(
        self, key: Any, default: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None, **kwargs: Any
    ) -> Any:  # fmt: skip
        present = await self._cache.ahas_key(key, version)
        value = await self._cache.aget_or_set(
            key, default, timeout, version, **self._kwargs(kwargs)
        )
        self.keys_set += not present and await self._cache.ahas_key(key, version)
        return value


async def _awaited(outcome: Awaitable[object]) -> None:
    """Await an async warmer's coroutine; ``async_to_sync`` runs it on an event loop
    of its own, or on the caller's when ``run`` is called through ``sync_to_async``."""
    await outcome


@dataclass(frozen=True)
class Result:
    """One warmer run on one alias."""

    warmer: str
    alias: str
    keys_set: int
    seconds: float
    error: BaseException | None = None
    #: The warmer's tags invalidated while it ran (by a write of the data, not by the
    #: warmer itself): what it wrote carries their versions from before, so it reads
    #: as a miss. Run it again to warm those keys.
    invalidated: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.error is None


def run(entry: Warmer, alias: str) -> Result:
    """Run ``entry`` on cache ``alias``; an exception is returned in the result, not raised.

    An ``async def`` warmer is awaited (``async_to_sync``); its ``aset``/``aadd``/
    ``aset_many``/``aget_or_set`` writes are counted as the sync ones are. ``run`` is
    sync: from async code, call it through ``sync_to_async``.
    """
    start = time.perf_counter()
    counting: _Counting | None = None
    try:
        if alias not in settings.CACHES:
            raise ImproperlyConfigured(
                f"warmer {entry.name!r}: cache alias {alias!r} is not in settings.CACHES"
            )
        cache = caches[alias]
        if entry.tags and not getattr(cache, "supports_tags", False):
            raise ImproperlyConfigured(
                f"warmer {entry.name!r} has tags but cache alias {alias!r} "
                f"({type(cache).__name__}) does not support tags"
            )
        counting = _Counting(cache, entry.tags)
        outcome = entry.func(counting)
        if inspect.isawaitable(outcome):  # an ``async def`` warmer
            async_to_sync(_awaited)(outcome)
    except Exception as exc:  # noqa: BLE001 - reported; the other warmers still run
        error: BaseException | None = exc
    else:
        error = None
    keys = counting.keys_set if counting is not None else 0
    invalidated: tuple[str, ...] = ()
    if counting is not None and error is None and keys:
        try:
            invalidated = counting.invalidated_since_pinned()
        except Exception:  # noqa: BLE001 - a report, not the run: the cache said why
            invalidated = ()
    return Result(
        entry.name, alias, keys, time.perf_counter() - start, error, invalidated
    )
