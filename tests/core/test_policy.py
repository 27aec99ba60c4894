"""Eviction policies: exact small-case behaviour, weights, and the store-loop invariants."""

from __future__ import annotations

import random
from collections.abc import Hashable

import pytest
from hypothesis import given, settings, strategies as st

from django_smartcache.core import DEFAULT_POLICY, POLICIES, make_policy
from django_smartcache.core.s3fifo import (
    MAX_SMALL_SHARE,
    MIN_SMALL_SHARE,
    AdaptiveS3FIFOPolicy,
    S3FIFOPolicy,
)
from django_smartcache.core.tinylfu import TinyLFUPolicy
from tests.core.store_loop import replay


def miss_then_insert(policy: object, key: Hashable, weight: int = 1) -> None:
    policy.record_miss(key)  # type: ignore[attr-defined]
    policy.insert(key, weight)  # type: ignore[attr-defined]


# -- W-TinyLFU -------------------------------------------------------------------------


def test_tinylfu_sizes_follow_caffeine() -> None:
    policy = TinyLFUPolicy(1_000)
    assert (policy.window_max, policy.protected_max, policy.main_max) == (10, 792, 990)
    small = TinyLFUPolicy(10)
    assert (small.window_max, small.protected_max) == (1, 7)


def test_tinylfu_window_overflow_becomes_candidates_and_admission_compares() -> None:
    policy = TinyLFUPolicy(10, adaptive=False)
    for key in range(10):
        miss_then_insert(policy, key)
    policy.record_hit(5)
    policy.record_hit(5)
    assert policy.segments()["window"] == [0, 1, 2, 3, 4, 6, 7, 8, 9, 5]
    miss_then_insert(policy, 10)
    # The window keeps its newest key; the rest go to probation as candidates. The
    # newest candidate (5, three accesses) beats probation's oldest (0, one access).
    assert policy.evict() == 0
    assert policy.segments() == {
        "window": [10],
        "probation": [1, 2, 3, 4, 6, 7, 8, 9, 5],
        "protected": [],
    }
    policy.record_hit(5)
    assert policy.segments()["protected"] == [5]
    assert policy.frequency(5) == 4


def test_tinylfu_rejects_a_candidate_no_more_popular_than_the_victim() -> None:
    policy = TinyLFUPolicy(4, adaptive=False)
    for key in "abcd":
        miss_then_insert(policy, key)
    miss_then_insert(policy, "e")
    # Ties go to the resident: the candidate (d, newest moved out of the window) leaves.
    assert policy.evict() == "d"
    assert policy.segments() == {
        "window": ["e"],
        "probation": ["a", "b", "c"],
        "protected": [],
    }


def test_tinylfu_protected_overflow_is_demoted_to_probation() -> None:
    policy = TinyLFUPolicy(10, adaptive=False)  # protected holds 7
    for key in range(10):
        miss_then_insert(policy, key)
    miss_then_insert(policy, 10)
    assert policy.evict() == 9
    for key in range(9):
        policy.record_hit(key)  # probation hits promote
    segments = policy.segments()
    assert segments["protected"] == [2, 3, 4, 5, 6, 7, 8]
    assert segments["probation"] == [0, 1]
    assert policy.protected_weight == 7


def test_tinylfu_heavy_newcomer_is_refused_when_it_leaves_the_window() -> None:
    policy = TinyLFUPolicy(100, adaptive=False)
    for key in range(10):
        miss_then_insert(policy, key, 10)
        policy.record_hit(key)
    miss_then_insert(policy, "big", 30)  # one access: less popular than any resident
    # The newest key waits in the window (readable, as a write must be) although it
    # outweighs the window: residents make room for it.
    while policy.weight > 100:
        assert policy.evict() != "big"
    assert policy.segments()["window"] == ["big"]
    # The next newcomer pushes it out of the window: judged then, and refused.
    miss_then_insert(policy, "next", 10)
    assert policy.evict() == "big"
    assert "big" not in policy
    assert policy.segments()["window"] == ["next"]


