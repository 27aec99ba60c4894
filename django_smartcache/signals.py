"""Public signals: hook points for observers (metrics, logging, the toolbar panel).

Receivers are called synchronously in the thread (or task) that sends; keep them fast.
Every signal here is part of the public API: its name and its keyword arguments.
"""

from __future__ import annotations

from django.dispatch import Signal

#: Sent when a caller of a memoized function waited for another caller's computation
#: of the same entry instead of computing it again (stampede protection at work).
#:
#: - ``sender``: the memoized function (the object ``@cached`` returned).
#: - ``key``: the cache key of the entry.
#: - ``scope``: ``"process"`` when it waited for another thread or coroutine of this
#:   process, ``"shared"`` when it waited for the lock held by another process.
#: - ``seconds``: how long it waited.
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
