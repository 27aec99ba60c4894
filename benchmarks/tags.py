"""Tag invalidation cost vs. keys covered, and tag bookkeeping under churn.

``python -m benchmarks.tags [--keys N] [--redis URL]``: times ``invalidate_tags()``
of a tag covering 1 key and one covering N keys (median of repeated runs, same
process, same backend), then churns distinct tags through a bounded cache and
reports its size. Backends: Django's LocMemCache (and RedisCache with ``--redis``)
with the TaggingMixin.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any


def _setup(redis_url: str | None) -> None:
    import django
    from django.conf import settings

    caches: dict[str, Any] = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "locmem": {
            "BACKEND": "tests.testapp.backends.TaggedLocMemCache",
            "LOCATION": "bench",
            "OPTIONS": {"MAX_ENTRIES": 10**7},
        },
        "churn": {
            "BACKEND": "tests.testapp.backends.TaggedLocMemCache",
            "LOCATION": "churn",
            "OPTIONS": {"MAX_ENTRIES": 1000},
        },
    }
    if redis_url:
        caches["redis"] = {
            "BACKEND": "tests.testapp.backends.TaggedRedisCache",
            "LOCATION": redis_url,
        }
    settings.configure(CACHES=caches, INSTALLED_APPS=[], USE_TZ=True)
    django.setup()


def _median_invalidation(cache: Any, tag: str, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        cache.invalidate_tags(tag)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tags")
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--redis", default=None)
    args = parser.parse_args(argv)
    _setup(args.redis)
    from django.core.cache import caches

    print(
        f"{'backend':8} {'1 key (us)':>11} {f'{args.keys} keys (us)':>17} {'ratio':>6}"
    )
    for alias in ["locmem"] + (["redis"] if args.redis else []):
        cache = caches[alias]
        cache.clear()
        cache.set("one", 1, tags=["small"])
        for start in range(0, args.keys, 10_000):
            cache.set_many(
                {f"k{i}": i for i in range(start, min(start + 10_000, args.keys))},
                tags=["big"],
            )
        # interleave to share any drift between the two measurements
        small = _median_invalidation(cache, "small", args.repeat)
        big = _median_invalidation(cache, "big", args.repeat)
        small = min(small, _median_invalidation(cache, "small", args.repeat))
        assert cache.get(f"k{args.keys - 1}") is None and cache.get("one") is None
        print(f"{alias:8} {small * 1e6:11.1f} {big * 1e6:17.1f} {big / small:6.2f}")
        cache.clear()

    churn = caches["churn"]
    churn.clear()
    print("\nchurn (LocMem MAX_ENTRIES=1000): distinct tags written -> entries held")
    for i in range(1, 50_001):
        churn.set(f"k{i % 200}", i, tags=[f"row#{i}"])
        if i % 10_000 == 0:
            print(f"{i:>8} -> {len(churn._cache)}")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
