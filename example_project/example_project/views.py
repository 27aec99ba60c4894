"""Views of the example project: a cached computation and the cache's own statistics."""

from __future__ import annotations

import json
import time

from django.core.cache import cache
from django.http import HttpRequest, HttpResponse


def _slow_square(n: int) -> int:
    time.sleep(0.05)
    return n * n


def index(request: HttpRequest) -> HttpResponse:
    n = int(request.GET.get("n", "7"))
    started = time.perf_counter()
    value = cache.get_or_set(f"square:{n}", lambda: _slow_square(n), timeout=60)
    elapsed_ms = (time.perf_counter() - started) * 1000
    stats = cache.stats() if hasattr(cache, "stats") else {}
    body = {"n": n, "square": value, "ms": round(elapsed_ms, 3), "cache_stats": stats}
    return HttpResponse(
        json.dumps(body, indent=2, default=str), content_type="application/json"
    )
