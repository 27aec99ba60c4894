"""MultiLevelCache: L1-hit cost, hot-key reads over Redis, invalidation delay between processes.

``python -m benchmarks multilevel [--quick]``. Every figure is a ratio measured in this
run against a backend measured in the same run (SmartCache, Django's RedisCache), or a
delay measured between two real processes. Redis parts start their own redis-server on
a free loopback port and are skipped (with a line saying so) when it is not installed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._util import make_cache, setup_django, table, time_calls

ML = "django_smartcache.backends.MultiLevelCache"
SMART = "django_smartcache.backends.SmartCache"
LOCMEM = "django.core.cache.backends.locmem.LocMemCache"
SQLITE = "django_smartcache.backends.SQLiteCache"
REDIS = "django.core.cache.backends.redis.RedisCache"


def _multilevel(l2: dict[str, Any], **options: Any) -> Any:
    return make_cache(ML, "", LEVELS=[{"BACKEND": SMART}, l2], **options)


def _reads(cache: Any, key: str) -> Any:
    get = cache.get

    def run(n: int) -> None:
        for _ in range(n):
            get(key)

    return run


def _bypassing_reads(cache: Any, key: str) -> Any:
    """Tagged reads that take the version keys from the lowest level (the alternative)."""
    lowest = cache.levels[-1]

    def versions_below(keys: Any, version: Any = None) -> dict[str, Any]:
        made = {cache.make_key(k, version): k for k in keys}
        return {made[k]: v for k, v in lowest.get_many(list(made)).items()}

    def general_check(k: Any, env: Any) -> bool:
        return bool(
            cache._valid({k: env})
        )  # skip the L1 fast path: read via _read_bookkeeping

    def run(n: int) -> None:
        # The tagging layer reads versions through _read_bookkeeping: one Redis round
        # trip per hit here.
        cache._read_bookkeeping = versions_below
        cache._current = general_check
        try:
            for _ in range(n):
                cache.get(key)
        finally:
            del cache._read_bookkeeping
            del cache._current

    return run


def l1_hit_rows(
    sqlite_path: str, redis_url: str | None, quick: bool
) -> list[list[Any]]:
    """ns per get-hit: SmartCache alone vs an L1 hit through MultiLevelCache."""
    smart = make_cache(SMART, "bench-multilevel-smart")
    smart.set("hot", b"x" * 100)
    fns = {"SmartCache": _reads(smart, "hot")}
    over_sqlite = _multilevel(
        {"BACKEND": SQLITE, "LOCATION": sqlite_path}, L1_MAX_TTL=3600
    )
    over_sqlite.set("hot", b"x" * 100, None)
    fns["MultiLevel L1 hit (SQLite L2)"] = _reads(over_sqlite, "hot")
    if redis_url:
        over_redis = _multilevel(
            {"BACKEND": REDIS, "LOCATION": redis_url}, L1_MAX_TTL=3600
        )
        over_redis.set("hot", b"x" * 100, None)
        fns["MultiLevel L1 hit (Redis L2)"] = _reads(over_redis, "hot")
        # Tagged: the value's envelope and its tag's version both read from L1 (the
        # design: version keys are coherent like any key) vs the version read from
        # the Redis level on every hit (the alternative: version keys bypass L1).
        over_redis.set("tagged", b"x" * 100, None, tags=["bench"])
        fns["MultiLevel tagged L1 hit (Redis L2)"] = _reads(over_redis, "tagged")
        fns["  same, versions read from Redis"] = _bypassing_reads(over_redis, "tagged")
    calls, rounds = (20_000, 5) if quick else (100_000, 15)
    ns = time_calls(fns, calls=calls, rounds=rounds)
    base = ns["SmartCache"]
    return [[name, value, value / base] for name, value in ns.items()]


def async_hit_rows(sqlite_path: str, quick: bool) -> list[list[Any]]:
    """ns per ``await cache.aget()`` hit; Django's default async methods hop to a thread."""
    import asyncio

    loop = asyncio.new_event_loop()
    smart = make_cache(SMART, "bench-multilevel-async-smart")
    locmem = make_cache(LOCMEM, "bench-multilevel-async-locmem")
    over_sqlite = _multilevel(
        {"BACKEND": SQLITE, "LOCATION": sqlite_path}, L1_MAX_TTL=3600
    )
    caches = {
        "SmartCache": smart,
        "MultiLevel L1 hit (SQLite L2)": over_sqlite,
        "LocMemCache (Django: sync_to_async)": locmem,
    }

    def areads(cache: Any) -> Any:
        aget = cache.aget

        async def many(n: int) -> None:
            for _ in range(n):
                await aget("hot")

        def run(n: int) -> None:
            loop.run_until_complete(many(n))

        return run

    fns = {}
    for name, cache in caches.items():
        cache.set("hot", b"x" * 100, None)
        fns[name] = areads(cache)
    calls, rounds = (2_000, 5) if quick else (10_000, 9)
    try:
        ns = time_calls(fns, calls=calls, rounds=rounds)
    finally:
        loop.close()
    base = ns["SmartCache"]
    return [[name, value, value / base] for name, value in ns.items()]


def hot_key_rows(redis_url: str, quick: bool) -> list[list[Any]]:
    """Repeated reads of one key: Django's RedisCache alone vs MultiLevel over it.

    With the default ``L1_MAX_TTL`` (1 s) the L1 copy is refetched from Redis every
    second, and that refetch is part of the measured time.
    """
    plain = make_cache(REDIS, redis_url)
    plain.set("hot-plain", b"x" * 100, None)
    multi = _multilevel({"BACKEND": REDIS, "LOCATION": redis_url})
    multi.set("hot", b"x" * 100, None)
    ns = time_calls(
        {
            "Django RedisCache": _reads(plain, "hot-plain"),
            "MultiLevel (SmartCache over RedisCache)": _reads(multi, "hot"),
        },
        calls=500 if quick else 2_000,
        rounds=5 if quick else 9,
    )
    base = ns["Django RedisCache"]
    return [[name, value, base / value] for name, value in ns.items()]


