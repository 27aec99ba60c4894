"""What this thread's open database transactions have made dirty, and what runs when they commit.

A tag invalidated inside ``transaction.atomic()`` (or a manual transaction,
``set_autocommit(False)``), or held by :func:`hold_tags` for rows whose pks are not
known, is *dirty* for this thread until the transaction ends: the thread may see its
own uncommitted writes, so it neither reads nor stores entries carrying those tags
(they would survive a rollback, or reach other processes before the commit). The
invalidation is repeated when the outermost block commits (:func:`mark_invalidated`).

Its own module, below the tagging mixin and the backends alike: their fast paths ask
:func:`nothing_pending` / :func:`dirty_tags` (and, from a coroutine,
:func:`sync_caller_dirty`) without the backends depending on the mixin's module.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from asgiref.sync import AsyncToSync
from django.db import connections

from .core.tags import normalize_tags

__all__ = [
    "Holds",
    "at_commit",
    "dirty_tags",
    "has_sync_caller",
    "hold_tags",
    "in_transaction",
    "mark_invalidated",
    "nothing_pending",
    "release_tags",
    "sync_caller_dirty",
]


class _Pending(threading.local):
    """Per thread (Django connections are per thread): db alias -> (block, tags,
    holds). ``tags`` were invalidated; ``holds`` counts the :func:`hold_tags` of each
    tag not yet released (:func:`release_tags`). Both are dirty."""

    def __init__(self) -> None:
        self.by_db: dict[str, tuple[object, set[str], dict[str, int]]] = {}


_pending = _Pending()

#: Threads whose ``_pending.by_db`` may hold dirty tags, so that a coroutine run by
#: ``async_to_sync`` from one of them (in another thread) can tell: see
#: :func:`sync_caller_dirty`. Added by the thread itself, removed when it finds its
#: transactions ended; weak, so a thread that ends leaves nothing behind.
_dirty_threads: weakref.WeakKeyDictionary[threading.Thread, bool] = (
    weakref.WeakKeyDictionary()
)


#: Any thread may be the sync caller: asgiref's private attributes are missing.
_ANY_THREAD = object()


def _sync_caller_thread() -> Any:
    """From a coroutine: the thread that ``async_to_sync`` blocks in (the thread
    holding the caller's transaction, where ``sync_to_async(thread_sensitive=True)``
    runs); None when the coroutine has no such caller (a view under an ASGI server);
    :data:`_ANY_THREAD` when asgiref's private attributes (3.x) are missing."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None
    by_loop = getattr(AsyncToSync, "loop_thread_executors", None)
    executors = getattr(AsyncToSync, "executors", None)
    if by_loop is None or executors is None:
        return _ANY_THREAD
    executor = by_loop.get(loop)
    if executor is None:
        executor = getattr(executors, "current", None)
    # As asgiref's submit() does: past the executors whose async_to_sync has returned
    # (a task outliving the call that created it), to the closest one still running;
    # none left, no caller (hopping to a broken one raises "already quit").
    while executor is not None and getattr(executor, "_broken", False):
        executor = getattr(executor, "_old_executor", None)
    if executor is None:
        return None
    thread = getattr(executor, "_work_thread", None)
    if thread is None:
        return _ANY_THREAD
    # Its own thread (asyncio.run() inside sync_to_async's thread): no hop there, this
    # thread's transaction is the one the call sees (submitting to it raised).
    return None if thread is threading.current_thread() else thread


def sync_caller_dirty() -> bool:
    """From a coroutine: whether its sync caller's thread (:func:`_sync_caller_thread`)
    has dirty tags. One check of a module-level dict while no thread has any; then
    asgiref's executor of the caller's thread is looked up."""
    if not _dirty_threads:
        return False
    thread = _sync_caller_thread()
    return thread is _ANY_THREAD or (thread is not None and thread in _dirty_threads)


