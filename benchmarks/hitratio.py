"""Hit ratios of the eviction policies against Django's LocMemCache, theine and OPT.

``python -m benchmarks.hitratio [--quick] [--only NAME[,NAME...]] [--micro] [--relabel N]``
``python -m benchmarks.hitratio --trace PATH [--trace PATH...] [--format F] [--column N]
[--sep S] [--[no-]header] [--limit N]`` (only the given traces: any file
``benchmarks/traces.py`` reads, binary or text; the formats are listed in
docs/benchmarks.md)

Every cell replays one request stream at an equal budget: on a miss the key is stored
(the store loop: ``insert`` then ``evict`` while over budget). Columns:

* each registered policy (``django_smartcache.core.POLICIES``), simulated directly;
* ``store``: the default policy replayed through the real ``MemoryStore`` (must equal
  the simulated default column: proof the integration is right);
* ``locmem``: Django's real ``LocMemCache`` with ``MAX_ENTRIES`` = the budget and
  Django's default ``CULL_FREQUENCY`` = 3 (a full cache drops a third of its LRU end);
* ``theine``: the real ``theine.Cache`` (an adaptive W-TinyLFU: its window grows, e.g.
  to 114 of 264 entries on orm-busy, as ``core.debug_info()`` shows);
* ``OPT``: Belady's offline optimum (may decline to store);
* ``gap``: OPT minus the default policy; ``margin``: the default policy minus the best
  of lru / locmem / theine / s3fifo (the target is >= -0.5 in every row).

Sizes are 1%, 5% and 10% of the unique keys of each stream, except the loop, whose length
is 125% of the cache at each size. A byte-budget section then compares object and byte
hit ratios on values of varied sizes, and on every trace replayed that has sizes (a
``NAME.sizes.xz`` file: twitter52 once fetched, see ``python -m benchmarks
fetch-traces``; or an oracleGeneral trace's records) with its real sizes. Everything is seeded: two runs print the same table.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from django_smartcache.core import DEFAULT_POLICY, POLICIES, make_policy

from . import opt, traces, workloads

SIZES = (0.01, 0.05, 0.10)
ANCHORS = ("lru", "locmem", "theine", "s3fifo")


def replay(
    policy_name: str,
    keys: Sequence[int],
    capacity: int,
    weigh: Callable[[int], int] | None = None,
) -> tuple[int, int, int]:
    """Simulate a policy: (object hits, byte hits, bytes requested)."""
    policy = make_policy(policy_name, capacity)
    record_hit, record_miss = policy.record_hit, policy.record_miss
    insert, evict = policy.insert, policy.evict
    resident: dict[int, int] = {}
    used = hits = byte_hits = requested = 0
    for key in keys:
        weight = resident.get(key)
        if weight is not None:
            hits += 1
            byte_hits += weight
            requested += weight
            record_hit(key)
            continue
        record_miss(key)
        weight = weigh(key) if weigh is not None else 1
        requested += weight
        if weight > capacity:
            continue
        insert(key, weight)
        resident[key] = weight
        used += weight
        while used > capacity:
            used -= resident.pop(evict())
    return hits, byte_hits, requested


def replay_store(keys: Sequence[int], capacity: int, policy: str) -> int:
    """Replay through the real ``MemoryStore`` under an entry budget: object hits."""
    from django_smartcache.core.store import MemoryStore

    store = MemoryStore(max_entries=capacity, policy=policy)
    get, put = store.get, store.set
    hits = 0
    for key in keys:
        if get(key) is not None:
            hits += 1
        else:
            put(key, b"v")
    return hits


def replay_locmem(keys: Sequence[int], capacity: int) -> int:
    """Replay through Django's real ``LocMemCache`` (CULL_FREQUENCY=3, Django's default)."""
    from django.conf import settings

    if not settings.configured:
        settings.configure()
    from django.core.cache.backends.locmem import LocMemCache

    cache = LocMemCache(
        f"hitratio-{capacity}-{time.perf_counter_ns()}",
        {"TIMEOUT": None, "OPTIONS": {"MAX_ENTRIES": capacity, "CULL_FREQUENCY": 3}},
    )
    missing = object()
    get, put = cache.get, cache.set
    hits = 0
    for key in keys:
        if get(key, missing) is missing:
            put(key, 1)
        else:
            hits += 1
    cache.clear()
    return hits


def replay_theine(keys: Sequence[int], capacity: int) -> int:
    """Replay through ``theine.Cache`` (single-threaded mode; its lossy read buffer picks
    stripes with ``random``, seeded here for a reproducible run)."""
    from theine import Cache

    random.seed(0)
    cache = Cache(capacity, nolock=True)
    get, put = cache.get, cache.set
    hits = 0
    for key in keys:
        if get(key)[1]:
            hits += 1
        else:
            put(key, 1)
    cache.close()
    return hits


def _pct(hits: int, total: int) -> float:
    return 100.0 * hits / total if total else 0.0


Streams = list[tuple[str, list[int] | None]]


def _streams(quick: bool, only: set[str] | None) -> Streams:
    """(name, keys); ``None`` keys mean the loop, built per cache size."""
    requests, keys = (60_000, 6_000) if quick else (300_000, 20_000)
    out: list[tuple[str, list[int] | None]] = [
        (w.name, w.requests) for w in workloads.synthetic(requests, keys)
    ]
    out.append(("loop", None))
    for name in traces.available():
        limit = 300_000 if quick and name == "orm-busy" else None
        out.append((name, traces.load(name, limit)))
    if only:
        out = [(n, k) for n, k in out if n in only]
    return out


def relabelled(keys: Sequence[int], seed: int) -> list[int]:
    """``keys`` with every key renamed one-to-one by a seeded random draw: the same
    stream, but another sample of the default policy's duel, which samples keys by
    ``hash(key)`` (an int key is its own hash; a real backend's str keys hash anew in
    every process)."""
    unique = sorted(set(keys))
    labels = random.Random(seed).sample(range(2**61 - 1), len(unique))
    rename = dict(zip(unique, labels, strict=True))
    return [rename[k] for k in keys]


def entry_table(
    quick: bool,
    only: set[str] | None,
    store: bool,
    given: Streams | None = None,
    relabel: int = 0,
) -> list[dict[str, Any]]:
    """The table over ``given`` streams (``--trace``), or else the standard ones.

    ``relabel`` N > 0 adds, after each row, the default policy's hit ratio over N
    seeded relabellings of the keys (``relabelled``, seeds 0..N-1): mean and min-max.
    The table's own cells are unchanged."""
    policies = sorted(POLICIES)
    columns = [*policies, *(["store"] if store else []), "locmem", "theine", "OPT"]
    streams = given or _streams(quick, only)
    width = max([11, *(len(name) + 1 for name, _ in streams)])
    head = f"{'workload':<{width}}{'size':>5}{'cache':>7} " + "".join(
        f"{c:>9}" for c in columns
    )
    extra = f"  {DEFAULT_POLICY} over {relabel} relabellings" if relabel else ""
    print(f"{head}{'gap':>7}{'margin':>8}{extra}")
    rows = []
    loop_requests = 60_000 if quick else 300_000
    for name, stream in streams:
        unique = len(set(stream)) if stream is not None else 20_000
        for share in SIZES:
            capacity = max(1, round(share * unique))
            keys = stream
            if keys is None:
                keys = workloads.loop(loop_requests, max(2, capacity * 5 // 4))
            ratios: dict[str, float] = {}
            for policy in policies:
                ratios[policy] = _pct(replay(policy, keys, capacity)[0], len(keys))
            if store:
                ratios["store"] = _pct(
                    replay_store(keys, capacity, DEFAULT_POLICY), len(keys)
                )
            ratios["locmem"] = _pct(replay_locmem(keys, capacity), len(keys))
            ratios["theine"] = _pct(replay_theine(keys, capacity), len(keys))
            ratios["OPT"] = _pct(opt.opt_hits(keys, capacity), len(keys))
            ours = ratios[DEFAULT_POLICY]
            best = max(ratios[a] for a in ANCHORS if a in ratios)
            row = {"workload": name, "size": share, "capacity": capacity, **ratios}
            row["gap"] = ratios["OPT"] - ours
            row["margin"] = ours - best
            rows.append(row)
            cells = "".join(f"{ratios[c]:>9.1f}" for c in columns)
            if relabel:
                spread = [
                    _pct(
                        replay(DEFAULT_POLICY, relabelled(keys, seed), capacity)[0],
                        len(keys),
                    )
                    for seed in range(relabel)
                ]
                row["relabel"] = spread
                cells += (
                    f"{row['gap']:>7.1f}{row['margin']:>+8.1f}  mean "
                    f"{sum(spread) / relabel:.2f} ({min(spread):.2f}-{max(spread):.2f})"
                )
            else:
                cells += f"{row['gap']:>7.1f}{row['margin']:>+8.1f}"
            print(f"{name:<{width}}{share:>5.0%}{capacity:>7} {cells}", flush=True)
    return rows


def _byte_rows(
    stream: Sequence[int], weight_of: Callable[[int], int], total: int
) -> None:
    """Object and byte hit ratios at 1/5/10% of ``total`` bytes, one row per budget."""
    names = [DEFAULT_POLICY, *(p for p in ("lru", "s3fifo") if p != DEFAULT_POLICY)]
    print(
        f"{'budget':<16}" + "".join(f"{n + ' obj':>14}{n + ' byte':>14}" for n in names)
    )
    for share in SIZES:
        capacity = round(share * total)
        cells = []
        for name in names:
            hits, byte_hits, requested = replay(name, stream, capacity, weight_of)
            cells.append(
                f"{_pct(hits, len(stream)):>14.1f}{_pct(byte_hits, requested):>14.1f}"
            )
        label = f"{share:.0%} = {capacity / 2**20:.1f} MiB"
        print(f"{label:<16}" + "".join(cells), flush=True)


def byte_table(quick: bool) -> None:
    """Values of varied sizes under a byte budget: object and byte hit ratios."""
    requests, keys = (60_000, 6_000) if quick else (300_000, 20_000)
    stream = workloads.zipf(requests, keys, 0.9, seed=7)
    unique = sorted(set(stream))
    total = sum(workloads.weight_of(k) for k in unique)
    print(
        f"\nByte budget: Zipf 0.9, {requests:,} requests over {len(unique):,} keys whose "
        f"values weigh 64 B..64 KiB (log-uniform), {total / 2**20:.0f} MiB in all."
    )
    _byte_rows(stream, workloads.weight_of, total)


def trace_byte_table(name: str, keys: Sequence[int], sizes: Sequence[int]) -> None:
    """A trace with real request sizes (``NAME.sizes.xz``, oracleGeneral) under a byte
    budget.

    A key weighs the size of its first request (twitter52's sizes never change per key;
    the replay asks a key's weight when it misses, not a request's)."""
    if len(sizes) < len(keys):
        raise ValueError(f"{name}: {len(sizes)} sizes for {len(keys)} requests")
    weight: dict[int, int] = {}
    for key, size in zip(keys, sizes, strict=False):
        weight.setdefault(key, max(1, size))
    total = sum(weight.values())
    print(
        f"\nByte budget: {name}, {len(keys):,} requests over {len(weight):,} keys with "
        f"their real sizes ({min(weight.values()):,} B..{max(weight.values()):,} B), "
        f"{total / 2**20:.1f} MiB in all."
    )
    _byte_rows(keys, weight.__getitem__, total)


def micro(n: int = 200_000) -> None:
    """Time ``record_hit`` per policy on 10,000 resident str keys (no Django)."""
    keys = [f"views.decorators.cache.cache_page.{i}" for i in range(10_000)]
    order = [keys[i] for i in random.Random(0).choices(range(10_000), k=n)]
    print(f"{'policy':<10}{'record_hit (us)':>17}")
    for name in sorted(POLICIES):
        policy = make_policy(name, 10_000)
        for key in keys:
            policy.record_miss(key)
            policy.insert(key, 1)
        record_hit = policy.record_hit
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            for key in order:
                record_hit(key)
            best = min(best, time.perf_counter() - start)
        start = time.perf_counter()
        for _key in order:
            pass
        loop_cost = time.perf_counter() - start
        print(f"{name:<10}{(best - loop_cost) / n * 1e6:>17.3f}")


def _positive(text: str) -> int:
    """An argparse type: a whole number above zero."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return value


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks hitratio")
    parser.add_argument("--quick", action="store_true", help="short streams (seconds)")
    parser.add_argument("--only", help="comma-separated workload names")
    parser.add_argument("--micro", action="store_true", help="time record_hit only")
    parser.add_argument("--no-store", action="store_true", help="skip the store column")
    parser.add_argument("--no-bytes", action="store_true", help="skip the byte budget")
    parser.add_argument(
        "--trace",
        action="append",
        default=[],
        metavar="PATH",
        help="replay this trace file only (repeatable); see benchmarks/traces.py",
    )
    parser.add_argument(
        "--format",
        choices=traces.FORMATS,
        default="auto",
        help="format of each --trace (auto: by name and content; docs/benchmarks.md)",
    )
    parser.add_argument(
        "--column", type=int, default=None, help="key field of a text --trace (0)"
    )
    parser.add_argument(
        "--sep",
        default=None,
        help="field separator of a text --trace: one character, 'tab' or 'space' "
        "(default: chosen per file from its first lines)",
    )
    parser.add_argument(
        "--header",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="a text --trace's first line is (or is not) a header; default: detected",
    )
    parser.add_argument(
        "--limit",
        type=_positive,
        default=None,
        metavar="N",
        help="first N requests of each --trace (only those are read)",
    )
    parser.add_argument(
        "--relabel",
        type=_positive,
        default=None,
        metavar="N",
        help=f"also replay {DEFAULT_POLICY!r} over N seeded one-to-one relabellings of "
        "each stream's keys (other samples of its duel's hash); print mean and min-max",
    )
    args = parser.parse_args(argv)
    if args.micro:
        micro()
        return 0
    only = set(args.only.split(",")) if args.only else None
    given: Streams = []
    sized: dict[str, list[int]] = {}
    for path in args.trace:
        try:
            keys, sizes = traces.load_trace(
                path,
                column=args.column,
                limit=args.limit,
                format=args.format,
                sep=args.sep,
                header=args.header,
            )
        except (OSError, ValueError) as exc:
            parser.error(f"--trace {path}: {exc}")
        if not keys:
            parser.error(f"--trace {path}: no requests read")
        given.append((os.path.basename(path), keys))
        if sizes is not None:
            sized[os.path.basename(path)] = sizes
    started = time.perf_counter()
    print(
        f"Hit ratio (%) at an equal entry budget; default policy: {DEFAULT_POLICY!r}; "
        f"traces from {', '.join(args.trace) or ', '.join(map(str, traces.trace_dirs()))}"
        f"{'' if args.trace else ' (credits: benchmarks/data/README.md)'}."
    )
    rows = entry_table(
        args.quick,
        only,
        store=not args.no_store,
        given=given,
        relabel=args.relabel or 0,
    )
    if not args.no_bytes:
        if not only and not given:
            byte_table(args.quick)
        for name, stream in given:
            if stream is not None and name in sized:
                trace_byte_table(name, stream, sized[name])
        named = {row["workload"] for row in rows} & set(traces.available())
        for name in sorted(named if not given else ()):
            real = traces.load_sizes(name)
            if real is not None:
                trace_byte_table(name, traces.load(name), real)
    print(f"\n({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
