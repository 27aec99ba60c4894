"""The frequency sketch: counting, saturation, aging, doorkeeper, write-back."""

from __future__ import annotations

import random

from django_smartcache.core.sketch import MAX_COUNT, FrequencySketch


def test_counts_and_saturates() -> None:
    sketch = FrequencySketch(100)
    assert sketch.frequency(1) == 0
    for expected in range(1, 20):
        sketch.increment(1)
        assert sketch.frequency(1) == min(expected, MAX_COUNT)


def test_never_underestimates() -> None:
    sketch = FrequencySketch(2_000)
    rng = random.Random(0)
    truth = {key: rng.randrange(1, 12) for key in range(2_000)}
    for key, count in truth.items():
        for _ in range(count):
            sketch.increment(key)
    estimates = {key: sketch.frequency(key) for key in truth}
    assert all(estimates[key] >= count for key, count in truth.items())
    # Sized for the keys it sees, most estimates are exact despite collisions.
    exact = sum(estimates[key] == count for key, count in truth.items())
    assert exact > len(truth) // 2


def test_reset_halves_every_counter() -> None:
    sketch = FrequencySketch(100)
    for _ in range(15):
        sketch.increment("hot")
    for _ in range(6):
        sketch.increment("warm")
    sketch.increment("cold")
    sketch.reset()
    assert (sketch.frequency("hot"), sketch.frequency("warm")) == (7, 3)
    assert sketch.frequency("cold") == 0
    assert sketch.resets == 1
    sketch.reset()
    assert (sketch.frequency("hot"), sketch.frequency("warm")) == (3, 1)


def test_doorkeeper_absorbs_first_access_until_reset() -> None:
    sketch = FrequencySketch(100, doorkeeper=True)
    sketch.increment(7)
    assert sketch.frequency(7) == 1  # the doorkeeper bit alone
    sketch.increment(7)
    sketch.increment(7)
    assert sketch.frequency(7) == 3  # door bit + two counted accesses
    sketch.reset()
    assert sketch.frequency(7) == 1  # counters halved (2 -> 1), doorkeeper cleared


def test_record_raises_but_never_lowers() -> None:
    sketch = FrequencySketch(100)
    sketch.record("k", 9)
    assert sketch.frequency("k") == 9
    sketch.record("k", 4)
    assert sketch.frequency("k") == 9
    sketch.record("k", 99)
    assert sketch.frequency("k") == MAX_COUNT


def test_growing_forgets_history() -> None:
    sketch = FrequencySketch(16)
    sketch.increment("k")
    assert not sketch.ensure_capacity(10)
    assert sketch.frequency("k") == 1
    assert sketch.ensure_capacity(100)
    assert sketch.expected_keys == 128
    assert sketch.width == 512
    assert sketch.frequency("k") == 0


def test_increment_returns_the_estimate_frequency_gives() -> None:
    """W-TinyLFU takes a miss's count from ``increment`` for the insert that follows
    (one hashing instead of two): it must be what ``frequency`` says, saturation and
    collisions included; with the doorkeeper on it is not given (None)."""
    sketch = FrequencySketch(8)
    for i in range(2_000):
        key = f"k{i % 37}"
        assert sketch.increment(key) == sketch.frequency(key)
    door = FrequencySketch(8, doorkeeper=True)
    assert door.increment("a") is None
    assert door.increment("a") is None


def test_record_of_nothing_changes_nothing() -> None:
    sketch = FrequencySketch(8, doorkeeper=True)
    sketch.record("a", 0)
    sketch.record("b", -1)
    assert sketch.frequency("a") == sketch.frequency("b") == 0
