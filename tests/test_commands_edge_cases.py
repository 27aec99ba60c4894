"""Management commands at their edges: unusable levels and aliases, invalid tags,
FileBasedCache expiry, ``-v 0``, and ``call_command`` with arguments given by name."""

from __future__ import annotations

import fnmatch
import io
import json
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.locmem import LocMemCache
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import override_settings

from django_smartcache.warmers import registry

SMART = "django_smartcache.backends.SmartCache"
FILES = "django.core.cache.backends.filebased.FileBasedCache"


def run(*args: str, **options: Any) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err, no_color=True, **options)
    return out.getvalue(), err.getvalue()


@pytest.fixture
def mlfile(tmp_path: Path) -> Iterator[Any]:
    """``mlfile``: a MultiLevelCache whose L2 (FileBasedCache) cannot list its keys."""
    config = {
        "default": {"BACKEND": SMART, "LOCATION": f"probe-{tmp_path.name}"},
        "mlfile": {
            "BACKEND": "django_smartcache.backends.MultiLevelCache",
            "OPTIONS": {
                "LEVELS": [
                    {"BACKEND": SMART},
                    {"BACKEND": FILES, "LOCATION": str(tmp_path / "files")},
                ]
            },
        },
    }
    with override_settings(CACHES=config):
        yield caches["mlfile"]
        for cache in caches.all():
            cache.clear()
            cache.close()


def test_a_pattern_alias_that_cannot_delete_patterns_fails_before_any_tag_goes(
    mlfile: Any,
) -> None:
    mlfile.set("k", "v", timeout=300, tags=["books"])
    with pytest.raises(CommandError, match="cannot list its keys"):
        run("smartcache_invalidate", "tag:books", pattern="x*", caches=["mlfile"])
    assert mlfile.get("k") == "v"


class PatternLocMem(LocMemCache):
    """A third-party-style backend with a delete_pattern(pattern, regex=False) of its
    own: as a MultiLevelCache level it is given the pattern rewritten over final keys,
    which a regex with a lookbehind cannot be."""

    def delete_pattern(self, pattern: str, regex: bool = False) -> int:
        removed = 0
        with self._lock:
            for key in list(self._cache):
                if (
                    re.search(pattern, key)
                    if regex
                    else fnmatch.fnmatchcase(key, pattern)
                ):
                    self._delete(key)
                    removed += 1
        return removed


@pytest.mark.parametrize("dry", [False, True])
def test_a_regex_a_level_cannot_take_fails_before_any_tag_or_key_goes(
    tmp_path: Path, dry: bool
) -> None:
    """The lookbehind was refused by the ``ml`` level only when its delete ran: the
    tag was already invalidated on both aliases and the keys of ``default`` deleted."""
    config = {
        "default": {"BACKEND": SMART, "LOCATION": f"own-{tmp_path.name}"},
        "ml": {
            "BACKEND": "django_smartcache.backends.MultiLevelCache",
            "OPTIONS": {
                "LEVELS": [
                    {"BACKEND": SMART, "LOCATION": f"own-l1-{tmp_path.name}"},
                    {"BACKEND": f"{__name__}.PatternLocMem"},
                ]
            },
        },
    }
    with override_settings(CACHES=config):
        default, ml = caches["default"], caches["ml"]
        try:
            default.set("page", "old", tags=["t"])
            ml.set("page", "old", tags=["t"])
            default.set("xab", 1)
            with pytest.raises(CommandError, match=r"L2 PatternLocMem.*lookbehind"):
                run("smartcache_invalidate", "tag:t", regex="(?<=a)b", dry_run=dry)
            assert (default.get("page"), ml.get("page")) == ("old", "old")
            assert default.get("xab") == 1
        finally:
            for cache in caches.all():
                cache.clear()
                cache.close()


