"""An adaptive policy: S3-FIFO, two W-TinyLFUs and LRU duel on a sample of the keys.

No single policy wins everywhere: S3-FIFO is best on bursty web/ORM traffic, W-TinyLFU
with a 1% window on loops and stable popularity, W-TinyLFU with Caffeine's climbing
window on recency-biased traffic where frequency still pays, LRU where recency is all
there is (LRU stack models, web sessions re-read at gaps near the cache's turnover;
``docs/eviction.md`` has the measurements). LRU goes live only on a lead held for
four times ``hold`` checks (``_HOLD_FACTOR``), never on the fast path
(``_FAST_PATH``). This policy serves requests with one of them (the *live* policy)
and replays a spatial sample of the requests (SHARDS, Waldspurger et al., FAST 2015:
the keys whose hash falls in a ``1/rate`` slice) through a small *shadow* cache of each
candidate, sized ``capacity / rate`` and holding keys only. Every period the shadows'
hits are added to an exponentially decayed score; when the best score beats the live
one's by a margin, by more than chance explains (``_decide``), for long enough, the live
policy is rebuilt as the winner from the resident keys (``adopt``), least valuable first.

Costs: a sampled request is replayed by every shadow; the rate grows with the resident
keys (a power of two, shadows of at least ``SHADOW_KEYS`` keys), so on a large cache
only a few requests in a hundred are sampled. A switch costs O(resident keys) and
happens at most once per ``SURE_CHECKS`` checks of ``PERIOD / CHECKS`` sampled requests
(at least as many requests as resident keys), so it is O(1) amortized per request.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

from .policy import LRUPolicy
from .s3fifo import MAX_FREQ, AdaptiveS3FIFOPolicy, S3FIFOPolicy
from .sketch import FrequencySketch
from .tinylfu import MIN_SAMPLE_KEYS, SAMPLE_FACTOR, TinyLFUPolicy

__all__ = ["DuelPolicy"]

#: A shadow is sized for at least this many keys; the sampling rate doubles as the
#: resident keys reach twice that many per sampled slice.
SHADOW_KEYS = 512
#: Below ``MIN_RATE x SHADOW_KEYS`` resident keys, sample one key in up to this many
#: (a power of two) anyway: a sampled request costs every shadow's bookkeeping (about
#: 1 us for a hit, 3 for a miss), which every request of a small cache would pay...
MIN_RATE = 8
#: ...as long as the shadows still hold this many keys (tinier ones misjudge).
MIN_SHADOW_KEYS = 64
#: A period never lasts fewer sampled requests than this (see ``_resample``).
MIN_PERIOD = 256
#: A decision period lasts this many sampled requests...
PERIOD = 2048
#: ...and is judged this many times: a clear lead need not wait for the period's end.
CHECKS = 4
#: Each period the old score is multiplied by this (spread evenly over its checks).
DECAY = 0.75
#: The challenger must score this much more than the live policy (relative), by more
#: than this many standard deviations of chance (see ``_decide``)...
MARGIN = 0.01
CONFIDENCE = 1.0
#: ...at this many checks in a row before the live policy is rebuilt.
HOLD_CHECKS = 3 * CHECKS
#: Each switch doubles the checks a lead must last, up to this many...
MAX_HOLD_CHECKS = 48 * CHECKS
#: ...and this many checks without a lead halve it again.
CALM_CHECKS = 16 * CHECKS
#: A lead of this many standard deviations at this many checks in a row switches at
#: once: a big difference (a loop, a scan-heavy phase) is clear long before the hold.
SURE = 4.0
SURE_CHECKS = 2
#: The S3-FIFO candidate's small queue at first (the paper's 10%); it then follows its
#: ghosts' regrets (``AdaptiveS3FIFOPolicy``).
RECENCY_SMALL_SHARE = 0.10

# Golden-ratio multiplier: spreads ``hash()`` (the identity for small ints) before sampling.
_MIX = 0x9E3779B97F4A7C15
_MASK64 = (1 << 64) - 1
#: The miss sketch is halved after this many misses at least (``record_miss``).
_MIN_MISS_PERIOD = SAMPLE_FACTOR * MIN_SAMPLE_KEYS
#: Equal to no key: ``_missed`` before any miss at the current rate.
_NO_KEY = object()


class _Shadow:
    """A keys-only cache replaying the sampled requests through one candidate policy."""

    __slots__ = ("capacity", "factory", "hits", "policy", "resident", "score", "used")

    def __init__(self, factory: Callable[[int], Any], capacity: int) -> None:
        self.factory = factory
        self.capacity = capacity
        self.policy = factory(capacity)
        self.resident: dict[Hashable, int] = {}
        self.used = 0
        self.hits = 0
        self.score = 0.0

    def access(self, key: Hashable, weight: int | None) -> bool:
        """A sampled read: whether the shadow held ``key``. ``weight`` is given when the
        live cache holds the key, and a shadow that missed it then stores it."""
        if key in self.resident:
            self.hits += 1
            self.policy.record_hit(key)
            return True
        self.policy.record_miss(key)
        if weight is not None:
            self.store(key, weight)
        return False

    def store(self, key: Hashable, weight: int) -> None:
        """A sampled write: insert (or update) and evict back within the shadow's budget."""
        resident, policy = self.resident, self.policy
        old = resident.get(key)
        if old is not None and weight > self.capacity:
            # Rewritten heavier than the whole shadow: it leaves, as a new key that
            # heavy is never stored (updated, every other key was evicted before it).
            self.remove(key)
            return
        if old is not None:
            policy.update(key, weight)
            self.used += weight - old
            resident[key] = weight
        elif weight <= self.capacity:
            policy.insert(key, weight)
            resident[key] = weight
            self.used += weight
        while self.used > self.capacity:
            self.used -= resident.pop(policy.evict())

    def remove(self, key: Hashable) -> None:
        weight = self.resident.pop(key, None)
        if weight is not None:
            self.policy.remove(key)
            self.used -= weight

    def resize(self, capacity: int) -> None:
        self.capacity = capacity
        self.policy.resize(capacity)
        while self.used > capacity:
            self.used -= self.resident.pop(self.policy.evict())


