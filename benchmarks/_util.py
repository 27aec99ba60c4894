"""Shared by the latency and memory benchmarks: Django setup, timing, tables."""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any


def setup_django(caches: dict[str, dict[str, Any]]) -> None:
    """Configure a minimal Django with ``caches`` (benchmarks run outside the test settings)."""
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            CACHES=caches,
            INSTALLED_APPS=["django_smartcache"],
            USE_TZ=True,
            SECRET_KEY="bench",
        )
        django.setup()
    else:  # pragma: no cover - run inside a configured process
        settings.CACHES.update(caches)


def make_cache(backend: str, location: str, **options: Any) -> Any:
    """A fresh cache instance of ``backend``, built as Django's ``CacheHandler`` does."""
    from django.utils.module_loading import import_string

    params: dict[str, Any] = {"TIMEOUT": 3600, "OPTIONS": options}
    return import_string(backend)(location, params)


def time_calls(
    fns: dict[str, Callable[[int], None]],
    *,
    calls: int,
    rounds: int,
    ops_per_call: int = 1,
    before_rounds: Callable[[], None] | None = None,
) -> dict[str, float]:
    """Median ns per operation of each ``fn(calls)``, rounds interleaved across ``fns``.

    Interleaving means the backends share whatever else the machine is doing.
    ``before_rounds`` is called once, after the warm-up and before the timed rounds.
    """
    samples: dict[str, list[float]] = {name: [] for name in fns}
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for fn in fns.values():  # warm up
            fn(max(1, calls // 10))
        if before_rounds is not None:
            before_rounds()
        for _ in range(rounds):
            for name, fn in fns.items():
                start = time.perf_counter_ns()
                fn(calls)
                elapsed = time.perf_counter_ns() - start
                samples[name].append(elapsed / (calls * ops_per_call))
    finally:
        if gc_was_enabled:
            gc.enable()
    return {name: statistics.median(values) for name, values in samples.items()}


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table, columns padded."""
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"
        for r in cells
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)
