"""The ``SMARTCACHE`` setting: every wrong value, unknown option or unknown model label
is refused by name, at start-up (``AppConfig.ready()``) and by ``manage.py check``."""

from __future__ import annotations

import os
from typing import Any

import pytest
from django.core.cache.backends.locmem import LocMemCache
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from django_smartcache import conf, registry
from django_smartcache.backends import MultiLevelCache, SQLiteCache
from django_smartcache.checks import check_settings
from tests.testapp.models import Book


@pytest.fixture(autouse=True)
def fresh_config() -> Any:
    """Receivers off while the setting is wrong (a change would reconnect them, and
    raise); back on, as at start-up, afterwards."""
    from django_smartcache import invalidation

    invalidation.disconnect()
    conf.get_config.cache_clear()
    yield
    invalidation.disconnect()
    conf.get_config.cache_clear()
    registry.clear_caches()
    invalidation.connect()


@pytest.mark.parametrize(
    ("setting", "named"),
    [
        ({"EXCLUDE_MODEL": ["testapp.book"]}, "EXCLUDE_MODEL"),  # a missing S
        ({"models": "__all__"}, "models"),
        ({"WATCH_SQL": 1}, "WATCH_SQL"),
        ({"MODELS": "testapp.book"}, "MODELS"),
        ({"TAG_CACHES": ["no-such-alias"]}, "TAG_CACHES"),
        # An outside probe: a TypeError (unhashable list) that named nothing.
        ({"TAG_CACHES": [["default"]]}, "TAG_CACHES'] holds"),
        # An outside probe: a LocMemCache alias was skipped without a word, so
        # invalidate_tags() and model writes invalidated nothing.
        ({"TAG_CACHES": ["default"]}, "does not support tags"),
        ({"TAG_VERSION_TIMEOUT": 0}, "TAG_VERSION_TIMEOUT"),
        ({"TAG_VERSION_TIMEOUT": 1.5}, "whole number of seconds"),
        ({"TAG_KEY_PREFIX": "a b"}, "TAG_KEY_PREFIX"),
        ({"TOOLBAR_MAX_CALLS": -1}, "0 or more"),
        ({"TOOLBAR_MAX_CALLS": "1000"}, "0 or more"),
        ({"TOOLBAR_MAX_CALLS": 1e3}, "0 or more"),
        ({"TOOLBAR_MAX_CALLS": True}, "0 or more"),
        ({"VIEWS": ["testapp.book"]}, "VIEWS'] must be a dict"),
        ({"VIEWS": {"testapp": ["testapp.book"]}}, "VIEWS'] holds 'testapp'"),
        ({"VIEWS": {"testapp.booksummary": "testapp.book"}}, "must be a list"),
        ({"VIEWS": {"testapp.booksummary": ["testapp"]}}, "holds 'testapp'"),
    ],
)
def test_a_wrong_or_unknown_option_is_named(
    setting: dict[str, Any], named: str
) -> None:
    with override_settings(SMARTCACHE=setting):
        conf.get_config.cache_clear()
        with pytest.raises(ImproperlyConfigured, match=named):
            conf.get_config()
        (error,) = check_settings()
        assert error.id == "smartcache.E010" and named in error.msg


def test_the_toolbar_cap_defaults_to_a_thousand_and_takes_none_or_zero() -> None:
    assert conf.get("TOOLBAR_MAX_CALLS") == 1000
    for value in (None, 0, 5):
        with override_settings(SMARTCACHE={"TOOLBAR_MAX_CALLS": value}):
            conf.get_config.cache_clear()
            assert conf.get("TOOLBAR_MAX_CALLS") == value
            assert check_settings() == []
    with override_settings(SMARTCACHE={"TOOLBAR_MAX_CALLS": -1}):
        (error,) = check_settings()
    assert error.msg == (
        "SMARTCACHE['TOOLBAR_MAX_CALLS'] must be a whole number (an int, 0 or more) "
        "or None, not -1"
    )
    assert error.hint == "See docs/debug-toolbar.md."


