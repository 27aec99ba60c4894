"""``manage.py smartcache_stats``: each alias's ``stats()`` as a table, or as JSON."""

from __future__ import annotations

import json
from argparse import ArgumentParser
from typing import Any

from django.core.cache import caches
from django.core.cache.backends.base import BaseCache
from django.core.management.base import CommandError

from ...core.sizing import format_size
from .. import (
    PipedCommand,
    add_cache_argument,
    backend_name,
    chosen_aliases,
    configured_backend,
    failure,
    in_process,
    level_label,
    levels,
)

#: Shown first, in this order, by the table; other keys follow as they come.
_ORDER = (
    "hit_rate",
    "hits",
    "misses",
    "sets",
    "deletes",
    "evictions",
    "refused",
    "entries",
    "bytes_used",
    "errors",
)
#: Sizes in bytes printed with their unit (``None``: unlimited).
_SIZES = {"entry_overhead", "max_item_size"}
#: Folded into the lines above rather than printed on their own.
_FOLDED = {
    "max_bytes",
    "evictions_capacity",
    "evictions_expired",
    "evictions_invalidated",
    "top_accessed",
    "levels",
}


#: The key a level without ``stats()`` is asked about (``has_key``): any key does.
PROBE_KEY = "smartcache_stats:probe"


def snapshot(cache: BaseCache, *, level: bool = False) -> dict[str, Any]:
    """``{"backend", "in_process", "stats"}`` (``stats`` is None without ``stats()``),
    and for a MultiLevelCache each level's own snapshot under ``"levels"``.

    A backend whose ``stats()`` raised (a level that is down: a SQLite LOCATION that
    is a directory, a Redis server gone) has ``stats`` None and ``"error"``, so the
    other levels and aliases are still reported. A ``level`` without ``stats()``
    (Django's RedisCache) is asked ``has_key()`` instead, one round trip bounded by its
    client's timeouts: else nothing would find that it is down."""
    func = getattr(cache, "stats", None)
    out: dict[str, Any] = {
        "backend": backend_name(cache),
        "in_process": in_process(cache),
        "stats": None,
    }
    if callable(func):
        try:
            out["stats"] = func()
        except Exception as exc:  # noqa: BLE001 - reported, not a traceback
            out["error"] = failure(exc)
    elif level:
        try:
            cache.has_key(PROBE_KEY)
        except Exception as exc:  # noqa: BLE001 - the level is down: reported
            out["error"] = failure(exc)
    parts = levels(cache)
    if parts:
        out["levels"] = [
            {"level": level_label(i, part), **snapshot(part, level=True)}
            for i, part in enumerate(parts)
        ]
        # A level this command found down is down in the counters too, as the text
        # shows it: a MultiLevelCache built by the command has not failed on it yet,
        # and --json would say "down": false beside the level's error.
        counters = (out["stats"] or {}).get("levels", ())
        for counted, sub in zip(counters, out["levels"], strict=False):
            if "error" in sub and isinstance(counted, dict):
                counted["down"] = True
    return out


def _alias_snapshot(alias: str) -> dict[str, Any]:
    """``snapshot()`` of the alias; for one whose backend cannot be built (a bad
    ``OPTIONS`` value) a snapshot with its ``"error"``, so every other alias is still
    reported."""
    try:
        cache = caches[alias]
    except Exception as exc:  # noqa: BLE001 - reported, not a traceback
        return {
            "backend": configured_backend(alias),
            "in_process": False,
            "stats": None,
            "error": failure(exc),
        }
    return snapshot(cache)


def size(n: float | None) -> str:
    """Bytes as the toolbar panel writes them (``64.0 MiB``); None: no budget."""
    return "unlimited" if n is None else format_size(n)


