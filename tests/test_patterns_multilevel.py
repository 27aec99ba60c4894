"""delete_pattern() on a MultiLevelCache over SQLite agrees with SmartCache.

Regexes with global inline flags (``(?i)``) or a ``(?`` after an escape were refused,
and the count of distinct keys removed across levels was a maximum, not a union.
"""

from __future__ import annotations

import re
import time
from typing import Any

import pytest

from django_smartcache.backends._level_patterns import _regex_on_final_keys
from django_smartcache.backends.multilevel import MultiLevelCache
from django_smartcache.core.patterns import KeyPattern

from .test_patterns_across_backends import (
    GLOBS,
    KEYS,
    REDIS,
    REGEXES,
    SMART,
    SQLITE,
    _check_multilevel,
    _prefix,
)

# -- 4, 5. MultiLevelCache over SQLite: inline flags, exact detection ---------------------

# Some keys hold a newline on purpose (memcached could not store them).
pytestmark = pytest.mark.filterwarnings(
    "ignore::django.core.cache.backends.base.CacheKeyWarning"
)


def test_multilevel_over_sqlite_agrees_on_every_pattern(tmp_path: Any) -> None:
    location = str(tmp_path / "l2.sqlite3")
    levels = [
        {"BACKEND": SMART, "LOCATION": _prefix()},
        {"BACKEND": SQLITE, "LOCATION": location},
    ]
    cache = MultiLevelCache("", {"KEY_PREFIX": "p", "OPTIONS": {"LEVELS": levels}})
    # Other prefixes over the same file, among them one differing only in case.
    others = [
        MultiLevelCache(
            "",
            {
                "KEY_PREFIX": prefix,
                "OPTIONS": {
                    "LEVELS": [{"BACKEND": SMART, "LOCATION": _prefix()}, levels[1]]
                },
            },
        )
        for prefix in ("P", "q")
    ]
    for other in others:
        other.set_many({k: k for k in KEYS})
    for glob in GLOBS:
        _check_multilevel(cache, glob, regex=False)
    for pattern in REGEXES:
        _check_multilevel(cache, pattern, regex=True)
    for other in others:
        assert len(other.get_many(KEYS)) == len(KEYS)
        assert all(other.levels[1].get(other.make_key(k)) == k for k in KEYS)


@pytest.mark.parametrize(
    ("pattern", "keys"),
    [
        ("(?i)^upper", ["upper", "UPPER", "xupper"]),
        ("(?s)x.y", ["x\ny", "xzy", "xy"]),
        ("(?x) ^ a b $", ["ab", "a b", "xab"]),
        ("(?x)(?i) ^ A b $ # a comment", ["ab", "AB", "xab"]),
        ("(?#c)(?i)^A$", ["a", "A", "b"]),
        ("(?a)^\\w$", ["a", "é"]),
        (r"^a\(?m$", ["am", "a(m", "a((m"]),
        (r"[(?m]^x", ["x", "(x"]),
        (r"\\b", ["\\b", "b"]),
        # What looks like an anchor or a class in a comment is not one, and the reverse.
        ("(?x) # [ a comment\n ^ a", ["a", "ba"]),
        ("(?x: # [ a comment\n ^ a )|z", ["a", "ba", "z"]),
        ("(?#[)^a", ["a", "ba"]),
        ("[#[]^a|^b", ["b", "ab"]),
        ("(b)?(?(1)x|^a)", ["a", "ba", "bx"]),
        ("(?i:(?-i:^a))", ["a", "A"]),
    ],
)
def test_regex_rewritten_for_final_keys_keeps_its_flags_to_the_callers_key(
    pattern: str, keys: list[str]
) -> None:
    for head in ("p:1:", "Pp1"):
        kp = KeyPattern(pattern, regex=True, head=head)
        final = re.compile(_regex_on_final_keys(kp, "L2"))
        for key in keys:
            assert bool(final.search(head + key)) is kp.matches(head + key), key
            # The flags never reach the head: another prefix is never matched.
            assert not final.search(head.swapcase() + key), key
            assert not final.search("q:1:" + key), key


@pytest.mark.parametrize(
    "pattern",
    [
        r"(?<=:)x",
        r"(?<!a)b",
        r"(?m)x$",
        r"(?i)(?m)^x",
        r"x(?m:^y)",
        r"(?=(?<=a))b",
        r"(?:a|(?<=b))c",
        r"(a)?(?(1)(?<=a)|b)",
        r"(?i:(?m:^x))",
    ],
)
def test_regex_that_looks_before_the_key_is_still_refused(pattern: str) -> None:
    with pytest.raises(NotImplementedError, match="L2"):
        _regex_on_final_keys(KeyPattern(pattern, regex=True, head="p:1:"), "L2")