@pytest.mark.parametrize(
    "setting",
    [
        {"MODELS": ["testapp.bok"]},  # a typo: Book would be served stale
        {"MODELS": ["testapp.book", "nosuchapp"]},
        {"EXCLUDE_MODELS": ["testapp.auditlgo"]},
        {"VIEWS": {"testapp.booksumary": ["testapp.book"]}},
        {"VIEWS": {"testapp.booksummary": ["testapp.bok"]}},
    ],
)
def test_a_label_that_names_no_installed_model_is_refused(
    setting: dict[str, Any],
) -> None:
    with override_settings(SMARTCACHE=setting):
        conf.get_config.cache_clear()
        with pytest.raises(ImproperlyConfigured, match="no installed (app or )?model"):
            registry.check_labels()
        (error,) = check_settings()
        assert error.id == "smartcache.E010"


def test_installed_app_and_model_labels_are_accepted() -> None:
    setting = {
        "MODELS": ["testapp", "testapp.book", "auth.user"],
        "EXCLUDE_MODELS": ["testapp.auditlog", "contenttypes"],
        "VIEWS": {"testapp.BookSummary": ("testapp.Book", "auth.user")},
    }
    with override_settings(SMARTCACHE=setting):
        conf.get_config.cache_clear()
        registry.check_labels()
        assert check_settings() == []


def test_the_receivers_refuse_to_connect_on_a_typo() -> None:
    """``AppConfig.ready()`` connects the receivers at start-up: it raises rather than
    run with the misspelt model silently untracked."""
    from django_smartcache import invalidation

    with override_settings(SMARTCACHE={"MODELS": ["testapp.bok"]}):
        conf.get_config.cache_clear()
        with pytest.raises(ImproperlyConfigured, match="testapp.bok"):
            invalidation.connect()
    conf.get_config.cache_clear()
    invalidation.connect()
    assert registry.is_tracked(Book)


def test_a_refused_override_leaves_the_receivers_connected() -> None:
    """A test asserting the error for a bad label left every later test of the
    process without model invalidation (receivers off, never reconnected)."""
    from django_smartcache import invalidation

    conf.get_config.cache_clear()
    registry.clear_caches()
    invalidation.connect()
    connected = len(invalidation._connected)
    assert connected > 0
    with (
        pytest.raises(ImproperlyConfigured, match="testapp.bok"),
        override_settings(SMARTCACHE={"MODELS": ["testapp.bok"]}),
    ):
        pass  # pragma: no cover - entering raises
    assert len(invalidation._connected) == connected
    with override_settings(SMARTCACHE={"MODELS": ["testapp.book"]}):
        assert 0 < len(invalidation._connected) < connected
    assert len(invalidation._connected) == connected


def test_an_app_label_with_capitals_can_be_named() -> None:
    """Labels are lower-cased when read: an app labelled "MyShop" is "myshop" there."""
    from types import SimpleNamespace

    model = SimpleNamespace(
        _meta=SimpleNamespace(app_label="MyShop", label_lower="myshop.product")
    )
    assert registry._matches(model, ("myshop",))  # type: ignore[arg-type]
    assert registry._matches(model, ("myshop.product",))  # type: ignore[arg-type]


def test_a_relative_or_served_sqlite_file_is_warned_about(tmp_path: Any) -> None:
    from django_smartcache.checks import (
        check_sqlite_location_is_absolute,
        check_sqlite_location_not_exposed,
    )

    media = tmp_path / "media"
    caches = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "rel": {
            "BACKEND": "django_smartcache.backends.SQLiteCache",
            "LOCATION": "cache.sqlite3",
        },
        "home": {  # ~ is expanded, as SQLiteCache does: absolute
            "BACKEND": "django_smartcache.backends.SQLiteCache",
            "LOCATION": "~/cache.sqlite3",
        },
        "served": {
            "BACKEND": "django_smartcache.backends.MultiLevelCache",
            "LOCATION": str(media / "cache" / "l2.sqlite3"),
        },
        "fine": {
            "BACKEND": "django_smartcache.backends.MultiLevelCache",
            "OPTIONS": {
                "LEVELS": [
                    {"BACKEND": "django_smartcache.backends.SmartCache"},
                    {
                        "BACKEND": "django_smartcache.backends.SQLiteCache",
                        "LOCATION": str(tmp_path / "l2.sqlite3"),
                    },
                ]
            },
        },
    }
    with override_settings(CACHES=caches, MEDIA_ROOT=str(media)):
        relative = check_sqlite_location_is_absolute()
        exposed = check_sqlite_location_not_exposed()
    assert [(m.id, "'rel'" in m.msg) for m in relative] == [("smartcache.W040", True)]
    assert [(m.id, "'served'" in m.msg) for m in exposed] == [("smartcache.W041", True)]


