"""``SmartCachePanel``: this request's cache calls with their real hit/miss answer,
per-alias hit rates and timings, evictions, tag invalidations and stampede waits,
and each cache's lifetime ``stats()``.

Recording is :mod:`django_smartcache.instrumentation`'s job; this module only turns
what a :class:`~django_smartcache.instrumentation.Recorder` saw into JSON primitives
(the toolbar stores panel stats as JSON) and renders them.
"""

from __future__ import annotations

from collections import Counter
from types import CodeType
from typing import Any

from debug_toolbar.panels import Panel
from django.apps import apps
from django.core import checks
from django.template.loader import render_to_string
from django.utils.translation import gettext_lazy as _, ngettext

from ... import conf
from ...core.sizing import format_size
from ...instrumentation import Recorder, Totals, jsonable

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


def _percent(ratio: float | None) -> str:
    return "\u2014" if ratio is None else f"{ratio * 100:.1f}%"


def _is_bytes(name: str) -> bool:
    return name.startswith("bytes") or name.endswith(("_bytes", "_size", "_overhead"))


def _text_of(name: str, value: Any) -> str:
    """One stats value as the panel shows it, chosen by its name and type."""
    if value is None or value == [] or value == {}:
        return "\u2014"
    if isinstance(value, bool):
        return str(_("yes") if value else _("no"))
    if isinstance(value, int | float):
        if name.endswith(("rate", "ratio")):
            return _percent(value)
        if name.endswith("_ns"):
            return f"{value / 1000:.1f} \u00b5s"
        if _is_bytes(name):
            return format_size(value)
        if isinstance(value, float):
            return f"{value:.4g}"
    return str(value)


def _label(name: str) -> str:
    return name.removesuffix("_ns").replace("_", " ")


#: Column names of a stats list made of lists (``top_accessed`` is ``[key, hits]``).
_PAIR_COLUMNS = {"top_accessed": ("key", "hits")}


def _table(name: str, value: list[Any] | dict[str, Any]) -> dict[str, Any]:
    """A nested stats value as a small table: ``head`` (or None) and ``rows`` of text."""
    if isinstance(value, dict):
        rows = [[_label(k), _text_of(k, v)] for k, v in value.items()]
        return {"head": None, "rows": rows, "kind": "kv"}
    if value and all(isinstance(v, dict) for v in value):
        keys = list(dict.fromkeys(k for v in value for k in v))
        rows = [[_text_of(k, v.get(k)) for k in keys] for v in value]
        return {"head": [_label(k) for k in keys], "rows": rows, "kind": "records"}
    if value and all(isinstance(v, list) for v in value):
        columns = _PAIR_COLUMNS.get(name, ())
        width = max(len(v) for v in value)
        names = [*columns, *[""] * (width - len(columns))][:width]
        rows = [[_text_of(names[i], cell) for i, cell in enumerate(v)] for v in value]
        return {"head": names if columns else None, "rows": rows, "kind": "list"}
    return {"head": None, "rows": [[_text_of(name, v)] for v in value], "kind": "list"}


def _lifetime_rows(lifetime: dict[str, Any]) -> list[dict[str, Any]]:
    """``stats()`` as rows: scalars as text, nested lists and dicts as tables.

    The size in use (``bytes_used``) and ``max_bytes`` share a row ("12.3 MiB of
    64.0 MiB (19%)").
    """
    rows: list[dict[str, Any]] = []
    size_name = "bytes_used"
    used, cap = lifetime.get(size_name), lifetime.get("max_bytes")
    for name, value in lifetime.items():
        if name == "max_bytes" and isinstance(used, int | float) and cap:
            continue
        if name == size_name and isinstance(value, int | float) and cap:
            text = _("%(used)s of %(max)s (%(pct).0f%%)") % {
                "used": format_size(value),
                "max": format_size(cap),
                "pct": value * 100 / cap,
            }
            rows.append({"name": f"{name} / max_bytes", "text": text})
        elif isinstance(value, list | dict) and value:
            rows.append({"name": name, "table": _table(name, value)})
        else:
            rows.append({"name": name, "text": _text_of(name, value)})
    return rows


