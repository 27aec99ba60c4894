"""Per-request recording of cache calls and cache events, for the debug-toolbar panel.

A :class:`Recorder` watches one request (one thread, or one asyncio task): while it
is started, every cache alias initialised in this context has its public methods
wrapped **on the instance** (as django-debug-toolbar's own ``CachePanel`` does), and
the receivers of :data:`~django_smartcache.signals.entry_evicted`,
:data:`~django_smartcache.signals.tags_invalidated` and
:data:`~django_smartcache.signals.stampede_wait` are connected. ``stop()`` puts every
instance back as it was and disconnects the receivers when no recorder is left.

Why wrapping and not a hook in every backend: it costs nothing while no recorder is
started (no wrapper, no receiver, so ``entry_evicted`` is not even sent), it needs no
change to the backends' hot paths, and it works for Django's own backends too. It
gets the real hit/miss answer without guessing from the value: ``get`` is called
with a private sentinel default (shown as the caller's own), ``get_many`` answers with
the keys it found, and ``get_or_set`` reports the answer of the ``get`` it makes first.

Everything recorded is a JSON primitive (the toolbar stores panel stats as JSON).
"""

from __future__ import annotations

import functools
import inspect
import json
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from contextvars import ContextVar, Token
from types import CodeType
from typing import Any

from django.core.cache import caches

from .decorators import BOOKKEEPING
from .signals import entry_evicted, stampede_wait, tags_invalidated

__all__ = ["WRAPPED_METHODS", "Recorder", "Totals", "current_recorder", "jsonable"]

#: Methods wrapped on each cache instance, with their async twins. A method the
#: instance does not have (``delete_pattern`` on a Django backend) is skipped.
WRAPPED_METHODS = (
    "get",
    "get_many",
    "get_or_set",
    "has_key",
    "set",
    "set_many",
    "add",
    "touch",
    "delete",
    "delete_many",
    "delete_pattern",
    "incr",
    "decr",
    "clear",
    "invalidate_tags",
)
_LOOKUPS = frozenset({"get", "get_many", "get_or_set"})

#: How much of a key (or a reason) is kept, in characters.
KEY_CHARS = 200

_current: ContextVar[Recorder | None] = ContextVar("smartcache_recorder", default=None)
#: The call being recorded in this context: inner calls (``get_or_set`` -> ``get``)
#: are not listed again, but the first inner lookup answers hit or miss for it.
#: Unset while a ``get_or_set``'s callable default runs: those calls are the caller's.
_outer: ContextVar[_Call | None] = ContextVar("smartcache_outer_call", default=None)

_MISS = object()
_ATTR = "_smartcache_wrapped"  # the instance attribute holding its _Wrapped

_receivers_lock = threading.Lock()
_started = 0  # recorders started in the process; receivers connected while > 0


def current_recorder() -> Recorder | None:
    """The recorder of this thread or task, if a request is being recorded."""
    return _current.get()


def jsonable(value: Any) -> Any:
    """``value`` made of JSON primitives only (anything else becomes its ``str``)."""
    return json.loads(json.dumps(value, default=str))


def _text(key: Any) -> str:
    """``key`` as the panel shows it: a str as it is, anything else as its ``repr()``
    and its type (``12345 (int)``, ``None (NoneType)``), so an int key does not read
    as the str of its digits, nor None as no key."""
    if isinstance(key, str):
        return _cut(key)
    return f"{_cut(repr(key))} ({type(key).__name__})"


def _cut(text: str) -> str:
    return text if len(text) <= KEY_CHARS else text[: KEY_CHARS - 1] + "…"


class _Call:
    """One listed call; ``hit`` stays None when the backend's answer is not observable."""

    __slots__ = (
        "asks",
        "compute_seconds",
        "computed",
        "error",
        "hit",
        "hits",
        "misses",
        "waited",
    )

    def __init__(self, asks: bool) -> None:
        #: Only ``get_or_set`` learns its answer from an inner lookup.
        self.asks = asks
        self.hit: bool | None = None
        self.hits = 0
        self.misses = 0
        #: It waited for another caller's computation (single flight): no answer of its own.
        self.waited = False
        #: ``get_or_set`` with a callable default: whether it was called (None: not
        #: callable), and the time it took, part of the call's time.
        self.computed: bool | None = None
        self.compute_seconds = 0.0
        #: The exception's class name when the call raised (shown instead of a result).
        self.error: str | None = None