def test_the_sqlite_checks_skip_a_malformed_entry_for_the_backend_to_name(
    tmp_path: Any,
) -> None:
    """OPTIONS given as a string (or an entry that is no dict) made ``manage.py check``
    die with AttributeError instead of the backend's own ImproperlyConfigured."""
    from django_smartcache.checks import (
        check_sqlite_location_is_absolute,
        check_sqlite_location_not_exposed,
    )

    caches = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "bad": {
            "BACKEND": "django_smartcache.backends.MultiLevelCache",
            "LOCATION": str(tmp_path / "c.sqlite3"),
            "OPTIONS": "MAX_ENTRIES=5",
        },
        "worse": "django_smartcache.backends.SQLiteCache",
        "path": {
            "BACKEND": "django_smartcache.backends.SQLiteCache",
            "LOCATION": tmp_path.relative_to(tmp_path.parent) / "c.sqlite3",
        },
    }
    with override_settings(CACHES=caches):
        relative = check_sqlite_location_is_absolute()
        check_sqlite_location_not_exposed()
    assert [(m.id, "'path'" in m.msg) for m in relative] == [("smartcache.W040", True)]


def test_a_redis_level_listing_replicas_below_an_l1_is_warned_about() -> None:
    """Reads from a lagging replica just after an invalidation were kept in L1: an
    outside probe measured stale reads 1.4 s old with 0.5 s of lag (bound 1 s)."""
    from django_smartcache.checks import check_redis_replicas_below_l1

    redis = "django.core.cache.backends.redis.RedisCache"
    l1 = {"BACKEND": "django_smartcache.backends.SmartCache"}

    def multilevel(*levels: Any) -> dict[str, Any]:
        return {
            "BACKEND": "django_smartcache.backends.MultiLevelCache",
            "OPTIONS": {"LEVELS": [l1, *levels]},
        }

    caches = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "listed": multilevel(
            {"BACKEND": redis, "LOCATION": ["redis://a:6379", "redis://b:6379"]}
        ),
        "string": multilevel(
            {"BACKEND": redis, "LOCATION": "redis://a:6379,redis://b:6379"}
        ),
        "by_alias": multilevel("replicated"),
        "replicated": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": ["redis://a:6379/1", "redis://b:6379/1"],
        },
        "primary_only": multilevel({"BACKEND": redis, "LOCATION": "redis://a:6379"}),
        "redis_first": {  # an L1 of Redis is no lower level: not this check's business
            "BACKEND": "django_smartcache.backends.MultiLevelCache",
            "OPTIONS": {
                "LEVELS": [{"BACKEND": redis, "LOCATION": ["redis://a", "redis://b"]}]
            },
        },
        "malformed": {
            "BACKEND": "django_smartcache.backends.MultiLevelCache",
            "OPTIONS": {"LEVELS": "nope"},
        },
        "shards": multilevel(  # django-redis's shards hold each key once: no replica
            {
                "BACKEND": "django_redis.cache.RedisCache",
                "LOCATION": ["redis://a:6379/0", "redis://b:6379/0"],
                "OPTIONS": {"CLIENT_CLASS": "django_redis.client.ShardClient"},
            }
        ),
        "valkey": multilevel(
            {
                "BACKEND": "django_valkey.cache.ValkeyCache",
                "LOCATION": "valkey://a:6379/0,valkey://b:6379/0",
            }
        ),
        "semicolon": multilevel(  # django-redis splits on "," only: one server
            {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": "redis://a;b"}
        ),
    }
    with override_settings(CACHES=caches):
        messages = check_redis_replicas_below_l1()
    assert [m.id for m in messages] == ["smartcache.W042"] * 4
    assert ["'listed'" in messages[0].msg, "'string'" in messages[1].msg] == [True] * 2
    assert "'by_alias'" in messages[2].msg
    assert "'valkey'" in messages[3].msg


