"""Persistent levels through Django's cache API: SQLiteCache against Django's
FileBasedCache, DatabaseCache on SQLite (twice: at Django's defaults, and in WAL with
synchronous=NORMAL as SQLiteCache and diskcache run), and ``diskcache.DjangoCache``.

``python -m benchmarks persistent [--quick] [--check]`` (or ``python -m benchmarks.persistent``).
Median ns per call over interleaved rounds (every backend shares whatever else the machine
is doing); each sample runs long enough (~50 ms, 20 ms with ``--quick``) to be timed. Every
backend runs with its defaults, in a fresh temporary directory, except "DatabaseCache WAL"
(its database's ``init_command``); the table names each one's journal mode and synchronous
setting. ``--check`` exits 1 when SQLiteCache misses a claim of ``docs/sqlite.md``. The batch rows run twice: with ``VALUE``
(a dict: its unpickling alone is most of a ``get_many``) and with 100 random bytes (the
latency benchmark's value); each claim names the value it checks.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

BACKENDS = {
    "SQLiteCache": "django_smartcache.backends.SQLiteCache",
    "diskcache": "diskcache.DjangoCache",
    "FileBasedCache": "django.core.cache.backends.filebased.FileBasedCache",
    "DatabaseCache": "django.core.cache.backends.db.DatabaseCache",
    "DatabaseCache WAL": "django.core.cache.backends.db.DatabaseCache",
}
#: The database of the "DatabaseCache WAL" column: SQLite at the durability of
#: SQLiteCache and diskcache (WAL, synchronous=NORMAL: no fsync per commit), where
#: "DatabaseCache" runs on Django's SQLite defaults (rollback journal, synchronous=FULL).
WAL_DATABASE = {"init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL"}
WAL_TABLE = "bench_cache_table_wal"
#: A value like a cached query result or fragment (~150 bytes pickled).
VALUE = {"id": 12345, "title": "A cached thing " * 4, "tags": ["a", "b", "c"], "n": 3.5}
#: The latency benchmark's value: 100 random bytes (a rendered fragment, a token).
SMALL = os.urandom(100)
#: Keys read and written; small enough for Django's default MAX_ENTRIES=300 to keep them all.
POOL = [f"pool:{i}" for i in range(100)]

Op = Callable[[Any, int], int]


def _now() -> int:
    return time.perf_counter_ns()


def op_get_hit(cache: Any, n: int) -> int:
    cache.set_many(dict.fromkeys(POOL, VALUE))
    size, misses, get = len(POOL), 0, cache.get
    start = _now()
    for i in range(n):
        if get(POOL[i % size]) is None:
            misses += 1
    elapsed = _now() - start
    if misses:
        raise AssertionError(f"{misses} misses in a get-hit sample of {cache!r}")
    return elapsed


def op_get_miss(cache: Any, n: int) -> int:
    get = cache.get
    start = _now()
    for i in range(n):
        get(f"absent:{i}")
    return _now() - start


def op_set(cache: Any, n: int) -> int:
    size, set_ = len(POOL), cache.set
    start = _now()
    for i in range(n):
        set_(POOL[i % size], VALUE)
    return _now() - start


def get_many_of(value: Any) -> Op:
    def op_get_many(cache: Any, n: int) -> int:
        cache.set_many(dict.fromkeys(POOL, value))
        start = _now()
        for _ in range(n):
            found = cache.get_many(POOL)
        elapsed = _now() - start
        if len(found) != len(POOL) or found[POOL[0]] != value:
            raise AssertionError(
                f"get_many found {len(found)} of {len(POOL)} in {cache!r}"
            )
        return elapsed

    return op_get_many


def set_many_of(value: Any) -> Op:
    def op_set_many(cache: Any, n: int) -> int:
        data = dict.fromkeys(POOL, value)
        start = _now()
        for _ in range(n):
            cache.set_many(data)
        return _now() - start

    return op_set_many


def op_delete(cache: Any, n: int) -> int:
    keys = [f"del:{i}" for i in range(min(n, 100))]
    elapsed = 0
    for offset in range(0, n, len(keys)):
        batch = keys[: n - offset]
        cache.set_many(dict.fromkeys(batch, VALUE))  # untimed: something to delete
        start = _now()
        for key in batch:
            cache.delete(key)
        elapsed += _now() - start
    return elapsed


def op_incr(cache: Any, n: int) -> int:
    cache.set("counter", 0)
    incr = cache.incr
    start = _now()
    for _ in range(n):
        incr("counter")
    return _now() - start


#: name -> (operation, Django calls per operation counted in the figure)
OPS: dict[str, tuple[Op, int]] = {
    "get (hit)": (op_get_hit, 1),
    "get (miss)": (op_get_miss, 1),
    "set": (op_set, 1),
    "get_many(100)": (get_many_of(VALUE), 1),
    "set_many(100)": (set_many_of(VALUE), 1),
    "get_many(100) 100 B": (get_many_of(SMALL), 1),
    "set_many(100) 100 B": (set_many_of(SMALL), 1),
    "delete": (op_delete, 1),
    "incr": (op_incr, 1),
}


class WalCacheRouter:
    """Sends the "DatabaseCache WAL" table to the ``wal`` database, the other to default."""

    def db_for_read(self, model: Any, **hints: Any) -> str | None:
        return "wal" if model._meta.db_table == WAL_TABLE else None

    db_for_write = db_for_read

    def allow_migrate(self, db: str, app_label: str, **hints: Any) -> bool | None:
        model = hints.get("model")
        if model is None or not model._meta.db_table.startswith("bench_cache_table"):
            return None
        return (db == "wal") == (model._meta.db_table == WAL_TABLE)


_SYNCHRONOUS = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}


def durability(alias: str, cache: Any) -> str:
    """The journal mode and synchronous setting of ``cache``'s live SQLite connection."""
    if alias == "FileBasedCache":
        return "files, no fsync"
    if alias.startswith("DatabaseCache"):
        from django.db import connections, router

        with connections[router.db_for_write(cache.cache_model_class)].cursor() as c:
            c.execute("PRAGMA journal_mode")
            mode = c.fetchone()[0]
            c.execute("PRAGMA synchronous")
            sync = c.fetchone()[0]
    else:
        conn = (
            cache._cache._shards[0]._con  # diskcache: a FanoutCache's first shard
            if alias == "diskcache"
            else cache._connection()
        )
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        sync = conn.execute("PRAGMA synchronous").fetchone()[0]
    return f"{mode}/{_SYNCHRONOUS.get(sync, sync)}"


