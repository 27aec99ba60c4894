"""What every django-smartcache backend shares: a fast key path and option parsing.

``SmartCacheKeyMixin`` builds and validates keys exactly as ``BaseCache.make_and_validate_key``
does (same key, same ``CacheKeyWarning`` text) without Django's lazily compiled regex
on the common path, which is about 40% of LocMemCache's ``get()``. The ``option_*``
helpers read ``OPTIONS`` and raise ``ImproperlyConfigured`` naming the bad option.
``SingleFlightMixin`` is the core's single-flight ``get_or_set`` with the Django half:
a caller that waited sends ``signals.stampede_wait``.
"""

from __future__ import annotations

import inspect
import logging
import math
import pickle
import threading
from asyncio import _get_running_loop
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from asgiref.sync import sync_to_async
from django.core.cache.backends.base import (
    DEFAULT_TIMEOUT,
    MEMCACHE_MAX_KEY_LENGTH,
    BaseCache,
    InvalidCacheKey,
    default_key_func,
)
from django.core.exceptions import ImproperlyConfigured

from .._key_warnings import key_warnings_on
from .._transactions import dirty_tags
from ..core.patterns import KeyPattern
from ..core.singleflight import SingleFlightGetOrSetMixin
from ..core.sizing import parse_size
from ..signals import entry_evicted, stampede_wait

__all__ = [
    "KeyPattern",
    "SingleFlightMixin",
    "SmartCacheKeyMixin",
    "ThreadedIncrMixin",
    "UnpicklableValueError",
    "check_options",
    "django_int",
    "dumps",
    "option_choice",
    "option_size",
    "option_timeout",
]

PICKLE_PROTOCOL = pickle.HIGHEST_PROTOCOL


class UnpicklableValueError(pickle.PicklingError, TypeError):
    """A value cannot be cached because it cannot be pickled; the cache is unchanged."""


#: ``pickle.dumps`` writes into a buffer of this many bytes, then shrinks it in place.
_PICKLE_BUFFER = 4096


def dumps(key: Any, value: Any) -> bytes:
    """Pickle ``value`` for ``key``, turning any failure into :class:`UnpicklableValueError`.

    A payload under the pickler's first buffer is copied into an object of its own
    size: ``pickle.dumps`` returns its 4 KiB buffer shrunk in place by ``realloc``,
    so each small payload a cache keeps pinned the head of a 4 KiB heap block. Kept
    in any order but the order written (S3-FIFO keeps the read ones longer), those
    blocks never merge: RSS grew to 1.8-2.0x a 64 MiB budget of 50-byte values, with
    55 MiB of free 0.5-4 KiB chunks in glibc's heap; with the copy, 0.83x (LRU's).
    """
    try:
        payload = pickle.dumps(value, PICKLE_PROTOCOL)
    except Exception as exc:
        hint = ""
        if inspect.iscoroutine(value):
            # get_or_set(key, async_function): the call made a coroutine nobody will
            # await. Closed, so Python does not add "never awaited" to the error.
            value.close()
            hint = (
                "; await it and cache its result (aget_or_set calls a plain "
                "callable), or memoize the async function with @cached"
            )
        raise UnpicklableValueError(
            f"cannot cache {key!r}: its value of type {type(value).__name__} cannot be "
            f"pickled ({type(exc).__name__}: {exc}){hint}"
        ) from exc
    if len(payload) < _PICKLE_BUFFER:
        # A new object of its own size (a join of one item would return the same one).
        return _join((payload, b""))
    return payload


_join = b"".join


#: Per thread: the eviction batches held back by :func:`evictions_held` (None: none).
_held = threading.local()


def held_evictions() -> list[tuple[Callable[[Any], None], Any]] | None:
    """This thread's eviction batches being held back (``evictions_held``), or None:
    a store's listener appends ``(deliver, batch)`` there instead of sending."""
    return getattr(_held, "batches", None)  # type: ignore[no-any-return]