class _LRUShadow(_Shadow):
    """LRU's shadow: the policy's order is the resident dict (one dict, not two), and
    its bookkeeping is inlined (a sampled request pays for every shadow)."""

    __slots__ = ()

    def __init__(self, factory: Callable[[int], Any], capacity: int) -> None:
        super().__init__(factory, capacity)
        self.resident = self.policy._order

    def access(self, key: Hashable, weight: int | None) -> bool:
        resident: Any = self.resident
        if key in resident:
            self.hits += 1
            resident.move_to_end(key)
            return True
        if weight is not None:
            self.store(key, weight)
        return False

    def store(self, key: Hashable, weight: int) -> None:
        resident: Any = self.resident
        old = resident.get(key)
        if old is not None and weight > self.capacity:
            self.remove(key)  # (as _Shadow.store)
            return
        if old is not None:
            resident[key] = weight
            resident.move_to_end(key)
            self.used += weight - old
        elif weight <= self.capacity:
            resident[key] = weight
            self.used += weight
        while self.used > self.capacity:
            self.used -= resident.popitem(last=False)[1]

    def remove(self, key: Hashable) -> None:
        weight = self.resident.pop(key, None)
        if weight is not None:
            self.used -= weight

    def resize(self, capacity: int) -> None:
        self.capacity = self.policy.capacity = capacity
        resident: Any = self.resident
        while self.used > capacity:
            self.used -= resident.popitem(last=False)[1]


def _recency_s3fifo(capacity: int) -> AdaptiveS3FIFOPolicy:
    """S3-FIFO sizing its small queue from its ghosts: the recency side of the duel."""
    return AdaptiveS3FIFOPolicy(capacity, small_share=RECENCY_SMALL_SHARE)


def _fixed_tinylfu(capacity: int) -> TinyLFUPolicy:
    """W-TinyLFU with Caffeine's initial 1% window, kept: loops and stable popularity."""
    return TinyLFUPolicy(capacity, adaptive=False)