def has_sync_caller() -> bool:
    """From a coroutine: whether a thread blocks in ``async_to_sync`` for it (and
    may hold an open transaction this coroutine's invalidations belong to)."""
    return _sync_caller_thread() is not None


def _outermost(conn: Any) -> object | None:
    """The outermost ``atomic()`` block of the application (a ``TestCase``'s own
    blocks are ignored: they stand for the test's isolation, never commit, and
    would otherwise make every write of a test look uncommitted)."""
    for block in conn.atomic_blocks:
        if not getattr(block, "_from_testcase", False):
            return block
    return None


#: Stands for the outermost block of a manual transaction (``set_autocommit(False)``).
_MANUAL = object()


def _in_manual_transaction(conn: Any) -> bool:
    """Autocommit turned off by the application (``set_autocommit(False)``).

    Inside an ``atomic()`` too: in manual mode Django's outermost ``atomic()`` neither
    begins nor commits (``commit_on_exit`` is False), so the transaction outlives the
    block. Django wraps many writes in one (``bulk_update()``, ``QuerySet.delete()``,
    ``get_or_create()``, a child model's ``save()``): keyed to that block, the dirty
    state ended with it while the transaction stayed open.
    """
    return (
        conn.connection is not None
        and not conn.autocommit
        and (not conn.in_atomic_block or not conn.commit_on_exit)
    )


def _open_transactions(db: str | None) -> list[Any]:
    """Connections of this thread inside an application ``atomic()`` or a manual
    transaction (only ``db`` if given)."""
    conns = (
        [connections[db]] if db is not None else connections.all(initialized_only=True)
    )
    return [
        c
        for c in conns
        if (c.in_atomic_block and _outermost(c) is not None)
        or _in_manual_transaction(c)
    ]


def _repeat_at_commit(conn: Any, repeat: Any) -> None:
    """Run ``repeat`` when ``conn``'s transaction commits, dropped if it rolls back.

    Queued as ``on_commit(repeat, robust=True)`` queues it (with the savepoints it is
    inside, so rolling one back drops it), but first in Django's queue: a hook of the
    application's that raises stops Django from running every hook after it (only
    robust ones are guarded), and this one must run. In manual transaction management
    Django refuses ``on_commit``, but keeps its own hooks the same way: after
    ``commit()`` they run when autocommit is turned back on, and ``rollback()`` drops
    them (all of them, a committed transaction's too: see ``docs/tagging.md``).
    """
    savepoints = set(conn.savepoint_ids) if conn.in_atomic_block else set()

    def repeat_then_forget() -> None:
        repeat()
        dirty_tags()  # committed: this thread's dirty state ends (_dirty_threads too)

    repeat_then_forget.smartcache_repeat = True  # type: ignore[attr-defined]
    conn.run_on_commit.insert(0, (savepoints, repeat_then_forget, True))


def at_commit(func: Callable[[], Any]) -> bool:
    """Run ``func`` when each of this thread's open transactions (an application
    ``atomic()``, a manual transaction) commits; dropped if it rolls back. Whether
    one was open (outside, nothing is queued).

    Queued as the repeats of invalidations are (robust, before the application's own
    hooks, see :func:`_repeat_at_commit`) but after those already queued, so that a
    recomputation at commit comes after the invalidations of the transaction's
    earlier writes (those of later writes go first anyway).
    """
    conns = _open_transactions(None)
    for conn in conns:
        savepoints = set(conn.savepoint_ids) if conn.in_atomic_block else set()
        hooks = conn.run_on_commit
        position = 0
        while position < len(hooks) and getattr(
            hooks[position][1], "smartcache_repeat", False
        ):
            position += 1
        hooks.insert(position, (savepoints, func, True))
    return bool(conns)


