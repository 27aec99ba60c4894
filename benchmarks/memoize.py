"""Cost of a ``@cached`` hit against a plain ``cache.get`` of the same backend, measured in the same run.

``python -m benchmarks memoize [--quick]``

A hit builds the key (canonical encoding of the arguments, then BLAKE2b, unless the
function remembers the key of these very arguments), reads the entry and unpacks the
envelope. The result is the ratio ``@cached`` hit / plain
``cache.get`` per backend; ``functools.lru_cache`` (in-process, no key stability, no
expiry) is shown as the floor. Absolute numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable
from typing import Any

from ._util import setup_django, table, time_calls

BACKENDS = {
    "SmartCache": "django_smartcache.backends.SmartCache",
    "LocMemCache": "django.core.cache.backends.locmem.LocMemCache",
}

#: The brief's target: a hit costs at most this many plain ``cache.get`` calls.
TARGET_RATIO = 3.0

#: Arguments of the memoized function: a few ints, strs and a small tuple.
ARGUMENTS = [(i, f"user-{i}", ("eur", i % 7)) for i in range(100)]

#: More distinct calls than a function remembers keys of (``keys.MEMO_SIZE``): every
#: hit encodes its arguments and hashes them.
MANY = 5000


def _operations(alias: str) -> dict[str, Callable[[int], None]]:
    from django.core.cache import caches

    from django_smartcache import cached

    cache = caches[alias]

    def compute(n: int, name: str, pair: tuple[str, int]) -> tuple[int, str]:
        return n * 2, name

    memo = cached(using=alias, timeout=3600)(compute)
    lru = functools.lru_cache(maxsize=None)(compute)
    plain_keys = [memo.key(*a) for a in ARGUMENTS]
    many = [(i, f"user-{i}", ("eur", i % 7)) for i in range(MANY)]
    for a in many:
        memo(*a)
        lru(*a)
    # The memoized entries are there: a plain get reads a hit of the same size.
    assert all(cache.get(memo.key(*a)) is not None for a in many)
    get = cache.get
    args = ARGUMENTS

    def plain_get(calls: int) -> None:
        for i in range(calls):
            get(plain_keys[i % 100])

    def cached_hit(calls: int) -> None:
        for i in range(calls):
            memo(*args[i % 100])

    def cached_hit_unremembered(calls: int) -> None:
        for i in range(calls):
            memo(*many[i % MANY])

    def cached_hit_kw(calls: int) -> None:
        for i in range(calls):
            n, name, pair = args[i % 100]
            memo(n, name=name, pair=pair)

    def key_only(calls: int) -> None:
        key = memo.key
        for i in range(calls):
            key(*args[i % 100])

    def lru_hit(calls: int) -> None:
        for i in range(calls):
            lru(*args[i % 100])

    return {
        "cache.get (hit)": plain_get,
        "@cached hit": cached_hit,
        "@cached hit, keywords": cached_hit_kw,
        f"@cached hit, {MANY:,} distinct calls": cached_hit_unremembered,
        "@cached .key() only": key_only,
        "lru_cache hit": lru_hit,
    }


def run(calls: int, rounds: int) -> list[list[Any]]:
    setup_django(
        {
            name: {
                "BACKEND": path,
                "LOCATION": f"memoize-{name}",
                "TIMEOUT": 3600,
                "OPTIONS": {"MAX_ENTRIES": 10 * MANY},
            }
            for name, path in BACKENDS.items()
        }
        | {
            "default": {
                "BACKEND": BACKENDS["LocMemCache"],
                "LOCATION": "memoize-default",
            }
        }
    )
    rows: list[list[Any]] = []
    for name in BACKENDS:
        figures = time_calls(_operations(name), calls=calls, rounds=rounds)
        base = figures["cache.get (hit)"]
        for op, ns in figures.items():
            rows.append([name, op, ns, ns / base])
    return rows


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks memoize")
    parser.add_argument("--quick", action="store_true", help="fewer calls and rounds")
    options = parser.parse_args(argv)
    calls, rounds = (5_000, 5) if options.quick else (50_000, 9)
    rows = run(calls, rounds)
    print(f"ns per call, median of {rounds} interleaved rounds of {calls:,} calls")
    print(table(["backend", "operation", "ns", "x cache.get"], rows))
    # Both repeated-hit rows count: positional and keyword calls.
    hits = [r for r in rows if r[1] in ("@cached hit", "@cached hit, keywords")]
    worst = max(hits, key=lambda r: r[3])
    verdict = "ok" if worst[3] <= TARGET_RATIO else "MISSED"
    print(
        f"\nworst @cached hit / cache.get: {worst[3]:.2f} ({worst[0]}, {worst[1]}; "
        f"target <= {TARGET_RATIO}: {verdict})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