@pytest.mark.parametrize("adaptive", [True, False])
def test_tinylfu_a_window_smaller_than_an_entry_still_holds_the_newest_key(
    adaptive: bool,
) -> None:
    """By weight, 1% of the capacity (or a window the climber shrank) can be less than
    one entry: every newcomer went straight to admission and lost to any resident read
    once, so a key just written was gone before it was read."""
    policy = TinyLFUPolicy(100_000, adaptive=adaptive)
    assert policy.window_max < 1_100
    for key in range(90):  # full, and every resident read
        miss_then_insert(policy, key, 1_100)
        policy.record_hit(key)
    for n in range(50):
        key = f"new-{n}"
        miss_then_insert(policy, key, 1_100)
        while policy.weight > policy.capacity:
            assert policy.evict() != key
        assert key in policy


def test_tinylfu_entry_larger_than_capacity_leaves_after_the_others() -> None:
    # The key last written is the last to go, even one heavier than the capacity
    # (a store refuses those; its policy capacity can be below its byte budget when
    # MAX_ENTRIES binds, and a value within the budget must stay readable).
    policy = TinyLFUPolicy(10, adaptive=False)
    miss_then_insert(policy, "small", 1)
    for _ in range(5):
        miss_then_insert(policy, "huge", 11) if "huge" not in policy else None
        policy.record_miss("huge")
    policy.remove("huge")
    miss_then_insert(policy, "huge", 11)
    assert policy.evict() == "small"
    assert policy.evict() == "huge"
    assert policy.weight == 0


def test_tinylfu_update_changes_weight_and_counts_as_access() -> None:
    policy = TinyLFUPolicy(100)
    miss_then_insert(policy, "k", 10)
    policy.update("k", 25)
    assert policy.weight == 25
    assert policy.frequency("k") == 2


def test_tinylfu_aging_halves_resident_counts() -> None:
    policy = TinyLFUPolicy(10, adaptive=False)
    miss_then_insert(policy, "hot")
    for _ in range(14):
        policy.record_hit("hot")
    assert policy.frequency("hot") == 15
    # A sample is 10 accesses per tracked key (at least 16 keys): 160 accesses.
    for i in range(200):
        policy.record_miss(("cold", i))
    assert policy.frequency("hot") == 7


def test_tinylfu_history_survives_eviction() -> None:
    policy = TinyLFUPolicy(4, adaptive=False)
    miss_then_insert(policy, "k")
    for _ in range(5):
        policy.record_hit("k")
    policy.remove("k")
    assert policy.frequency("k") == 6  # handed back to the sketch


def test_tinylfu_climber_moves_the_window_against_a_falling_hit_rate() -> None:
    policy = TinyLFUPolicy(1_000)
    resident: set[int] = set()
    for key in range(3_000):
        miss_then_insert(policy, key)
        resident.add(key)
        while len(resident) > 1_000:
            resident.discard(policy.evict())  # type: ignore[arg-type]
    before, step = policy.window_max, policy._step
    policy._previous_rate, policy._hits, policy._misses = (
        0.9,
        10,
        90,
    )  # rate fell to 0.1
    policy._climb()
    adjustment = int(-step)  # a fall reverses the last direction
    expected = before + adjustment if adjustment > 0 else max(1, before + adjustment)
    assert policy.window_max == expected
    assert policy.window_max + policy.main_max == 1_000
    segments = policy.segments()
    assert policy.window_weight == len(segments["window"])
    assert policy.protected_weight == len(segments["protected"]) <= policy.protected_max
    assert sum(map(len, segments.values())) == len(resident) == 1_000
    # A big change restarts with a full step, in the direction just taken.
    assert abs(policy._step) == pytest.approx(0.0625 * 1_000)


# -- S3-FIFO ---------------------------------------------------------------------------


def test_s3fifo_small_queue_ghost_and_main() -> None:
    policy = S3FIFOPolicy(10)  # small 1, ghost 9
    for key in range(10):
        miss_then_insert(policy, key)
    miss_then_insert(policy, 10)
    assert policy.evict() == 0  # read once only: to the ghost
    policy.record_hit(1)
    miss_then_insert(policy, 11)
    assert policy.evict() == 2  # 1 was read again: moved to main; 2 was not
    assert policy.segments() == {
        "small": [3, 4, 5, 6, 7, 8, 9, 10, 11],
        "main": [1],
        "ghost": [0, 2],
    }
    miss_then_insert(policy, 0)  # remembered by the ghost: straight to main
    assert policy.segments()["main"] == [1, 0]
    assert policy.segments()["ghost"] == [2]