class Totals:
    """Running totals of one alias's listed calls: every call counts, kept or not."""

    __slots__ = ("calls", "hits", "misses", "seconds")

    def __init__(self) -> None:
        self.calls = 0
        self.hits = 0
        self.misses = 0
        self.seconds = 0.0


#: The outer call of a call that is not listed (``Recorder.is_quiet``): what it makes
#: inside is not listed either.
_QUIET = _Call(asks=False)
#: ``Recorder.is_quiet``'s answer for @cached's bookkeeping: timed, not listed.
BOOKKEEPING_CALL = "bookkeeping"

#: The kinds of events a recorder lists (its attributes of the same names).
_EVENTS = ("evictions", "invalidations", "stampede_waits")


class Recorder:
    """Records the cache calls and cache events of one request (see the module doc).

    ``quiet_apps``: app labels whose models' tag invalidations are not this request's
    (the toolbar's own history rows). ``quiet_callers``: code objects whose direct
    cache calls are not listed (the toolbar's own store). ``max_calls``: how many
    calls ``calls`` keeps, the first ones (None: all); ``totals`` counts every call.
    Each list of events (``evictions``, ``invalidations``, ``stampede_waits``) keeps
    its first ``max_calls`` too; ``event_counts`` counts every event.
    """

    def __init__(
        self,
        quiet_apps: Iterable[str] = (),
        quiet_callers: Iterable[CodeType] = (),
        max_calls: int | None = None,
    ) -> None:
        self.quiet_tags = tuple(f"model:{app}." for app in quiet_apps)
        self.quiet_callers = frozenset(quiet_callers)
        self.max_calls = max_calls
        #: The first ``max_calls`` listed calls, in the order they started.
        self.calls: list[dict[str, Any]] = []
        #: Listed calls started but not kept in ``calls`` (over ``max_calls``).
        self.dropped = 0
        #: alias -> running totals of its listed calls, kept or not (see ``add_call``).
        self.totals: dict[str, Totals] = {}
        # += is not atomic, and sync_to_async runs calls in other threads.
        self._lock = threading.Lock()
        #: The first ``max_calls`` events of each kind, in the order they came.
        self.evictions: list[dict[str, Any]] = []
        self.invalidations: list[dict[str, Any]] = []
        self.stampede_waits: list[dict[str, Any]] = []
        #: Events of each kind not kept in its list (over ``max_calls``).
        self.events_dropped: dict[str, int] = dict.fromkeys(_EVENTS, 0)
        #: Every event of each kind, kept or not: by ``(alias, cause)`` for evictions,
        #: by alias for the others.
        self.event_counts: dict[str, Counter[Any]] = {k: Counter() for k in _EVENTS}
        #: alias -> the instance watched in this context.
        self.watched: dict[str, Any] = {}
        #: Aliases whose methods were already wrapped on the instance by someone else
        #: (django-debug-toolbar's CachePanel): their times include that wrapper's work.
        self.nested: list[str] = []
        #: alias -> why its cache could not be built ("ModuleNotFoundError: ...").
        self.unavailable: dict[str, str] = {}
        #: alias -> hits per level of a MultiLevelCache made by lookups that are not
        #: listed (the read-back of ``get_or_set`` after storing): not this request's
        #: answers, so the panel takes them out of its L1/L2 split.
        self.unlisted_level_hits: dict[str, list[int]] = {}
        self._token: Token[Recorder | None] | None = None

    # -- life cycle ----------------------------------------------------------------------

    def start(self, aliases: Iterable[str] | None = None) -> None:
        """Watch ``aliases`` (default: every alias in ``CACHES``) in this thread or task.

        Every alias is initialised here, as the request would on first use, so that
        the instance the view gets is the wrapped one. An alias that cannot be built
        (a backend whose client library is missing) is noted in ``unavailable`` and
        left alone: the page may never use it. If starting fails, nothing is left
        started.
        """
        global _started
        from django.conf import settings

        if self._token is not None:
            return  # idempotent, like enable_instrumentation()
        self._token = _current.set(self)
        try:
            self._watch(settings.CACHES if aliases is None else aliases)
            with _receivers_lock:
                if _started == 0:
                    _connect()
                _started += 1
        except BaseException:
            self._undo()
            raise

    def stop(self) -> None:
        """Unwrap the instances, reset the context and disconnect when no recorder is left."""
        global _started
        if self._token is None:
            return
        self._undo()
        with _receivers_lock:
            _started -= 1
            if _started == 0:
                _disconnect()

    def _watch(self, aliases: Iterable[str]) -> None:
        for alias in aliases:
            try:
                cache = caches[alias]
            except Exception as exc:  # noqa: BLE001 (an alias the page may never use)
                self.unavailable[alias] = _text(f"{type(exc).__name__}: {exc}")
                continue
            self.watched[alias] = cache
            if _wrap(cache, alias) and _others_active(cache):
                self.nested.append(alias)

    def _undo(self) -> None:
        """Unwrap what ``_watch`` wrapped and leave this context without a recorder."""
        for cache in self.watched.values():
            _unwrap(cache)
        if self._token is not None:
            try:
                _current.reset(self._token)
            except ValueError:  # stopped in another context than it started in
                _current.set(None)
        self._token = None

    # -- what the wrappers and receivers feed --------------------------------------------

    def is_quiet(self, cache: Any, name: str, args: tuple[Any, ...]) -> bool | str:
        """Whether a call is not listed: someone else's business (made by a quiet
        caller, or an invalidation of the quiet apps' models only: True), or
        @cached's bookkeeping (:data:`BOOKKEEPING_CALL`: not listed, but its time is
        the request's, ``add_time``)."""
        if name == "invalidate_tags":
            return self.quiet_tags_only(args)
        if _bookkeeping(sys._getframe(2)):
            return BOOKKEEPING_CALL
        # The toolbar sets ``_djdt_panel = None`` around its own store's calls: a
        # cheap test before looking at the callers.
        if not self.quiet_callers or cache.__dict__.get("_djdt_panel", _MISS):
            return False
        frame = sys._getframe(2)  # the wrapper's caller (its _Bound's __call__)
        while frame is not None and frame.f_globals.get("__name__") == __name__:
            frame = frame.f_back
        for _ in range(4):  # through other wrappers (the toolbar's CachePanel)
            if frame is None:
                return False
            if frame.f_code in self.quiet_callers:
                return True
            frame = frame.f_back
        return False

    def quiet_tags_only(self, tags: Iterable[Any]) -> bool:
        tags = list(tags)
        return bool(self.quiet_tags and tags) and all(
            isinstance(tag, str) and tag.startswith(self.quiet_tags) for tag in tags
        )

    def begin_call(self) -> int:
        """A place in ``calls`` for a call starting now: calls are listed in the order
        they start, so a ``get_or_set`` comes before the calls of its callable.
        -1 once ``max_calls`` are kept: the call is counted, not kept."""
        with self._lock:
            if self.max_calls is not None and len(self.calls) >= self.max_calls:
                self.dropped += 1
                return -1
            self.calls.append({})
            return len(self.calls) - 1

    def add_call(
        self,
        index: int,
        alias: str,
        cache: Any,
        op: str,
        keys: list[str],
        call: _Call,
        seconds: float,
        is_async: bool,
    ) -> None:
        """Count a finished call in ``totals``, and fill its place in ``calls``."""
        with self._lock:
            totals = self._totals(alias)
            totals.calls += 1
            totals.hits += call.hits
            totals.misses += call.misses
            totals.seconds += seconds
        if index < 0:
            return  # over max_calls: only counted
        self.calls[index] = {
            "alias": alias,
            "backend": _class_name(cache),
            "op": op,
            "keys": keys,
            "hit": call.hit,
            "hits": call.hits,
            "misses": call.misses,
            "waited": call.waited,
            "error": call.error,
            "ms": seconds * 1000.0,
            "compute_ms": (call.compute_seconds * 1000.0 if call.computed else None),
            "is_async": is_async,
        }

    def add_time(self, alias: str, seconds: float) -> None:
        """Count the time of a call that is not listed (@cached's bookkeeping) in the
        totals of ``alias``: the time the request spent in its cache, though no
        listed call took it (a memoized miss: about 0.3 ms against its listed
        0.02 ms ``get``, with a lock and tags over a MultiLevelCache)."""
        with self._lock:
            self._totals(alias).seconds += seconds

    def _totals(self, alias: str) -> Totals:
        """The running totals of ``alias`` (made at its first call); lock held."""
        totals = self.totals.get(alias)
        if totals is None:
            totals = self.totals[alias] = Totals()
        return totals

    def add_event(self, kind: str, counted: Any, event: dict[str, Any]) -> None:
        """Count an event of ``kind`` (``"evictions"``, ...) under ``counted``, and keep
        it in its list unless ``max_calls`` are kept already."""
        with self._lock:
            self.event_counts[kind][counted] += 1
            kept: list[dict[str, Any]] = getattr(self, kind)
            if self.max_calls is not None and len(kept) >= self.max_calls:
                self.events_dropped[kind] += 1
            else:
                kept.append(event)

    def unlisted(
        self, alias: str, before: list[int] | None, after: list[int] | None
    ) -> None:
        """Note the level hits of a lookup made inside a listed call but not listed."""
        if before is None or after is None or len(before) != len(after):
            return
        total = self.unlisted_level_hits.setdefault(alias, [0] * len(after))
        for i, (then, now) in enumerate(zip(before, after, strict=True)):
            total[i] += now - then

    def alias_of(self, cache: Any, key: str | None = None) -> str:
        """The alias a signal's ``cache`` belongs to, as the panel names it.

        An instance this recorder watches is its alias; a level of a watched
        MultiLevelCache is ``"alias L<n>"``; a SmartCache sharing the store of a
        watched one (the store reports through the instance that created it) is the
        watched alias whose ``KEY_PREFIX`` starts the key.
        """
        for alias, watched in self.watched.items():
            if watched is cache:
                return alias
        for alias, watched in self.watched.items():
            levels = getattr(watched, "levels", None)
            if isinstance(levels, tuple) and cache in levels:
                return f"{alias} L{levels.index(cache) + 1}"
        store = getattr(cache, "_store", None)
        if store is not None and key is not None:
            for alias, watched in self.watched.items():
                if getattr(watched, "_store", None) is store and key.startswith(
                    f"{watched.key_prefix}:"
                ):
                    return alias
            for alias, watched in self.watched.items():
                levels = getattr(watched, "levels", None)
                if isinstance(levels, tuple):
                    for index, level in enumerate(levels):
                        if getattr(level, "_store", None) is store:
                            return f"{alias} L{index + 1}"
        return f"({_class_name(cache)})"