def evictions_held() -> _EvictionsHeld:
    """Hold back this thread's ``entry_evicted`` signals until the outermost block ends.

    A MultiLevelCache writes L1 under its coherence lock (a write, a promotion), and
    the signal is sent after the store's lock is released, so that a receiver may use
    the cache: sent inside the coherence lock, such a receiver would hang the process
    (its ``get_or_set`` waiting on a flight whose leader waits for that lock; two
    caches' receivers writing each other taking the two locks in opposite orders) or
    re-enter a promotion between its groups and be overwritten by it. Entered outside
    the lock, the signals go out once it is released. A single flight's ``get_or_set``
    holds them too: else a receiver's ``get_or_set`` run inside a flight's leader
    waits on another thread's flight whose leader waits on this one."""
    return _EvictionsHeld()


class _EvictionsHeld:
    """:func:`evictions_held`'s context manager: a class, not a generator (it is on
    every MultiLevelCache write and every ``get_or_set``), and nothing at all to do
    while no receiver is connected (the stores record no evictions then)."""

    __slots__ = ("_batches",)

    def __enter__(self) -> None:
        if not entry_evicted.receivers or getattr(_held, "batches", None) is not None:
            self._batches = None  # (none to hold, or nested: the outermost sends)
            return
        self._batches = _held.batches = []

    def __exit__(self, *exc_info: object) -> None:
        batches = self._batches
        if batches is None:
            return
        _held.batches = None
        for deliver, batch in batches:
            deliver(batch)


class SingleFlightMixin(SingleFlightGetOrSetMixin):
    """Single-flight ``get_or_set``/``aget_or_set`` that reports waits as signals.

    Put it first in the bases, like the core mixin it extends. A caller that waited
    for another thread's (or coroutine's) computation sends
    :data:`~django_smartcache.signals.stampede_wait` with ``scope="process"``.
    """

    def get_or_set(self, key: Any, default: Any, *args: Any, **kwargs: Any) -> Any:
        with evictions_held():  # (sent when the flight is over: see evictions_held)
            return super().get_or_set(key, default, *args, **kwargs)

    def singleflight_allowed(self) -> bool:
        # A thread with writes in an open transaction neither hands others its result
        # (it may hold uncommitted data, and roll back) nor takes theirs (computed
        # without its own writes): it computes alone, as the tagging layer neither
        # reads nor stores its dirty entries.
        return not dirty_tags()

    def stampede_waited(self, key: str, seconds: float) -> None:
        self._waited_read()
        stampede_wait.send(
            sender=type(self), cache=self, key=key, scope="process", seconds=seconds
        )

    def stampede_shared_hit(self, key: str) -> None:
        self._shared_hit()

    def _shared_hit(self) -> None:
        """The caller that joined another's ``get_or_set`` got the value that one found:
        a backend that counts reads counts a hit (the leader's hit is its own)."""

    def _waited_read(self) -> None:
        """The caller that waited asked for one read and found no value: a backend that
        counts reads counts a miss (the leader's miss is counted by its own read)."""


_blocking_logger = logging.getLogger("django_smartcache")
_warned_on_loop: set[tuple[str, str]] = set()
_warned_lock = threading.Lock()


def warn_if_on_event_loop(backend: str, location: str) -> None:
    """Log once per cache (per process) that it did blocking I/O (a SQLite file, a
    Redis round trip) on the thread of a running event loop: every other request of
    that worker waited meanwhile (a SQLite lock wait: up to BUSY_TIMEOUT). The async
    API (``aget``...) never does; a sync call from async code does, and Django's own
    ``cache_page`` and ``{% cache %}`` make one on an async view."""
    if _get_running_loop() is None:
        return
    with _warned_lock:
        if (backend, location) in _warned_on_loop:
            return
        _warned_on_loop.add((backend, location))
    _blocking_logger.warning(
        "%s %s: blocking I/O on the event loop's thread (a sync cache call from "
        "async code: Django's cache_page or {%% cache %%} on an async view, or a "
        "sync method in a coroutine); every other request of this worker waits "
        "meanwhile. Use the async methods (aget, aset, aget_or_set...), @cached on "
        "an async def, or CacheMiddleware, whose async path runs the cache in a "
        "thread. (Logged once.)",
        backend,
        location,
    )