def test_s3fifo_main_gives_read_keys_another_pass() -> None:
    policy = S3FIFOPolicy(10)
    for key in range(10):
        miss_then_insert(policy, key)
        policy.record_hit(key)
    miss_then_insert(policy, 10)
    # Small is over its share: its read keys move to main (their count starts over).
    # The newcomer is not its own victim (S3-FIFO evicts before it inserts): main's
    # head leaves.
    assert policy.evict() == 0
    assert policy.segments() == {"small": [10], "main": list(range(1, 10)), "ghost": []}
    policy.record_hit(1)
    miss_then_insert(policy, 11)
    # Small's oldest (10) was never read: to the ghost, now that it is not the newest.
    assert policy.evict() == 10
    assert policy.segments()["ghost"] == [10]
    # Small holds only the newcomer: main's turn. Its head (1) was read since it
    # arrived: it gets another pass; 2 was not.
    assert policy.evict() == 2
    assert policy.segments()["main"] == [3, 4, 5, 6, 7, 8, 9, 1]


def test_s3fifo_weights() -> None:
    policy = S3FIFOPolicy(100)
    miss_then_insert(policy, "a", 60)
    miss_then_insert(policy, "b", 50)
    assert policy.evict() == "a"
    assert policy.weight == 50
    policy.update("b", 70)
    assert policy.weight == 70


def store_loop(
    policy: S3FIFOPolicy, keys: list[int], resident: set[int] | None = None
) -> set[int]:
    """Insert each absent key (read the resident ones), evicting down to capacity."""
    resident = set() if resident is None else resident
    for key in keys:
        if key in resident:
            policy.record_hit(key)
            continue
        miss_then_insert(policy, key)
        resident.add(key)
        while policy.weight > policy.capacity:
            resident.remove(policy.evict())  # type: ignore[arg-type]
    return resident


def test_adaptive_s3fifo_grows_small_when_its_ghost_comes_back_soon() -> None:
    policy = AdaptiveS3FIFOPolicy(20)  # small 2 (10%)
    resident = store_loop(policy, list(range(21)))
    assert policy.segments()["ghost"] == [0]  # unread: dropped from small
    store_loop(policy, [0], resident)  # back before 2 more keys left small
    assert policy.small_share == pytest.approx(0.15)
    assert policy.small_max == 3
    assert 0 in policy.segments()["main"]  # S3-FIFO's rule for a ghost: to main


def test_adaptive_s3fifo_ignores_a_ghost_that_comes_back_late() -> None:
    policy = AdaptiveS3FIFOPolicy(20)
    resident = store_loop(policy, list(range(24)))  # 0 left small, then 1, 2, 3
    store_loop(policy, [0], resident)
    assert policy.small_share == pytest.approx(0.10)
    assert 0 in policy.segments()["main"]


def test_adaptive_s3fifo_shrinks_small_when_mains_evictions_come_back() -> None:
    policy = AdaptiveS3FIFOPolicy(20)
    resident = store_loop(policy, list(range(20)))
    for key in range(20):
        policy.record_hit(key)  # every key will move to main
    store_loop(policy, [20, 21], resident)
    assert policy.segments()["main_ghost"] == [0]  # main's oldest, read once
    store_loop(policy, [0], resident)
    assert policy.small_share == pytest.approx(0.05)
    assert policy.segments()["small"][-1] == 0  # S3-FIFO's rule for a new key


