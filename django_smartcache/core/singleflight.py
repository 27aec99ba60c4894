"""Single flight: concurrent callers asking for one key share one computation.

When a popular entry is missing, every thread (or coroutine) that misses it would
recompute it at once: a cache stampede. Here the first caller computes, the others
wait for its result, or its exception, and receive the same object. The idea is Go's
``golang.org/x/sync/singleflight``; this is the in-process half, threads and asyncio.
Across processes the decorator adds a lock in the shared cache level.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import importlib
import os
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, Generic, TypeVar, cast

try:  # asgiref comes with Django; without it no sync thread waits for a coroutine
    _asgiref: Any = importlib.import_module("asgiref.sync")
except ImportError:  # pragma: no cover
    _asgiref = None

T = TypeVar("T")

#: How long a waiter that cannot tell whether its wait blocks the leader's sync thread
#: (an asgiref whose internals differ from those :func:`blocks_lane` reads) waits for
#: the leader before computing on its own.
UNSURE_WAIT = 2.0

#: The (flight, key) calls whose computation runs in this context. Child tasks
#: (``asyncio.gather``, ``create_task``) and ``sync_to_async``/``copy_context`` threads
#: inherit it, so a computation that asks for its own key through one of them computes
#: instead of waiting for itself (a plain ``threading.Thread`` or pool does not carry
#: the context: from there, such a call waits for its own computation).
_LEADING: contextvars.ContextVar[frozenset[tuple[int, Hashable]]] = (
    contextvars.ContextVar("smartcache_flights_leading", default=frozenset())
)


def nested(flight: object, key: Hashable) -> bool:
    """Whether this context runs ``flight``'s computation of ``key`` already: a call
    for ``key`` now comes from that computation and must not wait for it."""
    return (id(flight), key) in _LEADING.get()


def mark_leading(flight: object, key: Hashable) -> contextvars.Token[Any]:
    """Mark this context (a computation's own task or frame) as running ``flight``'s
    computation of ``key`` (see :func:`nested`); ``_LEADING.reset(token)`` unmarks."""
    return _LEADING.set(_LEADING.get() | {(id(flight), key)})


def sync_lane(loop: asyncio.AbstractEventLoop) -> Any:
    """What asgiref's ``sync_to_async(thread_sensitive=True)``, called in this context,
    would run its function with, in asgiref's order of choice: the executor of the sync
    thread this coroutine runs for (``async_to_sync``), the request's
    ``ThreadSensitiveContext`` (its executor is looked up later: it may not exist yet),
    the loop's executor, or asgiref's one global sync thread. A computation taken
    here as a leader's runs its sync work (the ORM, ``sync_to_async``) there."""
    if _asgiref is None:
        return None
    try:
        current = getattr(_asgiref.AsyncToSync.executors, "current", None)
        if current is not None:
            return current
        context = _asgiref.SyncToAsync.thread_sensitive_context.get(None)
        if context is not None:
            return context
        executor = _asgiref.AsyncToSync.loop_thread_executors.get(loop)
        if executor is not None:
            return executor
        return _asgiref.SyncToAsync.single_thread_executor
    except AttributeError:  # another asgiref: see blocks_lane
        return _UNKNOWN_LANE


_UNKNOWN_LANE = object()


def blocks_lane(lane: Any) -> bool | None:
    """Whether this coroutine, were it to wait, would block the thread ``lane`` (a
    leader's :func:`sync_lane`) runs sync work on: it runs for ``async_to_sync`` in a
    sync thread that waits for it, and that thread is the lane's. The leader's next
    ``sync_to_async`` would then queue behind this wait, which waits for the leader: a
    deadlock (Django gives each ASGI request one such thread; without a request, the
    process has one). False when this coroutine blocks no sync thread, or another one;
    None when asgiref's internals do not tell (the caller waits a bounded time).

    Reads asgiref's ``AsyncToSync.executors.current`` (the executor of the sync thread
    that waits for this coroutine), ``SyncToAsync.context_to_thread_executor``, and
    which thread an executor runs on: ``CurrentThreadExecutor._work_thread`` and
    ``ThreadPoolExecutor._threads`` (private, but unchanged for years)."""
    if lane is None or _asgiref is None:
        return False
    try:
        mine = getattr(_asgiref.AsyncToSync.executors, "current", None)
    except AttributeError:  # pragma: no cover
        return None
    if mine is None or lane is mine:
        return False  # no thread waits for this coroutine; or it serves lane meanwhile
    blocked = getattr(mine, "_work_thread", None)
    if blocked is None or lane is _UNKNOWN_LANE:
        return None
    executor = lane
    if isinstance(lane, _asgiref.ThreadSensitiveContext):
        executor = _asgiref.SyncToAsync.context_to_thread_executor.get(lane)
        if executor is None:
            return False  # no thread yet, so not the one this wait blocks
    thread = getattr(executor, "_work_thread", None)  # a CurrentThreadExecutor
    if thread is not None:
        return thread is blocked
    threads = getattr(executor, "_threads", None)  # a ThreadPoolExecutor
    return None if threads is None else blocked in threads


async def alone(flight: object, key: Hashable, fn: Callable[[], Awaitable[T]]) -> T:
    """Await ``fn()`` without a flight, marked as ``flight``'s computation of ``key``
    in this context while it runs (a nested call for ``key`` computes too)."""
    token = mark_leading(flight, key)
    try:
        return await fn()
    finally:
        _LEADING.reset(token)


class _Call(Generic[T]):
    """One computation in flight and the callers waiting for it."""

    __slots__ = ("done", "error", "owner", "result", "waiters", "wakers")

    def __init__(self, owner: int) -> None:
        self.done = threading.Event()
        self.owner = owner
        self.result: T | None = None
        self.error: BaseException | None = None
        self.waiters = 0
        #: Called when it is done: how a waiting coroutine learns it without a thread.
        self.wakers: list[Callable[[], None]] = []

    def outcome(self, joined_error: Callable[[], None] | None = None) -> T:
        """The result, or the exception raised (``joined_error`` called first)."""
        if self.error is not None:
            if joined_error is not None:
                joined_error()
            raise self.error
        return cast(T, self.result)


class CallTable:
    """The calls in flight of one process, by key, under one lock: what every flight
    here (and the decorator's process-wide async one) keeps, and answers about."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[Hashable, Any] = {}
        _FLIGHTS.add(self)

    def _forked(self) -> None:
        """In a forked child: the leaders in flight were threads of the parent, which
        do not exist here (their callers would wait forever), and so may the holder
        of the lock. Start empty."""
        self._lock = threading.Lock()
        self._calls = {}

    def forget(self, key: Hashable) -> bool:
        """Detach the call in flight for ``key`` (whether there was one): callers from
        now on start a new call instead of joining one that began before, say, the
        data changed. Its leader finishes, and those already waiting get its result."""
        with self._lock:
            return self._calls.pop(key, None) is not None

    def forget_matching(self, predicate: Callable[[Hashable], bool]) -> int:
        """:meth:`forget` every key ``predicate`` is true of; how many there were."""
        with self._lock:
            found = [key for key in self._calls if predicate(key)]
            for key in found:
                del self._calls[key]
        return len(found)

    def waiting(self, key: Hashable) -> int:
        """How many callers wait for the call in flight for ``key`` (0 if none)."""
        with self._lock:
            call = self._calls.get(key)
            return 0 if call is None else int(call.waiters)

    def in_flight(self, key: Hashable) -> bool:
        """Whether a call for ``key`` is running now."""
        with self._lock:
            return key in self._calls


class SingleFlight(CallTable):
    """Deduplicate concurrent calls per key among the threads of one process."""

    def do(
        self,
        key: Hashable,
        fn: Callable[[], T],
        joined_error: Callable[[], None] | None = None,
    ) -> tuple[T, bool]:
        """Run ``fn`` unless a call for ``key`` is in flight; wait for it then.

        Returns ``(result, shared)``; ``shared`` is true for a caller that waited for
        another thread's result. An exception raised by ``fn`` reaches every caller;
        ``joined_error`` is called first in each caller that waited for it (it has no
        ``shared`` to look at).
        """
        call, leader = self._enter(key)
        if call is None:  # asked again by its own computation: computed, as unshared
            return fn(), False
        if not leader:
            call.done.wait()
            return call.outcome(joined_error), True
        return self._lead(key, call, fn), False

    async def ado(
        self,
        key: Hashable,
        fn: Callable[[], T],
        joined_error: Callable[[], None] | None = None,
    ) -> tuple[T, bool]:
        """:meth:`do` from a coroutine, with a synchronous ``fn``: leads by running it
        on the loop, as a thread would, so threads that miss meanwhile wait for it; or
        waits for a thread's call without blocking the loop (woken by the leader)."""
        loop = asyncio.get_running_loop()
        woken = loop.create_future()
        call, leader = self._enter(key, waker(loop, woken))
        if call is None:
            return fn(), False
        if not leader:
            await woken
            return call.outcome(joined_error), True
        return self._lead(key, call, fn), False

    def _enter(
        self, key: Hashable, waker: Callable[[], None] | None = None
    ) -> tuple[_Call[Any] | None, bool]:
        """The call in flight for ``key`` (joined; ``waker`` runs when it is done), or
        a new one this caller leads; None when this thread, or this context (see
        :data:`_LEADING`), leads it already: the
        computation asks for its own key (a ``get_or_set`` inside its callable), and
        waiting would wait for itself. That nested call computes on its own, as it
        would without a flight (LocMemCache: the inner value is stored, the outer
        ``add`` loses); a computation that always asks again recurses until Python's
        recursion limit, as it would there."""
        if nested(self, key):
            return None, True
        me = threading.get_ident()
        with self._lock:
            call = self._calls.get(key)
            if call is None:
                call = self._calls[key] = _Call(me)
                return call, True
            if call.owner == me:
                return None, True
            call.waiters += 1
            if waker is not None:
                call.wakers.append(waker)  # not done: done is set under this lock
            return call, False

    def _lead(self, key: Hashable, call: _Call[T], fn: Callable[[], T]) -> T:
        token = mark_leading(self, key)
        try:
            result = call.result = fn()
        except BaseException as exc:
            call.error = exc
            raise
        finally:
            _LEADING.reset(token)
            with self._lock:
                if self._calls.get(key) is call:  # (not forgotten by a fork since)
                    del self._calls[key]
                call.done.set()
                wakers, call.wakers = call.wakers, []
            for wake in wakers:
                wake()
        return result


_FLIGHTS: weakref.WeakSet[CallTable] = weakref.WeakSet()


def _forget_flights_in_child() -> None:
    for flight in list(_FLIGHTS):
        flight._forked()


if hasattr(os, "register_at_fork"):  # POSIX; elsewhere there is no fork
    os.register_at_fork(after_in_child=_forget_flights_in_child)


class AsyncSingleFlight:
    """Deduplicate concurrent coroutines per key, within each event loop.

    The computation runs as its own task, so a caller that is cancelled while it
    waits cancels neither the computation nor the other callers' wait.
    """

    #: Computations in flight examined per new one for a closed loop (see ``_reap``).
    REAP_PER_CALL = 2

    def __init__(self) -> None:
        # Keyed by (loop, key): a task belongs to the loop that created it.
        self._calls: dict[
            tuple[asyncio.AbstractEventLoop, Hashable], asyncio.Task[Any]
        ] = {}
        self._waiters: dict[tuple[asyncio.AbstractEventLoop, Hashable], int] = {}
        #: Where each computation runs its sync work (see sync_lane).
        self._lanes: dict[tuple[asyncio.AbstractEventLoop, Hashable], Any] = {}
        #: The computations in flight (task -> slot), oldest first: each new one
        #: examines a few (``_reap``); a task leaves when it ends. Shared by the loops
        #: of every thread, so under a lock (the per-loop tables above are not: a
        #: loop's slots are touched by its own thread, or by ``_reap`` once closed).
        self._started: collections.OrderedDict[
            asyncio.Task[Any], tuple[asyncio.AbstractEventLoop, Hashable]
        ] = collections.OrderedDict()
        self._started_lock = threading.Lock()

    async def do(
        self,
        key: Hashable,
        fn: Callable[[], Awaitable[T]],
        joined_error: Callable[[], None] | None = None,
    ) -> tuple[T, bool]:
        """Await ``fn()`` unless a call for ``key`` is in flight; await that one then.

        Returns ``(result, shared)`` like :meth:`SingleFlight.do` (``joined_error`` too).
        """
        loop = asyncio.get_running_loop()
        slot = (loop, key)
        task = self._calls.get(slot)
        # A finished task stays listed until its done-callback runs, a loop iteration
        # later: joining it then would return a result older than a delete made since.
        if nested(self, key):  # asked by its own computation: see _enter
            return await fn(), False
        if task is None or task.done():
            task = loop.create_task(_run(fn, (id(self), key)))
            self._calls[slot] = task
            self._lanes[slot] = sync_lane(loop)
            with self._started_lock:
                self._reap()
                if not task.done():  # (an eager task may have finished already)
                    self._started[task] = slot
            task.add_done_callback(lambda done: self._finish(slot, done))
            return await asyncio.shield(task), False
        blocks = blocks_lane(self._lanes.get(slot))
        if blocks:
            # This coroutine runs for a sync thread (async_to_sync) that the leader's
            # sync work needs: waiting would deadlock, so it computes, as without us.
            return await alone(self, key, fn), False
        self._waiters[slot] = self._waiters.get(slot, 0) + 1
        try:
            try:
                if blocks is None:  # cannot tell: wait a while, then compute
                    try:
                        return await asyncio.wait_for(
                            asyncio.shield(task), UNSURE_WAIT
                        ), True
                    except TimeoutError:
                        if task.done():  # (just now)
                            return task.result(), True
                        return await alone(self, key, fn), False
                return await asyncio.shield(task), True
            except Exception:
                if task.done() and joined_error is not None:
                    joined_error()  # the computation raised (not: this caller cancelled)
                raise
        finally:
            left = self._waiters.get(slot, 1) - 1
            if left:
                self._waiters[slot] = left
            else:
                self._waiters.pop(slot, None)

    def _reap(self) -> None:
        """(With ``_started_lock`` held.) Drop the computations whose loop was closed
        under them, found among the oldest started: ``REAP_PER_CALL`` examined per new
        computation, O(1). Nothing else ever did: a process that timed out and closed
        loops (``run_until_complete(wait_for(cache.aget_or_set(k, f), t))`` then
        ``close()``) kept each one's entry, loop and pending task (500 keys: +6.7 MB).
        Nobody waits for them: their waiters were that loop's coroutines."""
        started, calls = self._started, self._calls
        for _ in range(self.REAP_PER_CALL):
            if not started:
                return
            task, slot = started.popitem(last=False)
            if task.done():
                continue  # (its done-callback is on its way)
            if not slot[0].is_closed():
                started[task] = slot  # to the end: examined again later
                continue
            if calls.get(slot) is task:
                del calls[slot]
                self._lanes.pop(slot, None)
                self._waiters.pop(slot, None)
            # Its loop is gone: collected without "Task was destroyed but it is pending".
            task._log_destroy_pending = False  # type: ignore[attr-defined]

    def _finish(
        self, slot: tuple[asyncio.AbstractEventLoop, Hashable], task: asyncio.Task[Any]
    ) -> None:
        with self._started_lock:
            self._started.pop(task, None)
        if self._calls.get(slot) is task:
            del self._calls[slot]
            self._lanes.pop(slot, None)
        if not task.cancelled():
            # Mark the exception retrieved: its callers may all have been cancelled.
            task.exception()

    def forget(self, key: Hashable) -> bool:
        """As :meth:`SingleFlight.forget`, in the running loop."""
        slot = (asyncio.get_running_loop(), key)
        self._lanes.pop(slot, None)
        return self._calls.pop(slot, None) is not None

    def waiting(self, key: Hashable) -> int:
        """How many coroutines of the running loop wait for ``key`` (0 if none)."""
        return self._waiters.get((asyncio.get_running_loop(), key), 0)

    def in_flight(self, key: Hashable) -> bool:
        """Whether a call for ``key`` runs in the running loop now."""
        return (asyncio.get_running_loop(), key) in self._calls


def waker(
    loop: asyncio.AbstractEventLoop, woken: asyncio.Future[None]
) -> Callable[[], None]:
    """A function any thread may call to resolve ``woken`` in ``loop``: how a
    coroutine waits for another thread's (or loop's) call without blocking its loop."""

    def wake() -> None:
        try:
            loop.call_soon_threadsafe(_resolve, woken)
        except RuntimeError:  # the loop has closed: nobody waits any more
            pass

    return wake


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():  # (its waiter may have been cancelled)
        future.set_result(None)


async def _run(fn: Callable[[], Awaitable[T]], call: tuple[int, Hashable]) -> T:
    """The computation, as its own task, marked as led in that task's context."""
    _LEADING.set(_LEADING.get() | {call})  # its own task's context: never reset
    return await fn()


class SingleFlightGetOrSetMixin:
    """Give a cache backend's ``get_or_set``/``aget_or_set`` single-flight behaviour.

    Put it before the base class (``class SQLiteCache(SingleFlightGetOrSetMixin,
    BaseCache)``). With a callable ``default``, concurrent misses of one key in one
    process call it once; the others wait and receive its result. Calls are grouped
    by :meth:`singleflight_scope` (by default the backend class and its
    ``LOCATION``) and by the full key, so two aliases never share a computation
    unless they share a store. Django needs no import here: the mixin only calls
    ``make_key`` and the base class's own methods.
    """

    _singleflight = SingleFlight()
    _async_singleflight = AsyncSingleFlight()
    _singleflight_location: Any = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Django builds backends as ``Backend(LOCATION, params)``.
        self._singleflight_location = args[0] if args else kwargs.get("server")
        super().__init__(*args, **kwargs)

    def singleflight_scope(self) -> Hashable:
        """Calls in one scope with one key are deduplicated; override to widen it."""
        cls = type(self)
        return (cls.__module__, cls.__qualname__, repr(self._singleflight_location))

    def singleflight_allowed(self) -> bool:
        """Whether this caller may share a computation with other callers; if not, it
        computes on its own. Always here; ``backends.base.SingleFlightMixin`` says no
        to a thread with writes in an open database transaction."""
        return True

    def stampede_waited(self, key: str, seconds: float) -> None:
        """Called after a caller waited ``seconds`` for another one's computation.

        A no-op here (the core has no Django); ``backends.base.SingleFlightMixin``
        overrides it to send :data:`django_smartcache.signals.stampede_wait`.
        """

    def get_or_set(self, key: Any, default: Any, *args: Any, **kwargs: Any) -> Any:
        base = cast(Any, super())
        if not callable(default) or not self.singleflight_allowed():
            return base.get_or_set(key, default, *args, **kwargs)
        full_key = self._singleflight_key(key, args, kwargs)
        started = time.monotonic()
        (result, computed), shared = self._singleflight.do(
            (self.singleflight_scope(), full_key),
            lambda: leading(base.get_or_set, key, default, args, kwargs),
            self._waited_for_error(full_key, started),
        )
        if shared:
            self._joined(full_key, computed, time.monotonic() - started)
        return result

    async def aget_or_set(
        self, key: Any, default: Any, *args: Any, **kwargs: Any
    ) -> Any:
        base = cast(Any, super())
        if not callable(default) or not self.singleflight_allowed():
            return await base.aget_or_set(key, default, *args, **kwargs)
        full_key = self._singleflight_key(key, args, kwargs)
        started = time.monotonic()
        (result, computed), shared = await self._async_singleflight.do(
            (self.singleflight_scope(), full_key),
            lambda: _aleading(base.aget_or_set, key, default, args, kwargs),
            self._waited_for_error(full_key, started),
        )
        if shared:
            self._joined(full_key, computed, time.monotonic() - started)
        return result

    def _waited_for_error(self, key: str, started: float) -> Callable[[], None]:
        """For a caller whose shared computation raised: it waited all the same (a
        read that found nothing: counted as the others are)."""
        return lambda: self.stampede_waited(key, time.monotonic() - started)

    def _joined(self, key: str, computed: bool, seconds: float) -> None:
        """A caller shared another's call: a wait for its computation, or its hit."""
        if computed:
            self.stampede_waited(key, seconds)
        else:
            self.stampede_shared_hit(key)

    def stampede_shared_hit(self, key: str) -> None:
        """Called for a caller that joined another's ``get_or_set`` which found the
        value (nothing was computed): a hit for backends that count reads. No-op here."""

    def _singleflight_key(
        self, key: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> str:
        # get_or_set(key, default, timeout=DEFAULT_TIMEOUT, version=None)
        version = kwargs.get("version", args[1] if len(args) > 1 else None)
        return cast(str, cast(Any, self).make_key(key, version=version))


class _Tracked:
    """The leader's callable ``default``, noting whether ``get_or_set`` called it (the
    callers that joined it then waited for a computation; otherwise they shared a hit)."""

    __slots__ = ("called", "default")

    def __init__(self, default: Callable[[], Any]) -> None:
        self.default = default
        self.called = False

    def __call__(self) -> Any:
        self.called = True
        return self.default()


def computed_elsewhere(default: Any) -> None:
    """A leader's ``default`` whose value came from another flight's computation (the
    async leader joined a thread's): its own joiners waited for a computation too."""
    if type(default) is _Tracked:
        default.called = True


def leading(
    get_or_set: Callable[..., Any],
    key: Any,
    default: Callable[[], Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> tuple[Any, bool]:
    """The leader's ``get_or_set``: its result, and whether ``default`` was called."""
    tracked = _Tracked(default)
    return get_or_set(key, tracked, *args, **kwargs), tracked.called


async def _aleading(
    aget_or_set: Callable[..., Awaitable[Any]],
    key: Any,
    default: Callable[[], Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> tuple[Any, bool]:
    """:func:`leading`, awaited."""
    tracked = _Tracked(default)
    return await aget_or_set(key, tracked, *args, **kwargs), tracked.called