def _climbing_tinylfu(capacity: int) -> TinyLFUPolicy:
    """W-TinyLFU whose window climbs (Caffeine's): recency-biased traffic where a 1%
    window drops what a larger one keeps (Twitter's cluster 52 at 1%). Not instead of
    the fixed one: the climber random-walks on loops, which the fixed window holds."""
    return TinyLFUPolicy(capacity, adaptive=True)


#: The candidates, in the order they are tried; the first starts live.
CANDIDATES: tuple[tuple[str, Callable[[int], Any]], ...] = (
    ("s3fifo", _recency_s3fifo),
    ("tinylfu", _fixed_tinylfu),
    ("tinylfu-climbing", _climbing_tinylfu),
    ("lru", LRUPolicy),
)
#: The pairs of candidates: the deviation test counts the splits of each pair.
_PAIRS = tuple(
    (first, second)
    for first in range(len(CANDIDATES))
    for second in range(first + 1, len(CANDIDATES))
)
assert len(CANDIDATES) == 4  # (``_replay_hit`` is written out for four...)
assert CANDIDATES[3][1] is LRUPolicy  # (...and moves the fourth's key as LRU's)
#: Whether a candidate may go live on the fast path (``SURE``). LRU may not: it goes
#: live only on a lead held for ``_HOLD_FACTOR`` x ``hold`` checks. Its shadow and
#: S3-FIFO's seldom split, so the burst LRU wins after a change of hot set (its newest
#: keys are the hot ones before S3-FIFO's main has turned) passes four deviations
#: within two checks, then S3-FIFO wins the steady state while the decayed scores
#: still favour LRU: on the shifting hot set at 10% the fast path switched to LRU
#: 26,000 requests into a phase and stayed (69.89 -> 69.55).
_FAST_PATH = tuple(factory is not LRUPolicy for _, factory in CANDIDATES)
_PAIR_INDEX = {pair: index for index, pair in enumerate(_PAIRS)}
#: Every shadow held the key (``_replayed``'s bits)...
_ALL_HELD = (1 << len(CANDIDATES)) - 1
#: ...and, for each pattern of their answers, the pairs it splits (one lookup, not a
#: loop over the six pairs per sampled request).
_SPLITS = tuple(
    tuple(
        pair for pair, (a, b) in enumerate(_PAIRS) if (held >> a & 1) != (held >> b & 1)
    )
    for held in range(1 << len(CANDIDATES))
)
#: How many times ``hold`` a candidate's lead must last: LRU's four times (twelve periods
#: at first, three times the scores' memory), so that bursts of recency the scores still
#: remember are not taken for a lasting lead. Twice cost orm-busy at 1% 0.09 point on
#: average over six relabellings of its keys (-0.11 on the benchmark's), three times
#: 0.13 on the benchmark's; four times nothing, and kept most of the gain on streams
#: where LRU leads (``docs/eviction.md``).
_HOLD_FACTOR = tuple(4 if factory is LRUPolicy else 1 for _, factory in CANDIDATES)


