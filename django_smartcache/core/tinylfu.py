"""Adaptive W-TinyLFU: a recency window in front of a frequency-filtered SLRU.

The layout and the admission rule are Caffeine's (``BoundedLocalCache``):

* new keys enter a small LRU *window*; when it overflows, its oldest keys move to the
  tail of the *probation* segment of the main SLRU as *candidates*;
* while the cache is over budget, the newest candidate is compared with the oldest key
  of probation (the *victim*): the one asked for less often lately leaves. A candidate
  may need several victims when weights differ (``evictFromMain``);
* a hit in probation promotes the key to *protected* (80% of main); protected's
  overflow is demoted back to probation;
* every ``10 x capacity`` accesses the counts are halved ("aging") and a hill climber
  moves the window/main split in the direction that raised the hit rate of the last
  sample (``climb()``/``determineAdjustment``): a big window suits recency-biased
  workloads, a small one frequency-biased ones.

Frequencies: a :class:`~.sketch.FrequencySketch` remembers keys that are not resident;
a resident key carries its own exact count in its node (saturating at 15 and halved
lazily at each aging epoch), which is handed back to the sketch when it leaves. So a
cache hit costs one dict lookup, a counter bump and one ``move_to_end`` instead of four
hashed sketch updates.
"""

from __future__ import annotations

import random
from collections import OrderedDict, deque
from collections.abc import Hashable
from typing import Any

from .sketch import MAX_COUNT, FrequencySketch

__all__ = ["TinyLFUPolicy"]

# A node is a small list: [segment, weight, count, epoch]. Lists, not objects: the
# attribute-free indexing keeps ``record_hit`` within its budget.
_SEG, _WEIGHT, _COUNT, _EPOCH = 0, 1, 2, 3

#: Share of the main segment given to protected (Caffeine: ``PERCENT_MAIN_PROTECTED``).
PROTECTED_SHARE = 0.80
#: Initial window share of the capacity (Caffeine: ``1 - PERCENT_MAIN``).
WINDOW_SHARE = 0.01
#: Hill climber: first step and restart step, as a share of the capacity.
STEP_SHARE = 0.0625
#: Hill climber: each step is this much smaller than the previous one...
STEP_DECAY = 0.98
#: ...until the hit rate moves by this much, which restarts big steps.
RESTART_THRESHOLD = 0.05
#: Accesses per sample (aging period and climber sample), per tracked key.
SAMPLE_FACTOR = 10
#: Floor of the keys a sample is sized for, so an empty cache does not age every access.
MIN_SAMPLE_KEYS = 16
#: A candidate at least this popular is admitted at random now and then (1 in 128), so
#: an attacker cannot pin a victim by hammering colliding keys (Caffeine's hash-DoS guard).
ADMIT_HASHDOS_THRESHOLD = 6
#: Most entries moved between window and main per climb step (Caffeine's transfer cap).
TRANSFER_LIMIT = 1000

Node = list[Any]