def _bookkeeping(frame: Any) -> bool:
    """Whether the caller above the wrappers at ``frame`` (the toolbar's CachePanel
    wraps over ours) is @cached's bookkeeping (``decorators.BOOKKEEPING``). Only the
    first frame that is not a wrapper counts: the memoized function's own calls, made
    from its frames (called by that bookkeeping), are the caller's and are listed."""
    while frame is not None and frame.f_globals.get("__name__", "").startswith(
        _WRAPPER_MODULES
    ):
        frame = frame.f_back
    return frame is not None and frame.f_code in BOOKKEEPING


#: Modules whose frames are wrappers of cache methods, passed over by ``_bookkeeping``.
_WRAPPER_MODULES = (__name__, "debug_toolbar.")


def _class_name(obj: Any) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


# -- wrapping --------------------------------------------------------------------------


class _Wrapped:
    """What ``_wrap`` put on an instance, kept while a wrapper of ours is on it."""

    __slots__ = ("count", "methods", "nested")

    def __init__(self) -> None:
        self.count = 0  # recorders watching the instance (one per context using it)
        self.nested = False  # some method was already wrapped on the instance
        #: method name -> (our wrapper, the instance attribute it replaced or _MISS)
        self.methods: dict[str, tuple[Any, Any]] = {}