def test_adaptive_s3fifo_share_stays_within_bounds_and_survives_resize() -> None:
    policy = AdaptiveS3FIFOPolicy(1_000)
    for _ in range(2_000):
        policy._adjust(-1)
    assert policy.small_share == pytest.approx(MIN_SMALL_SHARE)
    for _ in range(2_000):
        policy._adjust(1)
    assert policy.small_share == pytest.approx(MAX_SMALL_SHARE)
    policy.resize(100)
    assert (policy.small_share, policy.small_max) == (
        pytest.approx(MAX_SMALL_SHARE),
        int(MAX_SMALL_SHARE * 100),
    )
    adopter = AdaptiveS3FIFOPolicy(400)
    adopter.adopt([(1, 1, 0)], like=policy)
    assert adopter.small_max == int(MAX_SMALL_SHARE * 400)


@pytest.mark.parametrize("policy_class", [S3FIFOPolicy, AdaptiveS3FIFOPolicy])
def test_s3fifo_adopt_lends_no_ghost_of_a_resident_key(
    policy_class: type[S3FIFOPolicy],
) -> None:
    """The shadow lending its ghost may have dropped keys the live cache still holds:
    those stay out of the adopter's ghost (else one leaving counts its weight twice)."""
    like = policy_class(10)
    for key in range(20):  # never read: 0-9 leave through small into its ghost
        like.insert(key, 1)
        while len(like) > 10:
            like.evict()
    assert set(range(5, 10)) <= set(like.segments()["ghost"])
    adopter = policy_class(10)
    adopter.adopt([(key, 1, 0) for key in range(5, 15)], like=like)
    segments = adopter.segments()
    assert not set(segments["ghost"]) & set(segments["small"] + segments["main"])
    assert adopter.ghost_weight == len(segments["ghost"])
    adopter.insert(15, 1)
    adopter.evict()
    assert adopter.ghost_weight == len(adopter.segments()["ghost"])


@pytest.mark.parametrize("honour", [True, False])
def test_adaptive_s3fifo_credit_pass_or_back_to_smalls_ghost(honour: bool) -> None:
    policy = AdaptiveS3FIFOPolicy(10)  # small 1
    policy.adopt([(key, 1, 2) for key in range(10)])  # 0-8 in main, 9 in small
    policy.honour_credit = honour
    # 9 (read) goes to main; 0-8 were read since they arrived: a pass each, one
    # count left from those reads; 9's count was reset on its move: out.
    assert policy.evict() == 9
    # 0's count is only credit now (no read since its pass).
    assert policy.evict() == 0
    segments = policy.segments()
    if honour:  # a credit pass each for 0-8, then 0, its count spent, leaves main
        assert segments["main_ghost"] == [0]  # (it holds small_max of weight)
        assert segments["ghost"] == []
    else:  # refused: out at once, into small's ghost
        assert segments["main_ghost"] == [9]
        assert segments["ghost"] == [0]
        assert segments["main"] == [1, 2, 3, 4, 5, 6, 7, 8]
        policy.insert(0, 1)  # asked for again: straight back to main
        assert policy.segments()["main"][-1] == 0


def _sessions(requests: int) -> list[int]:
    """Web-session-like keys: a new session (30% of the other requests) brings two keys,
    each read 3-15 times over the next few thousand requests, then never again; the
    rest are pages of popularity ~ 1/rank."""
    rng = random.Random(7)
    pending: dict[int, list[int]] = {}
    out: list[int] = []
    new = 1_000_000
    for i in range(requests):
        due = pending.pop(i, None)
        if due:
            out.append(due.pop())
            if due:
                pending.setdefault(i + 1, []).extend(due)
            continue
        if rng.random() < 0.3:
            for _ in range(2):
                at = i
                for _ in range(rng.randint(3, 15)):
                    at += 1 + int(rng.expovariate(1 / 800))
                    pending.setdefault(at, []).append(new)
                new += 1
            out.append(new - 2)
        else:
            out.append(int(10_000 ** rng.random()))
    return out


class _AlwaysCredit(AdaptiveS3FIFOPolicy):
    def _age(self) -> None:
        super()._age()
        self.honour_credit = True