@pytest.fixture
def unusable_sqlite(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """``ml`` (MultiLevelCache) and ``sqlite`` whose SQLite LOCATION is under a file
    (an existing directory is refused when the cache is built), next to a working
    ``smart``."""
    (tmp_path / "afile").touch()
    config = {
        "default": {"BACKEND": SMART, "LOCATION": f"unusable-{tmp_path.name}"},
        "ml": {
            "BACKEND": "django_smartcache.backends.MultiLevelCache",
            "LOCATION": str(tmp_path / "afile" / "c.sqlite3"),
        },
        "sqlite": {
            "BACKEND": "django_smartcache.backends.SQLiteCache",
            "LOCATION": str(tmp_path / "afile" / "c.sqlite3"),
        },
    }
    with override_settings(CACHES=config):
        yield {alias: caches[alias] for alias in config}
        for health in caches["ml"]._health:
            health.stop()
        for cache in caches.all():
            cache.close()


def test_stats_reports_an_unusable_level_as_down_and_the_other_aliases(
    unusable_sqlite: Any,
) -> None:
    with pytest.raises(CommandError, match=r"No statistics from 'sqlite' \(Unusable"):
        out, _ = run("smartcache_stats")
    out, _ = run("smartcache_stats", "--cache", "ml", "--cache", "default")
    l2 = out.split("L2 SQLiteCache (SQLiteCache)")[1]
    assert "down             True" in l2
    assert "unavailable      UnusableLocation: SQLiteCache LOCATION" in l2
    assert out.count("hit rate") == 3  # ml, its L1, and default
    report = json.loads(run("smartcache_stats", "--cache", "ml", "--json")[0])
    assert report["ml"]["levels"][1]["error"].startswith("UnusableLocation:")


def test_expire_names_an_unusable_level_in_a_command_error(
    unusable_sqlite: Any,
) -> None:
    out = io.StringIO()
    with pytest.raises(CommandError) as info:
        call_command("smartcache_expire", stdout=out)
    message = str(info.value)
    assert message.startswith(
        "The purge of expired entries failed on 'ml' L2 SQLiteCache (UnusableLocation:"
    )
    assert "; 'sqlite' (UnusableLocation:" in message
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("default: 0 expired entries removed")
    assert "L2 SQLiteCache failed" in lines[1]
    assert lines[2] == "sqlite: SQLiteCache failed"


def test_expire_skips_a_damaged_filebasedcache_file_and_purges_the_rest(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The first file whose expiry could not be unpickled (garbage, a truncated copy)
    failed the alias: the expired files after it stayed, on every run. Such a file is
    left in place (Django leaves it too: only an empty one reads as expired, and goes)
    and named in a warning; the others are purged."""
    location = tmp_path / "files"
    with override_settings(
        CACHES={"files": {"BACKEND": FILES, "LOCATION": str(location)}}
    ):
        files = caches["files"]
        for i in range(5):
            files.set(f"gone{i}", "x", timeout=1)
        files.set("kept", "x", timeout=300)
        damaged = {
            location / f"{'0' * 32}.djcache": b"garbage\n",  # ValueError
            location / f"{'7' * 32}.djcache": b"\x80\x05\x95",  # truncated pickle
            location / f"{'f' * 32}.djcache": b"\x00\xff",  # UnpicklingError
        }
        for path, data in damaged.items():
            path.write_bytes(data)
        (location / f"{'e' * 32}.djcache").write_bytes(b"")  # empty: Django's expired
        time.sleep(1.1)
        with caplog.at_level("WARNING", logger="django_smartcache.commands"):
            out, _ = run("smartcache_expire")
        assert out == "files: 6 expired entries removed (FileBasedCache 6)\n"
        left = set(location.glob("*.djcache"))
        assert left - set(damaged) == {Path(files._key_to_file("kept"))}
        assert set(damaged) <= left
        warned = " ".join(r.getMessage() for r in caplog.records)
        for path in damaged:
            assert f"skipped {path}: its expiry cannot be read" in warned
        assert files.get("kept") == "x"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("bad tag", "Invalid tag 'bad tag' for --tag: tags may not contain whitespace"),
        ("", "Invalid tag '' for --tag: tag length must be 1..200"),
    ],
)
def test_warm_an_invalid_tag_is_a_command_error(
    mlfile: Any, value: str, message: str
) -> None:
    """It matched no warmer: "No warmers to run.", exit status 0."""
    with pytest.raises(CommandError, match=re.escape(message)):
        run("smartcache_warm", f"--tag={value}")


def test_expire_deletes_a_filebasedcache_s_expired_files(
    mlfile: Any, tmp_path: Path
) -> None:
    """It said FileBasedCache "drops them itself"; its expired files stayed on disk
    (Django removes one only when its key is read)."""
    config = {
        "files": {"BACKEND": FILES, "LOCATION": str(tmp_path / "alone")},
        "mlfile": settings.CACHES["mlfile"],
    }
    with override_settings(CACHES=config):
        files, level = caches["files"], caches["mlfile"].levels[1]
        for cache in (files, level):
            for i in range(5):
                cache.set(f"gone{i}", "x", timeout=1)
            cache.set("kept", "x", timeout=300)
        time.sleep(1.1)
        out, _ = run("smartcache_expire")
        assert out.splitlines() == [
            "files: 5 expired entries removed (FileBasedCache 5)",
            (
                "mlfile: 5 expired entries removed (L2 FileBasedCache 5); "
                "L1 SmartCache: 0 expired copies dropped; "
                "in-process levels: this process's store only"
            ),
        ]
        for cache in (files, level):
            assert len(cache._list_cache_files()) == 1
            assert cache.get("kept") == "x"


@pytest.mark.parametrize(
    "args",
    [
        ("smartcache_warm", "probe.quiet"),
        ("smartcache_expire",),
        ("smartcache_clear", "--noinput"),
        ("smartcache_invalidate", "tag:news", "--pattern", "x*", "--cache", "default"),
    ],
)
def test_verbosity_0_prints_nothing(mlfile: Any, args: tuple[str, ...]) -> None:
    """Every smartcache command printed its lines at ``-v 0``, where Django's own
    commands go quiet."""
    registry.register("probe.quiet", lambda cache: cache.set("k", 1))
    try:
        assert run(*args, verbosity=0) == ("", "")
        assert run(*args, verbosity=1)[0]
    finally:
        registry.unregister("probe.quiet")


def test_verbosity_0_keeps_what_was_asked_for_and_the_errors(mlfile: Any) -> None:
    """A listing is the output asked for (as ``dumpdata``'s); errors still raise."""
    assert run("smartcache_stats", verbosity=0)[0]
    assert run("smartcache_warm", "--list", verbosity=0)[0]
    with pytest.raises(CommandError, match="cannot list its keys"):
        run(
            "smartcache_invalidate", "--pattern", "x*", "--cache", "mlfile", verbosity=0
        )


def test_positional_arguments_can_be_given_by_name_to_call_command() -> None:
    # nargs="*" without a default is "required" to argparse, and Django's
    # call_command then failed with ValueError: min() arg is an empty sequence.
    from io import StringIO

    from django.core.management import call_command

    out = StringIO()
    smart = {"default": {"BACKEND": SMART, "LOCATION": "by-name"}}
    with override_settings(CACHES=smart):
        call_command("smartcache_invalidate", labels="tag:books", stdout=out)
        call_command("smartcache_invalidate", labels=["tag:books"], stdout=out)
        call_command("smartcache_warm", names=[], list=True, stdout=out)
    assert out.getvalue().count("Invalidated 1 tag") == 2


def test_clear_and_invalidate_name_an_unusable_alias_and_do_the_others(
    unusable_sqlite: Any,
) -> None:
    """An alias that raises (an unusable SQLite LOCATION here, a Redis server down
    alike) is a CommandError naming it, not a traceback; the aliases after it still run."""
    default = unusable_sqlite["default"]
    default.set("k", 1)
    out = io.StringIO()
    with pytest.raises(CommandError) as info:
        call_command(
            "smartcache_clear", "--cache", "sqlite", "--cache", "default",
            "--noinput", stdout=out,
        )  # fmt: skip
    assert str(info.value).startswith(
        "The clear failed on 'sqlite' (UnusableLocation: SQLiteCache LOCATION"
    )
    assert out.getvalue().startswith("Cleared 'default' (SmartCache)")
    assert default.get("k") is None
    default.set("x1", 1, tags=["t"])
    for args, gone in [
        (("tag:t", "--cache", "sqlite", "--cache", "default"), "Invalidated 1 tag(s) on default"),
        (("--pattern", "x*", "--cache", "sqlite", "--cache", "default"), "Deleted 1 key(s)"),
    ]:  # fmt: skip
        default.set("x1", 1, tags=["t"])
        out = io.StringIO()
        with pytest.raises(
            CommandError,
            match=r"^The invalidation failed on 'sqlite' \(UnusableLocation: ",
        ):
            call_command("smartcache_invalidate", *args, stdout=out)
        assert out.getvalue().startswith(gone)
        assert default.get("x1") is None


def test_stats_shows_a_level_without_stats_that_is_down(tmp_path: Path) -> None:
    """Django's RedisCache has no stats(): a level of it whose server is gone is
    asked has_key() and shown down with the error (it used to read ``down False``)."""
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = {
        "default": {"BACKEND": SMART, "LOCATION": f"redis-down-{tmp_path.name}"},
        "mlr": {
            "BACKEND": "django_smartcache.backends.MultiLevelCache",
            "OPTIONS": {
                "LEVELS": [
                    {"BACKEND": SMART},
                    {
                        "BACKEND": "django.core.cache.backends.redis.RedisCache",
                        "LOCATION": f"redis://127.0.0.1:{port}/0",
                    },
                ]
            },
        },
    }
    with override_settings(CACHES=config):
        try:
            out, _ = run("smartcache_stats", "--cache", "mlr")
            l2 = out.split("L2 RedisCache (RedisCache)")[1]
            assert re.search(r"^    down +True$", l2, re.MULTILINE)
            assert re.search(r"^    unavailable +ConnectionError: ", l2, re.MULTILINE)
            report = json.loads(run("smartcache_stats", "--cache", "mlr", "--json")[0])
            levels = report["mlr"]["levels"]
            assert "error" not in levels[0]
            assert levels[1]["error"].startswith("ConnectionError:")
            # The counters say so too, as the text does (they said "down": false).
            counted = report["mlr"]["stats"]["levels"]
            assert [level["down"] for level in counted] == [False, True]
        finally:
            for health in caches["mlr"]._health:
                health.stop()
            caches["mlr"].close()


@pytest.mark.django_db
def test_expire_says_a_level_without_a_purge_keeps_its_expired_entries() -> None:
    """A DatabaseCache level was said to be "expired by the level itself" while its
    expired rows stayed: it has no purge and is now skipped as a plain alias is."""
    config = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "dbc": {  # an alias: createcachetable then creates its table
            "BACKEND": "django.core.cache.backends.db.DatabaseCache",
            "LOCATION": "expire_levels_table",
        },
        "ml": {
            "BACKEND": "django_smartcache.backends.MultiLevelCache",
            "OPTIONS": {"LEVELS": [{"BACKEND": SMART}, "dbc"]},
        },
    }
    with override_settings(CACHES=config):
        call_command("createcachetable", verbosity=0)
        caches["ml"].set("short", 1, timeout=0.05)
        time.sleep(0.1)
        out, _ = run("smartcache_expire", "--cache", "ml")
        assert out == (
            "ml: no expired entries removed; L2 DatabaseCache has no purge of expired "
            "entries (it drops one when its key is read); skipped; L1 SmartCache: 1 "
            "expired copy dropped; in-process levels: this process's store only\n"
        )
        with connection.cursor() as cursor:  # skipped, as the line says: still there
            cursor.execute("SELECT COUNT(*) FROM expire_levels_table")
            assert cursor.fetchone()[0] == 1
        caches["ml"].close()


def test_expire_knows_which_backends_expire_by_themselves() -> None:
    """By class: a backend whose module merely mentions redis is not one of them."""
    from django.core.cache.backends.db import DatabaseCache
    from django.core.cache.backends.locmem import LocMemCache
    from django.core.cache.backends.memcached import PyMemcacheCache
    from django.core.cache.backends.redis import RedisCache
    from django_redis.cache import RedisCache as DjangoRedisCache

    from django_smartcache.management.commands.smartcache_expire import no_purge

    redis_url = "redis://127.0.0.1:1/0"  # never connected to
    for cache in (
        RedisCache(redis_url, {}),
        DjangoRedisCache(redis_url, {}),
        PyMemcacheCache("127.0.0.1:1", {}),
    ):
        assert no_purge(cache) == "expires entries itself"
    named_redis = type("DatabaseCache", (DatabaseCache,), {"__module__": "redis_db"})
    for cache in (LocMemCache("x", {}), named_redis("t", {})):
        assert no_purge(cache).startswith("has no purge of expired entries")


@pytest.fixture
def misconfigured(tmp_path: Path) -> Iterator[Any]:
    """``good`` (SQLiteCache) next to ``bad``, whose OPTIONS cannot be built."""
    sqlite = "django_smartcache.backends.SQLiteCache"
    config = {
        "good": {"BACKEND": sqlite, "LOCATION": str(tmp_path / "good.sqlite3")},
        "bad": {
            "BACKEND": sqlite,
            "LOCATION": str(tmp_path / "bad.sqlite3"),
            "OPTIONS": {"MAX_SIZE": "lots"},
        },
    }
    with override_settings(CACHES=config):
        yield caches["good"]
        caches["good"].close()


@pytest.mark.parametrize(
    ("args", "line", "error"),
    [
        (("smartcache_stats",), "bad (SQLiteCache)", "No statistics from 'bad'"),
        (("smartcache_expire",), "bad: SQLiteCache failed", "The purge of expired"),
        (("smartcache_invalidate", "tag:x"), None, "The invalidation failed on 'bad'"),
        (
            ("smartcache_invalidate", "--pattern", "x*"),
            None,
            "The invalidation failed on 'bad'",
        ),
        (  # named once though both the tags and the patterns failed on it
            ("smartcache_invalidate", "tag:x", "--pattern", "y*"),
            None,
            "The invalidation failed on 'bad'",
        ),
    ],
)
def test_a_misconfigured_alias_fails_alone(
    misconfigured: Any, args: tuple[str, ...], line: str | None, error: str
) -> None:
    """A bad OPTIONS value ended stats, expire and invalidate on a raw
    ImproperlyConfigured (a traceback) before or after the good alias: now, as clear
    and warm do, the good alias is done and the error names the bad one."""
    misconfigured.set("x1", 1, tags=["x"])
    out = io.StringIO()
    with pytest.raises(CommandError) as info:
        call_command(*args, stdout=out, stderr=io.StringIO(), no_color=True)
    assert str(info.value).startswith(error)
    assert "(ImproperlyConfigured: SQLiteCache MAX_SIZE" in str(info.value)
    assert str(info.value).count("'bad'") == 1
    assert "good" in out.getvalue()
    if line is not None:
        assert line in out.getvalue()
    if args[0] == "smartcache_invalidate":
        assert misconfigured.get("x1") is None


def test_warm_on_a_misconfigured_alias_fails_that_alias_alone(
    misconfigured: Any,
) -> None:
    """The run on ``bad`` reported its error and ``good`` was warmed, but asking which
    levels each alias reached built ``bad`` again: a raw ImproperlyConfigured (a
    traceback) instead of the CommandError docs/commands.md promises (docs probe)."""

    def warm(cache: Any) -> int:
        cache.set("warm:k", 1)
        return 1

    registry.register("edge.warm", warm, caches=["good", "bad"])
    try:
        out, err = io.StringIO(), io.StringIO()
        with pytest.raises(CommandError) as info:
            call_command(
                "smartcache_warm", "edge.warm", stdout=out, stderr=err, no_color=True
            )
    finally:
        registry.unregister("edge.warm")
    assert str(info.value) == "1 of 2 warmer runs failed: edge.warm on 'bad'"
    assert "Warmed edge.warm on 'good'" in out.getvalue()
    assert "(ImproperlyConfigured: SQLiteCache MAX_SIZE" not in err.getvalue()
    assert "ImproperlyConfigured: SQLiteCache MAX_SIZE" in err.getvalue()
    assert misconfigured.get("warm:k") == 1


@pytest.fixture
def redis_down(tmp_path: Path) -> Iterator[Any]:
    """``mlr``: a SmartCache L1 over a RedisCache level whose server is not there."""
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    redis_level = {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": f"redis://127.0.0.1:{port}/0",
        "OPTIONS": {"socket_connect_timeout": 0.2, "socket_timeout": 0.2},
    }
    config = {
        "default": {"BACKEND": SMART, "LOCATION": f"redis-down-{tmp_path.name}"},
        "mlr": {
            "BACKEND": "django_smartcache.backends.MultiLevelCache",
            "OPTIONS": {"LEVELS": [{"BACKEND": SMART}, redis_level]},
        },
    }
    with override_settings(CACHES=config):
        yield caches["mlr"]
        for health in caches["mlr"]._health:
            health.stop()
        caches["mlr"].close()


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (("tag:x",), "Invalidated 1 tag(s) on mlr (but not its L2 RedisCache)."),
        (
            ("--pattern", "k*"),
            "Deleted 0 key(s) matching pattern 'k*' on 'mlr' but not its L2 RedisCache.",
        ),
    ],
)
def test_invalidate_lines_name_the_level_they_did_not_reach(
    redis_down: Any, args: tuple[str, ...], line: str
) -> None:
    """With the Redis L2 down, invalidate's lines read as full successes ("Invalidated
    1 tag(s) on mlr."); like clear's and warm's they now name the level missed."""
    out = io.StringIO()
    with pytest.raises(CommandError, match="did not reach 'mlr' L2 RedisCache"):
        call_command("smartcache_invalidate", *args, "--cache", "mlr", stdout=out)
    assert out.getvalue() == line + "\n"


