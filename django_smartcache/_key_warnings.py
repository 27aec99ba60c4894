"""This thread's key checks, quiet while a call that warned already is served.

Django's backends emit a ``CacheKeyWarning`` once per call; a call served by more
than one key check (an ``add`` that reads the key's occupant back, an
``incr_version`` that reads, writes and deletes) must not warn twice. A per-thread
flag, in its own module: the backends' key checks read it (``backends.base``, which
does not depend on the tagging mixin), and the mixin and the backends set it.
"""

from __future__ import annotations

import threading

__all__ = ["key_warnings_given", "key_warnings_on"]

_warned = threading.local()


class key_warnings_given:
    """Within it, this thread's key checks emit no ``CacheKeyWarning``: the call
    being served has emitted it already, and Django's backends warn once per call
    (else an ``add`` that reads the key's occupant back warns twice)."""

    def __enter__(self) -> None:
        self._outer = getattr(_warned, "on", False)
        _warned.on = True

    def __exit__(self, *exc: object) -> None:
        _warned.on = self._outer


def key_warnings_on() -> bool:
    """Whether a key check of this thread should warn (see :class:`key_warnings_given`)."""
    return not getattr(_warned, "on", False)