def _wrap(cache: Any, alias: str) -> bool:
    """Wrap ``cache``'s methods; True if some were already wrapped by someone else.

    A wrapper of ours left in place under someone else's (see ``_unwrap``) is used
    again, never wrapped a second time.
    """
    wrapped: _Wrapped | None = cache.__dict__.get(_ATTR)
    if wrapped is None:
        wrapped = cache.__dict__[_ATTR] = _Wrapped()
    wrapped.count += 1
    if wrapped.count > 1:
        return wrapped.nested
    for name in WRAPPED_METHODS:
        for method in (name, "a" + name):
            original = getattr(cache, method, None)
            if original is None or method in wrapped.methods:
                continue
            wrapper = _bound(
                _wrapper(cache, alias, name, original, method != name), cache, original
            )
            previous = cache.__dict__.get(method, _MISS)
            wrapped.nested = wrapped.nested or previous is not _MISS
            wrapped.methods[method] = (wrapper, previous)
            setattr(cache, method, wrapper)
    return wrapped.nested


class _Bound:
    """Our wrapper as the instance attribute: called, it is the wrapper; otherwise it
    looks like the bound method it replaces (``__func__``, ``__self__``, name, doc,
    ``__wrapped__`` for its signature), as a plain function cannot.

    Django 6.1's async defaults (``BaseCache.aget_many``, ``aget_or_set``, ``ahas_key``,
    ``aincr``, ``aset_many``, ``adelete_many``, ``aincr_version``) ask
    ``self.get_many.__func__ is not BaseCache.get_many`` to choose between running the
    sync method in a thread (overridden) and their own loop over the async calls. A
    plain function has no ``__func__`` (AttributeError), and a ``types.MethodType`` of
    the wrapper would read as overridden and change the path: ``__func__`` here is the
    replaced method's own, so the answer is the one given without the panel.

    ``__func__`` and ``__self__`` are slots, not in ``__dict__``: ``functools.wraps``
    of this object (``sync_to_async(self.get)``, the toolbar's Cache panel wrapping
    over ours) copies ``__dict__``, and a copied ``__func__`` would make the copy look
    like a method of that function (``markcoroutinefunction`` would mark the backend's
    own ``get`` then).
    """

    __slots__ = ("__dict__", "__func__", "__self__", "_call")

    def __init__(self, call: Callable[..., Any], func: Any, cache: Any, original: Any):
        functools.update_wrapper(self, original)
        self._call = call
        self.__func__ = func
        self.__self__ = cache

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._call(*args, **kwargs)

    # A function-like object (inspect._signature_is_functionlike): iscoroutinefunction()
    # reads the wrapper's code, so an async one is a coroutine function as it was.
    @property
    def __code__(self) -> CodeType:
        return self._call.__code__  # type: ignore[attr-defined,no-any-return]

    @property
    def __defaults__(self) -> tuple[Any, ...] | None:
        return self._call.__defaults__  # type: ignore[attr-defined,no-any-return]

    @property
    def __kwdefaults__(self) -> dict[str, Any] | None:
        return self._call.__kwdefaults__  # type: ignore[attr-defined,no-any-return]

    def __repr__(self) -> str:
        return f"<recorded {self.__wrapped__!r}>"  # type: ignore[attr-defined]


