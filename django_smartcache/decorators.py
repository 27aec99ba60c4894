"""``@cached``: memoize a function in any Django cache, with stampede protection.

The entry is an envelope ``(mark, value, expires_at, compute_seconds)``, so a cached
``None`` is told apart from a miss, and the logical expiry (for serving a stale value
when recomputing fails, and for early refresh) travels with the value between
processes. See ``docs/memoize.md``.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import math
import pickle
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Generic, ParamSpec, TypeVar

from asgiref.sync import async_to_sync, markcoroutinefunction, sync_to_async
from django.core.cache import DEFAULT_CACHE_ALIAS, InvalidCacheBackendError, caches
from django.core.cache.backends.base import DEFAULT_TIMEOUT, BaseCache
from django.utils.connection import ConnectionProxy

from ._memo_envelope import (
    ENVELOPE_MARK,
    _Entry,
    _lock_key,
    _unpack,
    _void_all_key,
    _void_key,
    _void_token,
    _voided,
)
from ._memo_flight import (
    _ASYNC_FLIGHT,
    _FLIGHT,
    _REFRESHING,
    _ProcessAsyncFlight,  # noqa: F401 (tests make their own)
)
from ._memo_naming import (
    _defaults_identity,
    _django_identity,
    _name_of,
    _signature_of,
    _warn_if_unnamed_script,
)
from ._memo_options import (
    DEFAULT_LOCK_TIMEOUT,
    DEFAULT_PREFIX,
    _check_alias,
    _check_tags,
    _invalid,
    _Options,
)
from ._memo_running import RUNNING
from ._transactions import at_commit, dirty_tags, sync_caller_dirty
from .core import keys
from .core.patterns import glob_escape
from .signals import stampede_wait

__all__ = ["CachedFunction", "cached", "supports_tags"]

logger = logging.getLogger("django_smartcache.decorators")

P = ParamSpec("P")
R = TypeVar("R")

#: Polling of a waiter for another process's result: first pause, growth, longest pause.
POLL_FIRST = 0.005
POLL_GROWTH = 1.5
POLL_LONGEST = 0.25

_MISSING = object()


def supports_tags(cache: BaseCache) -> bool:
    """Whether ``cache`` honours ``set(..., tags=...)`` (the capability ``tags=`` needs).

    A backend supports tags when it has a callable ``invalidate_tags`` and its
    ``set`` accepts a ``tags`` argument; Django's own backends do not.
    """
    if isinstance(cache, ConnectionProxy):  # django.core.cache.cache
        cache = cache._connections[cache._alias]
    return _class_supports_tags(type(cache))


@functools.cache
def _class_supports_tags(cls: type) -> bool:
    if not callable(getattr(cls, "invalidate_tags", None)):
        return False
    return _accepts_tags(cls.set)


@functools.cache
def _accepts_tags(method: Callable[..., Any]) -> bool:
    try:
        return "tags" in inspect.signature(method).parameters
    except (TypeError, ValueError):
        return False


class CachedFunction(Generic[P, R]):
    """A memoized function: call it, or use ``key()``, ``invalidate()``, ``refresh()``."""

    #: The table of this kind's calls in flight in the process (``_forget_all``).
    _calls_in_flight: Any = _FLIGHT

    def __init__(self, func: Callable[P, R], options: _Options) -> None:
        functools.update_wrapper(self, func)
        self._func = func
        self._options = options
        self._name = options.name or _name_of(func)
        if options.name is None:
            _warn_if_unnamed_script(func, self._name)
        self._signature = _signature_of(func)
        # Plain positional-or-keyword parameters: calls with positional arguments only
        # skip Signature.bind(), giving the very same (name, value) pairs.
        params = list(self._signature.parameters.values())
        self._plain = all(p.kind is p.POSITIONAL_OR_KEYWORD for p in params)
        self._names = tuple(p.name for p in params)
        self._defaults = tuple(p.default for p in params)
        self._required = sum(p.default is p.empty for p in params)
        # Defaults can only follow required parameters in a plain signature.
        self._plain = self._plain and all(
            p.default is not p.empty for p in params[self._required :]
        )
        self._keys = keys.CallKeys(
            self._name,
            self._names,
            prefix=options.prefix,
            extension=_defaults_identity(params) or _django_identity,
        )
        # Read on every hit: kept on the instance rather than behind ``_options``.
        self._positional = self._plain and options.key is None
        self._arity = len(self._names)
        self._using = options.using
        self._clock = options.clock
        self._beta = options.beta
        #: The token of invalidate_all(): voids every computation of this function.
        self._void_all = _void_all_key(self._keys.head, self._name)
        #: Calls with ``lock=True`` that computed without the lock, because the cache
        #: refused to store it with no holder (see :meth:`_lock_refused`).
        self.locks_refused = 0

    def __repr__(self) -> str:
        return f"<cached {self._name} using={self._options.using!r}>"

    def __reduce__(self) -> str:
        # Pickled by reference, as functions and lru_cache wrappers are: by the name
        # of the module attribute it is (multiprocessing, ProcessPoolExecutor). Its
        # __dict__ holds the plain function, which pickle refused since that name
        # now holds this object ("not the same object as ...").
        return self.__qualname__

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        # Methods: ``self`` is an argument like the others, so it must have an identity
        # (a saved model instance, or ``__cache_key__()``), or the ``key=`` skips it.
        if instance is None:
            return self
        return _Bound(self, instance)

    # -- keys -------------------------------------------------------------------------

    def key(self, *args: P.args, **kwargs: P.kwargs) -> str:
        """The cache key of this call (without the backend's ``KEY_PREFIX``/version)."""
        if self._options.key is not None:
            return self._keys.of(self._options.key(*args, **kwargs))
        given = len(args)
        if self._plain and given <= len(self._names):
            if not kwargs and given >= self._required:
                return self._keys.of_values(args + self._defaults[given:])
            values = self._plain_values(args, kwargs)
            if values is not None:
                return self._keys.of_values(values)
        bound = self._signature.bind(*args, **kwargs)
        bound.apply_defaults()  # f(1) and f(1, b=2) with default b=2 are one call
        return self._keys.of(tuple(bound.arguments.items()))

    def _plain_values(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[Any, ...] | None:
        """The values ``Signature.bind()`` would give each parameter, or ``None`` when
        the call is not that simple (let ``bind()`` decide, and raise)."""
        values = list(args)
        used = 0
        for name, default in zip(
            self._names[len(args) :], self._defaults[len(args) :], strict=True
        ):
            if name in kwargs:
                values.append(kwargs[name])
                used += 1
            elif default is inspect.Parameter.empty:
                return None
            else:
                values.append(default)
        return tuple(values) if used == len(kwargs) else None

    # -- what every path shares ---------------------------------------------------------

    def _cache(self) -> BaseCache:
        using = self._using
        try:
            cache = caches[using]
        except InvalidCacheBackendError:
            raise _invalid(
                "using", f"no cache alias {using!r} in settings.CACHES"
            ) from None
        if self._options.tags is not None and not supports_tags(cache):
            raise _invalid(
                "tags",
                f"the cache {using!r} ({type(cache).__module__}.{type(cache).__qualname__}) cannot store "
                "tags: it needs invalidate_tags() and set(..., tags=...). Use a django_smartcache backend, "
                "or drop tags=.",
            )
        return cache

    def _ttl(self, cache: BaseCache) -> float | None:
        timeout = self._options.timeout
        return cache.default_timeout if timeout is DEFAULT_TIMEOUT else timeout

    def _tags(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        tags = self._options.tags
        if tags is None:
            return {}
        if callable(tags):
            produced = tags(*args, **kwargs)
            if isinstance(produced, str | bytes):
                raise _invalid(
                    "tags",
                    f"the tags function returned the string {produced!r}, not a list of tags",
                )
            tags = _check_tags(tuple(produced))
        return {"tags": list(tags)}

    def _envelope(
        self, cache: BaseCache, value: Any, started: float
    ) -> tuple[tuple[Any, ...], float | None]:
        """The envelope to store and the backend timeout: logical TTL plus stale grace."""
        now = self._options.clock()
        ttl = self._ttl(cache)
        expires_at = None if ttl is None else now + ttl
        # Whole seconds, rounded up: backends that keep int() of a timeout would store
        # an entry of 0.5 s as already expired. The envelope's expiry stays exact.
        backend_timeout = (
            None if ttl is None else math.ceil(ttl + self._options.stale_if_error)
        )
        return (
            ENVELOPE_MARK,
            value,
            expires_at,
            max(0.0, now - started),
        ), backend_timeout

    def _refresh_early(self, entry: _Entry, now: float) -> bool:
        """XFetch (Vattani, Chierichetti, Lowenstein, VLDB 2015): recompute before expiry
        with a probability that rises as expiry nears, scaled by the computation's cost."""
        beta = self._options.beta
        if not beta or entry.expires_at is None:
            return False
        head_start = -entry.cost * beta * math.log(1.0 - self._options.random())
        return now + head_start >= entry.expires_at

    def _serve_stale(self, stale: _Entry | None, exc: BaseException) -> bool:
        grace = self._options.stale_if_error
        if stale is None or not grace or stale.expires_at is None:
            return False
        if self._options.clock() >= stale.expires_at + grace:
            return False
        logger.warning("%s raised %r; serving the stale value", self._name, exc)
        return True

    def _check_storable(self, value: Any) -> None:
        """Refuse a coroutine or generator returned at call time (a sync wrapper of an
        ``async def``): it runs once and cannot be stored. Closed, so that Python does
        not warn later that it was never awaited."""
        if inspect.iscoroutine(value) or inspect.isgenerator(value):
            kind = "coroutine" if inspect.iscoroutine(value) else "generator"
            value.close()
        elif inspect.isasyncgen(value):
            kind = "async generator"
        else:
            return
        raise TypeError(
            f"{self._name} returned a {kind}, which @cached cannot store (it runs "
            "once). Decorate the async def itself, mark a sync wrapper of one with "
            "asgiref.sync.markcoroutinefunction, or return a list."
        )

    def _unstorable(self, key: str, value: Any, exc: Exception) -> None:
        """After ``exc`` from storing ``value``: when ``value`` cannot be pickled,
        raise one error naming the function, whatever the backend (ours name the key,
        Django's Redis raises a bare ``TypeError``); else return, for ``exc`` to go on."""
        try:
            pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
        except Exception as why:  # noqa: BLE001 (a __reduce__ may raise anything)
            from .backends.base import UnpicklableValueError  # (loads every backend)

            raise UnpicklableValueError(
                f"{self._name} returned {type(value).__module__}."
                f"{type(value).__qualname__}, which cannot be pickled ({why}), so "
                f"@cached cannot store it under {key}. Return a picklable value "
                "(the data rather than a connection, lock or generator), or do not "
                "memoize this function."
            ) from exc

    def _lock_refused(self, key: str) -> None:
        """Count a lock the cache would not store while nobody held it: the call
        computes without it. Logged as a warning once per function, then at DEBUG."""
        self.locks_refused += 1
        logger.log(
            logging.WARNING if self.locks_refused == 1 else logging.DEBUG,
            "%s: the cache %r did not store the lock %s (add() refused it with "
            "no holder: an admission policy or a full cache); computing without "
            "the cross-process lock",
            self._name,
            self._using,
            _lock_key(key),
        )

    def _waited(self, key: str, scope: str, since: float) -> None:
        stampede_wait.send(
            sender=self,
            key=key,
            scope=scope,
            seconds=time.monotonic() - since,
            using=self._using,
        )

    # -- the synchronous path -------------------------------------------------------------

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        given = len(args)
        if self._positional and not kwargs and self._required <= given <= self._arity:
            # key() inlined for its commonest case.
            key = self._keys.of_values(args + self._defaults[given:])
        else:
            key = self.key(*args, **kwargs)
        cache = self._cache()
        raw = cache.get(key, _MISSING)
        now = self._clock()
        # A fresh hit without early refresh is the common case: no _Entry is built.
        if type(raw) is tuple and len(raw) == 4 and raw[0] == ENVELOPE_MARK:
            expires_at = raw[2]
            if expires_at is None or now < expires_at:
                if not self._beta:
                    return raw[1]  # type: ignore[no-any-return]
                entry = _Entry(raw[1], expires_at, raw[3])
                if self._refresh_early(entry, now):
                    return self._refresh_ahead(cache, key, args, kwargs, entry)  # type: ignore[no-any-return]
                return entry.value  # type: ignore[no-any-return]
        if dirty_tags():
            # Writes in an open transaction: neither share a computation with other
            # threads (this one's may hold uncommitted data) nor take theirs (made
            # without its writes); no cross-process lock either.
            return self._compute(cache, key, args, kwargs, None)  # type: ignore[no-any-return]
        since = time.monotonic()
        value, shared = _FLIGHT.do(
            (self._options.using, key), lambda: self._lead(cache, key, args, kwargs)
        )
        if shared:
            self._waited(key, "process", since)
        return value  # type: ignore[no-any-return]

    def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> bool:
        """Delete this call's entry; whether there was one.

        A computation of it already running (in any process) will not store its
        result (see :meth:`_void`), and later callers do not join it. Inside a
        transaction (a ``post_save`` receiver), again when it commits: until then
        other threads read the committed, old data and may cache it.
        """
        key = self.key(*args, **kwargs)
        at_commit(functools.partial(self._drop, key))
        return self._drop(key)

    def _drop(self, key: str) -> bool:
        """:meth:`invalidate` of ``key``."""
        cache = self._cache()
        self._void(cache, key)
        _FLIGHT.forget((self._options.using, key))
        had = bool(cache.delete(key))
        if self._options.lock:
            # The lock of a computation voided just now: the next caller, in any
            # process, starts a new one instead of waiting for it to end (its holder
            # deletes only its own lock). After the entry: a waiter that takes the
            # lock then finds no entry to return.
            cache.delete(_lock_key(key))
        return had

    def refresh(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Recompute this call now, store it, and return it (never the result of a
        computation that was already running: it may predate the change).

        Inside a transaction (a ``post_save`` receiver) the value computed now may
        hold uncommitted data: it is returned, not stored; the entry is invalidated
        now, and the call is refreshed (computed and stored) when the transaction
        commits, as :meth:`invalidate` would be. A rollback leaves nothing.
        """
        key = self.key(*args, **kwargs)
        if at_commit(functools.partial(self.refresh, *args, **kwargs)):
            self._drop(key)
            at_commit(functools.partial(self._drop, key))
            return self._func(*args, **kwargs)
        cache = self._cache()
        self._void(cache, key)
        _FLIGHT.forget((self._options.using, key))
        value, _ = _FLIGHT.do(
            (self._options.using, key),
            lambda: self._compute(cache, key, args, kwargs, None),
        )
        return value  # type: ignore[no-any-return]

    def _void(self, cache: BaseCache, key: str) -> None:
        """Void the computations of ``key`` running now, in every process.

        Each computation reads ``key:void`` before calling the function and again
        before storing; a new token in between (an ``invalidate()`` or ``refresh()``)
        means its inputs may predate the change, so its result goes to its callers
        but not into the cache. The token lives ``lock_timeout``: a computation
        running longer may still store (as with ``lock=True``, that is the bound).
        """
        seconds = self._options.lock_seconds
        cache.set(_void_key(key), _void_token(seconds), timeout=seconds)
        RUNNING.void(self._options.using, key)  # this process's: see _memo_running

    def invalidate_all(self) -> int:
        """Delete the entries of every call of this function (``lru_cache``'s
        ``cache_clear()``, across processes); how many there were.

        As :meth:`invalidate` for each call: the computations of this function
        running now, in any process, do not store their results, and later callers
        do not join them; inside a transaction, again when it commits. Needs a cache
        with ``delete_pattern()`` (ours, django-redis): ``NotImplementedError`` on
        others. Functions whose names share their first ``keys.MAX_NAME_LENGTH``
        (120) characters share the start of their keys: this drops the others' too.
        """
        at_commit(self._drop_all)
        return self._drop_all()

    def _drop_all(self) -> int:
        """:meth:`invalidate_all`, now."""
        cache, pattern = self._pattern_cache()
        self._void_every(cache)
        self._forget_all()
        return int(cache.delete_pattern(pattern))  # type: ignore[attr-defined]

    def _pattern_cache(self) -> tuple[BaseCache, str]:
        """The cache, checked for ``delete_pattern()``, and the glob of every entry of
        this function: its keys' head, escaped (a ``name=`` or ``prefix=`` with glob
        characters would match other functions' keys), then one ``?`` per character of
        a digest: ``*`` would match the keys of a function named ``<name>:more`` too
        (``rep.invalidate_all()`` dropping ``rep:daily``'s entries)."""
        cache = self._cache()
        if not callable(getattr(cache, "delete_pattern", None)):
            raise NotImplementedError(
                f"{self._name}.invalidate_all(): the cache {self._using!r} "
                f"({type(cache).__module__}.{type(cache).__qualname__}) has no "
                "delete_pattern() to find every entry of the function. Use a "
                "django_smartcache backend (or django-redis), or give the function "
                "tags= and invalidate the tag."
            )
        return cache, glob_escape(self._keys.head) + "?" * keys.DIGEST_HEX_LENGTH

    def _void_every(self, cache: BaseCache) -> None:
        """:meth:`_void` of every call of this function: one token they all read."""
        seconds = self._options.lock_seconds
        cache.set(self._void_all, _void_token(seconds), timeout=seconds)
        RUNNING.void_function(self._options.using, self._void_all)

    def _forget_all(self) -> None:
        """Detach this function's calls in flight in this process (see ``_drop``)."""
        using, head = self._using, self._keys.head
        length = len(head) + keys.DIGEST_HEX_LENGTH
        self._calls_in_flight.forget_matching(
            lambda k: (
                k[0] == using
                and isinstance(k[1], str)
                and len(k[1]) == length
                and k[1].startswith(head)
            )
        )

    def _lead(
        self, cache: BaseCache, key: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """This process's one computation of ``key``: unless the entry arrived meanwhile,
        compute it, under the cross-process lock when ``lock=True``."""
        entry = _unpack(cache.get(key, _MISSING))
        if entry is not None and entry.fresh(self._options.clock()):
            return entry.value
        if not self._options.lock:
            return self._compute(cache, key, args, kwargs, entry)
        lock_key, token = _lock_key(key), uuid.uuid4().hex
        pause, since = POLL_FIRST, time.monotonic()
        # The lock expires, so a crashed holder delays the others by lock_timeout at
        # most; the deadline only guards against a backend that never expires it.
        deadline = since + 2 * self._options.lock_timeout
        waited = False
        absent = False  # the lock was absent after the last failed add()
        while True:
            if cache.add(lock_key, token, timeout=self._options.lock_seconds):
                try:
                    # The previous holder may have stored the value and let go just now.
                    found = self._fresh(cache.get(key, _MISSING))
                    if found is not None:
                        if waited:
                            self._waited(key, "shared", since)
                        return found.value
                    return self._compute(cache, key, args, kwargs, entry)
                finally:
                    if _shared_get(cache, lock_key) == token:
                        cache.delete(lock_key)
            if _shared_get(cache, lock_key, _MISSING) is _MISSING:
                # Refused with no holder: the cache did not store the lock (an
                # admission policy, a full cache), or its holder let go just now.
                found = self._fresh(cache.get(key, _MISSING))
                if found is not None:
                    # A holder stored it and let go just now: this call waited for it.
                    self._waited(key, "shared", since)
                    return found.value
                if not absent:
                    # A holder that let go without storing (its function raised, the
                    # value was refused, invalidated): add() again.
                    absent = True
                    continue
                # Refused twice in a row with no holder: waiting would wait for nobody.
                self._lock_refused(key)
                return self._compute(cache, key, args, kwargs, entry)
            absent = False
            if time.monotonic() > deadline:
                return self._compute(cache, key, args, kwargs, entry)
            time.sleep(pause)
            waited = True
            pause = min(pause * POLL_GROWTH, POLL_LONGEST)
            found = self._fresh(cache.get(key, _MISSING))
            if found is not None:
                self._waited(key, "shared", since)
                return found.value

    def _fresh(self, raw: Any) -> _Entry | None:
        """The entry in ``raw`` (a cache read) if it is there and fresh, else None."""
        found = _unpack(raw)
        return (
            found if found is not None and found.fresh(self._options.clock()) else None
        )

    def _compute(
        self,
        cache: BaseCache,
        key: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        stale: _Entry | None,
    ) -> Any:
        tags = self._tags(args, kwargs)
        read_versions = getattr(cache, "tag_versions", None) if tags else None
        if read_versions is not None:  # before computing: see TaggingMixin._prepare
            tags = {"tags": read_versions(tags["tags"])}
        tokens = (_void_key(key), self._void_all)
        read_tokens = _shared_reads(cache)
        with RUNNING.running(self._options.using, key, self._void_all) as run:
            void = read_tokens(tokens)  # see _void()
            started = self._options.clock()
            try:
                value = self._func(*args, **kwargs)
            except Exception as exc:
                if self._serve_stale(stale, exc):
                    return stale.value  # type: ignore[union-attr]
                raise
            self._check_storable(value)
            if run.voided or _voided_any(tokens, void, read_tokens(tokens)):
                return value  # invalidated while it ran: not stored
            envelope, timeout = self._envelope(cache, value, started)
            try:
                cache.set(key, envelope, timeout=timeout, **tags)
            except Exception as exc:
                self._unstorable(key, value, exc)
                raise
            if run.voided or _voided_any(tokens, void, read_tokens(tokens)):
                cache.delete(key)  # invalidated while it was stored: see _stored_late
        return value

    def _refresh_ahead(
        self,
        cache: BaseCache,
        key: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        entry: _Entry,
    ) -> Any:
        """Recompute a still-fresh entry, unless another thread or process already does;
        a failure keeps the fresh value."""
        flight_key = (self._options.using, key)
        if not _REFRESHING.claim(flight_key):
            return entry.value  # another caller refreshes it
        try:
            if _FLIGHT.in_flight(flight_key):
                return entry.value
            lock_key, token = _lock_key(key), uuid.uuid4().hex
            if self._options.lock and not cache.add(
                lock_key, token, timeout=self._options.lock_seconds
            ):
                return entry.value
            try:
                return _FLIGHT.do(
                    flight_key, lambda: self._compute(cache, key, args, kwargs, None)
                )[0]
            except Exception:  # the fresh value is still good
                logger.warning(
                    "early refresh of %s failed; keeping the cached value",
                    self._name,
                    exc_info=True,
                )
                return entry.value
            finally:
                if self._options.lock and _shared_get(cache, lock_key) == token:
                    cache.delete(lock_key)
        finally:
            _REFRESHING.release(flight_key)


class AsyncCachedFunction(CachedFunction[P, Awaitable[R]]):
    """A memoized ``async def`` function; ``invalidate()`` and ``refresh()`` are awaitable."""

    _calls_in_flight: Any = _ASYNC_FLIGHT

    def __init__(self, func: Callable[P, Awaitable[R]], options: _Options) -> None:
        super().__init__(func, options)
        markcoroutinefunction(self)

    async def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:  # type: ignore[override]
        key = self.key(*args, **kwargs)
        cache = self._cache()
        entry = _unpack(await cache.aget(key, _MISSING))
        now = self._options.clock()
        if entry is not None and entry.fresh(now):
            if self._refresh_early(entry, now):
                return await self._arefresh_ahead(cache, key, args, kwargs, entry)  # type: ignore[no-any-return]
            return entry.value  # type: ignore[no-any-return]
        if dirty_tags() or sync_caller_dirty():
            # Writes in an open transaction: compute alone (CachedFunction.__call__).
            # The loop's thread has none of its own: async_to_sync's caller may.
            return await self._acompute(cache, key, args, kwargs, None)  # type: ignore[no-any-return]
        since = time.monotonic()
        value, shared = await _ASYNC_FLIGHT.do(
            (self._options.using, key), lambda: self._alead(cache, key, args, kwargs)
        )
        if shared:
            self._waited(key, "process", since)
        return value  # type: ignore[no-any-return]

    def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> Any:
        """:meth:`CachedFunction.invalidate`. Called where an event loop runs, it
        returns :meth:`ainvalidate`'s coroutine to await; from sync code (a
        ``post_save`` receiver), it invalidates now and returns whether there was an
        entry."""
        if _loop_running():
            return self.ainvalidate(*args, **kwargs)
        key = self.key(*args, **kwargs)
        at_commit(functools.partial(self._drop, key))
        return self._drop(key)

    def _drop(self, key: str) -> bool:
        """:meth:`invalidate` of ``key``, from sync code."""
        cache = self._cache()
        self._void(cache, key)
        _ASYNC_FLIGHT.forget((self._options.using, key))
        had = bool(cache.delete(key))
        if self._options.lock:  # (see CachedFunction._drop)
            cache.delete(_lock_key(key))
        return had

    def refresh(self, *args: P.args, **kwargs: P.kwargs) -> Any:
        """:meth:`CachedFunction.refresh`: as :meth:`invalidate`, a coroutine of
        :meth:`arefresh` where an event loop runs, else the value, computed now
        (inside a transaction: returned, stored only when it commits)."""
        if _loop_running():
            return self.arefresh(*args, **kwargs)
        if at_commit(functools.partial(self.refresh, *args, **kwargs)):
            key = self.key(*args, **kwargs)
            self._drop(key)
            at_commit(functools.partial(self._drop, key))
            return async_to_sync(self._func)(*args, **kwargs)
        return async_to_sync(self.arefresh)(*args, **kwargs)

    def invalidate_all(self) -> Any:
        """:meth:`CachedFunction.invalidate_all`: a coroutine of
        :meth:`ainvalidate_all` where an event loop runs, else done now."""
        if _loop_running():
            return self.ainvalidate_all()
        at_commit(self._drop_all)
        return self._drop_all()

    async def ainvalidate_all(self) -> int:
        """Delete every call's entry (see :meth:`CachedFunction.invalidate_all`)."""
        cache, pattern = self._pattern_cache()
        seconds = self._options.lock_seconds
        await cache.aset(self._void_all, _void_token(seconds), timeout=seconds)
        RUNNING.void_function(self._options.using, self._void_all)
        self._forget_all()
        adelete = getattr(cache, "adelete_pattern", None)
        if callable(adelete):
            return int(await adelete(pattern))
        return int(await sync_to_async(cache.delete_pattern)(pattern))  # type: ignore[attr-defined]

    async def ainvalidate(self, *args: P.args, **kwargs: P.kwargs) -> bool:
        """Delete this call's entry (see :meth:`CachedFunction.invalidate`)."""
        key = self.key(*args, **kwargs)
        cache = self._cache()
        await self._avoid(cache, key)
        _ASYNC_FLIGHT.forget((self._options.using, key))
        had = bool(await cache.adelete(key))
        if self._options.lock:  # (see CachedFunction._drop)
            await cache.adelete(_lock_key(key))
        return had

    async def arefresh(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Recompute this call now (see :meth:`CachedFunction.refresh`)."""
        key = self.key(*args, **kwargs)
        cache = self._cache()
        await self._avoid(cache, key)
        _ASYNC_FLIGHT.forget((self._options.using, key))
        value, _ = await _ASYNC_FLIGHT.do(
            (self._options.using, key),
            lambda: self._acompute(cache, key, args, kwargs, None),
        )
        return value  # type: ignore[no-any-return]

    async def _avoid(self, cache: BaseCache, key: str) -> None:
        """:meth:`CachedFunction._void`, awaited."""
        seconds = self._options.lock_seconds
        await cache.aset(_void_key(key), _void_token(seconds), timeout=seconds)
        RUNNING.void(self._options.using, key)

    async def _alead(
        self, cache: BaseCache, key: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        entry = _unpack(await cache.aget(key, _MISSING))
        if entry is not None and entry.fresh(self._options.clock()):
            return entry.value
        if not self._options.lock:
            return await self._acompute(cache, key, args, kwargs, entry)
        lock_key, token = _lock_key(key), uuid.uuid4().hex
        pause, since = POLL_FIRST, time.monotonic()
        deadline = since + 2 * self._options.lock_timeout
        waited = False
        absent = False  # the lock was absent after the last failed add()
        while True:
            if await cache.aadd(lock_key, token, timeout=self._options.lock_seconds):
                try:
                    found = self._fresh(await cache.aget(key, _MISSING))
                    if found is not None:
                        if waited:
                            self._waited(key, "shared", since)
                        return found.value
                    return await self._acompute(cache, key, args, kwargs, entry)
                finally:
                    if await _ashared_get(cache, lock_key) == token:
                        await cache.adelete(lock_key)
            if await _ashared_get(cache, lock_key, _MISSING) is _MISSING:
                # Refused with no holder (see CachedFunction._lead).
                found = self._fresh(await cache.aget(key, _MISSING))
                if found is not None:
                    self._waited(key, "shared", since)
                    return found.value
                if not absent:
                    absent = True
                    continue
                self._lock_refused(key)
                return await self._acompute(cache, key, args, kwargs, entry)
            absent = False
            if time.monotonic() > deadline:
                return await self._acompute(cache, key, args, kwargs, entry)
            await asyncio.sleep(pause)
            waited = True
            pause = min(pause * POLL_GROWTH, POLL_LONGEST)
            found = self._fresh(await cache.aget(key, _MISSING))
            if found is not None:
                self._waited(key, "shared", since)
                return found.value

    async def _acompute(
        self,
        cache: BaseCache,
        key: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        stale: _Entry | None,
    ) -> Any:
        tags = self._tags(args, kwargs)
        read_versions = getattr(cache, "tag_versions", None) if tags else None
        if read_versions is not None:  # before computing: see TaggingMixin._prepare
            versions = sync_to_async(read_versions, thread_sensitive=True)
            tags = {"tags": await versions(tags["tags"])}
        tokens = (_void_key(key), self._void_all)
        with RUNNING.running(self._options.using, key, self._void_all) as run:
            void = await _ashared_reads(cache, tokens)  # see CachedFunction._void()
            started = self._options.clock()
            try:
                value = await self._func(*args, **kwargs)  # type: ignore[misc]
            except Exception as exc:
                if self._serve_stale(stale, exc):
                    return stale.value  # type: ignore[union-attr]
                raise
            self._check_storable(value)
            if run.voided or _voided_any(
                tokens, void, await _ashared_reads(cache, tokens)
            ):
                return value  # invalidated while it ran: not stored
            envelope, timeout = self._envelope(cache, value, started)
            try:
                if tags and not (
                    getattr(cache, "supports_tags", False)
                    or _accepts_tags(type(cache).aset)
                ):
                    # BaseCache.aset() does not pass tags= on; reach set() in a thread.
                    # (Ours take them through **kwargs, and a MultiLevelCache's aset
                    # waits for its thread when cancelled.)
                    await sync_to_async(cache.set)(
                        key, envelope, timeout=timeout, **tags
                    )
                else:
                    await cache.aset(key, envelope, timeout=timeout, **tags)
            except Exception as exc:
                self._unstorable(key, value, exc)
                raise
            if run.voided or _voided_any(
                tokens, void, await _ashared_reads(cache, tokens)
            ):
                await cache.adelete(key)  # see _stored_late
        return value

    async def _arefresh_ahead(
        self,
        cache: BaseCache,
        key: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        entry: _Entry,
    ) -> Any:
        flight_key = (self._options.using, key)
        if not _REFRESHING.claim(flight_key):  # (never blocks the loop for long)
            return entry.value  # another caller refreshes it
        try:
            if _ASYNC_FLIGHT.in_flight(flight_key):
                return entry.value
            lock_key, token = _lock_key(key), uuid.uuid4().hex
            if self._options.lock and not await cache.aadd(
                lock_key, token, timeout=self._options.lock_seconds
            ):
                return entry.value
            try:
                return (
                    await _ASYNC_FLIGHT.do(
                        flight_key,
                        lambda: self._acompute(cache, key, args, kwargs, None),
                    )
                )[0]
            except Exception:  # the fresh value is still good
                logger.warning(
                    "early refresh of %s failed; keeping the cached value",
                    self._name,
                    exc_info=True,
                )
                return entry.value
            finally:
                if self._options.lock and await _ashared_get(cache, lock_key) == token:
                    await cache.adelete(lock_key)
        finally:
            _REFRESHING.release(flight_key)


# -- reads of what every process shares: the ``:void`` tokens and the locks ------------
# A MultiLevelCache answers them from its shared level (``shared_get_many``), never
# from an L1 copy: a copy up to the coherence delay old would hide a token another
# process has just written, and a stale result be stored after the ``invalidate()``
# that voided it had returned. Other caches: their own get_many.
#
# _stored_late: the check before the store cannot see an ``invalidate()`` made while
# the value is pickled and written (a 40 MB value: tens of ms): its delete may come
# before the store. So the tokens are read once more after it, and a voided store is
# deleted (a newer value stored meanwhile goes too: it is computed again).


def _shared_reads(cache: BaseCache) -> Callable[[Iterable[str]], dict[str, Any]]:
    read = getattr(cache, "shared_get_many", None)
    return read if read is not None else cache.get_many  # type: ignore[no-any-return]


def _shared_get(cache: BaseCache, key: str, default: Any = None) -> Any:
    read = getattr(cache, "shared_get_many", None)
    if read is None:
        return cache.get(key, default)
    return read([key]).get(key, default)


async def _ashared_reads(cache: BaseCache, keys: tuple[str, ...]) -> dict[str, Any]:
    read = getattr(cache, "ashared_get_many", None)
    if read is None:
        return await cache.aget_many(keys)
    return await read(keys)  # type: ignore[no-any-return]


async def _ashared_get(cache: BaseCache, key: str, default: Any = None) -> Any:
    read = getattr(cache, "ashared_get_many", None)
    if read is None:
        return await cache.aget(key, default)
    return (await read([key])).get(key, default)


def _voided_any(
    tokens: tuple[str, ...], before: dict[str, Any], after: dict[str, Any]
) -> bool:
    """Whether any of ``tokens`` (read with ``get_many`` before and after computing)
    says the computation was voided (see ``_voided``)."""
    return any(_voided(before.get(token), after.get(token)) for token in tokens)


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class _Bound:
    """A memoized method looked up on an instance: the instance is its first argument."""

    def __init__(self, function: CachedFunction[..., Any], instance: Any) -> None:
        self.__func__ = function
        self.__self__ = instance
        functools.update_wrapper(self, function, updated=())
        if isinstance(function, AsyncCachedFunction):
            markcoroutinefunction(self)
            # Python 3.12+ marks ``self.__func__`` (we look like a bound method), but
            # inspect only unwraps real methods: carry the marker on this object too.
            marker = getattr(function, "_is_coroutine_marker", None)
            if marker is not None:
                self._is_coroutine_marker = marker

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.__func__(self.__self__, *args, **kwargs)

    def key(self, *args: Any, **kwargs: Any) -> str:
        return self.__func__.key(self.__self__, *args, **kwargs)

    def invalidate(self, *args: Any, **kwargs: Any) -> Any:
        return self.__func__.invalidate(self.__self__, *args, **kwargs)

    def refresh(self, *args: Any, **kwargs: Any) -> Any:
        return self.__func__.refresh(self.__self__, *args, **kwargs)

    def ainvalidate(self, *args: Any, **kwargs: Any) -> Any:
        return self.__func__.ainvalidate(self.__self__, *args, **kwargs)  # type: ignore[attr-defined]

    def invalidate_all(self) -> Any:
        """Every call of the method, whatever its instance (as ``cache_clear()`` of
        an ``lru_cache`` method)."""
        return self.__func__.invalidate_all()

    def ainvalidate_all(self) -> Any:
        return self.__func__.ainvalidate_all()  # type: ignore[attr-defined]

    def arefresh(self, *args: Any, **kwargs: Any) -> Any:
        return self.__func__.arefresh(self.__self__, *args, **kwargs)  # type: ignore[attr-defined]

    def __repr__(self) -> str:
        return f"<bound {self.__func__!r} of {self.__self__!r}>"

    def __reduce__(self) -> tuple[Any, tuple[Any, str]]:
        # As a bound method pickles: looked up again on its instance (or class).
        return getattr, (self.__self__, self.__func__.__name__)


class _CachedClassMethod:
    """``@cached`` over ``@classmethod``: binds the class itself, on every Python."""

    def __init__(self, function: CachedFunction[..., Any]) -> None:
        self.__func__ = function
        functools.update_wrapper(self, function, updated=())

    def __get__(self, instance: Any, owner: type | None = None) -> _Bound:
        return _Bound(self.__func__, owner if owner is not None else type(instance))


def cached(
    func: Callable[..., Any] | None = None,
    *,
    timeout: Any = DEFAULT_TIMEOUT,
    tags: Iterable[str] | Callable[..., Iterable[str]] | None = None,
    key: Callable[..., Any] | None = None,
    using: str = DEFAULT_CACHE_ALIAS,
    lock: bool = False,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    early_refresh: bool | float = False,
    stale_if_error: float = 0,
    random: Callable[[], float] | None = None,
    clock: Callable[[], float] | None = None,
    prefix: str = DEFAULT_PREFIX,
    name: str | None = None,
) -> Any:
    """Memoize ``func`` in the cache ``using``; ``@cached`` or ``@cached(...)``.

    - ``timeout``: seconds an entry is fresh; default the cache's ``TIMEOUT``;
      ``None`` forever.
    - ``tags``: tags stored with every entry, or a function of the arguments returning
      them; needs a backend that :func:`supports_tags`.
    - ``key``: a function of the arguments (as passed: defaults not applied)
      returning the value to hash instead of them.
    - ``using``: the cache alias (default ``"default"``).
    - ``lock``: also compute once across processes, under a lock in the cache that
      expires after ``lock_timeout`` seconds (default 30).
    - ``early_refresh``: ``True`` or a beta > 0 to refresh before expiry (XFetch).
    - ``stale_if_error``: seconds an expired value is kept and served if recomputing
      raises (default 0: never).
    - ``random``, ``clock``: the random source (``random.random``) and the clock
      (``time.time``), for deterministic tests.
    - ``prefix``: the first part of every key (default ``"smartcache.memo"``).
    - ``name``: the function's name in its keys (default ``module.qualname``); needed
      for a lambda, a ``partial``, a callable object or a closure, which a name alone
      does not tell apart.
    """
    options = _Options.validate(
        timeout=timeout,
        tags=tags,
        key=key,
        using=using,
        lock=lock,
        lock_timeout=lock_timeout,
        early_refresh=early_refresh,
        stale_if_error=stale_if_error,
        random=random,
        clock=clock,
        prefix=prefix,
        name=name,
    )
    _check_alias(using)

    def decorate(function: Callable[..., Any]) -> Any:
        if isinstance(function, staticmethod):
            return staticmethod(decorate(function.__func__))
        if isinstance(function, classmethod):
            return _CachedClassMethod(decorate(function.__func__))
        if not callable(function):
            raise TypeError(f"@cached decorates functions, not {function!r}")
        if inspect.isgeneratorfunction(function) or inspect.isasyncgenfunction(
            function
        ):
            raise TypeError(
                f"@cached cannot memoize the generator function {function!r}: a "
                "generator is consumed once and cannot be stored. Memoize a function "
                "returning a list instead."
            )
        if inspect.iscoroutinefunction(function):
            return AsyncCachedFunction(function, options)
        return CachedFunction(function, options)

    return decorate if func is None else decorate(func)


#: The code of the methods whose cache calls are @cached's own bookkeeping, not
#: lookups its caller made: the entry read again under the single flight and the
#: lock, the lock itself, the ``:void`` tokens, the store of the result. The
#: debug-toolbar panel (:mod:`django_smartcache.instrumentation`) does not list the
#: calls they make themselves; the calls of the memoized function are listed, and so
#: is the first read of each call (in ``__call__``), the caller's hit or miss.
BOOKKEEPING = frozenset(
    method.__code__
    for method in (
        CachedFunction._lead,
        CachedFunction._compute,
        CachedFunction._refresh_ahead,
        AsyncCachedFunction._alead,
        AsyncCachedFunction._acompute,
        AsyncCachedFunction._arefresh_ahead,
        # (Their reads of the shared level, from frames of their own.)
        _shared_get,
        _ashared_reads,
        _ashared_get,
    )
)