def test_a_level_missed_by_tags_and_patterns_is_named_once(redis_down: Any) -> None:
    """``tag:x --pattern k*`` named "'mlr' L2 RedisCache (...)" twice in its error."""
    with pytest.raises(CommandError) as info:
        run("smartcache_invalidate", "tag:x", pattern="k*", caches=["mlr"])
    assert str(info.value).count("'mlr' L2 RedisCache") == 1


def test_the_tag_line_tells_a_level_missed_from_the_next_alias(
    redis_down: Any,
) -> None:
    """It read "on mlr but not its L2 RedisCache, default (...)": as if ``default``
    was not reached either."""
    out = io.StringIO()
    with pytest.raises(CommandError, match="did not reach 'mlr' L2 RedisCache"):
        call_command(
            "smartcache_invalidate", "tag:x", caches=["mlr", "default"], stdout=out
        )
    assert out.getvalue() == (
        "Invalidated 1 tag(s) on mlr (but not its L2 RedisCache) and default "
        "(in-process: this process only).\n"
    )


def test_warm_names_the_level_missed_when_a_warmer_failed_too(
    redis_down: Any,
) -> None:
    """A failed run raised before the levels were gathered: the error named the
    failed run only, not the level the other runs did not reach."""

    def bad(cache: Any) -> None:
        raise RuntimeError("boom")

    registry.register("edge.ok", lambda cache: cache.set("k", 1))
    registry.register("edge.bad", bad, caches=["default"])
    try:
        with pytest.raises(CommandError) as info:
            run("smartcache_warm", "edge.ok", "edge.bad", caches=["mlr", "default"])
    finally:
        registry.unregister("edge.ok")
        registry.unregister("edge.bad")
    message = str(info.value)
    assert message.startswith("1 of 3 warmer runs failed: edge.bad on 'default'. ")
    assert "Warming did not reach 'mlr' L2 RedisCache (" in message