# -- invalidation delay between two processes ------------------------------------------


def _reader(setting: str, go: str, out: str) -> None:
    """Child: keep reading "probe" (L1 hits) and note when each new value appears."""
    setup_django({"default": json.loads(setting)})
    from django.core.cache import cache

    seen: dict[str, float] = {}
    last = cache.get("probe")
    Path(go).touch()
    deadline = time.monotonic() + 30
    while last != "stop" and time.monotonic() < deadline:
        value = cache.get("probe")
        if value != last:
            seen[value] = time.monotonic()
            last = value
        time.sleep(0.0001)
    l1_hits = cache.stats()["levels"][0]["hits"]
    Path(out).write_text(json.dumps({"seen": seen, "l1_hits": l1_hits}))


def invalidation_delay(
    l2: dict[str, Any], workdir: Path, rounds: int
) -> dict[str, Any]:
    """Median and max ms from a write finishing in this process to another process's
    L1 no longer serving the old value (it reads every 0.1 ms between cache calls)."""
    setting = {
        "BACKEND": ML,
        "OPTIONS": {"LEVELS": [{"BACKEND": SMART}, l2], "L1_MAX_TTL": 600},
    }
    writer = make_cache(ML, "", **setting["OPTIONS"])
    writer.set("probe", "start", None)
    go, out = workdir / "go", workdir / "out.json"
    for path in (go, out):
        path.unlink(missing_ok=True)
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "benchmarks.multilevel",
            "--reader",
            json.dumps(setting),
            str(go),
            str(out),
            str(rounds),
        ],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    while not go.exists():
        if proc.poll() is not None:
            raise RuntimeError("reader process died")
        time.sleep(0.01)
    time.sleep(0.2)  # the reader's listener subscribes, its L1 holds "start"
    written: dict[str, float] = {}
    for i in range(rounds):
        value = f"v{i}"
        writer.set("probe", value, None)
        written[value] = time.monotonic()
        time.sleep(0.08)  # more than one SQLite COHERENCE_INTERVAL apart
    while proc.poll() is None:
        writer.set("probe", "stop", None)
        time.sleep(0.05)
    result = json.loads(out.read_text())
    delays = [
        (result["seen"][v] - t) * 1000
        for v, t in written.items()
        if v in result["seen"]
    ]
    return {
        "rounds": rounds,
        "observed": len(delays),
        "median_ms": statistics.median(delays) if delays else float("nan"),
        "max_ms": max(delays) if delays else float("nan"),
        "reader_l1_hits": result["l1_hits"],
    }


def _start_redis(workdir: Path) -> Any:
    from tests.fixtures.servers import RedisServer, find_binary, free_port

    binary = find_binary("redis-server")
    if binary is None:
        return None
    server = RedisServer(binary, free_port(), workdir)
    server.start()
    return server


def main(argv: list[str]) -> int:
    if argv and argv[0] == "--reader":
        _reader(argv[1], argv[2], argv[3])
        return 0
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks multilevel", description=__doc__
    )
    parser.add_argument("--quick", action="store_true", help="fewer, shorter samples")
    quick = parser.parse_args(argv).quick
    setup_django(
        {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    )
    with tempfile.TemporaryDirectory(prefix="smartcache-bench-ml-") as tmp:
        workdir = Path(tmp)
        server = _start_redis(workdir)
        redis_url = server.url if server else None
        try:
            print(
                "## MultiLevelCache: L1 hit vs SmartCache get-hit (median ns/call, same run)\n"
            )
            rows = l1_hit_rows(str(workdir / "l1.sqlite3"), redis_url, quick)
            print(table(["backend", "ns/get", "ratio to SmartCache"], rows))
            print("\n## Async: `await cache.aget()` hit (median ns/call, same run)\n")
            rows = async_hit_rows(str(workdir / "async.sqlite3"), quick)
            print(table(["backend", "ns/aget", "ratio to SmartCache"], rows))
            if redis_url:
                print(
                    "\n## Hot key: MultiLevel over Redis vs Django's RedisCache alone\n"
                )
                rows = hot_key_rows(redis_url, quick)
                print(table(["backend", "ns/get", "speed-up vs RedisCache"], rows))
            else:
                print("\n(redis-server not installed: Redis rows skipped)")
            print(
                "\n## Invalidation delay between two processes (write done -> old value gone)\n"
            )
            rounds = 20 if quick else 60
            rows = []
            channels = [
                (
                    "SQLite change log",
                    {"BACKEND": SQLITE, "LOCATION": str(workdir / "delay.sqlite3")},
                )
            ]
            if redis_url:
                channels.insert(
                    0, ("Redis pub/sub", {"BACKEND": REDIS, "LOCATION": redis_url})
                )
            for name, l2 in channels:
                d = invalidation_delay(l2, workdir, rounds)
                rows.append(
                    [
                        name,
                        d["observed"],
                        d["rounds"],
                        d["median_ms"],
                        d["max_ms"],
                        d["reader_l1_hits"],
                    ]
                )
            print(
                table(
                    [
                        "channel",
                        "seen",
                        "writes",
                        "median ms",
                        "max ms",
                        "reader L1 hits",
                    ],
                    rows,
                )
            )
        finally:
            from django_smartcache.backends import _coherence

            for state in list(_coherence._ALL_STATES):
                state.stop()
            if server is not None:
                server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
