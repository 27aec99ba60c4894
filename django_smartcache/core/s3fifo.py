"""S3-FIFO: three FIFO queues, "Simple and Scalable caching with three Static FIFO queues".

Yang et al., SOSP 2023. New keys enter a small FIFO (10% of the capacity); a key read
again while there moves to the main FIFO when it reaches the small queue's head,
otherwise it leaves and is remembered in a ghost FIFO (keys only). A key inserted while
its ghost is remembered goes straight to main. Main is a FIFO with lazy promotion: a
key at its head that was read since its last pass (a 2-bit counter) is put back at the
tail with one count less, else it leaves. Selectable for comparison (``"s3fifo"``).

:class:`AdaptiveS3FIFOPolicy` sizes the small queue from the ghosts' regrets, as ARC
sizes its recency list, and refuses main's passes that only older reads pay for while
the evidence says they do not pay; the adaptive default's S3-FIFO candidate uses it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

__all__ = ["AdaptiveS3FIFOPolicy", "S3FIFOPolicy"]

#: Share of the capacity held by the small (probationary) FIFO, as in the paper.
SMALL_SHARE = 0.10
#: Reads counted per key (2 bits in the paper).
MAX_FREQ = 3
#: The adaptive small queue stays within these shares of the capacity: main always
#: keeps a tenth, and small never shrinks to nothing (a key needs time to be read
#: twice). A ceiling of a half held recency-only workloads (each key reused once,
#: shortly after; phases of them) 1-2 points below LRU; at 0.9 every workload of
#: ``benchmarks.hitratio`` scores the same, and 17 other traces gained (worst
#: cell -0.05 point, corda-like 1% +1.2, multi-phase 1% +2.0).
MIN_SMALL_SHARE = 0.01
MAX_SMALL_SHARE = 0.90
#: A ghost's stamp packs ``small_out`` above its weight: weights stay below 2**48 bytes.
_STAMP_SHIFT = 48
_WEIGHT_MASK = (1 << _STAMP_SHIFT) - 1
#: Main refuses credit only on a lead of this many standard deviations, the duel's
#: ``SURE`` (at one deviation orm-busy at 1% lost 0.12 point).
_CREDIT_SURE = 4.0
_SURE2 = _CREDIT_SURE * _CREDIT_SURE


class S3FIFOPolicy:
    """S3-FIFO over weights: the small queue holds 10% of ``capacity``, ghosts as much as main.

    Each resident key's read counter lives in a *cell*: a list, the counter at index
    ``_slot``. On its own the policy keeps one-item cells of its own; attached to a
    store (:meth:`attach`), the store's entry lists are the cells and the store bumps
    the counter on every hit, so a hit costs the policy no lookup at all.
    """

    def __init__(self, capacity: int, *, small_share: float = SMALL_SHARE) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._small_share = small_share
        self._small: OrderedDict[Hashable, int] = OrderedDict()
        self._main: OrderedDict[Hashable, int] = OrderedDict()
        self._ghost: OrderedDict[Hashable, int] = OrderedDict()
        #: key -> cell (see the class docstring); the resident keys.
        self._cells: dict[Hashable, list[Any]] = {}
        self._slot = 0
        #: False once attached: the cells are the store's, created and dropped by it.
        self._own_cells = True
        #: Weight that has left the small queue so far (a clock for the ghosts' stamps).
        self._small_out = 0
        #: The key last inserted or updated: never the victim of its own write's
        #: eviction while another key can go (see ``evict``).
        self._newest: Hashable | None = None
        self.small_weight = 0
        self.main_weight = 0
        self.ghost_weight = 0
        self.resize(capacity)

    def resize(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self.small_max = max(1, int(self._small_share * capacity))
        self.ghost_max = capacity - self.small_max
        self._trim_ghost()

    def attach(self, entries: dict[Hashable, list[Any]], slot: int) -> None:
        """Count reads in ``entries[key][slot]`` (a store's entries) instead of own cells.

        The store must create each entry (counter 0) before :meth:`insert`, drop it
        after :meth:`remove` or :meth:`evict`, and add one to the counter (up to
        :data:`MAX_FREQ`) on every hit; :meth:`record_hit` then does nothing.
        Only while no key is resident.
        """
        if self._small or self._main:
            raise ValueError("attach() needs an empty policy")
        self._cells, self._slot, self._own_cells = entries, slot, False

    @property
    def weight(self) -> int:
        return self.small_weight + self.main_weight

    def __len__(self) -> int:
        return len(self._small) + len(self._main)

    def __contains__(self, key: object) -> bool:
        return key in self._small or key in self._main

    def segments(self) -> dict[str, list[Hashable]]:
        """Keys per queue, oldest first (for tests and debugging; O(n))."""
        return {
            "small": list(self._small),
            "main": list(self._main),
            "ghost": list(self._ghost),
        }

    def entries(self) -> list[tuple[Hashable, int, int]]:
        """Resident ``(key, weight, reads)``, first to be evicted first (main, then small).

        ``reads`` is the key's counter: reads since it was last looked at (at most 3).
        """
        cells, slot = self._cells, self._slot
        return [
            (k, w, cells[k][slot])
            for queue in (self._main, self._small)
            for k, w in queue.items()
        ]

    def weight_of(self, key: Hashable) -> int:
        """The weight a resident ``key`` was given."""
        weight = self._small.get(key)
        return self._main[key] if weight is None else weight

    def adopt(
        self,
        entries: list[tuple[Hashable, int, int]],
        like: S3FIFOPolicy | None = None,
    ) -> None:
        """Take over another policy's residents (oldest first) in an empty instance.

        The newest ``small_max`` of weight go to small, the rest to main, with their
        ``reads`` as counters (at most 3):
        without this, every adopted key would sit in small and the next evictions
        would drop 90% of them in FIFO order, useful or not. ``like`` (a shadow that
        saw the same requests at the same capacity) lends its ghost, less the keys
        in ``entries`` (the other policy may have dropped a key the cache still holds).
        """
        if like is not None and like.capacity == self.capacity:
            resident = {entry[0] for entry in entries}
            for key, weight in like._ghost.items():
                if key not in like and key not in resident:
                    self._ghost[key] = weight
                    self.ghost_weight += weight
            self._trim_ghost()
        small_weight = 0
        split = len(entries)
        while split and small_weight + entries[split - 1][1] <= self.small_max:
            split -= 1
            small_weight += entries[split][1]
        for index, (key, weight, reads) in enumerate(entries):
            self._set_reads(key, min(reads, MAX_FREQ))
            if index < split:
                self._main[key] = weight
                self.main_weight += weight
            else:
                self._small[key] = weight
                self.small_weight += weight

    def _set_reads(self, key: Hashable, reads: int) -> None:
        if self._own_cells:
            self._cells[key] = [reads]
        else:
            self._cells[key][self._slot] = reads

    def record_hit(self, key: Hashable) -> None:
        if self._own_cells:  # (attached, the store has counted the hit already)
            cell = self._cells[key]
            if cell[0] < MAX_FREQ:
                cell[0] += 1

    def record_miss(self, key: Hashable) -> None:
        pass

    def insert(self, key: Hashable, weight: int) -> None:
        self._newest = key
        if self._own_cells:
            self._cells[key] = [0]
        ghost_weight = self._ghost.pop(key, None)
        if ghost_weight is not None:
            self.ghost_weight -= ghost_weight
            self._main[key] = weight
            self.main_weight += weight
        else:
            self._small[key] = weight
            self.small_weight += weight

    def update(self, key: Hashable, weight: int) -> None:
        self._newest = key
        small = self._small
        old = small.get(key)
        if old is not None:
            if weight != old:
                self.small_weight += weight - old
                small[key] = weight
        else:
            main = self._main
            old = main[key]
            if weight != old:
                self.main_weight += weight - old
                main[key] = weight
        cell, slot = self._cells[key], self._slot  # an access, as record_hit
        if cell[slot] < MAX_FREQ:
            cell[slot] += 1

    def remove(self, key: Hashable) -> None:
        if key == self._newest:
            self._newest = None
        if self._own_cells:
            del self._cells[key]
        weight = self._small.pop(key, None)
        if weight is not None:
            self.small_weight -= weight
        else:
            self.main_weight -= self._main.pop(key)

    def evict(self) -> Hashable:
        """The next victim. The key last written is never the victim while another key
        can go: with a small queue lighter than one entry (a byte budget whose 10% is
        under a value's size, or an adaptive share that shrank), a key just written
        would go to the ghost before it could be read, and ``add()`` would refuse every
        new key. It is judged when the next write comes, as in a queue of one entry
        (the paper's S3-FIFO evicts before it inserts). In main it is passed over
        (moved to the tail, its counter kept); small gives the victim when main holds
        only it.
        """
        small, main, newest = self._small, self._main, self._newest
        while True:
            from_small = bool(small) and (
                not main or self.small_weight >= self.small_max
            )
            if from_small and main and next(iter(small)) == newest:
                from_small = False  # small holds only the newest: main's turn
            elif not from_small and next(iter(main)) == newest:
                if len(main) > 1:
                    main.move_to_end(newest)  # passed over, its counter kept
                    continue
                from_small = bool(small)  # main holds only the newest: small's turn
            victim = self._leave_small() if from_small else self._leave_main()
            if victim is not None:
                return victim

    def _leave_small(self) -> Hashable | None:
        """Small's oldest key: to main if it was read (None: no victim yet), else out."""
        key, weight = self._small.popitem(last=False)
        self.small_weight -= weight
        self._small_out += weight
        cell = self._cells[key]
        if cell[self._slot]:
            cell[self._slot] = 0
            self._main[key] = weight
            self.main_weight += weight
            return None
        if self._own_cells:
            del self._cells[key]
        self._left_small(key, weight)
        return key

    def _leave_main(self) -> Hashable | None:
        """Main's oldest key: another pass if it was read since (None), else out."""
        main = self._main
        key, weight = next(iter(main.items()))
        cell = self._cells[key]
        count = cell[self._slot]
        if count:
            cell[self._slot] = count - 1
            main.move_to_end(key)
            return None
        del main[key]
        if self._own_cells:
            del self._cells[key]
        self.main_weight -= weight
        self._left_main(key, weight)
        return key

    def _left_small(self, key: Hashable, weight: int) -> None:
        """``key`` was evicted from the small queue: remember it in the ghost FIFO."""
        self._ghost[key] = weight
        self.ghost_weight += weight
        self._trim_ghost()

    def _left_main(self, key: Hashable, weight: int) -> None:
        """``key`` was evicted from main: S3-FIFO keeps no record of it."""

    def clear(self) -> None:
        self._newest = None
        self._small.clear()
        self._main.clear()
        if self._own_cells:
            self._cells.clear()
        self.small_weight = self.main_weight = 0

    def _trim_ghost(self) -> None:
        ghost = self._ghost
        while self.ghost_weight > self.ghost_max and ghost:
            self.ghost_weight -= ghost.popitem(last=False)[1]


class AdaptiveS3FIFOPolicy(S3FIFOPolicy):
    """S3-FIFO whose small queue grows or shrinks with the regrets of its ghosts (ARC-like).

    A fixed 10% small queue is too short when the hot set moves (new keys leave before
    their second read) and too long on stable popularity (it wastes room main would
    use). Each side keeps a record of what it dropped recently, stamped with how much
    weight had left it by then:

    * the ghost of small (S3-FIFO's own): a key inserted again before another
      ``small_max`` of weight has left small would have been read in a small queue
      twice as large: small grows by its weight;
    * a ghost of main, holding the last ``small_max`` of weight main evicted: a key
      inserted again from it would have been read in a main larger by as much: small
      shrinks by its weight.

    Both regrets are measured against the same extra room, so the share drifts to
    where one more unit of weight is worth as much to either queue, within
    ``MIN_SMALL_SHARE`` and ``MAX_SMALL_SHARE``. Where keys go is S3-FIFO's rule;
    only the split changes. A hit costs the same as in S3-FIFO; an eviction from main
    also records a ghost, an insert looks it up.

    Main's pass rule also differs once the evidence says so. S3-FIFO puts a key back
    while its 2-bit counter is above zero, so a key read three times and never again
    stays for up to three more passes (a turn of main each): on session-like traffic
    the keys of finished sessions. A pass that only such older reads pay for is a
    *credit* pass. Each turn, the share of credit passes in which the key was read
    (or, refused, asked for again within a turn) is compared with the share of keys
    evicted with no count left that are asked for again within a turn: credit is
    refused while the evicted keys lead by more than four deviations (binomial noise,
    the duel's fast path), and honoured again once credit leads. A key refused
    credit leaves into small's ghost, so if asked for again it goes straight back to
    main.
    """

    def __init__(self, capacity: int, *, small_share: float = SMALL_SHARE) -> None:
        #: Ghost values here are stamps: ``small_out`` when the key left, shifted by
        #: :data:`_STAMP_SHIFT`, plus its weight (one int: no tuple per ghost).
        self._ghost_stamps: OrderedDict[Hashable, int] = OrderedDict()
        self._main_ghost: OrderedDict[Hashable, int] = OrderedDict()
        self.main_ghost_weight = 0
        self._target = small_share * capacity
        #: Main's clock: weight that has passed main's head (kept or evicted).
        self._turn = 0
        self._aged_at = 0
        #: Main keys put back with a count left: that count << 1 | 1 if the pass was
        #: bought by credit (reads from before the key's last pass).
        self._left_over: dict[Hashable, int] = {}
        #: The ``hash()`` of the keys main evicted (the last ``capacity`` of weight),
        #: stamped ``(_turn << 1 | credit) << _STAMP_SHIFT | weight``, credit 1 if it
        #: was refused. Hashes, not keys: it only feeds rates, and the keys themselves
        #: (strings) kept alive here cost memory the byte budget does not count.
        self._turn_ghost: OrderedDict[int, int] = OrderedDict()
        self._turn_ghost_weight = 0
        #: [passes bought by credit + keys refused it, how many were read in that pass
        #: or asked for again within a turn]; the same for keys evicted with no count
        #: left (halved each turn).
        self._credit = [0.0, 0.0]
        self._plain = [0.0, 0.0]
        #: Whether credit buys a pass (S3-FIFO's rule) or only a read since the last one.
        self.honour_credit = True
        #: ``_turn`` of the first credit pass (-1: none yet).
        self._credit_since = -1
        super().__init__(capacity, small_share=small_share)

    @property
    def small_share(self) -> float:
        """The small queue's current share of the capacity."""
        return self._target / self.capacity

    def resize(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        if hasattr(self, "capacity"):  # keep the share learnt so far
            self._target = self._target * capacity / self.capacity
        self.capacity = capacity
        self._adjust(0.0)

    def _adjust(self, delta: float) -> None:
        """Move the small queue's target by ``delta`` weight, within its bounds."""
        capacity = self.capacity
        self._target = min(
            max(self._target + delta, MIN_SMALL_SHARE * capacity),
            MAX_SMALL_SHARE * capacity,
        )
        self.small_max = max(1, int(self._target))
        self.ghost_max = capacity - self.small_max
        self._trim_ghost()
        self._trim_main_ghost()

    def segments(self) -> dict[str, list[Hashable]]:
        segments = super().segments()
        segments["ghost"] = list(self._ghost_stamps)
        segments["main_ghost"] = list(self._main_ghost)
        return segments

    def adopt(
        self,
        entries: list[tuple[Hashable, int, int]],
        like: S3FIFOPolicy | None = None,
    ) -> None:
        """As :meth:`S3FIFOPolicy.adopt`; an adaptive ``like`` lends its small queue's
        share, and its ghost when it has the same capacity (ghosts count as just left)."""
        if isinstance(like, AdaptiveS3FIFOPolicy):
            self._target = like.small_share * self.capacity
            self._adjust(0.0)
            if like.capacity == self.capacity:
                now = self._small_out << _STAMP_SHIFT
                resident = {entry[0] for entry in entries}
                for key, stamp in like._ghost_stamps.items():
                    if key not in like and key not in resident:
                        weight = stamp & _WEIGHT_MASK
                        self._ghost_stamps[key] = now | weight
                        self.ghost_weight += weight
                self._trim_ghost()
        super().adopt(entries)

    def insert(self, key: Hashable, weight: int) -> None:
        self._newest = key
        if self._own_cells:
            self._cells[key] = [0]
        stamp = self._turn_ghost.pop(hash(key), None)
        if stamp is not None:
            self._turn_ghost_weight -= stamp & _WEIGHT_MASK
            stamp >>= _STAMP_SHIFT
            if self._turn - (stamp >> 1) <= self.main_weight:  # within a turn
                (self._credit if stamp & 1 else self._plain)[1] += 1
        ghost = self._ghost_stamps.pop(key, None)
        if ghost is not None:
            old_weight, left_at = ghost & _WEIGHT_MASK, ghost >> _STAMP_SHIFT
            self.ghost_weight -= old_weight
            if self._small_out - left_at < self.small_max:
                self._adjust(old_weight)  # a larger small queue would have kept it
            self._main[key] = weight
            self.main_weight += weight
            return
        evicted = self._main_ghost.pop(key, None)
        if evicted is not None:
            self.main_ghost_weight -= evicted
            self._adjust(-evicted)  # a larger main would have kept it
        self._small[key] = weight
        self.small_weight += weight

    def _left_small(
        self, key: Hashable, weight: int, left_at: int | None = None
    ) -> None:
        """Into small's ghost, stamped with ``small_out`` (or ``left_at``)."""
        at = self._small_out if left_at is None else left_at
        self._ghost_stamps[key] = at << _STAMP_SHIFT | weight
        self.ghost_weight += weight
        self._trim_ghost()

    def _left_main(self, key: Hashable, weight: int) -> None:
        self._main_ghost[key] = weight
        self.main_ghost_weight += weight
        self._trim_main_ghost()
        self._to_turn_ghost(key, weight, 0)

    def _to_turn_ghost(self, key: Hashable, weight: int, credit: int) -> None:
        """Remember that ``key`` left main now (``credit``: with a count left)."""
        turn_ghost, hashed = self._turn_ghost, hash(key)
        old = turn_ghost.pop(hashed, None)
        if old is not None:
            self._turn_ghost_weight -= old & _WEIGHT_MASK
        turn_ghost[hashed] = (self._turn << 1 | credit) << _STAMP_SHIFT | weight
        self._turn_ghost_weight += weight
        while self._turn_ghost_weight > self.capacity and turn_ghost:
            self._turn_ghost_weight -= turn_ghost.popitem(last=False)[1] & _WEIGHT_MASK

    def _leave_main(self) -> Hashable | None:
        """Main's oldest key: another pass if it was read since its last one. If not,
        its count from older reads (credit) buys one while credit pays (see ``_age``);
        when it does not, the key leaves, remembered by small's ghost."""
        main = self._main
        key, weight = next(iter(main.items()))
        cell = self._cells[key]
        count = cell[self._slot]
        self._turn += weight
        if self._turn >= self._aged_at:
            self._age()
        left = self._left_over.pop(key, 0)
        read = count > left >> 1
        if left & 1 and read:
            self._credit[1] += 1  # its credit pass paid: read during it
        if count and (read or self.honour_credit):
            count -= 1
            cell[self._slot] = count
            if read:
                if count:
                    self._left_over[key] = count << 1
            else:
                self._credit[0] += 1
                if self._credit_since < 0:
                    self._credit_since = self._turn
                self._left_over[key] = count << 1 | 1
            main.move_to_end(key)
            return None
        del main[key]
        self.main_weight -= weight
        if self._own_cells:
            del self._cells[key]
        if count:
            # Credit refused: out, remembered by small's ghost, so that a key asked
            # for again goes straight back to main (it was there) instead of through
            # small as a stranger. Stamped 0 (as if it had left small before anything
            # else): its return is no regret of small's.
            self._credit[0] += 1
            self._left_small(key, weight, left_at=0)
            self._to_turn_ghost(key, weight, 1)
            return key
        self._plain[0] += 1
        self._left_main(key, weight)
        return key

    def _age(self) -> None:
        """Once a turn of main: decide on credit, and halve the evidence."""
        credit, plain = self._credit, self._plain
        # Credit is worth a pass when the keys it keeps are read within a turn at
        # least as often as the keys main evicts without it are asked for again. It
        # is refused when the evicted keys lead by more than _CREDIT_SURE deviations
        # of the difference of the two rates (binomial noise), as the duel's fast
        # path switches, and honoured again as soon as credit leads. Not before a
        # turn has passed since the first credit pass: a pass's reads are counted at
        # the key's next pass, so until then credit looks as if it never paid.
        since = self._credit_since
        if credit[0] and plain[0] and 0 <= since < self._turn - self.main_weight:
            lead = credit[1] / credit[0] - plain[1] / plain[0]
            if self.honour_credit:
                both = (credit[1] + plain[1]) / (credit[0] + plain[0])
                noise = both * (1 - both) * (1 / credit[0] + 1 / plain[0])
                self.honour_credit = lead >= 0 or lead * lead <= _SURE2 * noise
            else:
                self.honour_credit = lead > 0
        for pair in (credit, plain):
            pair[0] /= 2
            pair[1] /= 2
        self._aged_at = self._turn + max(1, self.main_weight)

    def remove(self, key: Hashable) -> None:
        self._left_over.pop(key, None)
        super().remove(key)

    def clear(self) -> None:
        self._left_over.clear()
        super().clear()

    def _trim_ghost(self) -> None:
        ghost = self._ghost_stamps
        while self.ghost_weight > self.ghost_max and ghost:
            self.ghost_weight -= ghost.popitem(last=False)[1] & _WEIGHT_MASK

    def _trim_main_ghost(self) -> None:
        ghost = self._main_ghost
        while self.main_ghost_weight > self.small_max and ghost:
            self.main_ghost_weight -= ghost.popitem(last=False)[1]
