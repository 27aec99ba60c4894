"""``benchmarks.traces.load_file`` and ``hitratio --trace`` on the trace formats a user
brings: small files written here, one per format and per way they were misread."""

from __future__ import annotations

import lzma
import sys
import tracemalloc
from array import array
from collections.abc import Callable
from pathlib import Path

import pytest

from benchmarks import hitratio, traces


def cache2k_bytes(keys: list[int]) -> bytes:
    """The cache2k binary format, uncompressed: big-endian signed 32-bit keys."""
    data = array("i", keys)
    if sys.byteorder == "little":
        data.byteswap()
    return data.tobytes()


def peak_bytes_of(call: Callable[[], object]) -> int:
    """The peak of Python's allocations while ``call()`` runs."""
    tracemalloc.start()
    try:
        call()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("name", ["big.trace", "big.trace.xz"])
def test_a_limit_reads_only_the_requests_asked_for(tmp_path: Path, name: str) -> None:
    """load_file read (and decompressed) a whole binary trace, then kept its first
    ``limit`` keys: 1,000 requests of a 30M-request trace took 1.3 GB and 3 s."""
    raw = cache2k_bytes(list(range(1_000_000)))
    path = tmp_path / name
    # preset 0: a 256 KiB dictionary (the decoder allocates one of its size)
    path.write_bytes(lzma.compress(raw, preset=0) if name.endswith(".xz") else raw)
    keys: list[int] = []
    peak = peak_bytes_of(lambda: keys.extend(traces.load_file(path, limit=1_000)))
    assert keys == list(range(1_000))
    assert peak < 1_000_000, peak  # the whole file is 4 MB


def test_a_binary_file_cut_inside_a_key_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "cut.trace"
    path.write_bytes(cache2k_bytes([1, 2, 3])[:-1])
    with pytest.raises(ValueError, match="not a whole number of 32-bit keys"):
        traces.load_file(path)


@pytest.mark.parametrize("limit", [0, -5])
def test_a_limit_below_one_is_refused(tmp_path: Path, limit: int) -> None:
    """--limit 0 read one request of a text trace and none of a binary one."""
    text = tmp_path / "t.txt"
    text.write_text("a\nb\na\n")
    binary = tmp_path / "b.trace"
    binary.write_bytes(cache2k_bytes([1, 2, 1]))
    for path in (text, binary):
        with pytest.raises(ValueError, match="positive"):
            traces.load_file(path, limit=limit)


def test_the_command_refuses_a_limit_below_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "t.txt"
    path.write_text("a\nb\na\n")
    with pytest.raises(SystemExit) as exit_:
        hitratio.main(["--trace", str(path), "--limit", "0"])
    assert exit_.value.code == 2
    assert "--limit: '0' is not a positive whole number" in capsys.readouterr().err