def test_a_multilevel_cache_sharing_nothing_between_processes_is_warned_about(
    tmp_path: Any,
) -> None:
    """LOCATION with a one-level LEVELS (sizing L1 with an inline SmartCache level,
    as docs/multilevel.md suggests) silently gave each process a private cache: the
    SQLite file at LOCATION was never opened, a write in one worker never seen by
    another."""
    from django_smartcache.checks import (
        check_multilevel_has_a_shared_level,
        check_multilevel_location_with_levels,
    )

    multi = "django_smartcache.backends.MultiLevelCache"
    smart = {
        "BACKEND": "django_smartcache.backends.SmartCache",
        "OPTIONS": {"MAX_MEMORY": "128MB"},
    }
    sqlite = {
        "BACKEND": "django_smartcache.backends.SQLiteCache",
        "LOCATION": str(tmp_path / "l2.sqlite3"),
    }
    caches = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "dropped": {  # both: LOCATION ignored, and one in-process level
            "BACKEND": multi,
            "LOCATION": str(tmp_path / "cache.sqlite3"),
            "OPTIONS": {"LEVELS": [smart]},
        },
        "located": {  # LOCATION ignored, but a shared level
            "BACKEND": multi,
            "LOCATION": tmp_path / "other.sqlite3",
            "OPTIONS": {"LEVELS": [smart, sqlite]},
        },
        "private": {"BACKEND": multi, "OPTIONS": {"LEVELS": [smart, "default"]}},
        "fine": {
            "BACKEND": multi,
            "LOCATION": "",
            "OPTIONS": {"LEVELS": [smart, sqlite]},
        },
        "defaults": {"BACKEND": multi, "LOCATION": str(tmp_path / "d.sqlite3")},
        "malformed": {"BACKEND": multi, "LOCATION": "x", "OPTIONS": {"LEVELS": "x"}},
        "named": {  # a name, not a path: keeps its L1 apart (a review), no warning
            "BACKEND": multi,
            "LOCATION": "pages",
            "OPTIONS": {"LEVELS": [smart, sqlite]},
        },
        "unknown": {
            "BACKEND": multi,
            "OPTIONS": {"LEVELS": [smart, {"BACKEND": "no.Such"}]},
        },
    }
    with override_settings(CACHES=caches):
        ignored = check_multilevel_location_with_levels()
        private = check_multilevel_has_a_shared_level()
    assert [(m.id, m.msg.split("'")[1]) for m in ignored] == [
        ("smartcache.W043", "dropped"),
        ("smartcache.W043", "located"),
    ]
    assert [(m.id, m.msg.split("'")[1]) for m in private] == [
        ("smartcache.W044", "dropped"),
        ("smartcache.W044", "private"),
    ]
    assert "no SQLite file is opened at LOCATION" in ignored[0].msg
    assert "a write in one is never seen by another" in private[0].msg


def test_an_inline_database_cache_level_is_warned_about() -> None:
    """``createcachetable`` makes tables for CACHES aliases only: an inline
    DatabaseCache level never had one, stayed down, and left every process with its
    own L1, while ``check`` said nothing (outside probe). The same level named by
    alias is fine (its table is made)."""
    from django_smartcache.checks import check_inline_database_levels

    multi = "django_smartcache.backends.MultiLevelCache"
    smart = {"BACKEND": "django_smartcache.backends.SmartCache"}
    db = {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": "t"}
    caches = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "table": db,
        "inline": {"BACKEND": multi, "OPTIONS": {"LEVELS": [smart, db]}},
        "aliased": {"BACKEND": multi, "OPTIONS": {"LEVELS": [smart, "table"]}},
        "defaults": {"BACKEND": multi},
        # Inline, but the table of the "table" alias: createcachetable makes it.
        "same-table": {"BACKEND": multi, "OPTIONS": {"LEVELS": [smart, dict(db)]}},
        "other-table": {
            "BACKEND": multi,
            "OPTIONS": {"LEVELS": [smart, {**db, "LOCATION": "elsewhere"}]},
        },
    }
    with override_settings(CACHES=caches):
        found = check_inline_database_levels()
    # "inline" and "same-table" use the "table" alias's table "t": made by it.
    assert [(m.id, m.msg.split("'")[1]) for m in found] == [
        ("smartcache.W051", "other-table")
    ]
    del caches["table"]
    with override_settings(CACHES=caches):
        found = check_inline_database_levels()
    assert [(m.id, m.msg.split("'")[1]) for m in found] == [
        ("smartcache.W051", "inline"),
        ("smartcache.W051", "same-table"),
        ("smartcache.W051", "other-table"),
    ]
    assert found[0].msg.startswith(
        "Level 1 of cache 'inline' is an inline DatabaseCache"
    )