def rows(stats: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, text) lines for one stats dict."""
    out: list[tuple[str, str]] = []
    keys = [k for k in _ORDER if k in stats]
    keys += [k for k in stats if k not in _ORDER and k not in _FOLDED]
    for key in keys:
        value = stats[key]
        if key == "hit_rate":
            text = "n/a (no reads)" if value is None else f"{value:.1%}"
        elif key == "evictions":
            causes = ", ".join(
                f"{cause} {stats[f'evictions_{cause}']}"
                for cause in ("capacity", "expired", "invalidated")
                if f"evictions_{cause}" in stats
            )
            text = f"{value} ({causes})" if causes else str(value)
        elif key == "bytes_used":
            budget = stats.get("max_bytes")
            text = f"{size(value)} of {size(budget)}"
            if budget:
                text += f" ({value / budget:.1%})"
            key = "size" if "location" in stats else "memory"  # a file's, or RAM
        elif (key in _SIZES or key.endswith(("_bytes", "_overhead"))) and (
            value is None or type(value) in (int, float)
        ):
            text = size(value)
        elif isinstance(value, dict):
            text = ", ".join(f"{k} {v}" for k, v in value.items())
        else:
            text = "-" if value is None else str(value)
        out.append((key.replace("_", " "), text))
    top = stats.get("top_accessed")
    if top:
        out.append(("top keys", ", ".join(f"{k} ({n})" for k, n in top)))
    return out


class Command(PipedCommand):
    help = (
        "Show each cache alias's statistics: hit rate, hits, misses, evictions by "
        "cause, bytes used and budget, entries, top keys; per level for a "
        "MultiLevelCache."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        add_cache_argument(parser, "Cache alias to report (repeatable; default: all).")
        parser.add_argument(
            "--json", action="store_true", help="Print one JSON object keyed by alias."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        report = {alias: _alias_snapshot(alias) for alias in chosen_aliases(options)}
        if options["json"]:
            self.stdout.write(json.dumps(report, indent=2, default=str))
        else:
            for alias, snap in report.items():
                self._table(alias, snap, indent="")
        failed = [f"{a!r} ({s['error']})" for a, s in report.items() if "error" in s]
        if failed:
            raise CommandError(f"No statistics from {'; '.join(failed)}.")

    def _table(self, title: str, snap: dict[str, Any], indent: str) -> None:
        scope = ", in-process: this process only" if snap["in_process"] else ""
        self.stdout.write(
            self.style.MIGRATE_HEADING(f"{indent}{title}")
            + f" ({snap['backend']}{scope})"
        )
        stats = snap["stats"]
        if "error" in snap:
            self.stdout.write(f"{indent}  unavailable: {snap['error']}")
            return
        if stats is None:
            self.stdout.write(f"{indent}  no statistics (the backend has no stats())")
            return
        lines = rows(stats)
        width = max((len(label) for label, _ in lines), default=0)
        for label, text in lines:
            self.stdout.write(f"{indent}  {label.ljust(width)}  {text}")
        for level, sub in zip(
            stats.get("levels", ()), snap.get("levels", ()), strict=False
        ):
            self._level(level, sub, indent + "  ")

    def _level(self, level: dict[str, Any], sub: dict[str, Any], indent: str) -> None:
        """MultiLevelCache's counters for one level, then that backend's own stats."""
        scope = ", in-process: this process only" if sub["in_process"] else ""
        self.stdout.write(
            self.style.MIGRATE_HEADING(f"{indent}{sub['level']}")
            + f" ({sub['backend']}{scope})"
        )
        served = {
            ("hits served" if k == "hits" else k): v
            for k, v in level.items()
            if k != "level"
        }
        if "error" in sub:  # its own stats() failed: the level is down
            served["down"] = True
            served["unavailable"] = sub["error"]
        lines = rows(served)
        if sub["stats"] is not None:
            lines += rows(sub["stats"])
        width = max(len(label) for label, _ in lines)
        for label, text in lines:
            self.stdout.write(f"{indent}  {label.ljust(width)}  {text}")
