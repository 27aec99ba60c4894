"""Real access traces for the hit-ratio benchmark: the bundled ones, or any file given.

The bundled traces (cache2k, CC BY 4.0; origin, licence and credit in
``benchmarks/data/README.md``) are xz-compressed streams of big-endian signed 32-bit
keys, one per request. Every ``*.trace.xz`` / ``*.trace`` file of :data:`TRACE_DIR`, or
of its ``fetched/`` folder (where ``python -m benchmarks fetch-traces`` writes public
traces it converts; not committed), is a trace. A ``NAME.sizes.xz`` file beside
``NAME.trace.xz``, in the same format, holds the size in bytes of each request.
:func:`load_file` also reads text traces (one request per line), so a trace nobody here
has seen can be replayed with ``python -m benchmarks hitratio --trace PATH``.
"""

from __future__ import annotations

import gzip
import lzma
import os
import sys
from array import array
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

__all__ = [
    "FETCH_DIR",
    "TRACES",
    "TRACE_DIR",
    "available",
    "load",
    "load_file",
    "load_sizes",
    "sizes_file",
    "trace_dirs",
    "write_file",
]

#: Where the traces live: ``$SMARTCACHE_TRACES``, else ``benchmarks/data``.
TRACE_DIR = Path(
    os.environ.get("SMARTCACHE_TRACES", Path(__file__).resolve().parent / "data")
)

#: Where ``fetch-traces`` writes: ``$SMARTCACHE_TRACES``, else ``benchmarks/data/fetched``
#: (git-ignored: downloaded traces are never committed).
FETCH_DIR = TRACE_DIR if "SMARTCACHE_TRACES" in os.environ else TRACE_DIR / "fetched"

#: Requests used of a named trace: orm-busy is cut to its first 2,000,000 requests, the
#: prefix its published reference ratios were measured on; others are used whole.
TRACES: dict[str, int | None] = {"orm-busy": 2_000_000}

_BINARY_SUFFIXES = (".trace.xz", ".trace")
_SIZES_SUFFIX = ".sizes.xz"
_XZ_MAGIC = b"\xfd7zXZ\x00"
_GZIP_MAGIC = b"\x1f\x8b"


def _name(path: Path) -> str:
    for suffix in _BINARY_SUFFIXES:
        if path.name.endswith(suffix):
            return path.name[: -len(suffix)]
    return path.name


def trace_dirs() -> list[Path]:
    """The folders scanned for traces: :data:`TRACE_DIR`, then its ``fetched/``."""
    return [TRACE_DIR, TRACE_DIR / "fetched"]


def _find(name: str) -> Path | None:
    for folder in trace_dirs():
        for suffix in _BINARY_SUFFIXES:
            path = folder / f"{name}{suffix}"
            if path.is_file():
                return path
    return None


def available() -> list[str]:
    """The names of the binary traces in :func:`trace_dirs`, sorted (once each)."""
    return sorted(
        {
            _name(path)
            for folder in trace_dirs()
            if folder.is_dir()
            for path in folder.iterdir()
            if path.is_file() and path.name.endswith(_BINARY_SUFFIXES)
        }
    )


def load(name: str, limit: int | None = None) -> list[int]:
    """The keys of trace ``name`` (its standard prefix, or ``limit``); the first folder of
    :func:`trace_dirs` holding it wins."""
    path = _find(name)
    if path is None:
        raise FileNotFoundError(
            f"no trace {name!r} in {' or '.join(map(str, trace_dirs()))}"
        )
    return load_file(path, limit=limit if limit else TRACES.get(name))


def sizes_file(trace: str | Path) -> Path | None:
    """The ``NAME.sizes.xz`` file of a trace: ``trace`` is a name (str) or a binary
    trace file (Path); ``None`` when there is none."""
    path = _find(trace) if isinstance(trace, str) else Path(trace)
    if path is None or not path.name.endswith(_BINARY_SUFFIXES):
        return None
    sizes = path.with_name(_name(path) + _SIZES_SUFFIX)
    return sizes if sizes.is_file() else None


