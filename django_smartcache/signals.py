"""Public signals: hook points for observers (metrics, logging, the toolbar panel).

Receivers are called synchronously in the thread (or task) that sends; keep them fast.
Every signal here is part of the public API: its name and its keyword arguments.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.dispatch import Signal


class WatchedSignal(Signal):
    """A ``Signal`` that tells its watchers when receivers come and go.

    Senders whose events are frequent (an eviction per write under a full budget) use
    it to prepare nothing at all while nobody listens, instead of checking per event.
    A watcher is called with ``True`` after every ``connect()`` and with whether any
    receiver is left after every ``disconnect()``; a weakly referenced receiver that is
    garbage-collected is noticed at the next connect/disconnect only, so a watcher may
    keep preparing events for a while that no one hears (never the other way round).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._watchers: list[Callable[[bool], None]] = []

    def watch(self, watcher: Callable[[bool], None]) -> None:
        """Call ``watcher(listening)`` now and whenever receivers are connected or removed."""
        self._watchers.append(watcher)
        watcher(bool(self.receivers))

    def connect(self, *args: Any, **kwargs: Any) -> None:
        super().connect(*args, **kwargs)
        self._notify()

    def disconnect(self, *args: Any, **kwargs: Any) -> bool:
        removed = super().disconnect(*args, **kwargs)
        self._notify()
        return removed

    def _notify(self) -> None:
        listening = bool(self.receivers)
        for watcher in self._watchers:
            watcher(listening)


#: Sent when a caller waited for another caller's computation of the same entry
#: instead of computing it again (stampede protection at work). Two senders:
#:
#: - the ``@cached`` decorator (``django_smartcache.decorators``): ``sender`` is the
#:   memoized function (the object ``@cached`` returned); ``scope`` is ``"process"``
#:   when it waited for another thread or coroutine of this process, ``"shared"``
#:   when it waited for the lock held by another process.
#: - a backend's single-flight ``get_or_set``/``aget_or_set`` with a callable default
#:   (SmartCache, and any backend built on ``backends.base.SingleFlightMixin``):
#:   ``sender`` is the backend class, ``cache`` the instance the caller used, and
#:   ``scope`` is always ``"process"``.
#:
#: Both send:
#:
#: - ``key``: the entry's key: the key the decorator passes to the cache; from a
#:   backend, the made key (with ``KEY_PREFIX`` and version).
#: - ``scope``: see above.
#: - ``seconds``: how long it waited.
#:
#: Sent in the waiting thread (or task) after the wait, never with a lock held.
stampede_wait = Signal()

#: Sent after tags were invalidated in a cache (their versions bumped).
#:
#: - ``sender``: the cache backend class.
#: - ``cache``: the cache instance.
#: - ``tags``: the tuple of tags invalidated.
#: - ``reason``: why, as text (e.g. ``"post_save testapp.book pk=3"``,
#:   ``"sql UPDATE testapp_book"``, ``"invalidate_tags()"``).
#: - ``on_commit``: ``True`` for the repeat sent when the outermost transaction commits.
tags_invalidated = Signal()

#: Sent for every entry that leaves a SmartCache without a caller deleting or
#: overwriting it: exactly what ``stats()`` counts as ``evictions_<cause>``.
#:
#: - ``sender``: the backend class.
#: - ``cache``: the instance that created the shared store. Every SmartCache with the
#:   same ``LOCATION`` and budget options in a process shares one store (as
#:   LocMemCache instances do), so one instance reports for all of them: the first
#:   one built in the process (Django builds one per thread). Tell aliases apart by
#:   the key's ``KEY_PREFIX``.
#: - ``key``: the made key (``KEY_PREFIX:version:key``, or the ``KEY_FUNCTION``'s).
#: - ``cause``: ``"capacity"`` (evicted for room under ``MAX_MEMORY``/``MAX_ENTRIES``),
#:   ``"expired"`` (its timeout passed; reclaimed by a read, the sweeper,
#:   ``clear_expired()``, or written with a timeout <= 0), ``"invalidated"`` (written
#:   under a tag invalidated since, purged to free its bytes; or dropped because a
#:   new value for the key was too large to store).
#:
#: Sent after the operation that evicted released the store's lock, so a receiver
#: may use the cache; usually in the thread whose operation evicted. An eviction
#: during a single-flight ``get_or_set`` or a MultiLevelCache's write or promotion
#: into L1 is sent when that is over (``backends.base.evictions_held``). With no
#: receiver connected the stores record nothing (a ``WatchedSignal`` switches them).
entry_evicted = WatchedSignal()
