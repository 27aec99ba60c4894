"""The last cache events of this process, from django_smartcache's signals."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.utils import timezone

from django_smartcache.signals import entry_evicted, stampede_wait, tags_invalidated

#: How many events the stats page lists.
KEEP = 20


@dataclass(frozen=True)
class Event:
    at: datetime
    signal: str
    detail: str


_events: deque[Event] = deque(maxlen=KEEP)
_lock = threading.Lock()


def recent() -> list[Event]:
    """The recorded events, newest first."""
    with _lock:
        return list(reversed(_events))


def _record(signal: str, detail: str) -> None:
    with _lock:
        _events.append(Event(timezone.now(), signal, detail))


def _on_tags_invalidated(
    sender: Any, tags: tuple[str, ...], reason: str, on_commit: bool, **kwargs: Any
) -> None:
    when = " (again, on commit)" if on_commit else ""
    _record("tags_invalidated", f"{', '.join(tags)} because {reason}{when}")


def _on_entry_evicted(sender: Any, key: str, cause: str, **kwargs: Any) -> None:
    _record("entry_evicted", f"{key} ({cause})")


def _on_stampede_wait(
    sender: Any, key: str, scope: str, seconds: float, **kwargs: Any
) -> None:
    _record("stampede_wait", f"{key} waited {seconds * 1000:.0f} ms ({scope})")


def connect() -> None:
    tags_invalidated.connect(_on_tags_invalidated, dispatch_uid="shop.events.tags")
    entry_evicted.connect(_on_entry_evicted, dispatch_uid="shop.events.evicted")
    stampede_wait.connect(_on_stampede_wait, dispatch_uid="shop.events.stampede")
