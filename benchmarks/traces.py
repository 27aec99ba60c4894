"""Real access traces for the hit-ratio benchmark: the bundled ones, or any file given.

The bundled traces (cache2k, CC BY 4.0; origin, licence and credit in
``benchmarks/data/README.md``) are xz-compressed streams of big-endian signed 32-bit
keys, one per request. Every ``*.trace.xz`` / ``*.trace`` file of :data:`TRACE_DIR` is a
trace; :func:`load_file` also reads text traces (one request per line), so a trace
nobody here has seen can be replayed with ``python -m benchmarks hitratio --trace PATH``.
"""

from __future__ import annotations

import gzip
import lzma
import os
from array import array
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

__all__ = ["TRACES", "TRACE_DIR", "available", "load", "load_file"]

#: Where the traces live: ``$SMARTCACHE_TRACES``, else ``benchmarks/data``.
TRACE_DIR = Path(
    os.environ.get("SMARTCACHE_TRACES", Path(__file__).resolve().parent / "data")
)

#: Requests used of a named trace: orm-busy is cut to its first 2,000,000 requests, the
#: prefix its published reference ratios were measured on; others are used whole.
TRACES: dict[str, int | None] = {"orm-busy": 2_000_000}

_BINARY_SUFFIXES = (".trace.xz", ".trace")
_XZ_MAGIC = b"\xfd7zXZ\x00"
_GZIP_MAGIC = b"\x1f\x8b"


def _name(path: Path) -> str:
    for suffix in _BINARY_SUFFIXES:
        if path.name.endswith(suffix):
            return path.name[: -len(suffix)]
    return path.name


def available() -> list[str]:
    """The names of the binary traces in :data:`TRACE_DIR`, sorted."""
    if not TRACE_DIR.is_dir():
        return []
    return sorted(
        _name(path)
        for path in TRACE_DIR.iterdir()
        if path.is_file() and path.name.endswith(_BINARY_SUFFIXES)
    )


def load(name: str, limit: int | None = None) -> list[int]:
    """The keys of trace ``name`` of :data:`TRACE_DIR` (its standard prefix, or ``limit``)."""
    for suffix in _BINARY_SUFFIXES:
        path = TRACE_DIR / f"{name}{suffix}"
        if path.exists():
            return load_file(path, limit=limit if limit else TRACES.get(name))
    raise FileNotFoundError(f"no trace {name!r} in {TRACE_DIR}")


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
    opener = _opener(path)
    if path.name.endswith(_BINARY_SUFFIXES) and column is None:
        data = array("i")
        with opener(path, "rb") as fh:
            data.frombytes(fh.read())
        if data.itemsize != 4:  # pragma: no cover - array("i") is 32-bit on CPython
            raise RuntimeError("array('i') is not 32-bit here")
        data.byteswap()  # stored big-endian; array() reads native (little-endian) order
        keys = data.tolist()
        return keys[:limit] if limit is not None else keys
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
