"""SQLiteCache settings: every option, its default, and the error naming it when wrong."""

from __future__ import annotations

import math
import os
import pickle
import threading
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from ..core.sizing import parse_size
from .base import django_int, option_timeout, options_given

#: ``OPTIONS`` keys and their defaults (documented in ``docs/sqlite.md``).
DEFAULTS: dict[str, Any] = {
    "MAX_SIZE": "1GB",
    "MAX_ENTRIES": None,
    "CULL_FREQUENCY": 3,
    "BUSY_TIMEOUT": 5.0,
    "SYNCHRONOUS": "NORMAL",
    "ACCESS_INTERVAL": 30.0,
    "CHANGE_LOG_RETENTION": 60.0,
    "CHANGE_LOG_MAX_ROWS": 100_000,
}


@dataclass(frozen=True)
class SQLiteOptions:
    location: str
    timeout: int | None
    max_size: int
    max_entries: int | None
    cull_frequency: int
    busy_timeout: float
    synchronous: str
    access_interval: float
    log_retention: float
    log_max_rows: int


def _fail(name: str, value: object, expected: str) -> ImproperlyConfigured:
    return ImproperlyConfigured(
        f"SQLiteCache {name} must be {expected}, got {value!r}."
    )


#: Bytes charged per row besides its key and value: row header, index entries (not
#: the in-memory store's ``core.store.ENTRY_OVERHEAD``).
ROW_OVERHEAD = 64
#: The accounted size of the smallest entry: an empty key (a KEY_FUNCTION may make
#: one) and the shortest pickle (``None``), as values are pickled.
SMALLEST_ENTRY = ROW_OVERHEAD + len(pickle.dumps(None, pickle.HIGHEST_PROTOCOL))

#: The longest BUSY_TIMEOUT: SQLite's busy_timeout is an int of milliseconds, and a
#: larger number is read as 0 (no wait at all: "database is locked" at once).
MAX_BUSY_TIMEOUT = (2**31 - 1) / 1000


def _number(
    name: str,
    value: object,
    *,
    minimum: float = 0.0,
    maximum: float = threading.TIMEOUT_MAX,
    why: str = "threading.TIMEOUT_MAX",
) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(name, value, f"a number of seconds >= {minimum:g}")
    if not math.isfinite(value) or value < minimum:
        raise _fail(name, value, f"a number of seconds >= {minimum:g}")
    if value > maximum:
        raise _fail(name, value, f"at most {maximum:.10g} seconds ({why})")
    return float(value)


def django_count(name: str, value: object, *, minimum: int) -> int:
    """Django's generic ``MAX_ENTRIES``/``CULL_FREQUENCY``, read as Django reads them:
    ``int()`` of the value (``"3"`` from an environment variable is 3)."""
    number = django_int(value)
    if number is None or number < minimum:
        raise _fail(name, value, f"an integer >= {minimum}")
    return number


