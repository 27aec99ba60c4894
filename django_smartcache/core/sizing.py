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
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")


def parse_size(value: object) -> int:
    """Return ``value`` in bytes: an ``int`` or a string like ``"64MB"``, ``"512 KiB"``.

    Units are binary (``KB`` = 1024), as memory budgets are. Raises ``ValueError``
    with the accepted forms when ``value`` is neither, or is negative.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"a size cannot be negative: {value!r}")
        return value
    if isinstance(value, str):
        match = _SIZE_RE.match(value)
        if match:
            number, unit = match.groups()
            factor = _UNITS.get(unit.upper())
            size = float(number) * factor if factor is not None else math.inf
            if math.isfinite(size):
                return int(size)
    raise ValueError(
        f"expected a size in bytes: an int or a string such as '64MB', '512KB', "
        f"'1GB' (binary units), got {value!r}"
    )


def entry_weight(payload_length: int, key: object = None) -> int:
    """The accounted size of an entry whose serialized payload is ``payload_length``
    bytes, under ``key`` (a ``str`` key over :data:`KEY_ALLOWANCE` adds its excess)."""
    weight = payload_length + ENTRY_OVERHEAD
    if type(key) is str and len(key) > KEY_ALLOWANCE:
        weight += long_key_excess(key)
    return weight


def long_key_excess(key: str) -> int:
    """The bytes a ``str`` key longer than :data:`KEY_ALLOWANCE` costs beyond it."""
    return max(0, sys.getsizeof(key) - _COVERED_KEY)
