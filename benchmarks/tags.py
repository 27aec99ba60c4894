"""Tag invalidation cost vs. keys covered, and tag bookkeeping under churn.

``python -m benchmarks.tags [--keys N] [--redis URL]``: times ``invalidate_tags()``
of a tag covering 1 key and one covering N keys (median of repeated runs, same
process, same backend), then churns distinct tags through a bounded cache and
reports its size. Backends: Django's LocMemCache (and RedisCache with ``--redis``)
with the TaggingMixin, and SmartCache.

SmartCache detaches an invalidated tag's key set in O(1), so a tag invalidated a
second time has nothing left to detach: its figures time the *first* invalidation
of each of ``--fresh`` tags that each cover every one of the N keys (and of as many
1-key tags), then how much tag bookkeeping remains after churn.

First, what a tagged hit costs on SmartCache: ns per ``get`` of a value with one tag
and with a row tag (two versions: the row's and its model's all-rows tag), as a
ratio to a plain ``get`` hit measured in the same run.
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
        "smart": {
            "BACKEND": "django_smartcache.backends.SmartCache",
            "LOCATION": "bench",
            "OPTIONS": {"MAX_MEMORY": "4GB"},
        },
        "smartchurn": {
            "BACKEND": "django_smartcache.backends.SmartCache",
            "LOCATION": "churn",
            "OPTIONS": {"MAX_ENTRIES": 1000, "MAX_MEMORY": None},
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


def _hit_rows(cache: Any, calls: int, rounds: int) -> list[tuple[str, float]]:
    """ns per get-hit, plain vs tagged, rounds interleaved (``benchmarks._util``)."""
    from benchmarks._util import time_calls

    cache.set("plain", b"x" * 100)
    cache.set("one-tag", b"x" * 100, tags=["bench"])
    cache.set("row-tag", b"x" * 100, tags=["app.model#1"])
    assert cache.get("one-tag") == cache.get("row-tag") == b"x" * 100

    def reads(key: str) -> Any:
        get = cache.get

        def run(n: int) -> None:
            for _ in range(n):
                get(key)

        return run

    ns = time_calls(
        {
            "plain get hit": reads("plain"),
            "tagged hit (1 tag)": reads("one-tag"),
            "tagged hit (row tag: 2 versions)": reads("row-tag"),
        },
        calls=calls,
        rounds=rounds,
    )
    return list(ns.items())


def _median_invalidation(cache: Any, tag: str, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        cache.invalidate_tags(tag)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _first_invalidations(cache: Any, keys: int, fresh: int) -> tuple[float, float]:
    """Median time of the first invalidation of fresh 1-key and N-key tags (SmartCache)."""
    small_tags = [f"small{i}" for i in range(fresh)]
    big_tags = [f"big{i}" for i in range(fresh)]
    for tag in small_tags:
        cache.set(f"one-{tag}", 1, tags=[tag])
    for start in range(0, keys, 10_000):
        cache.set_many(
            {f"k{i}": i for i in range(start, min(start + 10_000, keys))},
            tags=big_tags,
        )
    small, big = [], []
    for s_tag, b_tag in zip(small_tags, big_tags, strict=True):
        for tag, out in ((s_tag, small), (b_tag, big)):
            start = time.perf_counter()
            cache.invalidate_tags(tag)
            out.append(time.perf_counter() - start)
    assert cache.get(f"k{keys - 1}") is None and cache.get("one-small0") is None
    return statistics.median(small), statistics.median(big)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks tags")
    parser.add_argument(
        "--keys", type=int, default=100_000, help="entries under the big tag"
    )
    parser.add_argument(
        "--repeat", type=int, default=200, help="invalidations timed per tag"
    )
    parser.add_argument(
        "--redis", default=None, help="a Redis URL: time its invalidations too"
    )
    parser.add_argument(
        "--fresh", type=int, default=15, help="fresh tags for SmartCache's first ones"
    )
    parser.add_argument(
        "--hit-calls", type=int, default=50_000, help="calls per tagged-hit timing"
    )
    args = parser.parse_args(argv)
    _setup(args.redis)
    from django.core.cache import caches

    smart = caches["smart"]
    smart.clear()
    rows = _hit_rows(smart, args.hit_calls, 7)
    base = rows[0][1]
    print(f"{'SmartCache':34} {'ns/get':>8} {'ratio':>6}")
    for name, ns in rows:
        print(f"{name:34} {ns:8.0f} {ns / base:6.2f}")
    smart.clear()
    print()

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

    smart = caches["smart"]
    smart.clear()
    small, big = _first_invalidations(smart, args.keys, args.fresh)
    print(
        f"{'smart':8} {small * 1e6:11.1f} {big * 1e6:17.1f} {big / small:6.2f}"
        f"   (first invalidation of {args.fresh} fresh tags each)"
    )
    before = smart.stats()["bytes_used"]
    freed = smart._store.purge_invalidated()
    print(
        f"smart: purge frees {freed:,} entries, {before - smart.stats()['bytes_used']:,} bytes"
    )
    smart.clear()

    churn = caches["churn"]
    churn.clear()
    print("\nchurn (LocMem MAX_ENTRIES=1000): distinct tags written -> entries held")
    for i in range(1, 50_001):
        churn.set(f"k{i % 200}", i, tags=[f"row#{i}"])
        if i % 10_000 == 0:
            print(f"{i:>8} -> {len(churn._cache)}")

    smart = caches["smartchurn"]
    smart.clear()
    print(
        "\nchurn (SmartCache MAX_ENTRIES=1000): distinct tags written, 1 in 3 invalidated"
        " -> entries, tagged entries, tags indexed, purge queue"
    )
    for i in range(1, 50_001):
        smart.set(f"k{i % 200}", i, tags=[f"row#{i}"])
        if i % 3 == 0:
            smart.invalidate_tags(f"row#{i - 1}")
        if i % 10_000 == 0:
            st = smart.stats()
            print(
                f"{i:>8} -> {st['entries']} {st['tagged_entries']} "
                f"{st['tags_indexed']} {st['purge_pending']}"
            )
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