@pytest.mark.redis
def test_invalidate_pattern_on_a_django_redis_alias_uses_our_glob_and_regex(
    redis_url: str, tmp_path: Path
) -> None:
    """django-redis's own delete_pattern() takes Redis's glob and no ``regex``: every
    ``smartcache_invalidate --pattern`` run failed on such an alias with a TypeError
    ("The invalidation failed on 'djredis'"), and without ``regex=`` it would have
    read our glob as Redis's. Ours is applied through its redis-py client now."""
    config = {
        "default": {
            "BACKEND": "django_smartcache.backends.SQLiteCache",
            "LOCATION": str(tmp_path / "c.sqlite3"),
        },
        "djredis": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": redis_url,
            "KEY_PREFIX": "site",
        },
    }
    with override_settings(CACHES=config):
        djredis = caches["djredis"]
        djredis.set_many({"user:1": 1, "user:2": 2, "a!b": 3, "ab": 4, "other": 5})
        out = io.StringIO()
        call_command("smartcache_invalidate", pattern="user:*", stdout=out)
        assert (
            "Deleted 2 key(s) matching pattern 'user:*' on 'djredis'" in out.getvalue()
        )
        # Ours: the keys not starting with "a" (Redis's glob: "!" or "a" first).
        call_command("smartcache_invalidate", pattern="[!a]*", stdout=out)
        call_command("smartcache_invalidate", regex="^a!", stdout=out)
        assert djredis.get_many(["user:1", "user:2", "a!b", "ab", "other"]) == {"ab": 4}
        caches["default"].close()


