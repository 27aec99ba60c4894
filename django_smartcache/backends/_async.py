"""Sync cache calls awaited from the event loop, in a thread, and never left running.

``in_worker`` (SmartCache: in-memory work, any worker thread) and ``in_thread``
(MultiLevelCache: Django's thread for sync cache calls) are the same wrapper but for
asgiref's ``thread_sensitive``; both wait, when cancelled, for the thread's call to
end before they raise (``landed``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

from asgiref.sync import sync_to_async

_P = ParamSpec("_P")
_R = TypeVar("_R")


def in_worker(fn: Callable[_P, _R]) -> Callable[_P, Awaitable[_R]]:
    """``fn`` as a coroutine function run in a worker thread: in-memory work, with no
    thread to keep to (the loop's thread is not the caller's sync thread either).

    Cancelled (``wait_for`` timed out, ``task.cancel()``), it waits for the thread
    before it raises (see ``landed``): the batch is in place when the caller goes on."""
    return _landing(fn, thread_sensitive=False)


def in_thread(fn: Callable[_P, _R]) -> Callable[_P, Awaitable[_R]]:
    """``fn`` as a coroutine function run in Django's thread for sync cache calls.

    Cancelled (``wait_for`` timed out, a client gone), it waits for that call to end
    before it raises (``landed``): asgiref alone raises at once and lets the thread
    run on, and the task's next read, answered from L1 on the loop, would overtake the
    write (a timed-out ``aincr`` read back as not counted, then counted; a cancelled
    ``aclear``'s values read back, then gone)."""
    return _landing(fn, thread_sensitive=True)


def _landing(
    fn: Callable[_P, _R], *, thread_sensitive: bool
) -> Callable[_P, Awaitable[_R]]:
    run = sync_to_async(fn, thread_sensitive=thread_sensitive)

    async def landing(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        return await landed(run(*args, **kwargs))

    return landing


async def landed(work: Coroutine[Any, Any, _R]) -> _R:
    """Await ``work`` (a thread's call); cancelled, wait for it to end, then raise.

    A worker thread cannot be stopped: sync_to_async's call, cancelled, returns at
    once and the thread runs on, in parallel with what the task does next. A timed-out
    ``aset_many`` of 20,000 keys would then overwrite the caller's later
    ``aset_many`` of the same keys (all 20,000 left stale), a cancelled ``aclear``
    wipe later writes. Django's ``a*`` run in its one thread-sensitive thread, where
    the next call waits its turn.
    So ``work`` runs in a task of its own that the caller's cancellation does not reach
    (shielded); the caller waits for it, cancelled again or not, and raises its
    CancelledError after (``wait_for`` raises TimeoutError then). At the loop's shutdown
    that task is cancelled too: the caller then returns at once (and ``asyncio.run``
    waits for the default executor's threads)."""
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        while not task.done():
            try:
                await asyncio.wait((task,))
            except asyncio.CancelledError:
                continue  # cancelled again: still wait for the thread
        if not task.cancelled():
            task.exception()  # retrieved: the caller gets its cancellation
        raise
