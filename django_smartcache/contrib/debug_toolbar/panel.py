"""``SmartCachePanel``: this request's cache calls with their real hit/miss answer,
per-alias hit rates and timings, evictions, tag invalidations and stampede waits,
and each cache's lifetime ``stats()``.

Recording is :mod:`django_smartcache.instrumentation`'s job; this module only turns
what a :class:`~django_smartcache.instrumentation.Recorder` saw into JSON primitives
(the toolbar stores panel stats as JSON) and renders them.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from debug_toolbar.panels import Panel
from django.apps import apps
from django.core import checks
from django.utils.translation import gettext_lazy as _, ngettext

from ...instrumentation import Recorder, jsonable

__all__ = ["SmartCachePanel"]


def _rate(hits: int, misses: int) -> float | None:
    return hits / (hits + misses) if hits + misses else None


def _lifetime(cache: Any) -> dict[str, Any] | None:
    """``cache.stats()`` as JSON primitives; None for a backend without ``stats()``."""
    stats = getattr(cache, "stats", None)
    if not callable(stats):
        return None
    try:
        return jsonable(stats())  # type: ignore[no-any-return]
    except Exception as exc:  # noqa: BLE001 (a level down must not break the page)
        return {"error": f"{type(exc).__name__}: {exc}"}


def _level_hits(cache: Any) -> list[tuple[str, int]] | None:
    """``(level label, hits)`` per level of a MultiLevelCache, from its ``stats()``."""
    if not isinstance(getattr(cache, "levels", None), tuple):
        return None
    try:
        levels = cache.stats()["levels"]
        return [(str(level["level"]), int(level["hits"])) for level in levels]
    except Exception:  # noqa: BLE001 (the split is optional)
        return None


class SmartCachePanel(Panel):
    """The django-smartcache panel; see ``docs/debug-toolbar.md``."""

    title = _("Smart cache")
    nav_title = _("Smart cache")
    template = "django_smartcache/debug_toolbar/panel.html"
    is_async = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.recorder = Recorder()
        self._levels_before: dict[str, list[tuple[str, int]]] = {}

    @property
    def nav_subtitle(self) -> str:
        totals = self.get_stats().get("totals")
        if not totals:
            return ""
        calls = ngettext("%(n)d call", "%(n)d calls", totals["calls"]) % {
            "n": totals["calls"]
        }
        parts = [calls]
        if totals["hit_rate"] is not None:
            parts.append(_("%(rate).0f%% hits") % {"rate": totals["hit_rate"] * 100})
        parts.append(_("%(ms).1f ms") % {"ms": totals["ms"]})
        return ", ".join(str(part) for part in parts)

    @classmethod
    def run_checks(cls) -> list[checks.CheckMessage]:
        """The panel's template lives in the app: it must be installed."""
        if apps.is_installed("django_smartcache"):
            return []
        return [
            checks.Error(
                "SmartCachePanel is in DEBUG_TOOLBAR_PANELS but 'django_smartcache' "
                "is not in INSTALLED_APPS, so its template cannot be found.",
                hint="Add 'django_smartcache' to INSTALLED_APPS.",
                obj=f"{cls.__module__}.{cls.__qualname__}",
                id="smartcache.E030",
            )
        ]

    def enable_instrumentation(self) -> None:
        self.recorder.start()
        for alias, cache in self.recorder.watched.items():
            levels = _level_hits(cache)
            if levels is not None:
                self._levels_before[alias] = levels

    def disable_instrumentation(self) -> None:
        self.recorder.stop()

    def generate_stats(self, request: Any, response: Any) -> None:
        rec = self.recorder
        calls = rec.calls
        aliases = []
        for alias, cache in rec.watched.items():
            mine = [c for c in calls if c["alias"] == alias]
            hits = sum(c["hits"] for c in mine)
            misses = sum(c["misses"] for c in mine)
            evicted = Counter(
                e["cause"]
                for e in rec.evictions
                if e["alias"] == alias or e["alias"].startswith(f"{alias} L")
            )
            before = self._levels_before.get(alias)
            after = _level_hits(cache) if before is not None else None
            levels = (
                [
                    {"level": label, "hits": now - then}
                    for (label, then), (_l, now) in zip(before, after, strict=False)
                ]
                if before is not None and after is not None
                else None
            )
            aliases.append(
                {
                    "alias": alias,
                    "backend": f"{type(cache).__module__}.{type(cache).__qualname__}",
                    "calls": len(mine),
                    "hits": hits,
                    "misses": misses,
                    "hit_rate": _rate(hits, misses),
                    "ms": sum(c["ms"] for c in mine),
                    "evictions": dict(sorted(evicted.items())),
                    "invalidations": sum(
                        1 for i in rec.invalidations if i["alias"] == alias
                    ),
                    "stampede_waits": sum(
                        1 for w in rec.stampede_waits if w["alias"] == alias
                    ),
                    "levels": levels,
                    "lifetime": _lifetime(cache),
                }
            )
        hits = sum(c["hits"] for c in calls)
        misses = sum(c["misses"] for c in calls)
        self.record_stats(
            jsonable(
                {
                    "totals": {
                        "calls": len(calls),
                        "hits": hits,
                        "misses": misses,
                        "hit_rate": _rate(hits, misses),
                        "ms": sum(c["ms"] for c in calls),
                        "evictions": len(rec.evictions),
                        "invalidations": len(rec.invalidations),
                        "stampede_waits": len(rec.stampede_waits),
                    },
                    "aliases": aliases,
                    "nested": rec.nested,
                    "calls": calls,
                    "evictions": rec.evictions,
                    "invalidations": rec.invalidations,
                    "stampede_waits": rec.stampede_waits,
                }
            )
        )

    def generate_server_timing(self, request: Any, response: Any) -> None:
        totals = self.get_stats().get("totals")
        if totals:
            self.record_server_timing(
                "smartcache", f"Smart cache {totals['calls']} calls", totals["ms"]
            )