class TinyLFUPolicy:
    """Window TinyLFU with Caffeine's hill-climbing window (``adaptive=False``: fixed 1%)."""

    def __init__(
        self,
        capacity: int,
        *,
        adaptive: bool = True,
        doorkeeper: bool = False,
        window_share: float = WINDOW_SHARE,
        seed: int = 0,
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.adaptive = adaptive
        self._nodes: dict[Hashable, Node] = {}
        self._window: OrderedDict[Hashable, Node] = OrderedDict()
        self._probation: OrderedDict[Hashable, Node] = OrderedDict()
        self._protected: OrderedDict[Hashable, Node] = OrderedDict()
        self._candidates: deque[Hashable] = deque()
        self._sketch = FrequencySketch(16, doorkeeper=doorkeeper)
        self._random = random.Random(seed)
        self._window_share = window_share
        self._epoch = 0
        self._last_miss: Hashable | None = None
        #: The sketch's estimate of ``_last_miss`` at its miss, while the sketch has not
        #: changed since (None: ask the sketch).
        self._last_count: int | None = None
        #: The key last inserted or updated: never the victim of its own write's
        #: eviction while another key can go (see ``_drain_window``).
        self._newest: Hashable | None = None
        self._hits = 0
        self._misses = 0
        self.window_weight = 0
        self.protected_weight = 0
        self.probation_weight = 0
        self.resize(capacity)

    # -- sizing ------------------------------------------------------------------

    def resize(self, capacity: int) -> None:
        """Set the capacity; the window restarts at its initial share (Caffeine does too)."""
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self.window_max = max(1, capacity - int((1.0 - self._window_share) * capacity))
        self.protected_max = int(PROTECTED_SHARE * (capacity - self.window_max))
        self._step = -STEP_SHARE * capacity
        self._previous_rate = 0.0
        self._hits = self._misses = 0
        self._sample = SAMPLE_FACTOR * max(len(self._nodes), MIN_SAMPLE_KEYS)
        self._demote()

    @property
    def main_max(self) -> int:
        return self.capacity - self.window_max

    @property
    def weight(self) -> int:
        """The resident weight the policy accounts for."""
        return self.window_weight + self.probation_weight + self.protected_weight

    def __len__(self) -> int:
        return len(self._nodes)

    def __contains__(self, key: object) -> bool:
        return key in self._nodes

    def segments(self) -> dict[str, list[Hashable]]:
        """Keys per segment, oldest first (for tests and debugging; O(n))."""
        return {
            "window": list(self._window),
            "probation": list(self._probation),
            "protected": list(self._protected),
        }

    def entries(self) -> list[tuple[Hashable, int, int]]:
        """Resident ``(key, weight, count)``, least valuable first (probation, protected, window)."""
        return [
            (key, node[_WEIGHT], self._count(node))
            for segment in (self._probation, self._protected, self._window)
            for key, node in segment.items()
        ]

    def weight_of(self, key: Hashable) -> int:
        """The weight a resident ``key`` was given."""
        weight: int = self._nodes[key][_WEIGHT]
        return weight

    def adopt(
        self,
        entries: list[tuple[Hashable, int, int]],
        like: TinyLFUPolicy | None = None,
        sketch: FrequencySketch | None = None,
    ) -> None:
        """Take over another policy's residents (oldest first) in an empty instance.

        The newest ``window_max`` of weight fill the window; of the rest, those read
        since their last pass fill protected, the others join probation, least counted
        first (ties in order).
        ``reads`` is the old policy's read counter. When ``like`` counted every access
        of the same keys, a key's count is the larger of its count there and
        ``reads + 1``. Otherwise the sketch counted only misses, so the count is their
        sum plus one: a resident's reads are not in the sketch, and S3-FIFO clears a
        key's counter when it moves to main (without that, on a loop the non-residents
        outcounted the residents and churned them long after a switch). Either way
        the residents are not worth nothing to the first candidates. ``like`` is a
        policy that saw the same requests (a shadow): its window share, and its sketch
        when it saw every key, are taken over so the new policy does not start cold;
        else ``sketch`` (recent misses counted by the caller) is taken as the sketch.
        """
        if like is not None:
            share = like.window_max / like.capacity
            self.window_max = max(
                1, min(self.capacity - 1, round(share * self.capacity))
            )
            self.protected_max = int(
                PROTECTED_SHARE * (self.capacity - self.window_max)
            )
            # The step is a share of the capacity: a shadow's is 1/rate of ours.
            self._step = like._step * self.capacity / like.capacity
            self._previous_rate = like._previous_rate
            if like.capacity == self.capacity:
                self._sketch = like._sketch.copy()
                self._hits, self._misses = like._hits, like._misses
        if sketch is not None and (like is None or like.capacity != self.capacity):
            self._sketch = sketch
        self._last_miss = self._last_count = None
        window_weight = 0
        split = len(entries)
        while split and window_weight + entries[split - 1][1] <= self.window_max:
            split -= 1
            window_weight += entries[split][1]
        sketch, epoch = self._sketch, self._epoch
        if len(entries) > sketch.expected_keys:
            sketch.ensure_capacity(len(entries))
        # A key resident in ``like`` keeps its count in its node, not in the sketch.
        counted_all = like is not None and like.capacity == self.capacity
        frequency = sketch.frequency
        if like is not None and counted_all:
            frequency = like.frequency
        # Keys read since their last pass (``reads``) fill protected, newest first.
        protected: set[int] = set()
        room = self.protected_max
        for index in range(split - 1, -1, -1):
            weight, reads = entries[index][1], entries[index][2]
            if reads and weight <= room:
                protected.add(index)
                room -= weight
        probation = self._probation
        by_count: list[list[tuple[Hashable, Node]]] = [[] for _ in range(MAX_COUNT + 1)]
        for index, (key, weight, reads) in enumerate(entries):
            if index >= split:
                segment = self._window
                self.window_weight += weight
            elif index in protected:
                segment = self._protected
                self.protected_weight += weight
            else:
                segment = self._probation
                self.probation_weight += weight
            count = (
                max(frequency(key), min(reads + 1, MAX_COUNT))
                if counted_all
                else min(frequency(key) + reads + 1, MAX_COUNT)
            )
            node = [segment, weight, count, epoch]
            self._nodes[key] = node
            if segment is probation:
                by_count[count].append((key, node))
            else:
                segment[key] = node
        # Probation least counted first (a counting sort, O(n)): its head is where
        # admission looks for victims, and a victim that outcounts the newcomer stays
        # there, so the old order (oldest first) left the rarely asked-for keys behind
        # better ones that are not read soon (on arc-mix at 5% the one-hit scan keys
        # inherited from S3-FIFO stayed 25,000 requests after a switch).
        for bucket in by_count:
            probation.update(bucket)
        self._sample = SAMPLE_FACTOR * max(len(self._nodes), MIN_SAMPLE_KEYS)

    # -- frequency ---------------------------------------------------------------

    def _count(self, node: Node) -> int:
        """A resident key's count, halved once per aging epoch it missed."""
        lag = self._epoch - node[_EPOCH]
        if lag:
            node[_COUNT] >>= min(lag, 8)
            node[_EPOCH] = self._epoch
        count: int = node[_COUNT]
        return count

    def frequency(self, key: Hashable) -> int:
        """How often ``key`` was accessed lately (exact if resident, estimated if not)."""
        node = self._nodes.get(key)
        return self._count(node) if node is not None else self._sketch.frequency(key)

    def _age(self) -> None:
        """End of a sample: halve all counts and let the climber move the window."""
        self._sketch.reset()
        self._last_count = None
        self._epoch += 1
        if self.adaptive:
            self._climb()
        self._hits = self._misses = 0
        self._sample = SAMPLE_FACTOR * max(len(self._nodes), MIN_SAMPLE_KEYS)

    # -- the Policy protocol -----------------------------------------------------

    def record_hit(self, key: Hashable) -> None:
        node = self._nodes[key]
        lag = self._epoch - node[3]
        count = node[2]
        if lag:
            count >>= min(lag, 8)
            node[3] = self._epoch
        if count < MAX_COUNT:
            count += 1
        node[2] = count
        self._hits += 1
        segment = node[0]
        if segment is self._probation:
            self._promote(key, node)
        else:
            segment.move_to_end(key)

    def record_miss(self, key: Hashable) -> None:
        self._last_count = self._sketch.increment(key)
        self._last_miss = key
        self._misses += 1
        if self._hits + self._misses >= self._sample:
            self._age()

    def insert(self, key: Hashable, weight: int) -> None:
        sketch = self._sketch
        # A write without a read first counts once; after its miss, the miss's estimate.
        count = sketch.increment(key) if key != self._last_miss else self._last_count
        if count is None:  # the doorkeeper's, or the sketch changed since the miss
            count = sketch.frequency(key)
        self._last_miss = self._last_count = None
        self._newest = key
        node = [self._window, weight, count, self._epoch]
        self._nodes[key] = node
        self._window[key] = node
        self.window_weight += weight
        self._candidates.clear()
        if len(self._nodes) > sketch.expected_keys:
            sketch.ensure_capacity(len(self._nodes))

    def update(self, key: Hashable, weight: int) -> None:
        node = self._nodes[key]
        delta = weight - node[_WEIGHT]
        node[_WEIGHT] = weight
        segment = node[_SEG]
        if segment is self._window:
            self.window_weight += delta
        elif segment is self._probation:
            self.probation_weight += delta
        else:
            self.protected_weight += delta
        self.record_hit(key)
        self._hits -= 1  # a write is an access, not a read hit for the climber
        self._newest = key

    def remove(self, key: Hashable) -> None:
        if key == self._newest:
            self._newest = None
        self._forget(key, self._nodes[key])

    def evict(self) -> Hashable:
        self._drain_window()
        candidate = self._next_candidate()
        probation = iter(self._probation)
        victim = next(probation, None)
        if victim is not None and victim == self._newest:
            victim = next(probation, None)  # (demoted there by a tiny protected)
        if candidate is None and victim is None:
            # Only protected (and maybe window) keys left: take the oldest, the
            # newest key last.
            victim = self._oldest_but_newest()
        if victim is None or candidate == victim:
            assert candidate is not None
            return self._evict_candidate(candidate)
        if candidate is None:
            self._forget(victim, self._nodes[victim])
            return victim
        nodes = self._nodes
        cnode, vnode = nodes[candidate], nodes[victim]
        if cnode[_WEIGHT] > self.capacity or not self._admit(cnode, vnode, victim):
            return self._evict_candidate(candidate)
        if self._candidates and self._candidates[-1] == candidate:
            self._candidates.pop()  # admitted: the next victim faces the next candidate
        self._forget(victim, vnode)
        return victim

    def clear(self) -> None:
        self._last_count = None
        for key in list(self._nodes):
            self._sketch.record(key, self._count(self._nodes[key]))
        self._nodes.clear()
        self._window.clear()
        self._probation.clear()
        self._protected.clear()
        self._candidates.clear()
        self._newest = None
        self.window_weight = self.probation_weight = self.protected_weight = 0

    # -- internals ---------------------------------------------------------------

    def _promote(self, key: Hashable, node: Node) -> None:
        """A probation hit: move to protected, demoting protected's overflow."""
        del self._probation[key]
        weight = node[_WEIGHT]
        self.probation_weight -= weight
        node[_SEG] = self._protected
        self._protected[key] = node
        self.protected_weight += weight
        if self.protected_weight > self.protected_max:
            self._demote()

    def _demote(self) -> None:
        protected, probation = self._protected, self._probation
        while self.protected_weight > self.protected_max and protected:
            key, node = protected.popitem(last=False)
            weight = node[_WEIGHT]
            self.protected_weight -= weight
            node[_SEG] = probation
            probation[key] = node
            self.probation_weight += weight

    def _drain_window(self) -> None:
        """Move the window's overflow to probation's tail, as admission candidates.

        The key last written stays: a window smaller than one entry (a byte budget
        where 1% is under an entry's size, or a climber that shrank it during a run of
        hits) would send every newcomer straight to admission, where any resident read
        once beats it: a key just written would be gone before it could be read, and
        ``add()`` would refuse every new key (Django's cache sessions: no login). So a
        newcomer is judged at the next write, as in a window of at least one entry
        (Caffeine's floor, ``windowMaximum() <= 1``, in entries; by weight it has none).
        """
        window, probation, candidates = self._window, self._probation, self._candidates
        newest = self._newest
        while self.window_weight > self.window_max and window:
            key = next(iter(window))
            if key == newest:
                break  # (the newest is the window's last: nothing else is left)
            node = window.pop(key)
            weight = node[_WEIGHT]
            self.window_weight -= weight
            node[_SEG] = probation
            probation[key] = node
            self.probation_weight += weight
            candidates.append(key)

    def _next_candidate(self) -> Hashable | None:
        """The newest candidate still in probation, else the window's oldest key (never
        the key last written: it waits in the window, see ``_drain_window``)."""
        candidates, nodes, probation = self._candidates, self._nodes, self._probation
        while candidates:
            key = candidates[-1]
            node = nodes.get(key)
            if node is not None and node[_SEG] is probation and key != self._newest:
                return key
            candidates.pop()  # (the newest: rewritten since; back there by a demotion)
        if self._window:
            key = next(iter(self._window))
            if key != self._newest:
                return key
        return None

    def _oldest_but_newest(self) -> Hashable:
        """The oldest key of protected, else of the window; the key last written only
        when it is all that is left."""
        for segment in (self._protected, self._window, self._probation):
            for key in segment:  # (at most two steps: the newest is one key)
                if key != self._newest:
                    return key
        return self._newest

    def _evict_candidate(self, key: Hashable) -> Hashable:
        if self._candidates and self._candidates[-1] == key:
            self._candidates.pop()
        self._forget(key, self._nodes[key])
        return key

    def _admit(self, candidate: Node, victim: Node, victim_key: Hashable) -> bool:
        """TinyLFU admission: the candidate must be more popular than the victim.

        The candidate's count came from the sketch when it was inserted, collisions
        included; the victim's is exact (its hits are counted in its node). Compared
        as they are, the sketch's noise alone made newcomers win: on a loop over ten
        times the cache's keys every newcomer beat every resident, and the cache held
        nothing (0% where Caffeine-like caches hold ~8%). The victim is given the same
        noise: its count plus what the sketch says of it now (Caffeine counts every
        access in the sketch, so both sides carry it there). That counts the victim's
        history from before its insertion twice, so admission errs toward the resident:
        a newcomer needs about twice its count. Measured over 108 trace x size cells,
        adding the sketch's estimate to both sides instead was far worse (24 cells
        missed, the loops -2 to -8 points), as was the larger of the two (18).
        """
        candidate_count = self._count(candidate)
        victim_count = self._count(victim) + self._sketch.frequency(victim_key)
        if candidate_count > victim_count:
            return True
        if candidate_count >= ADMIT_HASHDOS_THRESHOLD:
            return (self._random.getrandbits(7)) == 0
        return False

    def _forget(self, key: Hashable, node: Node) -> None:
        """Drop ``key`` from its segment, handing its count back to the sketch."""
        del self._nodes[key]
        segment = node[_SEG]
        del segment[key]
        weight = node[_WEIGHT]
        if segment is self._window:
            self.window_weight -= weight
        elif segment is self._probation:
            self.probation_weight -= weight
        else:
            self.protected_weight -= weight
        self._sketch.record(key, self._count(node))
        self._last_count = None

    # -- hill climbing (Caffeine's climb / determineAdjustment) ------------------

    def _climb(self) -> None:
        requests = self._hits + self._misses
        if not requests:
            return
        rate = self._hits / requests
        change = rate - self._previous_rate
        amount = self._step if change >= 0 else -self._step
        if abs(change) >= RESTART_THRESHOLD:
            self._step = STEP_SHARE * self.capacity * (1 if amount >= 0 else -1)
        else:
            self._step = STEP_DECAY * amount
        self._previous_rate = rate
        adjustment = int(amount)
        if adjustment > 0:
            self._increase_window(adjustment)
        elif adjustment < 0:
            self._decrease_window(-adjustment)

    def follow(self, like: TinyLFUPolicy) -> None:
        """Move the window toward ``like``'s share of its capacity: the adaptive policy's
        live W-TinyLFU follows its shadow's window instead of climbing on its own. At
        most ``TRANSFER_LIMIT`` keys move per call, as in a climb."""
        if like.adaptive:
            target = max(1, round(like.window_max / like.capacity * self.capacity))
        else:  # a fixed window: its share of this capacity, as ``resize`` sets it
            share = like._window_share
            target = max(1, self.capacity - int((1.0 - share) * self.capacity))
        if target > self.window_max:
            self._increase_window(target - self.window_max)
        elif target < self.window_max:
            self._decrease_window(self.window_max - target)

    def _increase_window(self, amount: int) -> None:
        """Give ``amount`` of protected's share to the window, moving main's oldest keys."""
        if self.protected_max <= 0:
            return
        quota = min(amount, self.protected_max)
        self.protected_max -= quota
        self.window_max += quota
        self._demote()
        probation, protected, window = self._probation, self._protected, self._window
        for _ in range(TRANSFER_LIMIT):
            source = probation
            key = next(iter(probation), None)
            if key is None or quota < probation[key][_WEIGHT]:
                source = protected
                key = next(iter(protected), None)
            if key is None:
                break
            node = source[key]
            weight = node[_WEIGHT]
            if quota < weight:
                break
            quota -= weight
            del source[key]
            if source is probation:
                self.probation_weight -= weight
            else:
                self.protected_weight -= weight
            node[_SEG] = window
            window[key] = node
            self.window_weight += weight
        self.protected_max += quota
        self.window_max -= quota

    def _decrease_window(self, amount: int) -> None:
        """Give ``amount`` of the window's share to protected, moving the window's oldest."""
        if self.window_max <= 1:
            return
        quota = min(amount, self.window_max - 1)
        self.protected_max += quota
        self.window_max -= quota
        window, probation = self._window, self._probation
        for _ in range(TRANSFER_LIMIT):
            key = next(iter(window), None)
            if key is None:
                break
            node = window[key]
            weight = node[_WEIGHT]
            if quota < weight:
                break
            quota -= weight
            del window[key]
            self.window_weight -= weight
            node[_SEG] = probation
            probation[key] = node
            self.probation_weight += weight
        self.protected_max -= quota
        self.window_max += quota