def test_adaptive_s3fifo_refuses_credit_to_finished_sessions() -> None:
    """The keys of finished sessions, read a few times, kept up to three more passes by
    their counts: refusing that credit is worth 2.8 points here (LRU's ground)."""
    keys = _sessions(100_000)
    hits = {}
    for policy in (AdaptiveS3FIFOPolicy(1_000), _AlwaysCredit(1_000)):
        resident: set[int] = set()
        hits[type(policy)] = 0
        for key in keys:
            if key in resident:
                hits[type(policy)] += 1
                policy.record_hit(key)
                continue
            policy.insert(key, 1)
            resident.add(key)
            while len(resident) > 1_000:
                resident.remove(policy.evict())  # type: ignore[arg-type]
    assert hits[AdaptiveS3FIFOPolicy] > hits[_AlwaysCredit] + 2_000  # 78,493, 75,692


@settings(max_examples=60, deadline=None)
@given(
    keys=st.lists(st.integers(0, 60), max_size=600),
    capacity=st.integers(1, 40),
)
def test_adaptive_s3fifo_accounts_its_queues(keys: list[int], capacity: int) -> None:
    policy = AdaptiveS3FIFOPolicy(capacity)
    resident = store_loop(policy, keys)
    segments = policy.segments()
    assert set(segments["small"]) | set(segments["main"]) == resident
    assert policy.small_weight == len(segments["small"])
    assert policy.main_weight == len(segments["main"])
    assert policy.ghost_weight == len(segments["ghost"]) <= policy.ghost_max
    assert policy.main_ghost_weight == len(segments["main_ghost"]) <= policy.small_max
    assert not resident & set(segments["ghost"])
    low, high = MIN_SMALL_SHARE * capacity, MAX_SMALL_SHARE * capacity
    assert low <= policy.small_share * capacity <= high


# -- every policy ----------------------------------------------------------------------


def test_registry_and_default() -> None:
    assert set(POLICIES) >= {"lru", "s3fifo", "tinylfu"}
    assert DEFAULT_POLICY in POLICIES
    with pytest.raises(KeyError, match="known: adaptive, lru, s3fifo, tinylfu"):
        make_policy("nope", 10)


operations = st.lists(
    st.tuples(
        st.sampled_from(["get", "set", "delete"]),
        st.integers(0, 40),
        st.integers(1, 30),
    ),
    max_size=300,
)


#: Every registered policy, and the adaptive default's S3-FIFO candidate.
FACTORIES = {**POLICIES, "s3fifo-adaptive-small": AdaptiveS3FIFOPolicy}


@pytest.mark.parametrize("name", sorted(FACTORIES))
@settings(max_examples=60, deadline=None)
@given(ops=operations, capacity=st.integers(1, 100), resize_to=st.integers(1, 100))
def test_store_loop_never_exceeds_capacity(
    name: str, ops: list[tuple[str, int, int]], capacity: int, resize_to: int
) -> None:
    """The store loop (insert, then evict while over budget) keeps the invariants."""
    policy = FACTORIES[name](capacity)

    def check(resident: dict[Hashable, int]) -> None:
        assert sum(resident.values()) <= policy.capacity

    resident = replay(policy, ops, resize_to, check)
    # Draining returns every resident key exactly once.
    drained = []
    while resident:
        victim = policy.evict()
        drained.append(victim)
        del resident[victim]
    assert len(drained) == len(set(drained))


def test_s3fifo_attaches_to_a_store_only_while_empty() -> None:
    from django_smartcache.core.s3fifo import S3FIFOPolicy

    policy = S3FIFOPolicy(10)
    policy.insert("a", 1)
    with pytest.raises(ValueError, match="empty"):
        policy.attach({}, 5)


def test_an_attached_s3fifo_reads_its_counters_from_the_entries() -> None:
    from django_smartcache.core.s3fifo import S3FIFOPolicy

    entries: dict[str, list[int]] = {}
    policy = S3FIFOPolicy(2)
    policy.attach(entries, 1)
    for key in ("a", "b"):
        entries[key] = [0, 0]
        policy.insert(key, 1)
    entries["a"][1] = 1  # the store counted a read of "a"
    entries["c"] = [0, 0]
    policy.insert("c", 1)
    victim = policy.evict()
    assert victim == "b"  # "a" was read: it moves to main instead
    assert entries["a"][1] == 0  # its counter is spent on the move
    assert "a" in policy and "c" in policy and len(policy) == 2
