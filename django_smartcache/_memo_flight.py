"""``@cached``'s calls in flight in this process: one computation per key, whatever thread or event loop asks."""

from __future__ import annotations

import asyncio
import collections
import functools
import threading
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

from .core.singleflight import (
    UNSURE_WAIT,
    CallTable,
    SingleFlight,
    alone,
    blocks_lane,
    mark_leading,
    nested,
    sync_lane,
    waker,
)

#: How often a coroutine waiting for another loop's computation checks that loop is
#: still running it (see _ProcessAsyncFlight._await_other_loop).
ABANDONED_CHECK = 0.25

_FLIGHT = SingleFlight()


class _AsyncCall:
    """One async computation in flight: a task of its leader's loop."""

    __slots__ = (
        "cancelled",
        "error",
        "finished",
        "lane",
        "loop",
        "result",
        "task",
        "waiters",
        "wakers",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, lane: Any) -> None:
        self.loop = loop
        #: Where its sync work runs (core.singleflight.sync_lane).
        self.lane = lane
        self.task: asyncio.Task[Any] | None = None
        self.result: Any = None
        self.error: BaseException | None = None
        self.cancelled = False
        self.finished = False
        self.waiters = 0
        self.wakers: list[Callable[[], None]] = []


class _ProcessAsyncFlight(CallTable):
    """Concurrent coroutines asking for one key share one computation, in every event
    loop of the process (``core.singleflight.AsyncSingleFlight`` shares within one
    loop: 8 threads calling through ``async_to_sync`` computed 8 times).

    The computation runs as a task of its leader's loop, so a caller that is cancelled
    cancels neither it nor the others. Coroutines of that loop await the task;
    coroutines of other loops wait without blocking theirs, woken by the leader
    through ``call_soon_threadsafe`` (as ``SingleFlight.ado`` does). If the leader's
    task is cancelled (its loop shut down), or its loop is closed or no longer run
    (``run_until_complete(wait_for(f(x), 1))`` timed out, the loop was left), they
    start again.

    A caller that runs for a sync thread (``async_to_sync``) which the leader's sync
    work needs (``sync_to_async``: a request's one thread under ASGI, or asgiref's one
    global thread) computes on its own instead of waiting: its wait would block that
    thread, and the leader would wait for it (``core.singleflight.blocks_lane``).
    """

    #: Calls in flight examined per new call for a closed loop (see ``_closed``).
    REAP_PER_CALL = 2

    def __init__(self) -> None:
        super().__init__()
        #: The calls in flight (call -> key), oldest first: each new call examines a
        #: few (``_closed``); a call leaves when it ends (staying until examined, it
        #: would hold its result: a burst of 100 calls of 1 MB would keep 100 MB).
        self._started: collections.OrderedDict[_AsyncCall, Hashable] = (
            collections.OrderedDict()
        )

    def _forked(self) -> None:
        super()._forked()
        self._started = collections.OrderedDict()

    def _closed(self) -> list[tuple[Hashable, _AsyncCall]]:
        """(With the lock held.) Calls whose loop was closed under them, found among
        the oldest started: ``REAP_PER_CALL`` examined per new call, O(1). Such a call
        was detached only when its key was asked for again: a process that timed out
        and closed loops (``run_until_complete(wait_for(f(x), t))`` then ``close()``)
        over many keys kept each call, its loop and its task (2,000 keys: +21 MB)."""
        closed = []
        started, calls = self._started, self._calls
        for _ in range(self.REAP_PER_CALL):
            if not started:
                break
            call = next(iter(started))
            key = started[call]
            if call.finished or call.cancelled or calls.get(key) is not call:
                del started[call]  # over (forgotten: ``forget``)
            elif call.loop.is_closed():
                del started[call]
                closed.append((key, call))
            else:
                started.move_to_end(call)
        return closed

    async def do(
        self, key: Hashable, fn: Callable[[], Awaitable[Any]]
    ) -> tuple[Any, bool]:
        """Await ``fn()`` unless a call for ``key`` is in flight in any loop; share
        that one then. Returns ``(result, shared)`` like ``SingleFlight.do``."""
        loop = asyncio.get_running_loop()
        if nested(self, key):
            # Asked by its own computation, from a child task or a thread carrying its
            # context (asyncio.gather, sync_to_async): computed on its own, as below.
            return await fn(), False
        lane = sync_lane(loop)
        while True:
            woken: asyncio.Future[None] | None = None
            task: asyncio.Task[Any] | None = None
            closed: list[tuple[Hashable, _AsyncCall]] = []
            with self._lock:
                call = self._calls.get(key)
                if call is not None and call.cancelled:
                    call = None  # (its task was cancelled and not yet removed)
                leader = call is None
                if call is None:
                    call = self._calls[key] = _AsyncCall(loop, lane)
                    closed = self._closed()
                    self._started[call] = key
                    blocks: bool | None = False
                elif call.loop is loop and call.task in (None, asyncio.current_task()):
                    blocks = True  # asked by its own computation (see below)
                else:
                    blocks = blocks_lane(call.lane)
                    if not blocks:
                        call.waiters += 1
                        if call.loop is loop:
                            task = call.task
                        else:
                            woken = loop.create_future()
                            call.wakers.append(waker(loop, woken))
            for old_key, old_call in closed:
                self._abandon(old_key, old_call)
            if leader:
                # Created outside the lock: an eager task would finish under it.
                task = call.task = loop.create_task(self._run(key, call, fn))
                task.add_done_callback(functools.partial(self._finished, key, call))
                return await asyncio.shield(task), False
            if blocks:
                # Asked by its own computation (waiting would wait for itself, as in
                # SingleFlight), or waiting would deadlock (see the class docstring):
                # computed on its own, as without a flight.
                return await alone(self, key, fn), False
            patience = UNSURE_WAIT if blocks is None else None
            try:
                if task is not None:
                    return await asyncio.wait_for(asyncio.shield(task), patience), True
                await self._await_other_loop(key, call, woken, patience)  # type: ignore[arg-type]
            except TimeoutError:
                pass  # unsure whether it waits for itself: computes below
            finally:
                with self._lock:
                    call.waiters -= 1
            if call.cancelled:
                # Its loop went away (found so by this waiter, whose own wake is
                # still on its way, or by another): lead or join anew, so the
                # waiters elect one new leader instead of computing each.
                continue
            if task is None and call.finished:  # woken, or finished just now
                if call.error is not None:
                    raise call.error
                return call.result, True
            if task is not None and task.done():  # (just now)
                return task.result(), True
            return await alone(self, key, fn), False

    async def _await_other_loop(
        self,
        key: Hashable,
        call: _AsyncCall,
        woken: asyncio.Future[None],
        patience: float | None,
    ) -> None:
        """Wait until ``call``, a task of another loop, wakes ``woken``. A loop that is
        closed, or not running at two checks in a row (``ABANDONED_CHECK`` seconds
        apart: left by ``run_until_complete`` after a timeout), will not finish it:
        the call is abandoned, and its waiters start again. TimeoutError after
        ``patience`` seconds (None: none)."""
        deadline = None if patience is None else time.monotonic() + patience
        idle = 0
        while not woken.done() and not call.cancelled:
            leader_loop = call.loop
            if leader_loop.is_closed():
                idle = 2
            elif not leader_loop.is_running():
                idle += 1
            else:
                idle = 0
            if idle >= 2:
                self._abandon(key, call)
                return
            pause = ABANDONED_CHECK
            if deadline is not None:
                pause = min(pause, deadline - time.monotonic())
                if pause <= 0:
                    raise TimeoutError
            await asyncio.wait((woken,), timeout=pause)

    def _abandon(self, key: Hashable, call: _AsyncCall) -> None:
        """Detach ``call``, whose loop will not run it to the end, and wake its waiters
        of other loops to lead or join anew (those of its loop await its task, which
        finishes if that loop ever runs again)."""
        with self._lock:
            if call.finished or call.cancelled:  # (another waiter found it first)
                return
            call.cancelled = True  # for its waiters: start again
            self._started.pop(call, None)
            if self._calls.get(key) is call:
                del self._calls[key]
            wakers, call.wakers = call.wakers, []
        for wake in wakers:
            wake()

    async def _run(
        self, key: Hashable, call: _AsyncCall, fn: Callable[[], Awaitable[Any]]
    ) -> Any:
        mark_leading(self, key)  # this task's own context
        try:
            call.result = await fn()
            return call.result
        except asyncio.CancelledError:
            call.cancelled = True
            raise
        except BaseException as exc:
            call.error = exc
            raise
        finally:
            self._finish(key, call)

    def _finished(
        self, key: Hashable, call: _AsyncCall, task: asyncio.Task[Any]
    ) -> None:
        if task.cancelled():
            call.cancelled = True  # (cancelled before it started: _run never ran)
        else:
            task.exception()  # retrieved: its callers may all have been cancelled
        self._finish(key, call)

    def _finish(self, key: Hashable, call: _AsyncCall) -> None:
        with self._lock:
            if call.finished:
                return
            call.finished = True
            self._started.pop(call, None)
            if self._calls.get(key) is call:
                del self._calls[key]
            wakers, call.wakers = call.wakers, []
        for wake in wakers:
            wake()


_ASYNC_FLIGHT = _ProcessAsyncFlight()  # a CallTable: a forked child starts it empty


class _Claims:
    """Keys some caller of this process is early-refreshing: deciding who refreshes
    is one atomic step (a check of the flight, then joining it, let every caller that
    decided at once lead or wait for the whole computation)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys: set[Any] = set()

    def claim(self, key: Any) -> bool:
        with self._lock:
            if key in self._keys:
                return False
            self._keys.add(key)
            return True

    def release(self, key: Any) -> None:
        with self._lock:
            self._keys.discard(key)


_REFRESHING = _Claims()