def made_key_head(make_key: Callable[..., Any], version: int) -> str:
    """What ``make_key`` puts before every key at ``version`` (``"prefix:version:"``
    with Django's default), found by making probe keys; ``ValueError`` naming
    ``KEY_FUNCTION`` when the head depends on the key. The probes hold what key
    functions commonly rewrite (upper case, spaces, ``:``, ``/``, non-ASCII, a key over
    memcached's 250 characters): one that lower-cases keys or replaces spaces would
    pass two plain probes, and its delete_pattern() then delete nothing."""
    probes = ("\x00Probe A:é/\x00", "\x01probe-b\x01", "Long " * 60)
    made = [make_key(p, version=version) for p in probes]
    heads = {
        m[: len(m) - len(p)] if isinstance(m, str) and m.endswith(p) else None
        for m, p in zip(made, probes, strict=True)
    }
    head = heads.pop()
    if heads or head is None:
        raise ValueError(
            "delete_pattern() needs a KEY_FUNCTION (or make_key) that makes "
            "'<head><key>' with a head that does not depend on the key, as "
            "Django's default 'prefix:version:key' does; this cache's does not"
        )
    return str(head)


def refuse_unencodable(key: str, backend: str, what: str = "Cache key") -> None:
    """Raise ``InvalidCacheKey`` if ``key`` cannot be encoded as UTF-8."""
    if key.isascii():
        return
    try:
        key.encode()
    except UnicodeEncodeError as exc:
        raise InvalidCacheKey(
            f"{what} contains a character that cannot be encoded as UTF-8 "
            f"({exc.reason}, at position {exc.start}); {backend} keeps keys as UTF-8 "
            f"text: {key!r}"
        ) from None


class ThreadedIncrMixin:
    """``aincr`` (and so ``adecr``) as the synchronous ``incr`` run in a thread.

    Django's ``BaseCache.aincr`` is an ``aget`` then an ``aset`` with the default
    timeout: concurrent calls lose increments, and the entry's expiry is reset. A
    backend whose ``incr`` is atomic and keeps the expiry gets the same from ``aincr``.
    """

    async def aincr(self, key: Any, delta: int = 1, version: int | None = None) -> Any:
        incr = self.incr  # type: ignore[attr-defined]
        return await sync_to_async(incr, thread_sensitive=True)(key, delta, version)