@pytest.mark.parametrize("pattern", [r"\bx", r"x\B", r"(?:a|\b)x", r"(?i)[a]\b"])
def test_word_boundary_after_a_word_head_is_refused(pattern: str) -> None:
    with pytest.raises(NotImplementedError, match="L2"):
        _regex_on_final_keys(KeyPattern(pattern, regex=True, head="p1"), "L2")
    # After a head ending in ":", \b at the key's start is the same as on the key.
    _regex_on_final_keys(KeyPattern(pattern, regex=True, head="p:1:"), "L2")


# -- 6. the count is of distinct keys removed, across levels -----------------------------


def _count_case(cache: MultiLevelCache) -> None:
    l2 = cache.levels[1]
    for i in range(3):  # only in L2 (their L1 copies expired)
        l2.set(cache.make_key(f"a:{i}"), i)
    for i in range(3, 5):  # only in L1
        cache.set(f"a:{i}", i, levels=1)
    cache.set("a:5", 5)  # in both: counts once
    cache.levels[1].set(cache.make_key("a:6"), 6, timeout=-1)  # expired: not counted
    assert cache.delete_pattern("a:*") == 6
    assert cache.get_many([f"a:{i}" for i in range(7)]) == {}
    assert cache.delete_pattern("a:*") == 0


def test_multilevel_over_sqlite_counts_distinct_keys_across_levels(
    tmp_path: Any,
) -> None:
    levels = [
        {"BACKEND": SMART, "LOCATION": _prefix()},
        {"BACKEND": SQLITE, "LOCATION": str(tmp_path / "l2.sqlite3")},
    ]
    cache = MultiLevelCache("", {"KEY_PREFIX": "p", "OPTIONS": {"LEVELS": levels}})
    _count_case(cache)


@pytest.mark.redis
def test_multilevel_over_redis_counts_distinct_keys_across_levels(
    redis_url: str,
) -> None:
    levels = [
        {"BACKEND": SMART, "LOCATION": _prefix()},
        {"BACKEND": REDIS, "LOCATION": redis_url},
    ]
    cache = MultiLevelCache("", {"KEY_PREFIX": "p", "OPTIONS": {"LEVELS": levels}})
    try:
        # Connecting the coherence channel drops L1 (it may have missed messages):
        # write the L1-only keys after that.
        deadline = time.monotonic() + 5
        while not cache._co.connected:
            assert time.monotonic() < deadline, "coherence channel not connected"
            time.sleep(0.01)
        _count_case(cache)
    finally:
        cache._co.stop()


# -- tag version keys on a SQLite L2 ------------------------------------------------------


def test_tag_version_keys_deleted_by_a_sqlite_level_make_misses_everywhere(
    tmp_path: Any,
) -> None:
    location = str(tmp_path / "l2.sqlite3")

    def make() -> MultiLevelCache:
        levels = [
            {"BACKEND": SMART, "LOCATION": _prefix()},
            {"BACKEND": SQLITE, "LOCATION": location},
        ]
        return MultiLevelCache("", {"KEY_PREFIX": "p", "OPTIONS": {"LEVELS": levels}})

    cache, other = make(), make()
    cache.set("old", 1, tags=["t"])
    cache.invalidate_tags("t")
    cache.set("new", 2, tags=["t"])
    assert other.get_many(["old", "new"]) == {"new": 2}
    assert cache.delete_pattern("smartcache.tag:*") == 1  # the version key of "t"
    # Never revived, and a miss in this process as in another one.
    assert cache.get_many(["old", "new"]) == {}
    other._co.deadline = 0.0
    assert other.get_many(["old", "new"]) == {}
    assert make().get_many(["old", "new"]) == {}


# -- a regex a level refuses: refused before any level deletes ---------------------------


def test_a_regex_one_level_refuses_deletes_nothing_on_the_levels_below(
    tmp_path: Any,
) -> None:
    """Lowest level first: the SQLite L3 lost its keys before the L2 with its own
    delete_pattern() refused the lookbehind. Now every level is asked first
    (``check_pattern()``, which ``smartcache_invalidate`` asks before it runs)."""
    levels = [
        {"BACKEND": SMART, "LOCATION": _prefix()},
        {"BACKEND": "tests.test_commands_edge_cases.PatternLocMem"},
        {"BACKEND": SQLITE, "LOCATION": str(tmp_path / "l3.sqlite3")},
    ]
    cache = MultiLevelCache("", {"KEY_PREFIX": "p", "OPTIONS": {"LEVELS": levels}})
    try:
        cache.set("xab", 1)
        with pytest.raises(NotImplementedError, match="L2 PatternLocMem.*lookbehind"):
            cache.check_pattern("(?<=a)b", regex=True)
        with pytest.raises(NotImplementedError, match="L2 PatternLocMem.*lookbehind"):
            cache.delete_pattern("(?<=a)b", regex=True)
        assert cache.levels[2].get(cache.make_key("xab")) == 1
        cache.check_pattern("a(?=b)", regex=True)
        assert cache.delete_pattern("a(?=b)", regex=True) == 1
        assert cache.levels[2].get(cache.make_key("xab")) is None
    finally:
        cache._co.stop()
        cache.close()