def load_sizes(trace: str | Path, limit: int | None = None) -> list[int] | None:
    """The size in bytes of each request of a trace (a name, or a trace file as a Path),
    cut like its keys (``limit``, else a named trace's standard prefix); ``None`` when
    it has no sizes file."""
    path = sizes_file(trace)
    if path is None:
        return None
    if limit is None and isinstance(trace, str):
        limit = TRACES.get(trace)
    return _read_binary(path, limit)


def write_file(path: str | Path, values: array[int] | Sequence[int]) -> None:
    """Write ``values`` in the cache2k binary format (xz, big-endian signed 32-bit)."""
    data = values if isinstance(values, array) else array("i", values)
    if data.typecode != "i" or data.itemsize != 4:
        raise TypeError("write_file wants array('i') of 32-bit ints")
    if sys.byteorder == "little":
        data = array("i", data)
        data.byteswap()
    with lzma.open(path, "wb") as fh:
        fh.write(data.tobytes())


def _check_limit(limit: int | None) -> None:
    if limit is not None and (isinstance(limit, bool) or limit <= 0):
        raise ValueError(f"limit must be a positive number of requests, not {limit!r}")


def _read_exactly(fh: IO[bytes], size: int) -> bytes:
    """Up to ``size`` bytes (fewer only at the end of the stream)."""
    chunks = []
    while size > 0:
        chunk = fh.read(min(size, 1 << 24))
        if not chunk:
            break
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _read_binary(path: Path, limit: int | None) -> list[int]:
    """The 32-bit keys of a cache2k binary file; with ``limit``, only its first
    ``4 * limit`` bytes are read (decompressed)."""
    _check_limit(limit)
    with _opener(path)(path, "rb") as fh:
        raw = fh.read() if limit is None else _read_exactly(fh, 4 * limit)
    if len(raw) % 4:
        raise ValueError(
            f"{path}: {len(raw):,} bytes is not a whole number of 32-bit keys "
            "(not a cache2k binary trace?)"
        )
    data = array("i")
    data.frombytes(raw)
    del raw
    if data.itemsize != 4:  # pragma: no cover - array("i") is 32-bit on CPython
        raise RuntimeError("array('i') is not 32-bit here")
    if sys.byteorder == "little":
        data.byteswap()  # stored big-endian; array() reads native order
    return data.tolist()


def _opener(path: Path) -> Callable[..., IO[Any]]:
    with open(path, "rb") as fh:
        head = fh.read(6)
    if head.startswith(_XZ_MAGIC):
        return lzma.open  # type: ignore[return-value]
    if head.startswith(_GZIP_MAGIC):
        return gzip.open  # type: ignore[return-value]
    return open


def load_file(
    path: str | Path, *, column: int | None = None, limit: int | None = None
) -> list[int]:
    """The requests of a trace file as keys, at most ``limit`` of them.

    A file named ``*.trace`` or ``*.trace.xz`` is the cache2k binary format (big-endian
    signed 32-bit keys). Anything else is text: one request per line, blank lines and
    ``#`` comments skipped, the key being field ``column`` (default 0) of the line split
    on commas, or on white space when it has none; text keys are numbered in order of
    first appearance. Plain, gzip and xz files are read alike (by their magic bytes).
    """
    path = Path(path)
    _check_limit(limit)
    if path.name.endswith(_BINARY_SUFFIXES) and column is None:
        return _read_binary(path, limit)
    opener = _opener(path)
    field = column or 0
    ids: dict[str, int] = {}
    out: list[int] = []
    with opener(path, "rt", encoding="utf-8", errors="replace") as fh:
        for number, line in enumerate(fh, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split(",") if "," in line else line.split()
            if field >= len(parts):
                raise ValueError(f"{path}:{number}: no field {field} in {line[:80]!r}")
            key = parts[field].strip()
            out.append(ids.setdefault(key, len(ids)))
            if limit is not None and len(out) >= limit:
                break
    return out
