"""The real access traces (cache2k, CC BY 4.0) read from ``../shared/traces``.

Traces are xz-compressed streams of big-endian signed 32-bit keys, one per request;
see ``benchmarks/README-traces.md`` for their origin, licence and credit.
"""

from __future__ import annotations

import lzma
import os
from array import array
from pathlib import Path

__all__ = ["TRACES", "TRACE_DIR", "available", "load"]

#: Where the traces live: ``$SMARTCACHE_TRACES``, else ``../shared/traces`` next to the repo.
TRACE_DIR = Path(
    os.environ.get(
        "SMARTCACHE_TRACES", Path(__file__).resolve().parents[2] / "shared" / "traces"
    )
)

#: name -> (file, requests used): orm-busy is cut to its first 2,000,000 requests, the
#: prefix its published reference ratios were measured on.
TRACES: dict[str, tuple[str, int | None]] = {
    "orm-busy": ("orm-busy.trace.xz", 2_000_000),
    "web12": ("web12.trace.xz", None),
}


def available() -> list[str]:
    """The traces present on this machine."""
    return [name for name, (file, _) in TRACES.items() if (TRACE_DIR / file).exists()]


def load(name: str, limit: int | None = None) -> list[int]:
    """The keys of trace ``name`` (its standard prefix, or the first ``limit`` requests)."""
    file, standard = TRACES[name]
    data = array("i")
    with lzma.open(TRACE_DIR / file) as fh:
        data.frombytes(fh.read())
    if data.itemsize != 4:  # pragma: no cover - array("i") is 32-bit on every CPython
        raise RuntimeError("array('i') is not 32-bit here")
    data.byteswap()  # stored big-endian; array() reads native (little-endian) order
    cut = limit if limit is not None else standard
    keys = data.tolist()
    return keys[:cut] if cut is not None else keys