def _bound(wrapper: Callable[..., Any], cache: Any, original: Any) -> _Bound | Any:
    """``wrapper`` as a ``_Bound`` with the ``__func__`` of the method it replaces,
    found through ``__wrapped__`` when ``original`` is someone else's wrapper (the
    toolbar's Cache panel: ``functools.wraps`` of the bound method). Without one (a
    wrapper that does not say what it wraps), ``wrapper`` as it is."""
    found = original
    for _ in range(10):
        func = getattr(found, "__func__", None)
        if func is not None:
            return _Bound(wrapper, func, cache, original)
        found = getattr(found, "__wrapped__", None)
        if found is None:
            break
    return wrapper


def _others_active(cache: Any) -> bool:
    """Whether the wrappers found under ours do work of their own in this request.

    django-debug-toolbar's CachePanel never removes its wrappers: unticked, it leaves
    them in place with ``cache._djdt_panel = None``, and they only call through. A
    wrapper of anyone else is assumed to be working.
    """
    if hasattr(cache, "_djdt_panel"):
        return getattr(cache, "_djdt_panel", None) is not None
    return True


def _unwrap(cache: Any) -> None:
    """Undo ``_wrap`` when the last recorder watching ``cache`` stops.

    A method someone wrapped after us (the toolbar's CachePanel, listed after ours)
    cannot be put back without dropping their wrapper: ours stays under it, calling
    straight through while no recorder is started, and the next ``_wrap`` reuses it.
    """
    wrapped: _Wrapped | None = cache.__dict__.get(_ATTR)
    if wrapped is None:
        return
    wrapped.count -= 1
    if wrapped.count > 0:
        return
    for method, (wrapper, previous) in list(wrapped.methods.items()):
        if cache.__dict__.get(method) is not wrapper:
            continue  # covered by someone else's wrapper: left in place, inert
        del wrapped.methods[method]
        if previous is _MISS:
            del cache.__dict__[method]
        else:
            setattr(cache, method, previous)
    if not wrapped.methods:
        del cache.__dict__[_ATTR]