class SmartCacheKeyMixin:
    """Fast ``make_and_validate_key`` for ``BaseCache`` subclasses; put it first in the bases.

    The fast path applies while ``key_func`` is Django's default and neither ``make_key``
    nor ``validate_key`` is overridden; a key that is not plainly valid (long, spaces,
    control characters) falls back to ``validate_key``, so warnings are Django's own.
    """

    key_func: Callable[..., str]
    key_prefix: str
    version: int
    default_timeout: float | None
    #: Whether keys leave the process as UTF-8 text (a SQLite file, Redis): a key
    #: that cannot be encoded (a lone surrogate) is then refused with
    #: ``InvalidCacheKey`` before anything is written, as Django's memcached backends
    #: refuse the keys memcached cannot store, instead of a raw ``UnicodeEncodeError``
    #: from the driver. Checked on the slow path only: such a key is never printable.
    _utf8_keys = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cls = type(self)
        self._plain_keys = (
            cls.make_key is BaseCache.make_key  # type: ignore[attr-defined]
            and cls.validate_key is BaseCache.validate_key  # type: ignore[attr-defined]
        )

    def _key(self, key: Any, version: int | None = None) -> str:
        """``make_and_validate_key(key, version)``, without the regex on valid keys."""
        if self.key_func is default_key_func and self._plain_keys:
            made = f"{self.key_prefix}:{self.version if version is None else version}:{key}"
            if (
                len(made) <= MEMCACHE_MAX_KEY_LENGTH
                and made.isprintable()
                and " " not in made
            ):
                return made
            if key_warnings_on():
                self.validate_key(made)  # type: ignore[attr-defined]
            if self._utf8_keys:
                refuse_unencodable(made, type(self).__name__)
            return made
        return self._made_and_checked(key, version)

    def _made_and_checked(self, key: Any, version: int | None) -> str:
        """``make_and_validate_key``, the check skipped where the call being served
        has warned already (:class:`~django_smartcache._key_warnings.key_warnings_given`)."""
        made: str = self.make_key(key, version=version)  # type: ignore[attr-defined]
        if key_warnings_on():
            self.validate_key(made)  # type: ignore[attr-defined]
        if self._utf8_keys and isinstance(made, str):
            refuse_unencodable(made, type(self).__name__)
        return made

    def _quiet_key(self, key: Any, version: int | None = None) -> str | None:
        """The made key when it is plainly valid (no warning to give), else None: for a
        fast path that falls back to a call that makes and warns about the key itself."""
        if not self._plain_keys:
            return None  # an own make_key/validate_key: only it knows what it accepts
        if self.key_func is default_key_func:
            made = f"{self.key_prefix}:{self.version if version is None else version}:{key}"
        else:
            made = self.make_key(key, version=version)  # type: ignore[attr-defined]
        if (
            isinstance(made, str)
            and len(made) <= MEMCACHE_MAX_KEY_LENGTH
            and made.isprintable()
            and " " not in made
        ):
            return made
        return None

    def _keys(self, keys: Iterable[Any], version: int | None = None) -> dict[str, Any]:
        """Made key -> caller's key, for the batch methods."""
        made: dict[str, Any] = {}
        if self.key_func is default_key_func and self._plain_keys:
            prefix = (
                f"{self.key_prefix}:{self.version if version is None else version}:"
            )
            for key in keys:
                full = f"{prefix}{key}"
                if not (
                    len(full) <= MEMCACHE_MAX_KEY_LENGTH
                    and full.isprintable()
                    and " " not in full
                ):
                    if key_warnings_on():
                        self.validate_key(full)  # type: ignore[attr-defined]
                    if self._utf8_keys:
                        refuse_unencodable(full, type(self).__name__)
                made[full] = key
            return made
        for key in keys:
            made[self._made_and_checked(key, version)] = key
        return made

    def key_pattern(
        self, pattern: str, *, regex: bool = False, version: int | None = None
    ) -> KeyPattern:
        """``pattern`` over the caller's keys as a :class:`~django_smartcache.core.patterns.KeyPattern`
        over made keys (``KEY_PREFIX`` and ``version`` honoured), for ``delete_pattern()``.

        Works for any ``KEY_FUNCTION``/``make_key`` that makes ``head + key`` with a head
        that does not depend on the key (Django's default: ``"prefix:version:"``); the
        head is found by making probe keys (:func:`made_key_head`). Any other key
        function cannot be inverted and raises ``ValueError`` naming ``KEY_FUNCTION``.
        """
        head = made_key_head(
            self.make_key,  # type: ignore[attr-defined]
            self.version if version is None else version,
        )
        if self._utf8_keys and isinstance(pattern, str):
            # No stored key holds such a character: refused as its keys are.
            refuse_unencodable(pattern, type(self).__name__, "Key pattern")
        return KeyPattern(pattern, regex=regex, head=head)

    def _ttl(self, timeout: Any) -> float | None:
        """A Django timeout as seconds from now: None is forever, <= 0 already expired."""
        if timeout is DEFAULT_TIMEOUT:
            return self.default_timeout
        if type(timeout) is float and math.isnan(timeout):  # no expiry time from it
            raise ValueError("timeout must be a number of seconds or None, not NaN")
        return timeout  # type: ignore[no-any-return]