def _mark_dirty(
    conn: Any, tags: Iterable[str], hold: bool = False
) -> tuple[str, object, tuple[str, ...]]:
    outermost = _MANUAL if _in_manual_transaction(conn) else _outermost(conn)
    entry = _pending.by_db.get(conn.alias)
    if entry is None or entry[0] is not outermost:
        entry = (outermost, set(), {})
        _pending.by_db[conn.alias] = entry
    if hold:
        holds = entry[2]
        for tag in tags:
            holds[tag] = holds.get(tag, 0) + 1
    else:
        entry[1].update(tags)
    _dirty_threads[threading.current_thread()] = True
    return (conn.alias, outermost, tuple(tags))


def mark_invalidated(
    tags: Iterable[str], repeat: Callable[[], Any], db: str | None = None
) -> None:
    """``tags`` were just invalidated: dirty in each of this thread's open
    transactions (only that of database alias ``db`` if given) until it ends, and
    ``repeat`` (the invalidation again) run when it commits (:func:`_repeat_at_commit`)."""
    for conn in _open_transactions(db):
        _mark_dirty(conn, tags)
        _repeat_at_commit(conn, repeat)


#: What :func:`hold_tags` held, for :func:`release_tags`: (db alias, the
#: transaction's outermost block, tags) per transaction.
Holds = list[tuple[str, object, tuple[str, ...]]]


def hold_tags(*tags: str, db: str | None = None) -> Holds:
    """Make ``tags`` dirty for this thread until its open transactions end, without
    invalidating them: for rows this transaction added whose pks are not known (an
    ``INSERT`` that does not name them). Nobody else can have cached those rows yet,
    and the other rows' entries stay valid; but this thread sees the new rows, so it
    must neither store nor serve entries carrying these tags until it commits (its
    rows are then committed data) or rolls back (they are gone, and a pk they took
    may be given again).

    ``db``: only the transaction of that database alias (else every open one);
    outside a transaction, nothing to do. Returns what was held, for
    :func:`release_tags` once the new rows' pks are known after all (each hold is
    counted: a tag stays dirty while one is not released, or if it was invalidated).
    """
    norm = normalize_tags(tags)
    if not norm:
        return []
    return [_mark_dirty(conn, norm, hold=True) for conn in _open_transactions(db)]


def release_tags(holds: Holds) -> None:
    """Undo :func:`hold_tags` ``holds`` in the transactions still open that they were
    made in (a transaction that ended took its holds with it). A tag stays dirty while
    another hold of it is not released, or if this transaction invalidated it."""
    for alias, outermost, tags in holds:
        entry = _pending.by_db.get(alias)
        if entry is None or entry[0] is not outermost:
            continue
        counts = entry[2]
        for tag in tags:
            left = counts.get(tag, 0) - 1
            if left > 0:
                counts[tag] = left
            else:
                counts.pop(tag, None)
        if not entry[1] and not counts:
            del _pending.by_db[alias]
    if not _pending.by_db:
        _dirty_threads.pop(threading.current_thread(), None)


def in_transaction(db: str) -> bool:
    """Whether this thread is in an application ``atomic()`` block or a manual
    transaction on ``db`` (where :func:`hold_tags` holds)."""
    return bool(_open_transactions(db))


def nothing_pending() -> bool:
    """True when this thread has no open transaction with invalidated tags: one
    attribute check, so a tagged hit can skip :func:`dirty_tags`."""
    return not _pending.by_db


def dirty_tags() -> set[str]:
    """Tags written in this thread's open transactions (cleared once they end)."""
    if not _pending.by_db:
        return set()
    dirty: set[str] = set()
    for alias, (outermost, tags, holds) in list(_pending.by_db.items()):
        conn = connections[alias]
        if outermost is _MANUAL:
            # Until autocommit is back on: commit() does not end manual management.
            ended = not _in_manual_transaction(conn)
        else:
            ended = not conn.in_atomic_block or _outermost(conn) is not outermost
        if ended:
            del _pending.by_db[alias]  # committed (repeat already sent) or rolled back
        else:
            dirty |= tags
            dirty.update(holds)
    if not _pending.by_db:
        _dirty_threads.pop(threading.current_thread(), None)
    return dirty
