"""Seeded synthetic request streams for the hit-ratio benchmark.

Every generator returns a list of int keys (ints hash the same in every process, so the
runs are reproducible) and is a pure function of its arguments and ``seed``.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "Workload",
    "loop",
    "shifting",
    "stack_distance",
    "synthetic",
    "web_sessions",
    "weight_of",
    "zipf",
    "zipf_scan",
]


def _zipf_sampler(
    keys: int, alpha: float, rng: random.Random
) -> Callable[[int], list[int]]:
    """Draw ranks 0..keys-1 with P(rank r) ~ 1/(r+1)**alpha, mapped to shuffled key ids."""
    cum = list(itertools.accumulate(1.0 / (r + 1) ** alpha for r in range(keys)))
    ids = list(range(keys))
    rng.shuffle(ids)  # popularity must not follow key order (or hash order)

    def draw(n: int) -> list[int]:
        return [ids[r] for r in rng.choices(range(keys), cum_weights=cum, k=n)]

    return draw


def zipf(requests: int, keys: int, alpha: float, seed: int = 1) -> list[int]:
    """Independent requests with Zipf(``alpha``) popularity over ``keys`` keys."""
    return _zipf_sampler(keys, alpha, random.Random(seed))(requests)


def zipf_scan(
    requests: int,
    keys: int,
    alpha: float = 0.9,
    *,
    every: int = 10_000,
    scan: int | None = None,
    seed: int = 2,
) -> list[int]:
    """Zipf traffic cut every ``every`` requests by a sequential scan of never-seen keys.

    A scan (a report, a crawler, a cache warm-up loop) is as long as a quarter of the
    key space by default: a recency-only cache is flushed by each one.
    """
    rng = random.Random(seed)
    draw = _zipf_sampler(keys, alpha, rng)
    scan = keys // 4 if scan is None else scan
    out: list[int] = []
    next_cold = keys
    while len(out) < requests:
        out.extend(draw(every))
        out.extend(range(next_cold, next_cold + scan))
        next_cold += scan
    return out[:requests]


def loop(requests: int, length: int, *, noise: float = 0.0, seed: int = 3) -> list[int]:
    """Keys 0..length-1 read in order, again and again (a batch job's loop).

    With ``noise``, that share of the requests are uniformly random keys of the loop.
    """
    rng = random.Random(seed)
    out = [i % length for i in range(requests)]
    if noise:
        for i in range(requests):
            if rng.random() < noise:
                out[i] = rng.randrange(length)
    return out


def shifting(
    requests: int,
    keys: int,
    alpha: float = 0.9,
    *,
    phases: int = 5,
    overlap: float = 0.5,
    seed: int = 4,
) -> list[int]:
    """Zipf traffic whose hot set moves: each phase keeps ``overlap`` of the previous keys."""
    rng = random.Random(seed)
    draw = _zipf_sampler(keys, alpha, rng)
    per_phase = -(-requests // phases)
    shift = int(keys * (1 - overlap))
    out: list[int] = []
    for phase in range(phases):
        offset = phase * shift
        out.extend(k + offset for k in draw(per_phase))
    return out[:requests]


def stack_distance(
    requests: int, mean: float, *, p_new: float = 0.05, seed: int = 13
) -> list[int]:
    """An LRU stack-distance model: each request reads the key at a random depth of the
    LRU stack (exponential, of this ``mean``), or a new key with ``p_new``. Recency is
    all there is to learn: LRU is the best online policy on it."""
    rng = random.Random(seed)
    stack: list[int] = []  # most recent first
    out: list[int] = []
    for _ in range(requests):
        depth = len(stack)
        if stack and rng.random() >= p_new:
            depth = int(rng.expovariate(1 / mean))
        # (a new key: len(out) + requests, never a key seen before)
        key = stack.pop(depth) if depth < len(stack) else len(out) + requests
        stack.insert(0, key)
        out.append(key)
    return out


def web_sessions(
    requests: int,
    *,
    active: int = 200,
    keys_per_session: tuple[int, int] = (1, 4),
    reads: tuple[int, int] = (3, 15),
    shared: float = 0.0,
    seed: int = 11,
) -> list[int]:
    """Web sessions: ``active`` sessions at a time, each of a few keys read 3-15 times
    while it lives (a few thousand requests), then never; with ``shared``, that share of
    the requests go to 2,000 shared pages of Zipf(0.9) popularity."""
    rng = random.Random(seed)
    draw = _zipf_sampler(2_000, 0.9, rng)
    next_key = 2_000

    def session() -> list[list[int]]:
        nonlocal next_key
        size = rng.randint(*keys_per_session)
        keys = [[next_key + i, rng.randint(*reads)] for i in range(size)]
        next_key += size
        return keys

    sessions = [session() for _ in range(active)]
    out: list[int] = []
    while len(out) < requests:
        if shared and rng.random() < shared:
            out.append(draw(1)[0])
            continue
        index = rng.randrange(active)
        keys = sessions[index]
        pick = rng.randrange(len(keys))
        out.append(keys[pick][0])
        keys[pick][1] -= 1
        if not keys[pick][1]:
            del keys[pick]
            if not keys:
                sessions[index] = session()
    return out


def weight_of(key: int, *, seed: int = 5) -> int:
    """A per-key value size in bytes, log-uniform between 64 B and 64 KiB (deterministic)."""
    rng = random.Random(key * 1_000_003 + seed)
    return int(64 * 2 ** (rng.random() * 10))


@dataclass(frozen=True)
class Workload:
    """A named request stream; ``loop_factor`` sizes loops relative to the cache."""

    name: str
    requests: list[int]
    note: str = ""


def synthetic(requests: int, keys: int) -> list[Workload]:
    """The synthetic workloads whose size does not depend on the cache size."""
    return [
        Workload("zipf-0.8", zipf(requests, keys, 0.8), "Zipf alpha=0.8"),
        Workload("zipf-0.99", zipf(requests, keys, 0.99), "Zipf alpha=0.99"),
        Workload(
            "zipf+scan",
            zipf_scan(requests, keys, 0.9, every=max(1000, requests // 20)),
            "Zipf 0.9, a scan of keys/4 new keys every requests/20",
        ),
        Workload(
            "shifting",
            shifting(requests, keys, 0.9),
            "Zipf 0.9 whose hot set moves by half every requests/5",
        ),
    ]
