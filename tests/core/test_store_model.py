"""Property-based: the store against a plain-dict model, for every registered policy.

The model knows what was written last and when it expires, not what the policy evicted;
so the store may forget a key, but must never return a value the model does not hold,
never return an expired one, and never exceed its budgets. Counters must match exactly.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from django_smartcache.core.policy import POLICIES
from django_smartcache.core.sizing import entry_weight
from django_smartcache.core.store import MemoryStore

KEYS = st.sampled_from([f"k{i}" for i in range(12)])
PAYLOADS = st.binary(max_size=400)
TTLS = st.one_of(st.none(), st.floats(min_value=-1, max_value=6))
BUDGET = 6 * entry_weight(120)
MAX_ENTRIES = 5
#: Up to eight distinct tags: a payload of 300 bytes fits untagged, not with them all.
TAGS = st.lists(
    st.sampled_from([f"t{i}" for i in range(8)]), max_size=8, unique=True
).map(tuple)
ITEM_LIMIT = entry_weight(300)


def machine_for(policy: str) -> type[RuleBasedStateMachine]:
    class StoreModel(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.now = 100.0
            self.store = MemoryStore(
                BUDGET,
                MAX_ENTRIES,
                max_item_size=ITEM_LIMIT,
                policy=policy,
                clock=lambda: self.now,
                sweep_batch=3,
            )
            # key -> (payload, expires, how many tags it carries)
            self.model: dict[str, tuple[bytes, float, int]] = {}
            self.hits = self.misses = 0

        def _live(self, key: str) -> bytes | None:
            value = self.model.get(key)
            if value is None or value[1] <= self.now:
                return None
            return value[0]

        def _write(
            self, key: str, payload: bytes, ttl: float | None, tags: int = 0
        ) -> bool:
            if entry_weight(len(payload), tags=tags) > ITEM_LIMIT:
                self.model.pop(key, None)
                return False
            expires = math.inf if ttl is None else self.now + ttl
            self.model[key] = (payload, expires, tags)
            return True

        def _weight(self, key: str) -> int:
            payload, _, tags = self.model[key]
            return entry_weight(len(payload), tags=tags)

        @rule(key=KEYS, payload=PAYLOADS, ttl=TTLS)
        def set(self, key, payload, ttl):
            assert self.store.set(key, payload, ttl) is self._write(key, payload, ttl)

        @rule(key=KEYS, payload=PAYLOADS, ttl=TTLS, tags=TAGS)
        def set_tagged(self, key, payload, ttl, tags):
            # Each tag weighs TAG_OVERHEAD: the budget and the refusal count it.
            stored = self.store.set(key, payload, ttl, tags=tags)
            assert stored is self._write(key, payload, ttl, len(tags))

        @rule(key=KEYS, payload=PAYLOADS, ttl=TTLS)
        def add(self, key, payload, ttl):
            stored = self.store.add(key, payload, ttl)
            if stored:
                assert self._write(key, payload, ttl)
            elif entry_weight(len(payload)) <= ITEM_LIMIT and self._live(key) is None:
                # Written, then turned away by the policy at once: not resident, and
                # add() said so (it did not add it). Otherwise refused as present.
                assert not self.store.has(key)
                self._write(key, payload, ttl)

        @rule(items=st.lists(st.tuples(KEYS, PAYLOADS), max_size=4), ttl=TTLS)
        def set_many(self, items, ttl):
            refused = self.store.set_many(items, ttl)
            expected = [k for k, p in items if not self._write(k, p, ttl)]
            assert refused == expected

        @rule(key=KEYS)
        def get(self, key):
            got = self.store.get(key)
            if got is None:
                self.misses += 1
            else:
                self.hits += 1
                assert got == self._live(key), (
                    "returned a value the model does not hold"
                )

        @rule(keys=st.lists(KEYS, max_size=5, unique=True))
        def get_many(self, keys):
            got = self.store.get_many(keys)
            self.hits += len(got)
            self.misses += len(keys) - len(got)
            for key, payload in got.items():
                assert payload == self._live(key)

        @rule(key=KEYS)
        def delete(self, key):
            was_live = self.store.has(key)
            assert self.store.delete(key) is was_live
            self.model.pop(key, None)

        @rule(key=KEYS, ttl=TTLS)
        def touch(self, key, ttl):
            if self.store.touch(key, ttl):
                payload = self._live(key)
                assert payload is not None
                tags = self.model[key][2]
                expires = math.inf if ttl is None else self.now + ttl
                self.model[key] = (payload, expires, tags)

        @rule(seconds=st.floats(min_value=0, max_value=3))
        def advance(self, seconds):
            self.now += seconds

        @rule()
        def clear_expired(self):
            self.store.clear_expired()
            for key in list(self.model):
                if self._live(key) is None:
                    assert not self.store.has(key)

        @invariant()
        def within_budget(self):
            assert self.store.bytes_used <= BUDGET
            assert len(self.store) <= MAX_ENTRIES

        @invariant()
        def resident_values_are_the_models(self):
            live_keys = [k for k in self.model if self._live(k) is not None]
            resident = [k for k in live_keys if self.store.has(k)]
            # every expired entry is either reclaimed or never returned (checked in get);
            # bytes of the live residents are exact and never exceed the total.
            accounted = sum(self._weight(k) for k in resident)
            assert accounted <= self.store.bytes_used

        @invariant()
        def counters_are_exact(self):
            stats = self.store.stats()
            assert (stats["hits"], stats["misses"]) == (self.hits, self.misses)
            assert stats["bytes_used"] == self.store.bytes_used
            assert stats["entries"] == len(self.store)

        def teardown(self):
            self.store.clear_expired()
            total = sum(
                self._weight(k)
                for k in self.model
                if self._live(k) is not None and self.store.has(k)
            )
            assert total == self.store.bytes_used

    StoreModel.__name__ = f"StoreModel_{policy}"
    return StoreModel


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_store_matches_model(policy):
    machine = machine_for(policy)
    machine.TestCase.settings = settings(
        max_examples=100,
        stateful_step_count=40,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    machine.TestCase().runTest()
