"""What ``migrate``'s invalidation must not do: create a cache file, or fail a migrate
whose migrations are applied because one cache cannot be reached."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.management import call_command

pytestmark = pytest.mark.django_db(transaction=True)


def test_migrate_creates_no_cache_file_and_survives_a_failing_cache(
    tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The invalidation after ``migrate`` must not create a SQLite cache file that
    does not exist yet (nothing is cached in it; made by a migrate run as root, the
    workers could not write it), nor fail a migrate whose migrations are applied
    because one cache cannot be reached: that one is named, to be cleared."""
    from django.test import override_settings

    missing = tmp_path / "never-created.sqlite3"
    caches_config = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "fresh": {
            "BACKEND": "django_smartcache.backends.SQLiteCache",
            "LOCATION": str(missing),
        },
        "multi": {
            "BACKEND": "django_smartcache.backends.MultiLevelCache",
            "LOCATION": str(tmp_path / "never-ml.sqlite3"),
        },
        "broken": {
            "BACKEND": "django_smartcache.backends.SQLiteCache",
            "LOCATION": str(tmp_path / "broken.sqlite3"),
        },
    }
    with override_settings(CACHES=caches_config):
        from django.core.cache import caches

        broken = caches["broken"]
        broken.set("k", 1)  # its file exists...
        broken.invalidate_tags = _raise  # type: ignore[method-assign]  # ...and fails
        with caplog.at_level("ERROR", logger="django_smartcache"):
            call_command("migrate", "migrated", verbosity=0)  # does not raise
        for alias in ("broken",):
            caches[alias].close()
            del caches[alias]
    # A MultiLevelCache opens its lowest level when built: it is not even built.
    assert not missing.exists() and not (tmp_path / "never-ml.sqlite3").exists()
    assert "could not be invalidated" in caplog.text and "'broken'" in caplog.text


def _raise(*tags: str, **kwargs: Any) -> None:
    # Every invalidation: the SQL watcher's of the migration's ALTER/DROP TABLE (the
    # rebuild of 0002) as well as post_migrate's (reviewer: the first one was not).
    raise OSError("the cache's disk is gone")


@pytest.fixture(autouse=True)
def _at_0001() -> Any:
    call_command("migrate", "migrated", "0001", verbosity=0)
    try:
        yield
    finally:
        call_command("migrate", "migrated", verbosity=0)


def test_a_relative_location_is_judged_by_the_built_caches_own_path(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cache built before a chdir holds its absolute path, which the settings'
    relative LOCATION no longer names: judged from the working directory, its real,
    shared file was skipped and served stale values (reviewer). Each alias is judged
    by its built cache's own path now (building makes no file)."""
    from django.test import override_settings

    from django_smartcache._tag_caches import tagging_caches

    monkeypatch.chdir(tmp_path)
    config = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "rel": {
            "BACKEND": "django_smartcache.backends.SQLiteCache",
            "LOCATION": "c.db",
        },
        "gone": {
            "BACKEND": "django_smartcache.backends.SQLiteCache",
            "LOCATION": str(tmp_path / "gone.db"),
        },
    }
    with override_settings(CACHES=config):
        from django.core.cache import caches

        names = [alias for alias, _ in tagging_caches(skip_unmade_files=True)]
        assert names == []  # neither file made: nothing cached there
        assert not (tmp_path / "c.db").exists() and not (tmp_path / "gone.db").exists()
        caches["gone"].get("k")  # used here: its file made, no longer skipped
        caches["rel"].get("k")
        monkeypatch.chdir(tmp_path.parent)  # "c.db" now names another path
        names = [alias for alias, _ in tagging_caches(skip_unmade_files=True)]
        assert names == ["rel", "gone"]
        for alias in names:
            caches[alias].close()
            del caches[alias]


def test_another_threads_l1_copy_is_invalidated_though_the_file_is_unmade(
    tmp_path: Any,
) -> None:
    """A review: an alias not built in the invalidating thread was judged from the
    settings alone (file not made: skipped), while the L1 shared by the process held
    what another thread wrote when the file could not be made: served stale until
    L1_MAX_TTL."""
    import threading

    from django.core.cache import caches
    from django.test import override_settings

    from django_smartcache import invalidate_tags

    config = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "ml": {
            "BACKEND": "django_smartcache.backends.MultiLevelCache",
            "LOCATION": str(tmp_path / "a-file" / "ml.sqlite3"),
            "OPTIONS": {"L1_MAX_TTL": 300},
        },
    }
    (tmp_path / "a-file").write_text("")  # the file cannot be made: L2 fails
    with override_settings(CACHES=config):
        writer = caches["ml"]
        try:
            writer.set("k", "old", 300, tags=["t"])
            assert writer.get("k") == "old"  # in L1 only, the file not made
            thread = threading.Thread(target=invalidate_tags, args=("t",))
            thread.start()
            thread.join()
            assert writer.get("k") is None
        finally:
            _drop(caches, "ml")


def test_building_a_cache_or_invalidating_an_unmade_one_makes_no_file(
    tmp_path: Any,
) -> None:
    """An outside probe, as root: Django's system checks build every alias (migrate
    runs them), and a MultiLevelCache polled its SQLite change log when built, which
    made the file; migrate on a fresh database inserts content types, and the SQL
    watcher's invalidation built the caches. The file, its directory and ``.lock``
    were root's: every worker call raised UnusableLocation (SQLiteCache) or the L2
    stayed down for good (MultiLevelCache)."""
    from django.core.cache import caches
    from django.test import override_settings

    from django_smartcache._tag_caches import (
        invalidate_after_schema_change,
        invalidate_tags,
    )

    location = tmp_path / "dir" / "ml.sqlite3"
    config = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "ml": {
            "BACKEND": "django_smartcache.backends.MultiLevelCache",
            "LOCATION": str(location),
        },
    }
    with override_settings(CACHES=config):
        invalidate_tags("model:auth.user", reason="a write before any cache call")
        assert not location.parent.exists()
        cache = caches["ml"]  # what the system checks do (migrate runs them first)
        assert not location.parent.exists()
        # Built in this thread now: still nothing to invalidate (the probe's migrate
        # as root with checks made the file through the auth table rebuilds).
        invalidate_after_schema_change("model:auth.user", reason="rebuild", db=None)
        invalidate_tags("model:auth.user", reason="a write")
        assert not location.parent.exists()
        try:
            cache.set("k", 1)  # the first call makes it
            assert location.exists()
        finally:
            _drop(caches, "ml")


def _drop(caches: Any, alias: str) -> None:
    """Stop a MultiLevelCache's listener and repair timers, close it, forget it."""
    cache = caches[alias]
    cache._co.stop()
    for health in cache._health:
        health.stop()
    cache.close()
    del caches[alias]
