"""``incr`` of a tagged value: the envelope is kept, and judged by its owner.

A backend's ``incr`` adds to the value inside a ``Tagged`` envelope and keeps the
envelope (:func:`incremented`); a stale envelope is a missing key for ``incr`` as it
is for ``get``, so whoever owns the envelope judges it after the bump
(``TaggingMixin._incremented_envelope``). A level of a MultiLevelCache holds the
MultiLevelCache's envelopes, not its own: it hands them up
(:func:`note_incremented`, :data:`INCREMENTED_ENVELOPES`), and a ``TypeError``
from a value that is not a number carries its envelope (:func:`failed_envelope`).

Its own module: the protocol between a level's ``incr`` (SmartCache, SQLiteCache,
the mixin) and ``MultiLevelCache.incr``, which has nothing to do with the rest of
the tagging mixin.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

from .core.tags import Tagged

__all__ = [
    "INCREMENTED_ENVELOPES",
    "failed_envelope",
    "incremented",
    "note_incremented",
]

#: While a MultiLevelCache increments (``MultiLevelCache.incr``): the envelopes of
#: its own (a level's type) whose value a level's ``incr`` bumped, for it to judge.
INCREMENTED_ENVELOPES: ContextVar[list[Tagged] | None] = ContextVar(
    "smartcache_incremented_envelopes", default=None
)


def incremented(envelope: Tagged, delta: Any) -> Any:
    """``envelope.value + delta``, for a level's ``incr``. A ``TypeError`` (a tagged
    value that is not a number) carries the envelope (``failed_envelope``): a stale
    one is a missing key for ``incr`` whatever it holds, so the caller's ``incr``
    judges it and answers ``ValueError`` then, as for a stale number."""
    try:
        return envelope.value + delta
    except TypeError as exc:
        exc.smartcache_envelope = envelope  # type: ignore[attr-defined]
        raise


def failed_envelope(exc: TypeError) -> Tagged | None:
    """The envelope whose value ``incremented`` could not add to, if any."""
    return getattr(exc, "smartcache_envelope", None)


def note_incremented(envelope: Tagged) -> None:
    """A level bumped the value inside a lower level's envelope (not its own to
    judge): handed to the MultiLevelCache incrementing it, if any."""
    seen = INCREMENTED_ENVELOPES.get()
    if seen is not None:
        seen.append(envelope)