def test_invalidate_refuses_an_unencodable_pattern_before_any_change(
    tmp_path: Path,
) -> None:
    """A non-UTF-8 byte on the command line arrives as a lone surrogate: the tag given
    with it was invalidated, then the pattern failed (pattern probe). Checked first."""
    config = {
        "default": {
            "BACKEND": "django_smartcache.backends.SQLiteCache",
            "LOCATION": str(tmp_path / "c.sqlite3"),
        }
    }
    with override_settings(CACHES=config):
        cache = caches["default"]
        cache.set("k", "v", tags=["t1"])
        with pytest.raises(CommandError, match="cannot be encoded as UTF-8"):
            call_command(
                "smartcache_invalidate",
                "tag:t1",
                pattern="\udcff*",
                stdout=io.StringIO(),
            )
        assert cache.get("k") == "v"
        cache.close()


def test_clear_says_which_other_aliases_share_the_file(tmp_path: Path) -> None:
    """clear() empties the whole SQLite file, other aliases' entries too (a sessions
    alias on the default cache's file: users logged out), and the command said only
    "Cleared 'default'" (aliases probe). It names the others now."""
    shared = str(tmp_path / "shared.sqlite3")
    config = {
        "default": {
            "BACKEND": "django_smartcache.backends.MultiLevelCache",
            "LOCATION": shared,
        },
        "sessions": {
            "BACKEND": "django_smartcache.backends.SQLiteCache",
            "LOCATION": shared,
            "KEY_PREFIX": "sessions",
        },
        "alone": {
            "BACKEND": "django_smartcache.backends.SQLiteCache",
            "LOCATION": str(tmp_path / "alone.sqlite3"),
        },
    }
    with override_settings(CACHES=config):
        out = io.StringIO()
        call_command(
            "smartcache_clear", cache=["default"], interactive=False, stdout=out
        )
        assert "is also the file of 'sessions': their entries are gone too" in (
            out.getvalue()
        )
        out = io.StringIO()
        call_command("smartcache_clear", cache=["alone"], interactive=False, stdout=out)
        assert "is also the file" not in out.getvalue()
        for alias in config:
            caches[alias].close()


