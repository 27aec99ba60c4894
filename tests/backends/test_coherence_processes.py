"""Four real processes write and read the same keys; none may serve a value from L1
that was superseded longer ago than the coherence bound.

Each child configures Django itself (``python -m tests.backends.test_coherence_processes``)
and logs every write (key, value, start, end) and read (key, value, start) with
``time.monotonic()``, which is one system-wide clock on Linux. A read is stale beyond the
bound when a write that *started after the read value's write had finished* had itself
finished more than ``BOUND`` seconds before the read started. ``L1_MAX_TTL`` is set far
above the bound, so only the invalidation channel can keep the count at zero.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

BOUND = 1.0  # seconds: the documented default staleness bound
#: What the channels actually achieve (ms for Redis, one COHERENCE_INTERVAL for SQLite),
#: with a wide margin for a loaded machine. Without a channel, runs this short would
#: rarely exceed BOUND, but they exceed this by far (measured: median 74 ms, max 983 ms).
TIGHT = 0.25
WORKERS = 4
KEYS = 8
DURATION = 1.5  # seconds of mixed reads and writes per worker
WRITE_SHARE = 0.05


def _levels(kind: str, target: str) -> list[dict[str, Any]]:
    l1 = {"BACKEND": "django_smartcache.backends.SmartCache"}
    if kind == "redis":
        return [
            l1,
            {
                "BACKEND": "django.core.cache.backends.redis.RedisCache",
                "LOCATION": target,
            },
        ]
    return [
        l1,
        {"BACKEND": "django_smartcache.backends.SQLiteCache", "LOCATION": target},
    ]


def _cache_setting(kind: str, target: str) -> dict[str, Any]:
    return {
        "BACKEND": "django_smartcache.backends.MultiLevelCache",
        "KEY_PREFIX": "coherence",
        "OPTIONS": {"LEVELS": _levels(kind, target), "L1_MAX_TTL": 600},
    }


def worker(kind: str, target: str, wid: int, go: str, out: str) -> None:
    """One process: say it is ready, wait for the common start, read and write for DURATION."""
    from django.conf import settings

    settings.configure(CACHES={"default": _cache_setting(kind, target)})
    import django

    django.setup()
    from django.core.cache import cache

    rng = random.Random(wid)
    events: list[list[Any]] = []
    cache.get("warm-up")  # connect, subscribe
    Path(out + ".ready").touch()
    while not os.path.exists(go):
        time.sleep(0.005)
    end = time.monotonic() + DURATION
    seq = 0
    now = time.monotonic()
    while now < end:
        key = f"k{rng.randrange(KEYS)}"
        if rng.random() < WRITE_SHARE:
            seq += 1
            value = f"{wid}:{seq}"
            t0 = time.monotonic()
            cache.set(key, value, None)
            events.append(["w", key, value, t0, time.monotonic()])
        else:
            t0 = time.monotonic()
            events.append(["r", key, cache.get(key), t0])
        time.sleep(0.0005)  # a request does other work between cache calls
        now = time.monotonic()
    stats = cache.stats()
    Path(out).write_text(json.dumps({"events": events, "stats": stats}))


def analyse(runs: list[dict[str, Any]], initial: dict[str, float]) -> dict[str, Any]:
    """Stale reads beyond BOUND, and per (write, other process) the stale window."""
    finished: dict[str, float] = {}  # value -> when its write finished
    started: dict[str, float] = {}
    writes: dict[str, list[tuple[float, float, str, int]]] = defaultdict(list)
    for wid, run in enumerate(runs):
        for event in run["events"]:
            if event[0] == "w":
                _, key, value, t0, t1 = event
                finished[value] = t1
                started[value] = t0
                writes[key].append((t0, t1, value, wid))
    for key, t in initial.items():
        finished[f"init:{key}"] = t
        started[f"init:{key}"] = t
    stale_beyond = 0
    stale_beyond_tight = 0
    reads = 0
    window: dict[tuple[str, int], float] = {}
    for wid, run in enumerate(runs):
        for event in run["events"]:
            if event[0] != "r":
                continue
            _, key, value, t0 = event
            reads += 1
            assert value is not None, f"process {wid} missed {key} (never deleted)"
            for w_start, w_end, w_value, writer in writes[key]:
                if w_start <= finished[value] or w_end >= t0:
                    continue  # not strictly newer than the value read, or not done yet
                if t0 - w_end > BOUND:
                    stale_beyond += 1
                if t0 - w_end > TIGHT:
                    stale_beyond_tight += 1
                if writer != wid:
                    pair = (w_value, wid)
                    window[pair] = max(window.get(pair, 0.0), t0 - w_end)
    pairs = sum(1 for run in runs for e in run["events"] if e[0] == "w") * (
        len(runs) - 1
    )
    delays = sorted(window.values())
    return {
        "reads": reads,
        "writes": sum(len(v) for v in writes.values()),
        "stale_beyond_bound": stale_beyond,
        "stale_beyond_tight": stale_beyond_tight,
        "write_process_pairs": pairs,
        "pairs_with_a_stale_read": len(delays),
        "stale_window_median_ms": statistics.median(delays) * 1000 if delays else 0.0,
        "stale_window_max_ms": max(delays) * 1000 if delays else 0.0,
    }


def run_processes(kind: str, target: str, tmp_path: Path) -> dict[str, Any]:
    """Seed the keys, start WORKERS children on a common start time, analyse their logs."""
    from django.core.cache.backends.base import BaseCache
    from django.utils.module_loading import import_string

    setting = _cache_setting(kind, target)
    params = {k: v for k, v in setting.items() if k != "BACKEND"}
    seeder: BaseCache = import_string(setting["BACKEND"])("", params)
    initial = {}
    for i in range(KEYS):
        seeder.set(f"k{i}", f"init:k{i}", None)
        initial[f"k{i}"] = time.monotonic()
    seeder.close()
    go = tmp_path / "go"
    outs = [tmp_path / f"worker-{i}.json" for i in range(WORKERS)]
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.backends.test_coherence_processes",
                kind,
                target,
                str(i),
                str(go),
                str(outs[i]),
            ],
            cwd=root,
            env=env,
        )
        for i in range(WORKERS)
    ]
    deadline = time.monotonic() + 60
    while not all(Path(f"{out}.ready").exists() for out in outs):
        assert time.monotonic() < deadline, "workers did not start"
        assert all(proc.poll() is None for proc in procs), "a worker died"
        time.sleep(0.01)
    go.touch()
    for proc in procs:
        assert proc.wait(timeout=60) == 0
    runs = [json.loads(out.read_text()) for out in outs]
    result = analyse(runs, initial)
    result["l1_hit_share"] = sum(r["stats"]["levels"][0]["hits"] for r in runs) / max(
        1, result["reads"]
    )
    result["invalidations_applied"] = sum(
        r["stats"]["coherence"]["invalidations_applied"] for r in runs
    )
    return result


def _check(result: dict[str, Any]) -> None:
    print(json.dumps(result))
    assert result["writes"] > 15 and result["reads"] > 300
    # L1 really served most reads (otherwise zero staleness would prove nothing) ...
    assert result["l1_hit_share"] > 0.5
    # ... the others' writes reached each L1 through the channel ...
    assert result["invalidations_applied"] > result["writes"]
    # ... and no read returned a value superseded more than BOUND ago.
    assert result["stale_beyond_bound"] == 0
    assert result["stale_beyond_tight"] == 0


@pytest.mark.slow
@pytest.mark.redis
def test_four_processes_through_redis(redis_url: str, tmp_path: Path) -> None:
    _check(run_processes("redis", redis_url, tmp_path))


@pytest.mark.slow
def test_four_processes_through_sqlite(tmp_path: Path) -> None:
    from django_smartcache import backends

    if not hasattr(backends, "SQLiteCache"):
        pytest.skip("SQLiteCache is not in this tree yet")
    _check(run_processes("sqlite", str(tmp_path / "shared.sqlite3"), tmp_path))


# -- tags: an invalidation in one process reaches another process's L1 ---------------


def invalidate_in_child(kind: str, target: str, tag: str) -> None:
    """A separate process: ``invalidate_tags(tag)`` through its own MultiLevelCache."""
    from django.conf import settings

    settings.configure(
        CACHES={"default": _cache_setting(kind, target)},
        INSTALLED_APPS=["django_smartcache"],
    )
    import django

    django.setup()
    from django.core.cache import cache

    cache.invalidate_tags(tag)


def _run_child(*args: str) -> None:
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    subprocess.run(
        [sys.executable, "-m", "tests.backends.test_coherence_processes", *args],
        cwd=root,
        env=env,
        check=True,
        timeout=60,
    )


def tagged_miss_delay(kind: str, target: str, coherence: str = "auto") -> float | None:
    """Seconds from the other process's invalidation to our first miss (None: no miss
    within BOUND): this process holds the tagged value *and its tag's version* in L1."""
    from django_smartcache.backends.multilevel import MultiLevelCache

    setting = _cache_setting(kind, target)
    setting["OPTIONS"]["COHERENCE"] = coherence
    # An L1 of its own per run (per-process state is shared by identical levels).
    setting["OPTIONS"]["LEVELS"][0]["LOCATION"] = f"tags-{time.monotonic_ns()}"
    cache = MultiLevelCache("", {k: v for k, v in setting.items() if k != "BACKEND"})
    try:
        if coherence != "none":
            cache.get("warm-up")  # subscribe / take the change-log cursor (flushes L1)
            deadline = time.monotonic() + 10
            while kind == "redis" and not cache._co.connected:
                assert time.monotonic() < deadline, "no subscription"
                time.sleep(0.01)
        tag = f"t-{os.getpid()}-{time.monotonic_ns()}"
        cache.set("page", "cached", tags=[tag])
        before = [level["hits"] for level in cache.stats()["levels"]]
        assert cache.get("page") == "cached"
        # One hit, in L1; the tag's version key (bookkeeping: not counted) is in L1 too.
        assert [level["hits"] for level in cache.stats()["levels"]] == [
            before[0] + 1,
            *before[1:],
        ]
        (version_key,) = cache._version_keys((tag,))
        assert cache.levels[0].has_key(version_key)
        _run_child("invalidate", kind, target, tag)
        done = time.monotonic()
        while time.monotonic() - done < BOUND:
            if cache.get("page") is None:
                return time.monotonic() - done
            time.sleep(0.002)
        return None
    finally:
        cache._co.stop()


