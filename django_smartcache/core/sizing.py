"""Byte sizes: parsing budgets like ``"64MB"`` and weighing entries for the budget."""

from __future__ import annotations

import math
import re
import sys

#: Bytes charged per entry on top of its payload. It stands for the memory a resident
#: entry costs besides the payload bytes: the store's dict slot, the entry record, the
#: key string (keys of ~10-60 characters), the policy's bookkeeping (node, segment dict
#: slot, frequency sketch share) and the expiry bucket slot, plus allocator slack under
#: churn. Measured with ``python -m benchmarks memory`` on CPython 3.11, 100-byte values,
#: budget full and evicting: 885-1,240 bytes per entry with the default TinyLFU policy
#: (dicts and the sketch grow in power-of-two steps), ~610 with LRU (see
#: ``docs/backends.md``). 1024 keeps RSS growth within 1.5x the budget for tiny values.
ENTRY_OVERHEAD = 1024

#: Bytes charged per tag on top of :data:`ENTRY_OVERHEAD`, for a tagged entry: what
#: the tag index keeps for each tag the entry carries (its key's slot in the tag's
#: key set, a slot in the entry's tuple of tags; one tag string is shared by all its
#: entries), with the sets' spare slots and allocator slack: ~96 bytes of RSS per tag
#: per entry, the rest within ENTRY_OVERHEAD's margin. Uncharged, RSS grows past the
#: budget with the tags per entry: 1.16x with 1, 2.15x with 10, 3.81x with 50 (32 MB,
#: tags from a pool of 1,000). With 64 charged (SmartCache, 32 MB, budget full and
#: evicting): 1.39x with 10 tags, 1.19x with 20, 1.42x with 50, 1.16x with 3 from a
#: pool of 100.
TAG_OVERHEAD = 64

#: The key length (characters) :data:`ENTRY_OVERHEAD` covers. A longer ``str`` key is
#: charged what its string costs beyond that: Django warns only past 250 characters,
#: and 4,000-character keys held 8.6x an uncharged budget.
KEY_ALLOWANCE = 64
_COVERED_KEY = sys.getsizeof("k" * KEY_ALLOWANCE)

_UNITS = {
    "": 1,
    "B": 1,
    "K": 1024,
    "KB": 1024,
    "KIB": 1024,
    "M": 1024**2,
    "MB": 1024**2,
    "MIB": 1024**2,
    "G": 1024**3,
    "GB": 1024**3,
    "GIB": 1024**3,
    "T": 1024**4,
    "TB": 1024**4,
    "TIB": 1024**4,
}
#: "64Mb" reads as megabits, "64Mib" as mebibits: refused rather than taken for bytes
#: (a lower-case "mb" is the informal spelling of MB, and accepted).
_BITS_RE = re.compile(r"^[KMGT]i?b$")
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")


def parse_size(value: object) -> int:
    """Return ``value`` in bytes: an ``int`` or a string like ``"64MB"``, ``"512 KiB"``.

    A number (decimals allowed), optional spaces, and a unit: none or ``B`` (bytes),
    ``K``/``KB``/``KiB``, ``M``/``MB``/``MiB``, ``G``/``GB``/``GiB``, ``T``/``TB``/``TiB``,
    in any case but bits (``"64Mb"``, ``"64Mib"``). Units are binary (``KB`` = 1024),
    as memory budgets are. Raises ``ValueError`` with the accepted forms when ``value``
    is neither, or is negative.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"a size cannot be negative: {value!r}")
        return value
    if isinstance(value, str):
        match = _SIZE_RE.match(value)
        if match:
            number, unit = match.groups()
            if _BITS_RE.match(unit):
                raise ValueError(
                    f"{value!r} reads as bits ({unit}); write {unit[:-1]}B for bytes"
                )
            factor = _UNITS.get(unit.upper())
            size = float(number) * factor if factor is not None else math.inf
            if math.isfinite(size):
                return int(size)
    raise ValueError(
        f"expected a size in bytes: an int or a string such as '64MB', '512KB', "
        f"'1.5GB' (units B, KB, MB, GB, TB, binary; also K, KiB, ...), got {value!r}"
    )


def entry_weight(payload_length: int, key: object = None, tags: int = 0) -> int:
    """The accounted size of an entry whose serialized payload is ``payload_length``
    bytes, under ``key`` (a ``str`` key over :data:`KEY_ALLOWANCE` adds its excess),
    carrying ``tags`` tags (:data:`TAG_OVERHEAD` each)."""
    weight = payload_length + ENTRY_OVERHEAD + tags * TAG_OVERHEAD
    if type(key) is str and len(key) > KEY_ALLOWANCE:
        weight += long_key_excess(key)
    return weight


def long_key_excess(key: str) -> int:
    """The bytes a ``str`` key longer than :data:`KEY_ALLOWANCE` costs beyond it."""
    return max(0, sys.getsizeof(key) - _COVERED_KEY)


def format_size(n: float) -> str:
    """Bytes in binary units with one decimal: ``512 B``, ``1.0 KiB``, ``12.3 MiB``
    (what the debug-toolbar panel and ``smartcache_stats`` print)."""
    if abs(n) < 1024:
        return f"{n:.0f} B"
    for unit in ("KiB", "MiB", "GiB"):
        n /= 1024
        if abs(n) < 1024 or unit == "GiB":
            break
    return f"{n:.1f} {unit}"