def test_clear_names_the_aliases_behind_a_level_named_by_alias(tmp_path: Path) -> None:
    """A MultiLevelCache whose LEVELS name a SQLiteCache alias empties that alias's
    file: its clear named no one (review); and --all names no one, as it clears
    them all anyway."""
    other = str(tmp_path / "other.sqlite3")
    sqlite = "django_smartcache.backends.SQLiteCache"
    config = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "l2": {"BACKEND": sqlite, "LOCATION": other},
        "sessions": {"BACKEND": sqlite, "LOCATION": other, "KEY_PREFIX": "s"},
        "ml": {
            "BACKEND": "django_smartcache.backends.MultiLevelCache",
            "OPTIONS": {
                "LEVELS": [{"BACKEND": "django_smartcache.backends.SmartCache"}, "l2"]
            },
        },
    }
    with override_settings(CACHES=config):
        out = io.StringIO()
        call_command("smartcache_clear", cache=["ml"], interactive=False, stdout=out)
        assert "is also the file of 'l2', 'sessions'" in out.getvalue()
        out = io.StringIO()
        call_command("smartcache_clear", cache=["l2"], interactive=False, stdout=out)
        assert "is also the file of 'ml', 'sessions'" in out.getvalue()
        out = io.StringIO()
        call_command("smartcache_clear", all=True, interactive=False, stdout=out)
        assert "is also the file" not in out.getvalue()
        for alias in ("l2", "sessions", "ml"):
            caches[alias].close()


