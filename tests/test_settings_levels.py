"""Wrong level settings: each one an ``ImproperlyConfigured`` naming
the option, never a ``TypeError`` from deep inside (which named nothing)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from django.core.cache.backends.base import BaseCache
from django.core.exceptions import ImproperlyConfigured

from django_smartcache.backends import MultiLevelCache, SmartCache, SQLiteCache

SMART = "django_smartcache.backends.SmartCache"


def test_a_level_that_is_no_cache_backend_is_refused_by_name() -> None:
    # LEVELS[0] was refused (not in-process); LEVELS[1] was built: TypeError
    # "expected at most 1 arguments, got 2" from OrderedDict(location, params).
    levels = [{"BACKEND": SMART}, {"BACKEND": "collections.OrderedDict"}]
    with pytest.raises(
        ImproperlyConfigured,
        match=re.escape("OPTIONS['LEVELS'][1]: BACKEND 'collections.OrderedDict'"),
    ):
        MultiLevelCache("", {"OPTIONS": {"LEVELS": levels}})
    # Not a class at all (a function): refused the same way, not a TypeError from
    # issubclass().
    levels[1] = {"BACKEND": "os.path.join"}
    with pytest.raises(ImproperlyConfigured, match="is not a cache backend"):
        MultiLevelCache("", {"OPTIONS": {"LEVELS": levels}})


def _sqlite(location: str, params: dict[str, Any]) -> BaseCache:
    return SQLiteCache(location, params)


def _multi(location: str, params: dict[str, Any]) -> BaseCache:
    return MultiLevelCache(location, params)


def _smart(location: str, params: dict[str, Any]) -> BaseCache:
    return SmartCache(location, params)


@pytest.mark.parametrize("build", [_sqlite, _multi, _smart])
@pytest.mark.parametrize("options", [{1: 2}, {1: 2, "A": 3}])
def test_an_options_key_that_is_no_string_is_named(
    build: Any, options: dict[Any, Any], tmp_path: Path
) -> None:
    # SQLiteCache: "sequence item 0: expected str instance, int found"; mixed keys,
    # all three: "'<' not supported between instances of 'str' and 'int'".
    with pytest.raises(ImproperlyConfigured, match="unknown") as info:
        build(str(tmp_path / "c.sqlite3"), {"OPTIONS": options})
    assert "1" in str(info.value)
    if "A" in options:
        assert "A" in str(info.value)


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"MAX_MEMORY": "128MB"}, "MAX_MEMORY is an option"),
        ({"MAX_SIZE": "2GB", "POLICY": "lru"}, "MAX_SIZE, POLICY are options"),
    ],
)
def test_a_level_option_given_to_the_default_levels_says_how_to_size_them(
    options: dict[str, Any], named: str, tmp_path: Path
) -> None:
    """MAX_MEMORY written in a default-levels MultiLevelCache's OPTIONS (to size its L1)
    was only "unknown": the error now says the default levels are sized by listing
    them in LEVELS (outside probe, LOW). An option of no level gets no such hint."""
    with pytest.raises(ImproperlyConfigured, match="unknown") as info:
        _multi(str(tmp_path / "c.sqlite3"), {"OPTIONS": options})
    assert f"{named} of a level" in str(info.value)
    assert "OPTIONS['LEVELS']" in str(info.value)
    with pytest.raises(ImproperlyConfigured, match="unknown") as info:
        _multi(str(tmp_path / "c.sqlite3"), {"OPTIONS": {"NOPE": 1}})
    assert "of a level" not in str(info.value)


REDIS = "django.core.cache.backends.redis.RedisCache"
FILE = "django.core.cache.backends.filebased.FileBasedCache"


def _levels(*lower: dict[str, Any]) -> dict[str, Any]:
    return {"OPTIONS": {"LEVELS": [{"BACKEND": SMART}, *lower]}}


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("{d}/c.sqlite3", "{d}/./c.sqlite3"),
        ("{d}/c.sqlite3", "{d}//sub/../c.sqlite3"),
        ("{d}/c.sqlite3", "{d}/link.sqlite3"),  # a symlink to c.sqlite3
    ],
)
def test_one_sqlite_file_spelled_two_ways_is_refused(
    tmp_path: Path, first: str, second: str
) -> None:
    # Accepted before: each write overwrote the other level's copy with L1_MAX_TTL,
    # so a value set for 300 s expired after about a second.
    (tmp_path / "sub").mkdir()
    (tmp_path / "link.sqlite3").symlink_to(tmp_path / "c.sqlite3")
    q = "django_smartcache.backends.SQLiteCache"
    params = _levels(
        {"BACKEND": q, "LOCATION": first.format(d=tmp_path)},
        {"BACKEND": q, "LOCATION": second.format(d=tmp_path)},
    )
    with pytest.raises(ImproperlyConfigured, match=re.escape("[2] is the same store")):
        MultiLevelCache("", params)


def test_one_file_cache_directory_spelled_two_ways_is_refused(tmp_path: Path) -> None:
    params = _levels(
        {"BACKEND": FILE, "LOCATION": str(tmp_path / "fb")},
        {"BACKEND": FILE, "LOCATION": f"{tmp_path}/x/../fb/"},
    )
    with pytest.raises(ImproperlyConfigured, match="same store"):
        MultiLevelCache("", params)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("redis://127.0.0.1:16399/7", "redis://localhost:16399/7"),
        ("redis://127.0.0.1/0", "redis://LOCALHOST:6379"),  # default port and db
        ("redis://127.0.0.1:6379?db=3", "redis://:secret@127.0.0.1:6379/3"),
        ("redis://127.0.0.1:6379/1,redis://replica:6379/1", "redis://localhost/1"),
        ("unix://{d}/r.sock?db=2", "unix://{d}/./r.sock?db=2"),
    ],
)
def test_one_redis_database_spelled_two_ways_is_refused(
    tmp_path: Path, first: str, second: str
) -> None:
    # No server needed: refused before any connection.
    params = _levels(
        {"BACKEND": REDIS, "LOCATION": first.format(d=tmp_path)},
        {"BACKEND": REDIS, "LOCATION": second.format(d=tmp_path)},
    )
    with pytest.raises(ImproperlyConfigured, match="same store"):
        MultiLevelCache("", params)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("redis://127.0.0.1:6379/1", "redis://127.0.0.1:6379/2"),
        ("redis://127.0.0.1:6379/1", "redis://127.0.0.1:6380/1"),
        ("redis://127.0.0.1:6379/1", "redis://no-such-host.invalid:6379/1"),
        ("unix://{d}/a.sock", "unix://{d}/b.sock"),
    ],
)
def test_two_redis_databases_are_two_levels(
    tmp_path: Path, first: str, second: str
) -> None:
    from django_smartcache.backends._level_config import level_configs

    levels = [
        {"BACKEND": SMART},
        {"BACKEND": REDIS, "LOCATION": first.format(d=tmp_path)},
        {"BACKEND": REDIS, "LOCATION": second.format(d=tmp_path)},
    ]
    assert len(level_configs("", levels, MultiLevelCache)) == 3


def test_two_sqlite_files_are_two_levels(tmp_path: Path) -> None:
    q = "django_smartcache.backends.SQLiteCache"
    cache = MultiLevelCache(
        "",
        _levels(
            {"BACKEND": q, "LOCATION": str(tmp_path / "a.sqlite3")},
            {"BACKEND": q, "LOCATION": str(tmp_path / "b.sqlite3")},
        ),
    )
    cache.set("k", "v", 300)
    assert cache.get("k") == "v"
    cache.close()


def test_a_pathlib_location_is_a_path_as_for_django_file_cache(tmp_path: Path) -> None:
    """``"LOCATION": BASE_DIR / "cache.sqlite3"`` is how Django settings spell paths
    (FileBasedCache takes it): MultiLevelCache raised a bare TypeError at first use
    (``"://" in location``), SQLiteCache called the Path not a path."""
    multi = MultiLevelCache(tmp_path / "ml.sqlite3", {})
    multi.set("k", 1)
    assert multi.get("k") == 1
    assert (tmp_path / "ml.sqlite3").exists()
    single = SQLiteCache(tmp_path / "one.sqlite3", {})
    single.set("k", 2)
    assert SQLiteCache(str(tmp_path / "one.sqlite3"), {}).get("k") == 2
    levels = _levels(
        {"BACKEND": "django_smartcache.backends.SmartCache"},
        {
            "BACKEND": "django_smartcache.backends.SQLiteCache",
            "LOCATION": tmp_path / "x",
        },
    )
    inline = MultiLevelCache(None, levels)  # None: no LOCATION, as Django's ""
    inline.set("k", 3)
    assert SQLiteCache(str(tmp_path / "x"), {}).get("k") == 3
    for cache in (multi, single, inline):
        cache.close()


def test_a_location_that_is_no_path_is_named() -> None:
    with pytest.raises(ImproperlyConfigured, match="LOCATION must be the path"):
        MultiLevelCache(None, {})
    with pytest.raises(ImproperlyConfigured, match="LOCATION must be the path"):
        MultiLevelCache(42, {})
    with pytest.raises(ImproperlyConfigured, match="LOCATION"):
        SQLiteCache(None, {})


@pytest.mark.parametrize(
    "name", ["BUSY_TIMEOUT", "ACCESS_INTERVAL", "CHANGE_LOG_RETENTION"]
)
def test_sqlite_seconds_beyond_what_sqlite_or_threads_take_are_refused(
    name: str, tmp_path: Path
) -> None:
    """BUSY_TIMEOUT of 2,147,484 s or more became SQLite's busy_timeout 0 (an int of
    milliseconds out of range is read as 0): no wait at all, "database is locked" at
    once. The other seconds options are bounded at threading.TIMEOUT_MAX."""
    import threading

    location = str(tmp_path / "c.sqlite3")
    too_long = 3e6 if name == "BUSY_TIMEOUT" else threading.TIMEOUT_MAX * 2
    with pytest.raises(ImproperlyConfigured, match=f"{name} must be at most") as info:
        SQLiteCache(location, {"OPTIONS": {name: too_long}})
    if name == "BUSY_TIMEOUT":
        assert "2147483.647" in str(info.value)
        cache = SQLiteCache(location, {"OPTIONS": {name: 2147483.647}})
        cache.set("k", 1)
        busy = cache._connection().execute("PRAGMA busy_timeout").fetchone()[0]
        assert busy == 2**31 - 1  # the longest wait SQLite takes, not 0
        cache.close()


@pytest.mark.parametrize(
    "name",
    [
        "RETRY_INTERVAL",
        "COHERENCE_INTERVAL",
        "ERROR_LOG_INTERVAL",
        "L1_MAX_TTL",
    ],
)
def test_multilevel_seconds_beyond_threading_timeout_max_are_refused(
    name: str,
) -> None:
    """RETRY_INTERVAL 1e10 reached the repair's threading.Timer, whose thread died
    with OverflowError (no repair ever again)."""
    import threading

    levels = [
        {"BACKEND": SMART},
        {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    ]
    with pytest.raises(
        ImproperlyConfigured,
        match=re.escape(f"OPTIONS['{name}'] must be at most threading.TIMEOUT_MAX"),
    ):
        MultiLevelCache(
            "",
            {"OPTIONS": {"LEVELS": levels, name: threading.TIMEOUT_MAX * 2}},
        )


def test_a_levels_own_error_names_its_place_and_the_alias(tmp_path: Path) -> None:
    """ "SQLiteCache MAX_SIZE: expected a size ..., got '2 GBs'." named neither the
    level (two SQLiteCache levels here) nor the cache."""
    from django.core.cache import caches
    from django.test import override_settings

    sqlite = "django_smartcache.backends.SQLiteCache"
    levels = [
        {"BACKEND": SMART},
        {"BACKEND": sqlite, "LOCATION": str(tmp_path / "mid.sqlite3")},
        {
            "BACKEND": sqlite,
            "LOCATION": str(tmp_path / "low.sqlite3"),
            "OPTIONS": {"MAX_SIZE": "2 GBs"},
        },
    ]
    config = {
        "BACKEND": "django_smartcache.backends.MultiLevelCache",
        "OPTIONS": {"LEVELS": levels},
    }
    with (
        override_settings(CACHES={"default": {"BACKEND": SMART}, "pages": config}),
        pytest.raises(ImproperlyConfigured) as info,
    ):
        caches["pages"]
    assert str(info.value).startswith(
        "MultiLevelCache 'pages' OPTIONS['LEVELS'][2] (SQLiteCache): "
        "SQLiteCache MAX_SIZE: expected a size"
    )
    assert isinstance(info.value.__cause__, ImproperlyConfigured)
    assert str(info.value.__cause__).startswith("SQLiteCache MAX_SIZE")
    # Built directly (no alias) and with the default levels: the place still.
    with pytest.raises(ImproperlyConfigured) as info:
        MultiLevelCache(
            "", {"OPTIONS": {"LEVELS": [{"BACKEND": SMART, "TIMEOUT": "x"}]}}
        )
    assert str(info.value).startswith(
        "MultiLevelCache OPTIONS['LEVELS'][0] (SmartCache): SmartCache: TIMEOUT"
    )
    with pytest.raises(ImproperlyConfigured) as info:
        MultiLevelCache(":memory:", {})  # the default levels: no LEVELS to name
    assert str(info.value).startswith(
        "MultiLevelCache default level L2 (SQLiteCache of LOCATION): "
        "SQLiteCache LOCATION must be"
    )


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"REDIS_URL": "redis://127.0.0.1:1/0"}, "OPTIONS['REDIS_URL']"),
        ({"COHERENCE": "redis"}, "OPTIONS['COHERENCE'] is 'redis'"),
        ({}, "OPTIONS['COHERENCE'] is 'auto' and the lowest level is Redis"),
    ],
)
def test_a_redis_channel_without_redis_py_is_refused_when_built(
    options: dict[str, Any],
    named: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without redis-py (no [redis] extra) the cache was built, its listener thread
    died with ModuleNotFoundError, then every set() raised it after the lower level
    had been written."""
    import threading

    monkeypatch.setitem(__import__("sys").modules, "redis", None)
    lowest = (
        {"BACKEND": FILE, "LOCATION": str(tmp_path / "f")}
        if "REDIS_URL" in options
        else {"BACKEND": REDIS, "LOCATION": "redis://127.0.0.1:1/0"}
    )
    levels = [{"BACKEND": SMART}, lowest]
    before = set(threading.enumerate())
    with pytest.raises(ImproperlyConfigured) as info:
        MultiLevelCache("", {"OPTIONS": {"LEVELS": levels, **options}})
    message = str(info.value)
    assert named in message and "django-smartcache[redis]" in message
    assert not [t for t in set(threading.enumerate()) - before if "coherence" in t.name]


