"""benchmarks/latency.py: each row times what its name says; the mixed row goes on
through its stream."""

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
    mixed = latency.MixedStream(cache, stream, b"v")
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


class DictCache:
    """A plain dict behind the API the rows call, recording the sizes they read and write."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self.read: list[int] = []
        self.written: list[int] = []

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def set(self, key: str, value: Any) -> None:
        self.data[key] = value
        self.written.append(len(value) if isinstance(value, bytes) else 0)

    def get_many(self, keys: list[str]) -> dict[str, Any]:
        found = {k: self.data[k] for k in keys if k in self.data}
        self.read += [len(v) for v in found.values()]
        return found

    def set_many(self, mapping: dict[str, Any]) -> None:
        self.data.update(mapping)
        self.written += [len(v) for v in mapping.values()]

    def incr(self, key: str) -> int:
        self.data[key] += 1
        return int(self.data[key])


def test_each_batch_row_reads_and_writes_the_size_in_its_name() -> None:
    """A row must not time what the row before it left: get_many(100) once read the
    10 KB values "set 10 KB" had written over its keys."""
    cache = DictCache()
    rows = latency.operations(cache)
    for name, fn in rows.items():  # in order, as api_table runs them
        cache.read.clear()
        cache.written.clear()
        fn(30)
        sizes = set(cache.read if name.startswith("get_many") else cache.written)
        if name.endswith("100 B"):
            assert sizes == {100}, name
        elif name.endswith("10 KB"):
            assert sizes == {10 * 1024}, name
        if name.startswith("get_many"):
            assert len(cache.read) == 30 * 100, name  # every key a hit