@pytest.mark.slow
@pytest.mark.redis
def test_tag_invalidated_in_another_process_through_redis(redis_url: str) -> None:
    delay = tagged_miss_delay("redis", redis_url)
    assert delay is not None and delay <= TIGHT
    # Without the channel this process keeps serving it (L1_MAX_TTL is 600 s): the
    # channel is what made the miss.
    assert tagged_miss_delay("redis", redis_url, coherence="none") is None


@pytest.mark.slow
def test_tag_invalidated_in_another_process_through_sqlite(tmp_path: Path) -> None:
    target = str(tmp_path / "tags.sqlite3")
    delay = tagged_miss_delay("sqlite", target)
    assert delay is not None and delay <= TIGHT
    assert tagged_miss_delay("sqlite", target, coherence="none") is None


# -- two aliases over the same levels, with their own options ------------------------


def _alias(channel: str, redis_url: str) -> dict[str, Any]:
    return {
        "BACKEND": "django_smartcache.backends.MultiLevelCache",
        "KEY_PREFIX": "aliases",
        "OPTIONS": {
            "L1_MAX_TTL": 600,
            "CHANNEL": channel,
            "LEVELS": _levels("redis", redis_url),
        },
    }


def alias_child(role: str, redis_url: str) -> None:
    """``web``: aliases ``a`` (channel chan-a) then ``b`` (chan-b), same levels; reads
    ``k`` through ``b`` before and after a ``worker`` (alias ``b`` only) rewrote it."""
    from django.conf import settings

    aliases = {"b": _alias("chan-b", redis_url)}
    if role == "web":
        aliases = {"a": _alias("chan-a", redis_url), **aliases}
    settings.configure(CACHES={"default": aliases["b"], **aliases})
    import django

    django.setup()
    from django.core.cache import caches

    if role == "worker":
        caches["b"].set("k", "new")
        return
    caches["a"].get("warm-up")  # alias a is built first in this process
    b = caches["b"]
    deadline = time.monotonic() + 10
    while not b._co.connected:
        assert time.monotonic() < deadline, "no subscription"
        time.sleep(0.01)
    b.set("k", "old")
    print(json.dumps({"channel": b._co.channel, "k": b.get("k")}), flush=True)
    sys.stdin.readline()  # the worker has written
    deadline = time.monotonic() + BOUND
    while b.get("k") != "new" and time.monotonic() < deadline:
        time.sleep(0.01)
    print(json.dumps({"k": b.get("k")}), flush=True)


@pytest.mark.slow
@pytest.mark.redis
def test_an_alias_listens_on_its_own_channel(redis_url: str) -> None:
    """Alias b built after alias a over the same levels used a's coherence object:
    listening on chan-a, it never heard b's invalidations and served its L1 copy for
    L1_MAX_TTL (600 s here)."""
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    command = [sys.executable, "-m", "tests.backends.test_coherence_processes", "alias"]
    web = subprocess.Popen(
        [*command, "web", redis_url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=root,
        env=env,
    )
    try:
        assert web.stdout is not None and web.stdin is not None
        first = json.loads(web.stdout.readline())
        assert first == {"channel": "chan-b", "k": "old"}
        _run_child("alias", "worker", redis_url)
        web.stdin.write("\n")
        web.stdin.flush()
        assert json.loads(web.stdout.readline()) == {"k": "new"}
    finally:
        web.kill()
        web.wait(10)


if __name__ == "__main__":
    if sys.argv[1] == "invalidate":
        invalidate_in_child(*sys.argv[2:5])
    elif sys.argv[1] == "alias":
        alias_child(*sys.argv[2:4])
    else:
        kind, target, wid, go, out = sys.argv[1:6]
        worker(kind, target, int(wid), go, out)