@pytest.mark.redis
def test_clearing_a_redis_level_by_its_alias_drops_the_multilevels_l1_copies(
    redis_url: str,
) -> None:
    """``smartcache_clear --cache redis`` ran FLUSHDB and told no MultiLevelCache over
    it: their L1s (every process's) served the deleted values until L1_MAX_TTL (an
    outside probe: 29.6 s with L1_MAX_TTL 30). They are told now."""
    config = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "redis": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": redis_url,
        },
        "ml": {
            "BACKEND": "django_smartcache.backends.MultiLevelCache",
            "OPTIONS": {
                # (An L1 LOCATION of its own: a MultiLevelCache's coherence and
                # health are shared by every instance of one configuration in the
                # process, and other tests stop theirs.)
                "LEVELS": [
                    {
                        "BACKEND": "django_smartcache.backends.SmartCache",
                        "LOCATION": "clearing-a-redis-level",
                    },
                    "redis",
                ],
                "L1_MAX_TTL": 30,
            },
        },
    }
    with override_settings(CACHES=config):
        ml = caches["ml"]
        ml.set("k", "v")
        assert ml.get("k") == "v"
        out = io.StringIO()
        call_command("smartcache_clear", cache=["redis"], interactive=False, stdout=out)
        assert "'ml' has 'redis' as a level: its L1 copies were dropped" in (
            out.getvalue()
        )
        assert ml.get("k") is None
        ml.close()