def _wrapper(
    cache: Any, alias: str, name: str, original: Callable[..., Any], is_async: bool
) -> Callable[..., Any]:
    lookup = name in _LOOKUPS
    multi = isinstance(getattr(cache, "levels", None), tuple)
    if inspect.iscoroutinefunction(original):

        @functools.wraps(original)
        async def awrapper(*args: Any, **kwargs: Any) -> Any:
            recorder = _current.get()
            outer = _outer.get()
            if recorder is None or outer is not None:
                if outer is not None and lookup and outer.asks and outer.hit is None:
                    return await _answer(outer, name, original, args, kwargs)
                if recorder is not None and lookup and multi:
                    before = _level_hits(cache)
                    try:
                        return await original(*args, **kwargs)
                    finally:
                        recorder.unlisted(alias, before, _level_hits(cache))
                return await original(*args, **kwargs)
            quiet = recorder.is_quiet(cache, name, args)
            if quiet:
                token = _outer.set(_QUIET)
                start = time.perf_counter()
                try:
                    return await awrapper(*args, **kwargs)
                finally:
                    _outer.reset(token)
                    if quiet is BOOKKEEPING_CALL:
                        recorder.add_time(alias, time.perf_counter() - start)
            call = _Call(name == "get_or_set")
            # Arguments first: reading them may raise, and must not leave a hole.
            args, kwargs = _prepared(call, name, args, kwargs)
            index = recorder.begin_call()
            token = _outer.set(call)
            start = time.perf_counter()
            try:
                if lookup and name != "get_or_set":
                    result = await _answer(call, name, original, args, kwargs)
                else:
                    before = _counted(call, cache, multi)
                    result = await original(*args, **kwargs)
                    _infer(call, cache, before)
            except BaseException as exc:
                call.error = type(exc).__name__
                raise
            finally:
                seconds = time.perf_counter() - start
                _outer.reset(token)
                recorder.add_call(
                    index,
                    alias,
                    cache,
                    "a" + name,
                    _keys(name, args, kwargs),
                    call,
                    seconds,
                    True,
                )
            return result

        return awrapper

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        recorder = _current.get()
        outer = _outer.get()
        if recorder is None or outer is not None:
            if outer is not None and lookup and outer.asks and outer.hit is None:
                return _answer_sync(outer, name, original, args, kwargs)
            if recorder is not None and lookup and multi:
                before = _level_hits(cache)
                try:
                    return original(*args, **kwargs)
                finally:
                    recorder.unlisted(alias, before, _level_hits(cache))
            return original(*args, **kwargs)
        quiet = recorder.is_quiet(cache, name, args)
        if quiet:
            token = _outer.set(_QUIET)
            start = time.perf_counter()
            try:
                return wrapper(*args, **kwargs)  # now as an inner call: not listed
            finally:
                _outer.reset(token)
                if quiet is BOOKKEEPING_CALL:
                    recorder.add_time(alias, time.perf_counter() - start)
        call = _Call(name == "get_or_set")
        # Arguments first: reading them may raise, and must not leave a hole.
        args, kwargs = _prepared(call, name, args, kwargs)
        index = recorder.begin_call()
        token = _outer.set(call)
        start = time.perf_counter()
        try:
            if lookup and name != "get_or_set":
                result = _answer_sync(call, name, original, args, kwargs)
            else:
                before = _counted(call, cache, multi)
                result = original(*args, **kwargs)
                _infer(call, cache, before)
        except BaseException as exc:
            call.error = type(exc).__name__
            raise
        finally:
            seconds = time.perf_counter() - start
            _outer.reset(token)
            recorder.add_call(
                index,
                alias,
                cache,
                ("a" + name) if is_async else name,
                _keys(name, args, kwargs),
                call,
                seconds,
                is_async,
            )
        return result

    return wrapper


def _level_hits(cache: Any) -> list[int] | None:
    """Hits per level of a MultiLevelCache, from its ``stats()`` (what the panel splits)."""
    try:
        return [int(level["hits"]) for level in cache.stats()["levels"]]
    except Exception:  # noqa: BLE001 (the split is optional)
        return None