def option_timeout(backend: str, params: Mapping[str, Any]) -> int | None:
    """``TIMEOUT`` as Django's ``BaseCache`` reads it (``int()`` of it: ``"1"`` and
    ``1.9`` give 1; None: never expire), except that a value ``int()`` refuses
    raises instead of silently becoming 300."""
    timeout = params.get("timeout", params.get("TIMEOUT", 300))
    if timeout is None:
        return None
    if isinstance(timeout, bool):  # int(True) is 1 s: a slip, refused as elsewhere
        raise ImproperlyConfigured(
            f"{backend}: TIMEOUT must be a number of seconds (or None: never expire), "
            f"got {timeout!r}"
        )
    try:
        return int(timeout)
    except (TypeError, ValueError, OverflowError):
        raise ImproperlyConfigured(
            f"{backend}: TIMEOUT must be a number of seconds (or None: never expire), "
            f"got {timeout!r}"
        ) from None


def options_given(params: Mapping[str, Any]) -> Any:
    """``params["OPTIONS"]``; absent or None is no options. Anything else is for the
    caller to check as a dict: ``[]`` or ``""`` is refused rather than taken for none
    (``or {}``), as a ``MAX_ENTRIES: True`` is."""
    options = params.get("OPTIONS")
    return {} if options is None else options


def check_options(
    backend: str, options: Mapping[str, Any], known: Iterable[str]
) -> None:
    """Refuse unknown ``OPTIONS`` keys (a typo would otherwise be silently ignored)."""
    known = set(known)
    # key=repr: a key that is not a string (``{1: 2}``) is named too, not a TypeError
    # from comparing it with the others.
    unknown = sorted(set(options) - known, key=repr)
    if unknown:
        raise ImproperlyConfigured(
            f"{backend}: unknown OPTIONS {', '.join(map(repr, unknown))}; "
            f"known options: {', '.join(sorted(known))}"
        )


def option_size(
    backend: str,
    options: Mapping[str, Any],
    name: str,
    default: int | str | None,
    *,
    allow_none: bool = False,
    minimum: int = 1,
    why: str = "",
) -> int | None:
    """``OPTIONS[name]`` in bytes (int or ``"64MB"``); at least ``minimum`` (``why``
    says why, after a comma, in the error)."""
    value = options.get(name, default)
    if value is None and allow_none:
        return None
    try:
        size = parse_size(value)
    except ValueError as exc:
        raise ImproperlyConfigured(
            f"{backend}: OPTIONS['{name}'] is invalid: {exc}"
        ) from None
    if size < minimum:
        unit = "byte" if minimum == 1 else "bytes"
        raise ImproperlyConfigured(
            f"{backend}: OPTIONS['{name}'] must be at least {minimum} {unit}{why}, "
            f"got {value!r}"
        )
    return size


def django_int(value: object) -> int | None:
    """A Django generic option (``MAX_ENTRIES``, ``CULL_FREQUENCY``) read as Django's own
    backends read it, ``int()`` of it (``"3"`` from an environment variable is 3); None
    when it is no such number (a bool, text that is not one)."""
    if isinstance(value, bool):
        return None
    try:
        return int(value)  # type: ignore[call-overload, no-any-return]
    except (TypeError, ValueError, OverflowError):
        return None


def option_choice(
    backend: str,
    options: Mapping[str, Any],
    name: str,
    default: str,
    choices: Iterable[str],
) -> str:
    """``OPTIONS[name]``, one of ``choices``."""
    value = options.get(name, default)
    choices = sorted(choices)
    if value not in choices:
        raise ImproperlyConfigured(
            f"{backend}: OPTIONS['{name}'] must be one of {', '.join(choices)}; got {value!r}"
        )
    return value  # type: ignore[no-any-return]