def test_aliases_giving_one_sqlite_file_different_budgets_are_warned_about(
    tmp_path: Any,
) -> None:
    """Each alias on a file evicts the whole file down to its own budget: a sessions
    alias with MAX_SIZE 1MB on the MultiLevelCache's file evicted its pages, and the
    MultiLevelCache's MAX_ENTRIES evicted every session. Nothing flagged it."""
    from django_smartcache.checks import check_sqlite_file_budgets_agree

    multi = "django_smartcache.backends.MultiLevelCache"
    sqlite = "django_smartcache.backends.SQLiteCache"
    shared = tmp_path / "shared.sqlite3"
    (tmp_path / "sub").mkdir()
    caches = {
        "default": {"BACKEND": multi, "LOCATION": str(shared)},  # L2: 1GB
        "sessions": {  # the same file, spelled another way
            "BACKEND": sqlite,
            "LOCATION": str(tmp_path / "sub" / ".." / "shared.sqlite3"),
            "OPTIONS": {"MAX_SIZE": "1MB"},
        },
        "pages": {
            "BACKEND": multi,
            "LOCATION": tmp_path / "pages.sqlite3",
            "OPTIONS": {"MAX_ENTRIES": 1000},
        },
        "pages_too": {
            "BACKEND": multi,
            "OPTIONS": {
                "LEVELS": [
                    {"BACKEND": "django_smartcache.backends.SmartCache"},
                    {"BACKEND": sqlite, "LOCATION": str(tmp_path / "pages.sqlite3")},
                ]
            },
        },
        # Agreeing budgets, however spelled: no warning.
        "a": {"BACKEND": sqlite, "LOCATION": str(tmp_path / "ok.sqlite3")},
        "b": {
            "BACKEND": sqlite,
            "LOCATION": str(tmp_path / "ok.sqlite3"),
            "OPTIONS": {"MAX_SIZE": 2**30, "CULL_FREQUENCY": "3"},
        },
        "c": {"BACKEND": sqlite, "LOCATION": str(tmp_path / "own.sqlite3")},
    }
    with override_settings(CACHES=caches):
        messages = check_sqlite_file_budgets_agree()
    assert [m.id for m in messages] == ["smartcache.W045"] * 2
    first, second = (m.msg for m in messages)
    assert "'default', 'sessions'" in first and "MAX_SIZE" in first
    assert os.path.realpath(shared) in first and "MAX_ENTRIES" not in first
    assert "'pages', 'pages_too' (LEVELS[1])" in second
    assert "MAX_ENTRIES: 'pages' 1000, 'pages_too' (LEVELS[1]) None" in second


def test_a_swapped_out_model_in_views_is_named_as_swapped() -> None:
    """``auth.User`` under a custom ``AUTH_USER_MODEL`` was refused as "no installed
    model has that label", which sends the reader looking for a typo (review)."""
    with override_settings(
        AUTH_USER_MODEL="testapp.Author",
        SMARTCACHE={"VIEWS": {"testapp.booksummary": ["auth.user"]}},
    ):
        conf.get_config.cache_clear()
        with pytest.raises(
            ImproperlyConfigured, match="'auth.user' is swapped for 'testapp.Author'"
        ):
            registry.check_labels()


