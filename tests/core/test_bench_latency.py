"""benchmarks/latency.py: the zipf 90/10 mixed row goes on through its stream."""

from __future__ import annotations

from typing import Any

from benchmarks import latency


class Recorder:
    """A cache that records the keys read and written and never holds anything."""

    def __init__(self) -> None:
        self.reads: list[str] = []
        self.writes: list[str] = []

    def get(self, key: str, default: Any = None) -> Any:
        self.reads.append(key)
        return default

    def set(self, key: str, value: Any) -> None:
        self.writes.append(key)

    def get_many(self, keys: list[str]) -> dict[str, Any]:
        return {}

    def set_many(self, mapping: dict[str, Any]) -> None:
        pass

    def incr(self, key: str) -> int:
        return 1


def test_the_mixed_cursor_carries_on_across_calls() -> None:
    stream = [(i % 10 == 0, f"z:{i}") for i in range(25)]
    cache = Recorder()
    mixed = latency.operations(cache, stream)["zipf 90/10 mixed"]
    cache.reads.clear()
    cache.writes.clear()
    mixed(10)
    first = cache.writes[:]
    cache.writes.clear()
    mixed(10)
    second = cache.writes[:]
    # every request is a write or a missed read followed by a set of its key
    assert first == [key for _, key in stream[:10]]
    assert second == [key for _, key in stream[10:20]]
    cache.writes.clear()
    mixed(10)  # wraps at the end of the stream
    assert cache.writes == [key for _, key in stream[20:] + stream[:5]]


def test_the_mixed_workload_counts_its_read_misses() -> None:
    stream = [(i % 10 == 0, f"z:{i}") for i in range(25)]
    mixed = latency.MixedStream(Recorder(), stream, b"v")
    mixed(20)
    assert mixed.misses == 18  # 2 of the 20 requests are writes
