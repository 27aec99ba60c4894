"""Latency through the Django cache API: SmartCache vs LocMemCache, measured in the same run.

``python -m benchmarks latency [--quick] [--sizes 1000,100000,1000000] [--policy NAME]``

Every figure is the median over interleaved rounds of ns per operation, so both
backends share the machine's state; the ratio column (SmartCache / LocMemCache) is
the result, absolute numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
from collections.abc import Callable
from typing import Any

from ._util import make_cache, setup_django, table, time_calls

SMART = "django_smartcache.backends.SmartCache"
LOCMEM = "django.core.cache.backends.locmem.LocMemCache"

#: Targets from the issue: SmartCache / LocMemCache must not exceed these.
TARGETS = {
    "get (hit)": 0.6,
    "set 100 B": 1.0,
    "set 10 KB": 1.0,
    "get_many(100) 100 B": 0.5,
    "get_many(100) 10 KB": 0.5,
    "set_many(100) 100 B": 0.5,
    "set_many(100) 10 KB": 0.5,
    "zipf 90/10 mixed": 0.8,
}


def _caches(policy: str, tag: str, max_entries: int) -> dict[str, Any]:
    return {
        "SmartCache": make_cache(
            SMART,
            f"lat-{tag}",
            MAX_MEMORY="8GB",
            MAX_ENTRIES=max_entries,
            POLICY=policy,
        ),
        "LocMemCache": make_cache(LOCMEM, f"lat-{tag}", MAX_ENTRIES=max_entries),
    }


def operations(cache: Any) -> dict[str, Callable[[int], None]]:
    """Closures running ``calls`` operations each; keys and values are prepared outside.

    Each row reads or writes values of the size in its name: the 100 B rows use
    ``keys`` and the 10 KB rows ``large_keys``, each preloaded with its own size, so
    a row never times what the row before it left behind.
    """
    keys = [f"key:{i}" for i in range(1000)]
    large_keys = [f"large:{i}" for i in range(1000)]
    small, large = os.urandom(100), os.urandom(10 * 1024)
    for k in keys:
        cache.set(k, small)
    for k in large_keys:
        cache.set(k, large)
    batches = [keys[i : i + 100] for i in range(0, 1000, 100)]
    large_batches = [large_keys[i : i + 100] for i in range(0, 1000, 100)]
    dicts = [dict.fromkeys(b, small) for b in batches]
    large_dicts = [dict.fromkeys(b, large) for b in large_batches]
    # Many counters, not one: the default policy samples keys by hash (its duel), and
    # Python seeds str hashes per process, so one key was sampled in some runs and not
    # in others (incr's ratio went from 0.82 to 1.2 between runs). Across 64 keys the
    # sampled share is about the same in every process.
    counters = [f"counter:{i}" for i in range(64)]
    for k in counters:
        cache.set(k, 0)
    get, set_ = cache.get, cache.set

    def get_hit(calls: int) -> None:
        for i in range(calls):
            get(keys[i % 1000])

    def get_miss(calls: int) -> None:
        for i in range(calls):
            get(f"absent:{i % 1000}")

    def set_small(calls: int) -> None:
        for i in range(calls):
            set_(keys[i % 1000], small)

    def set_large(calls: int) -> None:
        for i in range(calls):
            set_(large_keys[i % 1000], large)

    def get_many_of(batches: list[list[str]]) -> Callable[[int], None]:
        def get_many(calls: int) -> None:
            gm = cache.get_many
            for i in range(calls):
                gm(batches[i % 10])

        return get_many

    def set_many_of(dicts: list[dict[str, bytes]]) -> Callable[[int], None]:
        def set_many(calls: int) -> None:
            sm = cache.set_many
            for i in range(calls):
                sm(dicts[i % 10])

        return set_many

    def incr(calls: int) -> None:
        inc = cache.incr
        for i in range(calls):
            inc(counters[i & 63])

    return {
        "get (hit)": get_hit,
        "get (miss)": get_miss,
        "set 100 B": set_small,
        "set 10 KB": set_large,
        "get_many(100) 100 B": get_many_of(batches),
        "get_many(100) 10 KB": get_many_of(large_batches),
        "set_many(100) 100 B": set_many_of(dicts),
        "set_many(100) 10 KB": set_many_of(large_dicts),
        "incr": incr,
    }


#: Requests of the mixed stream replayed untimed before its rounds: both caches are full
#: from request 9,293 on (4,000 entries, empty at first), so every timed round, quick
#: or not, runs at the full cache: reads miss, and inserting a missed key evicts.
MIXED_FILL = 10_000


class MixedStream:
    """The "zipf 90/10 mixed" workload: ``stream``'s requests in order, a read that
    misses followed by a set of the key (read-through), a write a set.

    The cursor carries on across calls (wrapping at the end of the stream), so rounds
    go on through the stream instead of replaying its first requests: 20,000 keys over
    a 4,000-entry cache miss and evict. ``misses`` counts the reads that missed.
    """

    def __init__(self, cache: Any, stream: list[tuple[bool, str]], value: Any) -> None:
        self._get, self._set = cache.get, cache.set
        self._stream, self._value = stream, value
        self.pos = 0
        self.misses = 0

    def __call__(self, calls: int) -> None:
        stream, n, get, set_, value = (
            self._stream,
            len(self._stream),
            self._get,
            self._set,
            self._value,
        )
        pos, misses = self.pos, 0
        for _ in range(calls):
            write, key = stream[pos]
            pos += 1
            if pos == n:
                pos = 0
            if write:
                set_(key, value)
            elif get(key) is None:
                misses += 1
                set_(key, value)
        self.pos = pos
        self.misses += misses


def eviction_counter(cache: Any) -> Callable[[], int]:
    """A reader of how many entries ``cache`` has evicted for room so far.

    SmartCache counts them (``stats()["evictions_capacity"]``); LocMemCache does not, so
    its ``_cull`` (called on a set into a full cache, once per ``MAX_ENTRIES // 3`` sets)
    is wrapped to count the entries each cull drops.
    """
    if hasattr(cache, "stats"):
        return lambda: int(cache.stats()["evictions_capacity"])
    culled = [0]
    cull = cache._cull

    def counting_cull() -> None:
        before = len(cache._cache)
        cull()
        culled[0] += before - len(cache._cache)

    cache._cull = counting_cull
    return lambda: culled[0]


def zipf_stream(n: int, keys: int, seed: int = 7) -> list[tuple[bool, str]]:
    """90% reads / 10% writes over Zipf(0.9)-popular keys (the hit-ratio suite's sampler)."""
    from .workloads import zipf

    rng = random.Random(seed)
    return [(rng.random() < 0.1, f"z:{k}") for k in zipf(n, keys, 0.9, seed=seed)]


def api_rounds(quick: bool) -> tuple[int, int]:
    """Calls per timed round (batch rows: a 50th, at least 20) and rounds of api_table."""
    return (300, 5) if quick else (2000, 15)


def api_table(policy: str, quick: bool) -> list[list[Any]]:
    caches = _caches(policy, "api", max_entries=4000)
    per_cache: dict[str, dict[str, Callable[[int], None]]] = {
        name: operations(c) for name, c in caches.items()
    }
    # The mixed row has caches of its own: it starts empty, whatever the rows
    # before it stored.
    stream = zipf_stream(50_000, 20_000)
    mixed_caches = _caches(policy, "api-mixed", max_entries=4000)
    evicted = {name: eviction_counter(c) for name, c in mixed_caches.items()}
    for name, c in mixed_caches.items():
        per_cache[name]["zipf 90/10 mixed"] = MixedStream(c, stream, os.urandom(100))
    rows = []
    calls, rounds = api_rounds(quick)
    for op in per_cache["SmartCache"]:
        batch = op.startswith(("get_many", "set_many"))
        fns = {name: ops[op] for name, ops in per_cache.items()}
        counted: dict[str, tuple[int, int]] = {}
        mixed = {n: f for n, f in fns.items() if isinstance(f, MixedStream)}
        for fn in mixed.values():
            fn(MIXED_FILL)

        def start_counting(
            mixed: dict[str, MixedStream] = mixed,
            counted: dict[str, tuple[int, int]] = counted,
        ) -> None:
            for name, fn in mixed.items():
                counted[name] = (fn.misses, evicted[name]())

        result = time_calls(
            fns,
            calls=max(20, calls // 50) if batch else calls,
            rounds=rounds,
            before_rounds=start_counting,
        )
        # Read misses / evictions during the timed rounds (the mixed row only).
        seen = {
            name: f"{fn.misses - counted[name][0]:,} / "
            f"{evicted[name]() - counted[name][1]:,}"
            for name, fn in mixed.items()
        }
        ratio = result["SmartCache"] / result["LocMemCache"]
        target = TARGETS.get(op)
        verdict = "" if target is None else ("ok" if ratio <= target else "MISSED")
        rows.append(
            [
                op,
                result["SmartCache"],
                result["LocMemCache"],
                ratio,
                target or "",
                verdict,
                seen.get("SmartCache", ""),
                seen.get("LocMemCache", ""),
            ]
        )
    return rows


def dict_baseline() -> float:
    d = {f"key:{i}": i for i in range(1000)}
    keys = list(d)
    get = d.get

    def run(calls: int) -> None:
        for i in range(calls):
            get(keys[i % 1000])

    return time_calls({"dict": run}, calls=20_000, rounds=9)["dict"]


class FloorCache:
    """The least work a cache behind Django's API can do: the reference for growth.

    Keys are made and checked by SmartCache's own key path, values pickled as every
    backend pickles them; the store is one ``OrderedDict``: a get-hit is one lookup and
    one ``pickle.loads``, a set one insert and, when full, one ``popitem`` of the oldest
    entry (FIFO). No lock, no expiry, no statistics, no policy. Whatever this grows
    from the smallest to the largest size is what memory alone adds.
    """

    def __init__(self, keyed: Any, max_entries: int) -> None:
        import pickle
        from collections import OrderedDict

        self._key = keyed._key  # SmartCache's key making and validation
        self._data: OrderedDict[str, bytes] = OrderedDict()
        self._max = max_entries
        self._loads, self._dumps = pickle.loads, pickle.dumps

    def get(self, key: Any, default: Any = None) -> Any:
        payload = self._data.get(self._key(key, None))
        return default if payload is None else self._loads(payload)

    def set(self, key: Any, value: Any) -> None:
        data = self._data
        data[self._key(key, None)] = self._dumps(value, 5)
        if len(data) > self._max:
            data.popitem(last=False)

    def set_many(self, mapping: dict[Any, Any]) -> None:
        for key, value in mapping.items():
            self.set(key, value)

    def clear(self) -> None:
        self._data.clear()


def whole_culls(size: int, calls: int) -> int:
    """Sets per timed round for set-with-eviction: whole LocMemCache cull cycles.

    Full at ``size`` entries, LocMemCache evicts nothing on most sets and a third of its
    entries at once on one set in every ``size // CULL_FREQUENCY`` (3). A round shorter
    than that cycle times plain inserts at 10^6 entries (the median round holds no cull)
    but inserts plus culls at 10^3; any run of whole cycles holds exactly as many culls
    as cycles, so every size is timed at the same amortized eviction rate. SmartCache
    and the floor evict one entry per set: any round length times them the same.
    """
    cycle = max(1, size // 3)
    return cycle * -(-calls // cycle)


def scaling_table(policy: str, sizes: list[int], quick: bool) -> list[list[Any]]:
    """get-hit and set-with-eviction at each size, every cache full at ``size`` entries."""
    rows = []
    value = os.urandom(100)
    calls, rounds = (500, 5) if quick else (3000, 11)
    for size in sizes:
        caches = _caches(policy, f"scale-{size}", max_entries=size)
        caches["floor"] = FloorCache(caches["SmartCache"], size)
        fns: dict[str, dict[str, Callable[[int], None]]] = {}
        rng = random.Random(size)
        probe = [f"s:{rng.randrange(size)}" for _ in range(10_000)]
        for name, cache in caches.items():
            chunk = 10_000
            for start in range(0, size, chunk):
                cache.set_many(
                    {f"s:{i}": value for i in range(start, min(size, start + chunk))}
                )
            fresh = iter(range(size, 10**9))

            def get_hit(calls: int, get: Any = cache.get, probe: Any = probe) -> None:
                for i in range(calls):
                    get(probe[i % 10_000])

            def set_evict(
                calls: int, set_: Any = cache.set, fresh: Any = fresh
            ) -> None:
                for _ in range(calls):
                    set_(f"s:{next(fresh)}", value)

            fns[name] = {"get (hit)": get_hit, "set (evicting)": set_evict}
        for op, op_calls in (
            ("get (hit)", calls),
            ("set (evicting)", whole_culls(size, calls)),
        ):
            res = time_calls(
                {n: f[op] for n, f in fns.items()}, calls=op_calls, rounds=rounds
            )
            rows.append([op, size, res["SmartCache"], res["LocMemCache"], res["floor"]])
        for cache in caches.values():
            cache.clear()
    return rows


def growth(rows: list[list[Any]], op: str) -> tuple[float, float, float]:
    """Time at the largest size / time at the smallest: SmartCache, LocMem, floor."""
    mine = [r for r in rows if r[0] == op]
    return mine[-1][2] / mine[0][2], mine[-1][3] / mine[0][3], mine[-1][4] / mine[0][4]


def added_ns(rows: list[list[Any]], op: str) -> tuple[float, float, float]:
    """ns per call added from the smallest to the largest size (what memory adds)."""
    mine = [r for r in rows if r[0] == op]
    return tuple(mine[-1][i] - mine[0][i] for i in (2, 3, 4))  # type: ignore[return-value]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks latency", description=__doc__
    )
    parser.add_argument("--quick", action="store_true", help="fewer rounds and sizes")
    parser.add_argument(
        "--sizes", default=None, help="entry counts, e.g. 1000,100000,1000000"
    )
    parser.add_argument(
        "--policy", default=None, help="SmartCache POLICY (default: the default)"
    )
    parser.add_argument("--skip-scaling", action="store_true")
    args = parser.parse_args(argv)

    setup_django({"default": {"BACKEND": LOCMEM}})
    from django_smartcache.core.policy import DEFAULT_POLICY

    policy = args.policy or DEFAULT_POLICY
    sizes = (
        [int(float(s)) for s in args.sizes.split(",")]
        if args.sizes
        else ([1000, 100_000] if args.quick else [1000, 100_000, 1_000_000])
    )
    print(
        f"SmartCache POLICY={policy!r}; median ns per operation through the Django API"
    )
    print(f"plain dict.get in the same loop: {dict_baseline():.0f} ns\n")
    rows = api_table(policy, args.quick)
    print(
        table(
            [
                "operation",
                "SmartCache ns",
                "LocMemCache ns",
                "ratio",
                "target",
                "",
                "SmartCache misses / evictions",
                "LocMemCache misses / evictions",
            ],
            rows,
        )
    )
    calls, rounds = api_rounds(args.quick)
    print(
        f"(misses / evictions: read misses and entries evicted for room during the "
        f"{rounds} timed rounds of {calls:,} requests; zipf 90/10 mixed only. Its "
        f"stream: 50,000 requests over 20,000 keys, 4,000-entry caches, the first "
        f"{MIXED_FILL:,} replayed untimed, then one cursor per cache carries on.)"
    )
    missed = [r[0] for r in rows if r[5] == "MISSED"]
    if not args.skip_scaling:
        srows = scaling_table(policy, sizes, args.quick)
        print()
        print(
            table(
                ["operation", "entries", "SmartCache ns", "LocMemCache ns", "floor ns"],
                srows,
            )
        )
        print("(floor: dict + pickle behind SmartCache's key path, see FloorCache)")
        for op in ("get (hit)", "set (evicting)") if len(sizes) > 1 else ():
            smart_g, loc_g, floor_g = growth(srows, op)
            smart_add, loc_add, floor_add = added_ns(srows, op)
            ok = smart_g <= loc_g
            print(
                f"{op}: growth {sizes[0]:,} -> {sizes[-1]:,} entries: SmartCache x{smart_g:.2f}, "
                f"LocMemCache x{loc_g:.2f} ({'ok' if ok else 'MISSED'}), floor x{floor_g:.2f}; "
                f"ns added per call: SmartCache {smart_add:+,.0f}, "
                f"LocMemCache {loc_add:+,.0f}, floor {floor_add:+,.0f}"
            )
            if not ok:
                missed.append(f"{op} growth")
    if missed:
        print("\nmissed targets:", ", ".join(missed))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