def _count(name: str, value: object, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _fail(name, value, f"an integer >= {minimum}")
    return value


def _location(location: str) -> str:
    """``LOCATION`` with ``~`` expanded; refused when it cannot name a file of ours.

    Refused here, at configuration: taken as they are, ``~/c.sqlite3`` would make a
    directory named ``~`` in the working directory; ``file:/x.sqlite3?mode=memory`` a
    file of that name (and directories ``file:``...); ``/x/cache/`` the file
    ``/x/cache``; a NUL byte would raise a bare ``ValueError`` at the first call, and
    an existing directory would fail only then (a MultiLevelCache quietly running
    without its L2).
    """
    if "\x00" in location:
        raise _fail("LOCATION", location, "a path without a NUL byte")
    if location.lower().startswith("file:"):
        raise _fail(
            "LOCATION",
            location,
            "a file path, not an SQLite 'file:' URI (the cache opens, checks and "
            "repairs the file by its path; URI parameters are not supported)",
        )
    expanded = os.path.expanduser(location)
    if expanded.startswith("~"):
        raise _fail("LOCATION", location, "a path whose '~' names a home directory")
    if expanded.endswith(("/", os.sep)):
        raise _fail(
            "LOCATION",
            location,
            "the path of a file, not of a directory (a trailing /)",
        )
    if os.path.basename(expanded) in (".", ".."):
        raise _fail(
            "LOCATION",
            location,
            "the path of a file, not of a directory (it ends in . or ..)",
        )
    if not os.path.basename(expanded).strip():
        raise _fail("LOCATION", location, "the path of the cache file, not blank")
    if location != location.strip():
        raise _fail(
            "LOCATION",
            location,
            "a path without leading or trailing whitespace (an environment variable's "
            "stray space would name another file)",
        )
    if os.path.isdir(expanded):
        raise _fail(
            "LOCATION",
            location,
            "the path of a file, not of a directory (it is an existing directory)",
        )
    return expanded


def parse(location: object, params: dict[str, Any]) -> SQLiteOptions:
    """Validate ``LOCATION``, ``TIMEOUT`` and ``OPTIONS``; raise on the first wrong one.

    ``LOCATION`` may be a ``pathlib.Path`` (``BASE_DIR / "cache.sqlite3"``), as for
    Django's ``FileBasedCache``.
    """
    if isinstance(location, os.PathLike):
        location = os.fspath(location)
    if not isinstance(location, str) or not location or location == ":memory:":
        raise _fail("LOCATION", location, "the path of the cache file")
    location = _location(location)
    timeout = option_timeout("SQLiteCache", params)
    options = options_given(params)
    if not isinstance(options, dict):
        raise _fail("OPTIONS", options, "a dict")
    # key=str: a key that is not a string ({1: 2}) is named, not a TypeError.
    unknown = sorted(set(options) - set(DEFAULTS), key=str)
    if unknown:
        raise ImproperlyConfigured(
            f"SQLiteCache OPTIONS has unknown key(s) {', '.join(map(str, unknown))}; "
            f"known: {', '.join(DEFAULTS)}."
        )
    merged = {**DEFAULTS, **options}
    try:
        max_size = parse_size(merged["MAX_SIZE"])
    except ValueError as exc:
        raise ImproperlyConfigured(f"SQLiteCache MAX_SIZE: {exc}.") from None
    if max_size < SMALLEST_ENTRY:
        # As SmartCache's MAX_MEMORY: a budget below the smallest entry stores nothing.
        raise _fail(
            "MAX_SIZE",
            merged["MAX_SIZE"],
            f"at least {SMALLEST_ENTRY} bytes, the smallest entry (an empty key and "
            f"None: every entry is accounted as its key, its value and an overhead of "
            f"{ROW_OVERHEAD} bytes)",
        )
    max_entries = merged["MAX_ENTRIES"]
    if max_entries is not None:
        max_entries = django_count("MAX_ENTRIES", max_entries, minimum=1)
    synchronous = merged["SYNCHRONOUS"]
    if not isinstance(synchronous, str) or synchronous.upper() not in (
        "NORMAL",
        "FULL",
    ):
        raise _fail("SYNCHRONOUS", synchronous, "'NORMAL' or 'FULL'")
    return SQLiteOptions(
        location=location,
        timeout=timeout,
        max_size=max_size,
        max_entries=max_entries,
        cull_frequency=django_count(
            "CULL_FREQUENCY", merged["CULL_FREQUENCY"], minimum=0
        ),
        busy_timeout=_number(
            "BUSY_TIMEOUT",
            merged["BUSY_TIMEOUT"],
            maximum=MAX_BUSY_TIMEOUT,
            why="SQLite's busy_timeout is at most 2**31-1 milliseconds",
        ),
        synchronous=synchronous.upper(),
        access_interval=_number("ACCESS_INTERVAL", merged["ACCESS_INTERVAL"]),
        log_retention=_number("CHANGE_LOG_RETENTION", merged["CHANGE_LOG_RETENTION"]),
        log_max_rows=_count(
            "CHANGE_LOG_MAX_ROWS", merged["CHANGE_LOG_MAX_ROWS"], minimum=1
        ),
    )