def setup(directory: str) -> dict[str, Any]:
    """Configure Django with one alias per backend, create the DB cache table, return caches."""
    import django
    from django.conf import settings

    caches = {
        "SQLiteCache": os.path.join(directory, "smartcache.sqlite3"),
        "diskcache": os.path.join(directory, "diskcache"),
        "FileBasedCache": os.path.join(directory, "filebased"),
        "DatabaseCache": "bench_cache_table",
        "DatabaseCache WAL": WAL_TABLE,
    }
    settings.configure(
        SECRET_KEY="bench",
        USE_TZ=True,
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.sqlite3",
                "NAME": os.path.join(directory, "django.sqlite3"),
            },
            "wal": {
                "ENGINE": "django.db.backends.sqlite3",
                "NAME": os.path.join(directory, "django_wal.sqlite3"),
                "OPTIONS": WAL_DATABASE,
            },
        },
        DATABASE_ROUTERS=[WalCacheRouter()],
        CACHES={
            alias: {"BACKEND": BACKENDS[alias], "LOCATION": location, "TIMEOUT": 3600}
            for alias, location in caches.items()
        },
    )
    django.setup()
    from django.core.cache import caches as handler
    from django.core.management import call_command

    call_command("createcachetable", verbosity=0)
    call_command("createcachetable", database="wal", verbosity=0)
    return {alias: handler[alias] for alias in BACKENDS}


