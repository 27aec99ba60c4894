"""What ``@cached`` stores: the envelope around a value, and the ``:void`` tokens that stop a stale store."""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass
from typing import Any

from .core import keys

#: First item of every envelope; a value without it is not ours and reads as a miss.
ENVELOPE_MARK = "django_smartcache.memo/1"


@dataclass(frozen=True, slots=True)
class _Entry:
    value: Any
    expires_at: float | None  # logical expiry (clock time); None: never
    cost: float  # seconds the computation took, for early refresh

    def fresh(self, now: float) -> bool:
        return self.expires_at is None or now < self.expires_at


def _token_key(key: str, kind: str) -> str:
    """The key of ``@cached``'s own token ``kind`` (``"lock"``, ``"void"``) for the
    entry ``key`` (``<prefix>:<name>:<digest>``): ``<prefix>:<name>#<digest>:<kind>``.

    Outside the entries' namespace, so that a glob over a function's entries
    (``delete_pattern("smartcache.memo:<name>:*")``) reaches entries only: it used
    to reach ``<key>:void`` too, and a computation that an ``invalidate()`` had
    voided, seeing no token before or after, stored its stale result. It ends in
    ``:<kind>``, never in the hex digest every entry ends with, so no token is
    another function's entry; every process derives the same key from ``key``.
    """
    head, _, digest = key.rpartition(":")
    return f"{head}#{digest}:{kind}"


def _lock_key(key: str) -> str:
    """The cross-process lock of ``key`` (``lock=True``)."""
    return _token_key(key, "lock")


def _void_key(key: str) -> str:
    """The ``:void`` token of ``key`` (see ``CachedFunction._void``)."""
    return _token_key(key, "void")


def _void_all_key(head: str, name: str) -> str:
    """The token of ``invalidate_all()`` of the function whose keys start with
    ``head`` (``<prefix>:<name>:``): ``<prefix>:<name>#<digest of the name>:void``,
    from the whole name (``head`` holds it cut), outside the entries' namespace as
    :func:`_token_key`'s; no call's token, whose digest is of the name *and* the
    arguments."""
    return f"{head[:-1]}#{keys.digest(('invalidate_all', name))}:void"


def _void_token(seconds: int) -> str:
    """A new ``:void`` token (see ``CachedFunction._void``): unique, and saying when it
    expires (wall clock), so that its expiry is not taken for an invalidation."""
    # Rounded down: rounded to the nearest ms, the stated expiry could fall up to
    # 0.5 ms after the entry's, and a computation that saw the token expire in that
    # moment took it for an invalidation (stored nothing; the next call computed again).
    expires = math.floor((time.time() + seconds) * 1000) / 1000
    return f"{uuid.uuid4().hex}@{expires:.3f}"


def _voided(before: Any, after: Any) -> bool:
    """Whether a computation that read the ``:void`` token ``before`` and then ``after``
    was voided: a new token, or the token gone before its time (deleted, evicted, a
    ``clear()``). The token expiring meanwhile is none: a computation that straddled
    it threw its result away, and the next call computed again."""
    if after == before:
        return False
    if after is None and isinstance(before, str):
        try:
            return time.time() < float(before.rpartition("@")[2])
        except ValueError:  # a token of an older version: no expiry in it
            return True
    return True


def _unpack(raw: Any) -> _Entry | None:
    if type(raw) is tuple and len(raw) == 4 and raw[0] == ENVELOPE_MARK:
        return _Entry(raw[1], raw[2], raw[3])
    return None
