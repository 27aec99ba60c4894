"""delete_pattern() agrees across backends: SmartCache is the reference.

MultiLevelCache over Redis (SCAN MATCH must be a superset of our glob, never Redis's own
glob rules), over SQLite (global inline flags, exact lookbehind/MULTILINE detection) and
its count of distinct keys removed across levels.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from typing import Any

import pytest

from django_smartcache.backends import SmartCache
from django_smartcache.backends.multilevel import MultiLevelCache
from django_smartcache.backends.sqlite import SQLiteCache
from django_smartcache.core.patterns import KeyPattern, glob_to_regex

# Some keys hold a newline on purpose (memcached could not store them).
pytestmark = pytest.mark.filterwarnings(
    "ignore::django.core.cache.backends.base.CacheKeyWarning"
)

SMART = "django_smartcache.backends.SmartCache"
REDIS = "django.core.cache.backends.redis.RedisCache"
SQLITE = "django_smartcache.backends.SQLiteCache"

_names = itertools.count()

KEYS = [
    "user:42:name", "user:42", "user:4:x", "user*x", "user?x", "userAx", "a[1]", "a[",
    "a]", "a%b", "a_b", "axb", "a\\b", "é", "éa", "日本:1", "UPPER", "upper", "a-b",
    "a^b", "a!b", "ab", "b", "x\ny", "xy", "p:1:foo", "1:foo", "-", "]", "[", "!", "^",
    "\\", "a", "z", "Z", "%", "_", "am", "a(m", "aa" * 15,
]  # fmt: skip

GLOBS = [
    # Redis's own glob disagrees with ours on each of these.
    "?", "??", "?a", "[!a]", "[^a]", "[!-]", "a[", "*[", "[]a]", "[]]", "[!]]", "a[]]",
    "[a-]", "[\\a-z]", "[a\\]]", "[!a-]", "[é-é]?", "[!!]", "[^^]",
    # And some it agrees on.
    "*", "", "user:*", "user:4?", "user:4?:*", "user\\*x", "user\\?x", "user*x", "a\\[*",
    "a[[]*", "a]", "a%b", "a_*", "[a-z]", "a\\b", "a\\\\b", "é", "[é]*", "*:1", "p:1:*",
    "*foo", "[A-Z]*", "\\[!a]", "a[!", "[\\]]", "\\", "x?y", "x*y", "[-]", "[\\-]",
    "[a\\-z]", "[[]", "[^]", "[!]", "[]", "a[b", "%", "_", "[%]", "[_]", "[a-c-e]",
    "[*]*", "[?]*", "\\a", "[à-ÿ]*", "*\\", "[\\\\]", "?*?", "[x^]", "user:4[0-9]*",
    "*[0-9]:*",
]  # fmt: skip

REGEXES = [
    "^user", "user$", "^$", "", "(?i)^upper", "^a[^a]", "\\Auser", "^p:1", "\\d", "x.y",
    "(?s)x.y", "é", "^.$", "a\\Z", "^(?:a|b)$", "(?i)A", "^[\\^]$", "(a)\\1", "\\^",
    "[a^]$", "(?x) ^ a b $", "b\\Z|^a$", "(?=^u)user", "[]^]", "[^]a]$", "(?#c)^a$",
    "^a|^b", "(?i:A)$", "\\A\\Z", "$", "^", "é$", "^a\\(?m$", "(?i)(?s)^X.Y$",
    "(?x) ^ a # comment [ with ^ a bracket\n b $", "(?ix) ^ A M $ # trailing comment",
]  # fmt: skip


def _prefix() -> str:
    return f"pf{time.monotonic_ns()}-{next(_names)}"


def _expected(pattern: str, regex: bool) -> set[str]:
    if regex:
        compiled = re.compile(pattern)
        return {k for k in KEYS if compiled.search(k)}
    compiled = re.compile(glob_to_regex(pattern))
    return {k for k in KEYS if compiled.match(k)}


def _check_multilevel(cache: MultiLevelCache, pattern: str, regex: bool) -> None:
    """Fill, delete, and compare with the reference: per level and through the cache."""
    cache.set_many({k: k for k in KEYS})
    cache.set_many({k: k for k in KEYS}, version=2)
    expected = _expected(pattern, regex)
    removed = cache.delete_pattern(pattern, regex=regex)
    l2 = cache.levels[1]
    left = set(cache.get_many(KEYS))
    in_l2 = {k for k in KEYS if l2.get(cache.make_key(k)) is not None}
    assert set(KEYS) - left == expected, pattern
    assert in_l2 == left, pattern  # L2 kept nothing that L1 dropped (no revival)
    assert removed == len(expected), pattern
    assert len(cache.get_many(KEYS, version=2)) == len(KEYS)  # other version untouched
    # Not clear(): that would flush the other prefixes sharing the L2.
    cache.delete_many(KEYS)
    cache.delete_many(KEYS, version=2)


# -- 3. MultiLevelCache over Redis: SCAN MATCH is a superset of our glob ------------------


@pytest.mark.redis
def test_multilevel_over_redis_agrees_on_every_glob(redis_url: str) -> None:
    levels = [
        {"BACKEND": SMART, "LOCATION": _prefix()},
        {"BACKEND": REDIS, "LOCATION": redis_url},
    ]
    cache = MultiLevelCache("", {"KEY_PREFIX": "p", "OPTIONS": {"LEVELS": levels}})
    # Another prefix over the same Redis: never touched.
    other = MultiLevelCache(
        "",
        {
            "KEY_PREFIX": "q",
            "OPTIONS": {
                "LEVELS": [{"BACKEND": SMART, "LOCATION": _prefix()}, levels[1]]
            },
        },
    )
    try:
        other.set_many({k: k for k in KEYS})
        for glob in GLOBS:
            _check_multilevel(cache, glob, regex=False)
        for pattern in REGEXES:
            _check_multilevel(cache, pattern, regex=True)
        assert len(other.get_many(KEYS)) == len(KEYS)
    finally:
        cache._co.stop()
        other._co.stop()


@pytest.mark.redis
def test_redis_match_is_a_superset_on_a_real_redis(redis_url: str) -> None:
    import redis as redis_py

    client = redis_py.Redis.from_url(redis_url)
    head = "p[*?]\\^:1:"
    client.mset({head + k: 1 for k in KEYS})
    client.mset({"q:1:" + k: 1 for k in KEYS})
    for glob in GLOBS:
        kp = KeyPattern(glob, head=head)
        seen = {
            raw.decode() for raw in client.scan_iter(match=kp.redis_match(), count=1000)
        }
        assert {head + k for k in _expected(glob, False)} <= seen, glob
        assert all(key.startswith(head) for key in seen), glob


def test_redis_match_globs() -> None:
    kp = KeyPattern
    assert kp("user:[!a]*", head="p:1:").redis_match() == "p:1:user:*"
    assert kp("user:??:x", head="p:1:").redis_match() == "p:1:user:*:x"
    assert kp("a[", head="p:1:").redis_match() == r"p:1:a\["
    assert kp(r"a\*[]]b\\", head="p*[:1:").redis_match() == r"p\*\[:1:a\**b\\"
    assert kp("é?", head="").redis_match() == "é*"
    assert kp("r.*", regex=True, head="p:1:").redis_match() == "p:1:*"
    many = kp("a*" * 300 + "b", head="h:").redis_match()
    assert many == "h:a*"


# -- standalone backends agree with the reference too ------------------------------------


def test_smartcache_and_sqlitecache_agree_with_the_reference(tmp_path: Any) -> None:
    caches = [
        SmartCache(_prefix(), {"KEY_PREFIX": "p"}),
        SQLiteCache(str(tmp_path / "a.sqlite3"), {"KEY_PREFIX": "p"}),
    ]
    for cache in caches:
        for pattern, regex in [(g, False) for g in GLOBS] + [
            (r, True) for r in REGEXES
        ]:
            cache.set_many({k: k for k in KEYS})
            expected = _expected(pattern, regex)
            assert cache.delete_pattern(pattern, regex=regex) == len(expected), pattern
            assert set(KEYS) - set(cache.get_many(KEYS)) == expected, pattern
            cache.clear()


def test_keys_and_patterns_holding_a_nul_character(tmp_path: Any) -> None:
    # SQLite's substr and GLOB stop at a NUL: delete_pattern("report") also deleted
    # "report\x00draft", "?*" missed "\x00hidden", and a MultiLevelCache's L1 and L2
    # then disagreed. Those keys are now matched in Python on the whole key.
    keys = ["report", "report\x00draft", "\x00hidden", "[", "[\x00", "x"]
    cases = [
        ("report", False),
        ("?*", False),
        ("[\x00", False),
        ("*\x00*", False),
        (r"^report\Z", True),
        ("draft", True),
    ]
    caches = [
        SQLiteCache(str(tmp_path / "a.sqlite3"), {"KEY_PREFIX": "p"}),
        MultiLevelCache(
            "",
            {
                "KEY_PREFIX": "p",
                "OPTIONS": {
                    "LEVELS": [
                        {"BACKEND": SMART, "LOCATION": _prefix()},
                        {"BACKEND": SQLITE, "LOCATION": str(tmp_path / "m.sqlite3")},
                    ]
                },
            },
        ),
    ]
    for cache in caches:
        for pattern, regex in cases:
            cache.set_many({k: k for k in keys})
            matcher = re.compile(pattern if regex else glob_to_regex(pattern))
            expected = {k for k in keys if matcher.search(k)}
            assert cache.delete_pattern(pattern, regex=regex) == len(expected), pattern
            assert set(keys) - set(cache.get_many(keys)) == expected, pattern
            if isinstance(cache, MultiLevelCache):
                l2 = cache.levels[1]
                made = {cache.make_key(k): k for k in keys}
                assert (
                    set(keys) - {made[k] for k in l2.get_many(list(made))} == expected
                )
            cache.clear()


def _lowered(key: str, key_prefix: str, version: int) -> str:
    return f"{key_prefix}:{version}:{key}".lower()


def _spaceless(key: str, key_prefix: str, version: int) -> str:
    return f"{key_prefix}:{version}:{key}".replace(" ", "_")


def _dashed(key: str, key_prefix: str, version: int) -> str:
    return f"{key_prefix}-{version}-{key}"


@pytest.mark.parametrize("backend", [SmartCache, SQLiteCache])
def test_a_key_function_rewriting_the_key_is_refused(
    backend: Any, tmp_path: Any
) -> None:
    # Lower-casing or space-replacing key functions left two plain probe keys alone,
    # so delete_pattern("User:*") was accepted and silently deleted nothing.
    for function in (_lowered, _spaceless):
        cache = backend(
            str(tmp_path / f"{function.__name__}.db"), {"KEY_FUNCTION": function}
        )
        with pytest.raises(ValueError, match="KEY_FUNCTION"):
            cache.delete_pattern("User:*")
    cache = backend(str(tmp_path / "dashed.db"), {"KEY_FUNCTION": _dashed})
    cache.set("User:1", "v")
    assert cache.delete_pattern("User:*") == 1


def test_regex_and_version_are_keyword_only_on_every_backend(tmp_path: Any) -> None:
    """django-redis's signature is ``delete_pattern(pattern, version=None, ...)``: its
    users write ``delete_pattern("user:*", 2)``. SQLiteCache and MultiLevelCache took
    that 2 as ``regex=2``: the glob ran as a regex at the default version, deleting
    unrelated keys (``superuser_settings``) and keeping the version-2 one. Now, as on
    SmartCache, that call is a TypeError everywhere."""
    backends = [
        SmartCache("kw-only", {}),
        SQLiteCache(str(tmp_path / "kw.sqlite3"), {}),
        MultiLevelCache(str(tmp_path / "ml.sqlite3"), {}),
    ]
    for cache in backends:
        cache.set("superuser_settings", 1)
        cache.set("user:1", 2, version=2)
        with pytest.raises(TypeError):
            cache.delete_pattern("user:*", 2)
        with pytest.raises(TypeError):
            asyncio.run(cache.adelete_pattern("user:*", 2))
        assert cache.get("superuser_settings") == 1
        assert cache.delete_pattern("user:*", version=2) == 1
        assert cache.get("user:1", version=2) is None
        cache.close()