def test_sessions_read_from_a_multilevel_cache_with_an_l1_are_warned_about(
    tmp_path: Any,
) -> None:
    """With 3 gunicorn workers a session counter incremented 200 times ended at 81
    (``cache`` engine) or 134 (``cached_db``: it reads the cache first) on the default
    MultiLevelCache: a worker read its stale L1 copy and saved it back. The docs said
    ``cached_db`` guarded against it, and no check said anything (helper probe)."""
    from django_smartcache.checks import check_sessions_not_in_an_l1

    multi = "django_smartcache.backends.MultiLevelCache"
    sqlite = "django_smartcache.backends.SQLiteCache"
    caches = {
        "default": {"BACKEND": multi, "LOCATION": str(tmp_path / "c.sqlite3")},
        "file": {"BACKEND": sqlite, "LOCATION": str(tmp_path / "s.sqlite3")},
        "inline_l1": {
            "BACKEND": multi,
            "OPTIONS": {
                "LEVELS": [
                    {"BACKEND": "django_smartcache.backends.SmartCache"},
                    "file",
                ]
            },
        },
    }
    cache_engine = "django.contrib.sessions.backends.cache"
    cases = [
        (cache_engine, "default", ["smartcache.W046"]),
        ("django.contrib.sessions.backends.cached_db", "default", ["smartcache.W046"]),
        (cache_engine, "inline_l1", ["smartcache.W046"]),
        (cache_engine, "file", []),  # the documented sessions alias
        ("django.contrib.sessions.backends.db", "default", []),  # no cache read
        ("no.such.engine", "default", []),  # Django's own error, not ours
    ]
    for engine, alias, expected in cases:
        with override_settings(
            CACHES=caches, SESSION_ENGINE=engine, SESSION_CACHE_ALIAS=alias
        ):
            found = check_sessions_not_in_an_l1()
        assert [m.id for m in found] == expected, (engine, alias)
        if found:
            assert f"SESSION_CACHE_ALIAS {alias!r}" in found[0].msg


def test_the_sessions_warning_claims_undone_logouts_for_the_cache_engine_only(
    tmp_path: Any,
) -> None:
    """W046 said "lost writes, undone logouts, with the cache and cached_db engines
    alike", but cached_db saves a session with an UPDATE of its row: a stale L1 copy
    of a session logged out in another worker is read (and still logged in) within
    the bound, but its save raises UpdateError and the logout stands (a reproducer
    with two MultiLevelCache aliases, separate L1s over one SQLite file: ``cache``
    saved the session back, ``cached_db`` refused; review of c845b80)."""
    from django_smartcache.checks import check_sessions_not_in_an_l1

    multi = "django_smartcache.backends.MultiLevelCache"
    caches = {"default": {"BACKEND": multi, "LOCATION": str(tmp_path / "c.sqlite3")}}
    found = {}
    for engine in ("cache", "cached_db"):
        with override_settings(
            CACHES=caches,
            SESSION_ENGINE=f"django.contrib.sessions.backends.{engine}",
            SESSION_CACHE_ALIAS="default",
        ):
            [found[engine]] = check_sessions_not_in_an_l1()
    assert "lost writes" in found["cache"].msg
    assert "undone logouts" in found["cache"].msg
    assert "a logout made while a lower level is down" in found["cache"].msg
    assert "lost writes" in found["cached_db"].msg
    assert "undone logout" not in found["cached_db"].msg
    assert "refuses to save it again" in found["cached_db"].msg


class ProjectTwoLevel(MultiLevelCache):
    """A project's own MultiLevelCache, under a name of its own."""


class ProjectFiles(SQLiteCache):
    """A project's own SQLiteCache, under a name of its own."""


class ScratchSQLiteCache(LocMemCache):
    """Not ours, though its name ends as ours does."""