def test_the_clear_prompt_names_the_other_aliases_on_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """The prompt said only 'default'; the other aliases on its file were named after
    the irreversible clear (ops probe). ``flush`` names the database it empties."""
    shared = str(tmp_path / "shared.sqlite3")
    sqlite = "django_smartcache.backends.SQLiteCache"
    config = {
        "default": {"BACKEND": sqlite, "LOCATION": shared},
        "sessions": {"BACKEND": sqlite, "LOCATION": shared, "KEY_PREFIX": "s"},
    }
    with override_settings(CACHES=config):
        monkeypatch.setattr(sys, "stdin", io.StringIO("no\n"))
        call_command("smartcache_clear", stdout=io.StringIO())
        prompt = capsys.readouterr().out
        assert "is also the file of 'sessions': their entries will be gone too" in (
            prompt
        )
        for alias in config:
            caches[alias].close()


def test_clearing_a_level_says_when_no_channel_reaches_the_other_processes(
    tmp_path: Path,
) -> None:
    """With COHERENCE 'none' the command said the L1 copies were dropped in every
    process; only its own (empty) L1 was (a review)."""
    config = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "l2": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(tmp_path / "files"),
        },
        "ml": {
            "BACKEND": "django_smartcache.backends.MultiLevelCache",
            "OPTIONS": {
                "LEVELS": [{"BACKEND": "django_smartcache.backends.SmartCache"}, "l2"],
                "COHERENCE": "none",
            },
        },
    }
    with override_settings(CACHES=config):
        out = io.StringIO()
        call_command("smartcache_clear", cache=["l2"], interactive=False, stdout=out)
        assert "and no channel reached its other processes" in out.getvalue()
        assert "dropped in every process" not in out.getvalue()
        caches["ml"].close()