def _prepared(
    call: _Call, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """A listed call's arguments as the backend gets them.

    The keys of ``get_many``/``delete_many`` become a list (an iterator could be read
    once only: by the backend, and the call list would show none); the callable
    default of ``get_or_set`` is timed and tells whether it ran (a miss).
    """
    if name in ("get_many", "delete_many"):
        return _materialized(args, kwargs)
    if name == "get_or_set":
        return _timed_default(call, args, kwargs)
    return args, kwargs


def _timed_default(
    call: _Call, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """``get_or_set(key, default, ...)`` with a callable ``default`` noting its runs."""
    if len(args) >= 2:
        default = args[1]
    elif "default" in kwargs:
        default = kwargs["default"]
    else:
        return args, kwargs
    if not callable(default):
        return args, kwargs
    call.computed = False

    @functools.wraps(default)
    def compute(*a: Any, **kw: Any) -> Any:
        # The callable is the caller's code, not the backend's: its cache calls are
        # listed, so no outer call while it runs.
        outer = _outer.set(None)
        start = time.perf_counter()
        try:
            return default(*a, **kw)
        finally:
            call.computed = True
            call.compute_seconds += time.perf_counter() - start
            _outer.reset(outer)

    if len(args) >= 2:
        return (args[0], compute, *args[2:]), kwargs
    return args, {**kwargs, "default": compute}


def _counted(call: _Call, cache: Any, multi: bool) -> list[int] | None:
    """The level hits of a MultiLevelCache before a ``get_or_set`` whose default is
    not callable, for ``_infer``; None when they are not needed."""
    if multi and call.asks and call.computed is None:
        return _level_hits(cache)
    return None


def _infer(call: _Call, cache: Any = None, before: list[int] | None = None) -> None:
    """A ``get_or_set`` that no inner lookup answered (a backend's own fast path, as
    ``MultiLevelCache.aget_or_set`` has for L1): a miss if its callable default ran,
    else a hit. With a default that is not callable, on a MultiLevelCache, its level
    hits (``before`` the call, now) tell: a hit if they went up (they are what the
    panel's L1/L2 split counts, so the two agree). Otherwise, or after waiting, it
    stays unknown."""
    if not call.asks or call.hit is not None or call.waited:
        return
    if call.computed is not None:
        if call.computed:
            call.hit, call.misses = False, 1
        else:
            call.hit, call.hits = True, 1
        return
    after = None if before is None else _level_hits(cache)
    if before is not None and after is not None and len(after) == len(before):
        if sum(after) > sum(before):
            call.hit, call.hits = True, 1
        else:
            call.hit, call.misses = False, 1


def _answer_sync(
    call: _Call,
    name: str,
    original: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    """Run a lookup and note its real answer in ``call``."""
    if name == "get":
        args, kwargs, miss = _with_sentinel(args, kwargs)
        value = original(*args, **kwargs)
        return _note_get(call, value, miss)
    if name == "get_many":
        args, kwargs = _materialized(args, kwargs)
        found = original(*args, **kwargs)
        _note_many(call, _asked(args, kwargs), len(found))
        return found
    return original(*args, **kwargs)  # get_or_set: its first inner lookup answers


async def _answer(
    call: _Call,
    name: str,
    original: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    if name == "get":
        args, kwargs, miss = _with_sentinel(args, kwargs)
        value = await original(*args, **kwargs)
        return _note_get(call, value, miss)
    if name == "get_many":
        args, kwargs = _materialized(args, kwargs)
        found = await original(*args, **kwargs)
        _note_many(call, _asked(args, kwargs), len(found))
        return found
    return await original(*args, **kwargs)


class _Miss:
    """The default a recorded ``get`` passes on instead of the caller's: returned
    only on a miss (found again by identity), and shown as the caller's own default
    by whoever lists the call's arguments. The toolbar's Cache panel wraps the same
    methods, under ours: a bare ``object()`` would read ``<object object at 0x...>``
    there, as a default the caller never passed."""

    __slots__ = ("default",)

    def __init__(self, default: Any) -> None:
        self.default = default

    def __repr__(self) -> str:
        return repr(self.default)


def _with_sentinel(
    args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any], _Miss]:
    """``get(key, default, version)``'s arguments with a :class:`_Miss` of the caller's
    default in its place: positional if the caller's was, else ``default=``."""
    if len(args) >= 2:
        miss = _Miss(args[1])
        return (args[0], miss, *args[2:]), kwargs, miss
    miss = _Miss(kwargs.get("default"))
    return args, {**kwargs, "default": miss}, miss


def _note_get(call: _Call, value: Any, miss: _Miss) -> Any:
    if value is miss:
        call.hit, call.misses = False, 1
        return miss.default
    call.hit, call.hits = True, 1
    return value


def _materialized(
    args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """``get_many(keys, ...)``/``delete_many(keys, ...)`` with ``keys`` as a list: an
    iterator can be read once. A list is passed on as it is."""
    if args:
        if isinstance(args[0], list):
            return args, kwargs
        return (list(args[0]), *args[1:]), kwargs
    if "keys" in kwargs and not isinstance(kwargs["keys"], list):
        return args, {**kwargs, "keys": list(kwargs["keys"])}
    return args, kwargs


def _asked(args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    """How many distinct keys were asked: a key asked twice is found once."""
    keys = args[0] if args else kwargs["keys"]
    try:
        return len(set(keys))
    except TypeError:  # an unhashable key: the backend will say what it thinks of it
        return len(keys)


def _note_many(call: _Call, asked: int, found: int) -> None:
    call.hits, call.misses = found, asked - found
    call.hit = found == asked


def _keys(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[str]:
    """The caller's key(s) of a call, as text, for the call list."""
    if name == "invalidate_tags":
        return [_text(tag) for tag in args]
    if name == "clear":
        return []
    # A key of None is a key (shown as "None (NoneType)"), not a missing argument.
    names = ("key", "keys", "data", "pattern")
    first = args[0] if args else next((kwargs[k] for k in names if k in kwargs), _MISS)
    if first is _MISS:
        return []
    if name in ("get_many", "delete_many", "set_many") and first is not None:
        try:
            return [_text(key) for key in first]
        except TypeError:  # not iterable: the backend raised, say what it got
            pass
    return [_text(first)]


# -- signal receivers ------------------------------------------------------------------


def _on_evicted(sender: Any, cache: Any, key: str, cause: str, **kwargs: Any) -> None:
    recorder = _current.get()
    if recorder is not None:
        alias = recorder.alias_of(cache, key)
        recorder.add_event(
            "evictions",
            (alias, cause),
            {"alias": alias, "key": _text(key), "cause": cause},
        )


def _on_invalidated(
    sender: Any,
    cache: Any,
    tags: Iterable[str],
    reason: str,
    on_commit: bool = False,
    **kwargs: Any,
) -> None:
    recorder = _current.get()
    if recorder is not None and not recorder.quiet_tags_only(tags):
        alias = recorder.alias_of(cache)
        recorder.add_event(
            "invalidations",
            alias,
            {
                "alias": alias,
                "tags": [_text(tag) for tag in tags],
                "reason": _text(reason),
                "on_commit": bool(on_commit),
            },
        )


def _on_stampede_wait(
    sender: Any, key: Any, scope: str, seconds: float, **kwargs: Any
) -> None:
    recorder = _current.get()
    if recorder is None:
        return
    call = _outer.get()
    if call is not None:
        call.waited = True
    cache, using = kwargs.get("cache"), kwargs.get("using")
    if cache is not None:
        alias = label = recorder.alias_of(cache, key)
    else:
        # @cached's: counted under its alias (the Caches table's row agrees with the
        # summary), listed with the function that waited.
        name = f"@cached {getattr(sender, '__qualname__', _class_name(sender))}"
        alias = name if using is None else using
        label = name if using is None else f"{using} ({name})"
    recorder.add_event(
        "stampede_waits",
        alias,
        {"alias": label, "key": _text(key), "scope": scope, "ms": seconds * 1000.0},
    )


_SIGNALS = (
    (entry_evicted, _on_evicted, "smartcache.instrumentation.evicted"),
    (tags_invalidated, _on_invalidated, "smartcache.instrumentation.invalidated"),
    (stampede_wait, _on_stampede_wait, "smartcache.instrumentation.stampede"),
)


def _connect() -> None:
    for signal, receiver, uid in _SIGNALS:
        signal.connect(receiver, dispatch_uid=uid, weak=False)


def _disconnect() -> None:
    for signal, receiver, uid in _SIGNALS:
        signal.disconnect(receiver, dispatch_uid=uid)