def _served_by(levels: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    """The request's hits per level, named short ("L1") with the full label kept."""
    if levels is None:
        return None
    return [
        {
            "short": str(lv["level"]).split(" ", 1)[0],
            "label": lv["level"],
            "hits": lv["hits"],
        }
        for lv in levels
    ]


def _toolbar_store_callers() -> tuple[CodeType, ...]:
    """The code of the toolbar's ``_UntrackedCache`` proxy, through which its store
    (``CacheStore``) makes its own cache calls; none before django-debug-toolbar 8."""
    from debug_toolbar import store

    getattr_ = getattr(getattr(store, "_UntrackedCache", None), "__getattr__", None)
    code = getattr(getattr_, "__code__", None)
    if code is None:
        return ()
    return tuple(c for c in code.co_consts if isinstance(c, CodeType))


class SmartCachePanel(Panel):
    """The django-smartcache panel; see ``docs/debug-toolbar.md``."""

    title = _("Smart cache")
    nav_title = _("Smart cache")
    #: The side bar's icon from django-debug-toolbar 8 on (a static SVG it inlines);
    #: earlier versions show none and ignore this.
    nav_icon = "django_smartcache/debug_toolbar/smartcache.svg"
    template = "django_smartcache/debug_toolbar/panel.html"
    is_async = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The toolbar's own work in the request is not the page's: its store's cache
        # calls, and the invalidations its history rows (DatabaseStore) cause.
        # The first SMARTCACHE["TOOLBAR_MAX_CALLS"] calls are listed; every call counts.
        self.recorder = Recorder(
            quiet_apps=("debug_toolbar",),
            quiet_callers=_toolbar_store_callers(),
            max_calls=conf.get("TOOLBAR_MAX_CALLS"),
        )
        self._levels_before: dict[str, list[tuple[str, int]]] = {}
        self._levels_after: dict[str, list[tuple[str, int]]] = {}

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

    @property
    def content(self) -> str:
        """The template gets the recorded stats plus their text form (computed here,
        so what the toolbar stores stays the raw JSON primitives)."""
        stats = self.get_stats()
        aliases = [
            {
                **a,
                "backend_name": a["backend"].rpartition(".")[2],
                "hit_rate_text": _percent(a["hit_rate"]),
                "served_by": _served_by(a.get("levels")),
                "lifetime_rows": (
                    _lifetime_rows(a["lifetime"])
                    if isinstance(a.get("lifetime"), dict)
                    else None
                ),
            }
            for a in stats.get("aliases", [])
        ]
        totals = stats.get("totals") or {}
        context = {
            **stats,
            "aliases": aliases,
            "hit_rate_text": _percent(totals.get("hit_rate")),
        }
        return str(render_to_string(self.template, context))

    def enable_instrumentation(self) -> None:
        self.recorder.start()
        for alias, cache in self.recorder.watched.items():
            levels = _level_hits(cache)
            if levels is not None:
                self._levels_before[alias] = levels

    def disable_instrumentation(self) -> None:
        # The split is measured over the recording only: panels that generate their
        # stats before ours save them through the toolbar's store, maybe this cache.
        for alias in self._levels_before:
            levels = _level_hits(self.recorder.watched[alias])
            if levels is not None:
                self._levels_after[alias] = levels
        self.recorder.stop()

    def generate_stats(self, request: Any, response: Any) -> None:
        rec = self.recorder
        # Totals come from the recorder's running totals, which count every call:
        # the list keeps only the first TOOLBAR_MAX_CALLS of them.
        aliases = []
        for alias, cache in rec.watched.items():
            mine = rec.totals.get(alias) or Totals()
            # From the counts of every event: the lists keep the first ones only.
            evicted: Counter[str] = Counter()
            for (where, cause), n in rec.event_counts["evictions"].items():
                if where == alias or where.startswith(f"{alias} L"):
                    evicted[cause] += n
            before = self._levels_before.get(alias)
            after = self._levels_after.get(alias)
            # Without the read-backs of get_or_set (not listed), so that the split
            # adds up to the row's hits.
            unlisted = rec.unlisted_level_hits.get(alias, [])
            levels = (
                [
                    {
                        "level": label,
                        "hits": now - then - (unlisted[i] if i < len(unlisted) else 0),
                    }
                    for i, ((label, then), (_l, now)) in enumerate(
                        zip(before, after, strict=False)
                    )
                ]
                if before is not None and after is not None
                else None
            )
            aliases.append(
                {
                    "alias": alias,
                    "backend": f"{type(cache).__module__}.{type(cache).__qualname__}",
                    "calls": mine.calls,
                    "hits": mine.hits,
                    "misses": mine.misses,
                    "hit_rate": _rate(mine.hits, mine.misses),
                    "ms": mine.seconds * 1000.0,
                    "evictions": dict(sorted(evicted.items())),
                    "invalidations": rec.event_counts["invalidations"][alias],
                    "stampede_waits": rec.event_counts["stampede_waits"][alias],
                    "levels": levels,
                    "lifetime": _lifetime(cache),
                }
            )
        every = rec.totals.values()
        hits = sum(t.hits for t in every)
        misses = sum(t.misses for t in every)
        self.record_stats(
            jsonable(
                {
                    "totals": {
                        "calls": sum(t.calls for t in every),
                        "hits": hits,
                        "misses": misses,
                        "hit_rate": _rate(hits, misses),
                        "ms": sum(t.seconds for t in every) * 1000.0,
                        **{
                            kind: sum(counts.values())
                            for kind, counts in rec.event_counts.items()
                        },
                    },
                    "aliases": aliases,
                    # Only aliases this request called: the note is about their times.
                    "nested": [alias for alias in rec.nested if alias in rec.totals],
                    "unavailable": [
                        {"alias": alias, "error": error}
                        for alias, error in rec.unavailable.items()
                    ],
                    "calls": rec.calls,
                    # Calls not in "calls" (over TOOLBAR_MAX_CALLS), and that cap.
                    "calls_dropped": rec.dropped,
                    "max_calls": rec.max_calls,
                    # The first TOOLBAR_MAX_CALLS events of each kind, and how many
                    # more there were.
                    "evictions": rec.evictions,
                    "invalidations": rec.invalidations,
                    "stampede_waits": rec.stampede_waits,
                    "evictions_dropped": rec.events_dropped["evictions"],
                    "invalidations_dropped": rec.events_dropped["invalidations"],
                    "stampede_waits_dropped": rec.events_dropped["stampede_waits"],
                }
            )
        )

    def generate_server_timing(self, request: Any, response: Any) -> None:
        totals = self.get_stats().get("totals")
        if totals:
            calls = ngettext(
                "Smart cache %(n)d call", "Smart cache %(n)d calls", totals["calls"]
            ) % {"n": totals["calls"]}
            self.record_server_timing("smartcache", calls, totals["ms"])