def calibrate(op: Op, cache: Any, target_ns: int) -> int:
    """Calls per sample so that one sample of ``op`` lasts about ``target_ns``."""
    n = 2
    while True:
        elapsed = op(cache, n)
        if elapsed >= target_ns // 4 or n >= 200_000:
            return max(2, min(200_000, n * target_ns // max(elapsed, 1)))
        n *= 4


def measure(
    caches: dict[str, Any], rounds: int, target_ns: int
) -> dict[str, dict[str, float]]:
    """op -> backend -> median ns per call."""
    results: dict[str, dict[str, float]] = {}
    for name, (op, per_call) in OPS.items():
        counts = {
            alias: calibrate(op, cache, target_ns) for alias, cache in caches.items()
        }
        samples: dict[str, list[float]] = {alias: [] for alias in caches}
        gc.disable()
        try:
            for _ in range(rounds):
                for alias, cache in caches.items():
                    n = counts[alias]
                    samples[alias].append(op(cache, n) / (n * per_call))
        finally:
            gc.enable()
        results[name] = {alias: statistics.median(v) for alias, v in samples.items()}
        print(f"  measured {name}", file=sys.stderr, flush=True)
    return results


def render(results: dict[str, dict[str, float]], modes: dict[str, str]) -> str:
    others = [alias for alias in BACKENDS if alias != "SQLiteCache"]
    headers = [
        "operation",
        *[f"{a} ns ({modes[a]})" for a in BACKENDS],
        *[f"x vs {a}" for a in others],
    ]
    rows = []
    for name, by_alias in results.items():
        ours = by_alias["SQLiteCache"]
        rows.append(
            [
                name,
                *[f"{by_alias[a]:,.0f}" for a in BACKENDS],
                *[f"{by_alias[a] / ours:,.1f}x" for a in others],
            ]
        )
    widths = [
        max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))
    ]
    lines = [
        "| "
        + " | ".join(str(c).rjust(w) for c, w in zip(r, widths, strict=True))
        + " |"
        for r in [headers, *rows]
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def claims(results: dict[str, dict[str, float]]) -> list[tuple[str, bool]]:
    """The promises of docs/sqlite.md, checked against this run."""
    ours = {name: r["SQLiteCache"] for name, r in results.items()}
    disk = {name: r["diskcache"] for name, r in results.items()}
    checks = []
    for name in ("get (hit)", "set"):
        checks.append(
            (f"{name}: SQLiteCache at most diskcache's time", ours[name] <= disk[name])
        )
        for other in ("FileBasedCache", "DatabaseCache"):
            checks.append(
                (
                    f"{name}: SQLiteCache faster than {other}",
                    ours[name] < results[name][other],
                )
            )
    for name in ("get_many(100)", "set_many(100)"):
        for row, value in ((name, "the dict VALUE"), (f"{name} 100 B", "100 bytes")):
            checks.append(
                (
                    f"{name} of {value}: SQLiteCache at least 10x faster than diskcache",
                    disk[row] >= 10 * ours[row],
                )
            )
    return checks


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks persistent", description=__doc__
    )
    parser.add_argument(
        "--quick", action="store_true", help="3 rounds of ~20 ms samples"
    )
    parser.add_argument(
        "--rounds", type=int, default=None, help="interleaved rounds (default 7)"
    )
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if a claim is not met"
    )
    args = parser.parse_args(argv)
    rounds = args.rounds or (3 if args.quick else 7)
    target_ns = (20 if args.quick else 50) * 1_000_000

    directory = tempfile.mkdtemp(prefix="smartcache-bench-")
    try:
        caches = setup(directory)
        modes = {alias: durability(alias, cache) for alias, cache in caches.items()}
        results = measure(caches, rounds, target_ns)
        for cache in caches.values():
            cache.close()
    finally:
        shutil.rmtree(directory, ignore_errors=True)

    print(
        f"Persistent backends: median ns per call through the Django API, {rounds} "
        f"interleaved rounds; Python {sys.version.split()[0]}, SQLite "
        f"{__import__('sqlite3').sqlite_version}. 'x vs B' = B's time / SQLiteCache's. "
        "Beside each name: its journal mode / synchronous, read from its live "
        "connection (DatabaseCache: Django's SQLite defaults, a rollback journal and "
        "an fsync per commit; DatabaseCache WAL: init_command "
        f"{WAL_DATABASE['init_command']!r})."
    )
    print(render(results, modes))
    verdicts = claims(results)
    for text, ok in verdicts:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
    return 1 if args.check and not all(ok for _, ok in verdicts) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