def test_checks_know_subclasses_of_our_backends_by_class_not_name(
    tmp_path: Any,
) -> None:
    """The checks found our backends by how BACKEND ends: a project's subclass named
    otherwise was never checked (sessions on it, two budgets on one file), and someone
    else's class named ...SQLiteCache was taken for ours (review)."""
    from django_smartcache.checks import (
        check_sessions_not_in_an_l1,
        check_sqlite_file_budgets_agree,
        check_sqlite_location_is_absolute,
    )

    here = __name__
    shared = str(tmp_path / "shared.sqlite3")
    caches = {
        "default": {"BACKEND": f"{here}.ProjectTwoLevel", "LOCATION": shared},
        "files": {
            "BACKEND": f"{here}.ProjectFiles",
            "LOCATION": shared,
            "OPTIONS": {"MAX_SIZE": "1MB"},
        },
        "scratch": {"BACKEND": f"{here}.ScratchSQLiteCache", "LOCATION": "rel"},
    }
    with override_settings(
        CACHES=caches,
        SESSION_ENGINE="django.contrib.sessions.backends.cache",
        SESSION_CACHE_ALIAS="default",
    ):
        assert [m.id for m in check_sessions_not_in_an_l1()] == ["smartcache.W046"]
        assert [m.id for m in check_sqlite_file_budgets_agree()] == ["smartcache.W045"]
        assert check_sqlite_location_is_absolute() == []  # "scratch" is no SQLite file


def test_sessions_in_a_smartcache_are_warned_about_at_deploy(tmp_path: Any) -> None:
    """Sessions on a SmartCache alias live in one process: with several workers a
    request reaching another worker is logged out (``cache``), or a copy outlives a
    logout made through another worker (``cached_db``). Only ``check --deploy``
    says so: runserver is one process."""
    from django.core import checks

    from django_smartcache.checks import check_sessions_not_in_one_process

    caches = {
        "default": {"BACKEND": "django_smartcache.backends.SmartCache"},
        "shared": {
            "BACKEND": "django_smartcache.backends.SQLiteCache",
            "LOCATION": str(tmp_path / "s.sqlite3"),
        },
        "locmem": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    }
    engines = "django.contrib.sessions.backends."
    cases = [
        ("cache", "default", "logged out"),
        ("cached_db", "default", "outlives a logout"),
        ("cache", "shared", None),
        ("db", "default", None),
        ("cache", "locmem", None),  # not ours to judge
    ]
    for engine, alias, says in cases:
        with override_settings(
            CACHES=caches, SESSION_ENGINE=engines + engine, SESSION_CACHE_ALIAS=alias
        ):
            found = check_sessions_not_in_one_process()
            deploy_ids = [
                m.id for m in checks.run_checks(include_deployment_checks=True)
            ]
            plain_ids = [m.id for m in checks.run_checks()]
        assert [m.id for m in found] == (["smartcache.W047"] if says else [])
        assert ("smartcache.W047" in deploy_ids) == bool(says)
        assert "smartcache.W047" not in plain_ids
        if says:
            assert says in found[0].msg
            assert f"SESSION_CACHE_ALIAS {alias!r} is a SmartCache" in found[0].msg


def test_a_sqlite_file_in_a_world_writable_directory_is_named_on_deploy(
    tmp_path,
) -> None:
    """Any local user could create the file first in /tmp, and its pickles ran as the
    site (an outside probe); check --deploy said nothing (W041 covers MEDIA_ROOT)."""
    from django_smartcache.checks import check_sqlite_location_not_world_writable

    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    private = tmp_path / "private"
    private.mkdir(mode=0o750)
    private.chmod(0o750)
    caches = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "tmp": {
            "BACKEND": "django_smartcache.backends.SQLiteCache",
            "LOCATION": str(shared / "not-made-yet" / "cache.sqlite3"),
        },
        "fine": {
            "BACKEND": "django_smartcache.backends.SQLiteCache",
            "LOCATION": str(private / "cache.sqlite3"),
        },
    }
    with override_settings(CACHES=caches):
        found = check_sqlite_location_not_world_writable()
    assert [(m.id, "'tmp'" in m.msg) for m in found] == [("smartcache.W050", True)]
    # A LOCATION the backend refuses (a NUL byte) is the backend's to name: the check
    # crashed check --deploy (a review).
    caches["tmp"]["LOCATION"] = str(shared / "a\x00b" / "cache.sqlite3")
    with override_settings(CACHES=caches):
        assert check_sqlite_location_not_world_writable() == []