def test_an_unknown_key_of_an_inline_level_is_refused() -> None:
    """{"BACKEND": ..., "OPTION": {"MAX_MEMORY": "1KB"}} (a typo of OPTIONS) was
    accepted and the level built with its defaults."""
    levels = [
        {"BACKEND": SMART, "OPTION": {"MAX_MEMORY": "1KB"}},
        {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    ]
    with pytest.raises(ImproperlyConfigured) as info:
        MultiLevelCache("", {"OPTIONS": {"LEVELS": levels}})
    message = str(info.value)
    assert "OPTIONS['LEVELS'][0] has unknown key(s) 'OPTION'" in message
    assert "BACKEND, LOCATION, OPTIONS, TIMEOUT" in message
    # Django's keys a level keeps are accepted; KEY_PREFIX keeps its own message.
    levels[0] = {"BACKEND": SMART, "LOCATION": "", "OPTIONS": {}, "TIMEOUT": 5}
    MultiLevelCache("", {"OPTIONS": {"LEVELS": levels}}).close()
    levels[0] = {"BACKEND": SMART, "KEY_PREFIX": "x"}
    with pytest.raises(ImproperlyConfigured, match="sets KEY_PREFIX"):
        MultiLevelCache("", {"OPTIONS": {"LEVELS": levels}})


@pytest.mark.parametrize("name", ["REDIS_URL", "CHANNEL"])
@pytest.mark.parametrize("coherence", ["sqlite", "auto", "none", "single", "plain"])
def test_redis_url_or_channel_that_cannot_take_effect_is_refused(
    name: str, coherence: str, tmp_path: Path
) -> None:
    """REDIS_URL and CHANNEL over the default SQLite levels (coherence by the change
    log) were accepted and silently ignored."""
    value = "redis://127.0.0.1:1/0" if name == "REDIS_URL" else "mine"
    options: dict[str, Any] = {name: value}
    location = str(tmp_path / "c.sqlite3")
    if coherence in ("sqlite", "none"):
        options["COHERENCE"] = coherence
    elif coherence == "single":
        location = ""
        options["LEVELS"] = [{"BACKEND": SMART}]
    elif coherence == "plain":  # a lower level with no channel at all
        if name == "REDIS_URL":
            pytest.skip("REDIS_URL gives that level a channel")
        location = ""
        options["LEVELS"] = [
            {"BACKEND": SMART},
            {"BACKEND": FILE, "LOCATION": str(tmp_path / "f")},
        ]
    with pytest.raises(
        ImproperlyConfigured, match=re.escape(f"OPTIONS['{name}'] has no effect")
    ):
        MultiLevelCache(location, {"OPTIONS": options})


def test_a_sqlite_budget_below_the_smallest_entry_is_refused(tmp_path: Path) -> None:
    """As SmartCache refuses a MAX_MEMORY below its smallest entry: MAX_SIZE 1 was
    accepted and the cache stored nothing. 512 bytes holds small entries (64 bytes of
    overhead each, not SmartCache's 1024): accepted (docs/sqlite.md)."""
    from django_smartcache.backends._sqlite_options import SMALLEST_ENTRY

    location = str(tmp_path / "c.sqlite3")
    assert SMALLEST_ENTRY == 68
    for size in (1, 67):
        with pytest.raises(ImproperlyConfigured, match="at least 68 bytes") as info:
            SQLiteCache(location, {"OPTIONS": {"MAX_SIZE": size}})
        assert "SQLiteCache MAX_SIZE" in str(info.value)
    cache = SQLiteCache(location, {"OPTIONS": {"MAX_SIZE": 512}})
    cache.set("k", 1)
    assert cache.get("k") == 1
    cache.close()