class DuelPolicy:
    """Serve with the candidate whose sampled shadow has been hitting most lately."""

    def __init__(
        self,
        capacity: int,
        *,
        period: int = PERIOD,
        shadow_keys: int = SHADOW_KEYS,
        min_rate: int = MIN_RATE,
        confidence: float = CONFIDENCE,
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        if min_rate < 1 or min_rate & (min_rate - 1):
            raise ValueError("min_rate must be a power of two")
        self.capacity = capacity
        self.period = period
        self.shadow_keys = shadow_keys
        self.live_index = 0
        #: The store's entries and counter slot once attached (see ``attach``).
        self._attached: tuple[dict[Hashable, list[Any]], int] | None = None
        self._go_live(CANDIDATES[0][1](capacity), 0)
        #: While S3-FIFO or LRU is live, misses are counted here, so a switch to
        #: W-TinyLFU starts with the frequencies of the keys that are not resident.
        #: (Their own ``record_miss`` does nothing: it is not called while this is set.)
        self._miss_sketch: FrequencySketch | None = FrequencySketch(MIN_SAMPLE_KEYS)
        self._miss_count = 0
        #: Checks a challenger must lead before it goes live (see ``MAX_HOLD_CHECKS``).
        self.hold = HOLD_CHECKS
        self._confidence2 = confidence * confidence
        self._decay = DECAY ** (1 / CHECKS)
        #: Per pair of candidates (``_PAIRS``), the decayed variance of a lead under
        #: "equally good", and this check's splits.
        self._noise = [0.0] * len(_PAIRS)
        self._split = [0] * len(_PAIRS)
        #: The candidate whose lead the checks in a row (``_lead``) are counting, and
        #: the one whose lead of ``SURE`` deviations ``_sure`` counts (the best that
        #: may take the fast path, ``_FAST_PATH``).
        self._challenger = 0
        self._quick = 0
        #: The last ``SURE_CHECKS`` checks' own hits per candidate and splits per pair,
        #: newest last: the fast path's fresh evidence (``_decide``).
        self._recent: list[tuple[list[int], list[int]]] = []
        #: The shadow whose window the live W-TinyLFU follows (None while S3-FIFO is).
        self._leader: TinyLFUPolicy | None = None
        self._sure = 0
        self._calm = 0
        self._keys = 0
        #: How many times the live policy was rebuilt as another candidate.
        self.switches = 0
        self.min_rate = min_rate
        self._resample()

    # -- sampling ----------------------------------------------------------------

    def _resample(self) -> None:
        """Set the rate (and the period) for the resident keys; called as they grow.

        The *natural* rate keeps the shadows at ``shadow_keys`` to twice that; a small
        cache is sampled more sparsely still (up to ``min_rate``, shadows of at least
        ``MIN_SHADOW_KEYS``), and then its period is shortened by as much, so a
        decision takes as many requests as at the natural rate.
        """
        keys, natural, floor = self._keys, 1, 1
        while keys >= 2 * self.shadow_keys * natural:
            natural *= 2
        while floor < self.min_rate and keys >= 2 * MIN_SHADOW_KEYS * floor:
            floor *= 2
        self._grow_at = 2 * self.shadow_keys * natural
        if floor < self.min_rate:
            self._grow_at = min(self._grow_at, 2 * MIN_SHADOW_KEYS * floor)
        rate = max(natural, floor, getattr(self, "rate", 1))
        self._period = max(min(MIN_PERIOD, self.period), self.period * natural // rate)
        self._check_every = max(1, self._period // CHECKS)  # sampled requests
        if rate != getattr(self, "rate", None):
            self._set_rate(rate)

    def _set_rate(self, rate: int) -> None:
        """Sample one key in ``rate`` (a power of two, doubling as the cache fills).

        A doubled rate samples a subset of the old sample, so the shadows keep what they
        learnt: they drop the keys that left the sample and halve their capacity.
        """
        self.rate = rate
        self._mask = rate - 1
        #: The last missed key and its sample bits at this rate (0: in the sample),
        #: for the insert that usually follows its miss.
        self._missed: Hashable = _NO_KEY
        self._missed_out = 0
        shadow_capacity = max(1, self.capacity // rate)
        shadows: list[_Shadow] | None = getattr(self, "_shadows", None)
        if shadows is None:
            self._shadows = [
                (_LRUShadow if f is LRUPolicy else _Shadow)(f, shadow_capacity)
                for _, f in CANDIDATES
            ]
            self._sampled = 0
            self._lead = 0
        else:
            for shadow in shadows:
                for key in [k for k in shadow.resident if not self._in_sample(k)]:
                    shadow.remove(key)
                shadow.resize(shadow_capacity)
        #: The resident keys in the sample, so a hit is tested with one set lookup.
        old: set[Hashable] = getattr(self, "_sampled_keys", set())
        self._sampled_keys = {key for key in old if self._in_sample(key)}

    def _in_sample(self, key: Hashable) -> bool:
        # Bits 40 and up of the product depend on every bit of the hash.
        return not ((hash(key) * _MIX) >> 40) & self._mask

    @property
    def live(self) -> str:
        """The name of the candidate serving requests now."""
        return CANDIDATES[self.live_index][0]

    def __len__(self) -> int:
        return self._keys

    # -- the Policy protocol -----------------------------------------------------

    def attach(self, entries: dict[Hashable, list[Any]], slot: int) -> None:
        """Let a live S3-FIFO count reads in the store's entries (``S3FIFOPolicy.attach``).

        The store then bumps ``entries[key][slot]`` on every hit, whichever candidate
        is live (W-TinyLFU ignores it); a candidate going live later is attached too.
        """
        self._attached = (entries, slot)
        if isinstance(self._live, S3FIFOPolicy):
            self._live.attach(entries, slot)
            self._go_live(self._live, self.live_index)

    def record_hit(self, key: Hashable) -> None:
        cells = self._live_cells
        if cells is not None:  # S3-FIFO's record_hit, inlined: this is the hot path
            cell = cells[key]
            if cell[0] < MAX_FREQ:
                cell[0] += 1
        elif self._live_hit is not None:
            self._live_hit(key)
        if key in self._sampled_keys:  # one set lookup for the unsampled majority
            self._replay_hit(key)

    def _replay_hit(self, key: Hashable) -> None:
        """A sampled, resident ``key`` was read: replay it through every shadow.

        Usually every shadow holds it too, no split: that case is ``access`` inlined
        (a third shadow made a sampled hit 0.3 us dearer, get_many(100) 0.47 -> 0.53
        of LocMemCache's time through the Django API)."""
        first, second, third, fourth = self._shadows
        if (
            key in first.resident
            and key in second.resident
            and key in third.resident
            and key in fourth.resident
        ):
            first.hits += 1
            first.policy.record_hit(key)
            second.hits += 1
            second.policy.record_hit(key)
            third.hits += 1
            third.policy.record_hit(key)
            fourth.hits += 1
            fourth.resident.move_to_end(key)  # type: ignore[attr-defined]  # (LRU's)
            self._sampled += 1
            if self._sampled >= self._check_every:
                self._decide()
            return
        weight = self._live.weight_of(key)
        self._replayed(
            first.access(key, weight)
            | second.access(key, weight) << 1
            | third.access(key, weight) << 2
            | fourth.access(key, weight) << 3
        )

    def _replayed(self, held: int) -> None:
        """A sampled request went through the shadows; bit ``i`` of ``held`` says if
        shadow ``i`` held the key."""
        if 0 < held < _ALL_HELD:
            # A split: the only requests that tell two candidates apart.
            split = self._split
            for pair in _SPLITS[held]:
                split[pair] += 1
        self._sampled += 1
        if self._sampled >= self._check_every:
            self._decide()

    def record_miss(self, key: Hashable) -> None:
        sketch = self._miss_sketch
        if sketch is None:
            self._live.record_miss(key)
        else:
            sketch.increment(key)
            count = self._miss_count = self._miss_count + 1
            # (SAMPLE_FACTOR x max(keys, MIN_SAMPLE_KEYS), with no call: every miss)
            if count >= _MIN_MISS_PERIOD and count >= SAMPLE_FACTOR * self._keys:
                sketch.reset()
                self._miss_count = 0
        # The usual write after a miss is of this key: ``insert`` reuses the test.
        self._missed = key
        self._missed_out = ((hash(key) * _MIX) >> 40) & self._mask
        if self._missed_out:
            return
        # A shadow may hold a key the live cache lost; a miss stores nothing (no weight).
        first, second, third, fourth = self._shadows
        self._replayed(
            first.access(key, None)
            | second.access(key, None) << 1
            | third.access(key, None) << 2
            | fourth.access(key, None) << 3
        )

    def insert(self, key: Hashable, weight: int) -> None:
        self._live_insert(key, weight)
        self._keys += 1
        if key == self._missed:
            out = self._missed_out
        else:
            out = ((hash(key) * _MIX) >> 40) & self._mask
        if not out:
            self._sampled_keys.add(key)
            for shadow in self._shadows:
                shadow.store(key, weight)
        sketch = self._miss_sketch
        if sketch is not None and self._keys > sketch.expected_keys:
            sketch.ensure_capacity(self._keys)
        if self._keys >= self._grow_at:
            self._resample()

    def update(self, key: Hashable, weight: int) -> None:
        self._live_update(key, weight)
        if key in self._sampled_keys:
            for shadow in self._shadows:
                if shadow.resident.get(key) == weight:  # the usual rewrite: no resize
                    shadow.policy.update(key, weight)
                else:
                    shadow.store(key, weight)

    def remove(self, key: Hashable) -> None:
        self._live.remove(key)
        self._keys -= 1
        if key in self._sampled_keys:
            self._sampled_keys.discard(key)
            for shadow in self._shadows:
                shadow.remove(key)

    def evict(self) -> Hashable:
        self._keys -= 1
        key: Hashable = self._live_evict()
        self._sampled_keys.discard(key)
        return key

    def resize(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._live.resize(capacity)
        for shadow in self._shadows:
            shadow.resize(max(1, capacity // self.rate))

    def clear(self) -> None:
        """Forget the residents; the shadows keep what they learnt of the workload."""
        self._live.clear()
        self._sampled_keys.clear()
        self._keys = 0

    # -- the duel ----------------------------------------------------------------

    def _go_live(self, live: Any, index: int) -> None:
        self._live: Any = live
        s3fifo = isinstance(live, S3FIFOPolicy)
        #: The live policy's record_hit, when a hit needs more than the lines below
        #: (LRU's is its ``move_to_end``, called directly).
        self._live_hit: Callable[[Hashable], None] | None = (
            None
            if s3fifo
            else live._order.move_to_end
            if isinstance(live, LRUPolicy)
            else live.record_hit
        )
        self._live_update: Callable[[Hashable, int], None] = live.update
        self._live_insert: Callable[[Hashable, int], None] = live.insert
        self._live_evict: Callable[[], Hashable] = live.evict
        #: The live S3-FIFO's own one-item cells, its hit inlined in ``record_hit``;
        #: None while W-TinyLFU is live or while the store counts reads (attached).
        self._live_cells: dict[Hashable, list[Any]] | None = (
            live._cells if s3fifo and live._own_cells else None
        )
        self.live_index = index

    def _decide(self) -> None:
        """End of a check: decay the scores; switch if the challenger's lead is real.

        The challenger is the best-scoring candidate. Its lead counts when it is both
        worth having (``MARGIN`` of the live score) and unlikely to be chance. The
        shadows replay the same requests, so only those that split the pair (one hits,
        the other misses) carry information, and if both policies were equally good
        each split would be a fair coin (McNemar's test): the lead is compared with that
        noise's standard deviation, ``sqrt(decayed splits of the pair)``. A lead of
        ``confidence`` deviations must last ``hold`` checks (which backs off after each
        switch); one of ``SURE`` deviations, ``SURE_CHECKS``, if those checks' own
        requests also show it by ``SURE`` deviations. A new challenger starts its count
        of checks afresh.
        """
        self._sampled = 0
        if self._leader is not None:
            self._live.follow(self._leader)
        decay = self._decay
        shadows, noise, split = self._shadows, self._noise, self._split
        recent = self._recent
        recent.append(([shadow.hits for shadow in shadows], split[:]))
        if len(recent) > SURE_CHECKS:
            del recent[0]
        best = quick = live = self.live_index
        for index, shadow in enumerate(shadows):
            shadow.score = decay * shadow.score + shadow.hits
            shadow.hits = 0
            if shadow.score > shadows[best].score:
                best = index
            if _FAST_PATH[index] and shadow.score > shadows[quick].score:
                quick = index
        for pair in range(len(_PAIRS)):
            noise[pair] = decay * decay * noise[pair] + split[pair]
            split[pair] = 0
        live_score = shadows[live].score
        lead, deviation2, _ = self._lead_over(best, live_score)
        if best != self._challenger:  # a new challenger starts its count afresh
            self._challenger = best
            self._lead = 0
        # The fast path's challenger: the best of the candidates allowed it (LRU is
        # not), so that LRU's slow lead does not hide another's clear one.
        quick_lead, quick_deviation2, duo = self._lead_over(quick, live_score)
        if quick != self._quick:
            self._quick = quick
            self._sure = 0
        square = quick_lead * quick_lead
        self._sure = self._sure + 1 if square > SURE * SURE * quick_deviation2 else 0
        if self._sure >= SURE_CHECKS:
            # Checks in a row re-test the decayed scores' evidence: the fast path also
            # wants the last SURE_CHECKS checks' requests, on their own, to show the
            # lead by SURE deviations (a lead left over from the cache's filling, or a
            # past phase, does not).
            fresh = sum(hits[quick] - hits[live] for hits, _ in recent)
            splits = sum(counts[duo] for _, counts in recent)
            if fresh <= 0 or fresh * fresh <= SURE * SURE * splits:
                self._sure = SURE_CHECKS - 1
        leading = bool(lead) and lead * lead > self._confidence2 * deviation2
        self._lead = self._lead + 1 if leading else 0
        target = None
        if self._sure >= SURE_CHECKS and quick_lead:
            target = quick
        elif leading and self._lead >= self.hold * _HOLD_FACTOR[best]:
            target = best
        if target is not None:
            self._switch(target)
            # Back off: a switch costs hits while the new policy settles, so a
            # duel that keeps flipping (two candidates about equal) must wait longer.
            self.hold = min(2 * self.hold, MAX_HOLD_CHECKS)
            self._calm = 0
        elif not leading:
            self._calm += 1
            if self._calm >= CALM_CHECKS and self.hold > HOLD_CHECKS:
                self.hold //= 2
                self._calm = 0

    def _lead_over(self, index: int, live_score: float) -> tuple[float, float, int]:
        """Candidate ``index``'s lead over the live one's score (0 unless above
        ``MARGIN`` of it), the noise of their pair (the decayed splits: a variance),
        and that pair's index."""
        live = self.live_index
        if index == live:
            return 0.0, 0.0, 0
        duo = _PAIR_INDEX[min(index, live), max(index, live)]
        lead = self._shadows[index].score - live_score
        if lead <= live_score * MARGIN:
            lead = 0.0
        return lead, self._noise[duo], duo

    def _switch(self, index: int) -> None:
        """Make candidate ``index`` live: rebuilt from the resident keys (``adopt``),
        or, from one W-TinyLFU to the other's smaller window, the live one resized.

        A live W-TinyLFU does not climb: at every check it follows its shadow's window
        (``TinyLFUPolicy.follow``), the climbing one's as it moves. What runs live is
        then what the duel scored: two climbers on different samples walk apart, and
        the live one's walk would not be what won (on web12 at 5% a live climber takes
        its window to 0.1% while its shadow's grows to 17%, 4 to 6 points below it).
        """
        old: Any = self._live
        like = self._shadows[index].policy
        live: Any
        if (
            isinstance(old, TinyLFUPolicy)
            and isinstance(like, TinyLFUPolicy)
            and like.window_max * old.capacity <= old.window_max * like.capacity
        ):
            # To a window no larger: the live W-TinyLFU moves its window's oldest keys
            # to probation, as a rebuild would, and keeps its protected keys and counts.
            # A larger window is rebuilt (the newest keys fill it), as the shadow's
            # window holds its newest keys, not main's oldest.
            live = old
            live.follow(like)
        elif isinstance(like, TinyLFUPolicy):
            live = CANDIDATES[index][1](self.capacity)
            # From the other W-TinyLFU, its sketch (the misses' counts) is the same kind.
            sketch = (
                old._sketch if isinstance(old, TinyLFUPolicy) else self._miss_sketch
            )
            live.adopt(old.entries(), like=like, sketch=sketch)
            self._miss_sketch = None  # the live W-TinyLFU counts misses itself
        else:
            live = CANDIDATES[index][1](self.capacity)
            if self._attached is not None and isinstance(live, S3FIFOPolicy):
                live.attach(*self._attached)
            live.adopt(old.entries(), like=like)
            if isinstance(old, TinyLFUPolicy):
                self._miss_sketch = old._sketch
                self._miss_count = 0
            elif self._miss_sketch is None:
                self._miss_sketch = FrequencySketch(max(self._keys, MIN_SAMPLE_KEYS))
                self._miss_count = 0
        self._leader = None
        if isinstance(live, TinyLFUPolicy):
            live.adaptive = False
            self._leader = like
        self._go_live(live, index)
        self._lead = self._sure = 0
        self._recent.clear()
        self.switches += 1
