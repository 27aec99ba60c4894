"""A change of CACHES (``override_settings``) closes the SQLite connections of the
instances it retires: Django keeps them alive (in the asgiref Local of its old
handler), and each left three open files (the file, -wal, -shm) until "Too many open
files" (an outside probe: 126 descriptors after 40 overrides)."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest
from django.core.cache import cache, caches
from django.test import override_settings

from django_smartcache.backends import SQLiteCache, _sqlite_connection

pytestmark = pytest.mark.skipif(
    not os.path.isdir("/proc/self/fd"), reason="counts descriptors in /proc/self/fd"
)

SQLITE = "django_smartcache.backends.SQLiteCache"
MULTI = "django_smartcache.backends.MultiLevelCache"


def open_files(under: Path) -> list[str]:
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # closed meanwhile (the listing's own descriptor)
            continue
        if target.startswith(str(under)):
            found.append(target)
    return found


@pytest.mark.parametrize("backend", [SQLITE, MULTI])
def test_overrides_with_new_locations_leave_no_file_open(
    tmp_path: Path, backend: str
) -> None:
    for i in range(10):
        config = {"BACKEND": backend, "LOCATION": str(tmp_path / f"c{i}.sqlite3")}
        with override_settings(CACHES={"default": config}):
            cache.set("k", i)
            assert cache.get("k") == i
    assert open_files(tmp_path) == []


def test_overrides_of_one_location_leave_no_file_open(tmp_path: Path) -> None:
    config = {"BACKEND": SQLITE, "LOCATION": str(tmp_path / "c.sqlite3")}
    for i in range(10):
        with override_settings(CACHES={"default": config}):
            cache.set("k", i)
            assert cache.get("k") == i
    assert open_files(tmp_path) == []


def test_pending_access_refreshes_are_written_before_the_connections_close(
    tmp_path: Path,
) -> None:
    config = {
        "BACKEND": SQLITE,
        "LOCATION": str(tmp_path / "c.sqlite3"),
        "OPTIONS": {"ACCESS_INTERVAL": 0},
    }
    with override_settings(CACHES={"default": config}):
        instance = caches["default"]
        instance.set("k", 1)
        assert instance.get("k") == 1
        assert instance._state.pending  # type: ignore[attr-defined]
        # Our receiver before Django's (their order is not guaranteed): the
        # refreshes are written first, so Django's close() has nothing left to
        # write, for which it reopened a connection that stayed open.
        _sqlite_connection.close_all_connections()
        assert not instance._state.pending  # type: ignore[attr-defined]
        instance.close()
        assert open_files(tmp_path) == []


def test_an_instance_kept_by_its_user_reopens_after_a_change(tmp_path: Path) -> None:
    kept = SQLiteCache(str(tmp_path / "kept.sqlite3"), {})
    kept.set("k", "v")
    seen: dict[str, Any] = {}

    def other_thread() -> None:  # a second thread's connection, idle at the change
        seen["before"] = kept.get("k")
        opened.set()
        changed.wait(5)
        seen["after"] = kept.get("k")

    opened, changed = threading.Event(), threading.Event()
    thread = threading.Thread(target=other_thread)
    thread.start()
    opened.wait(5)
    assert len(open_files(tmp_path)) >= 3
    with override_settings(
        CACHES={"default": {"BACKEND": SQLITE, "LOCATION": str(tmp_path / "o.sqlite3")}}
    ):
        pass
    assert open_files(tmp_path) == []  # both threads' connections closed
    changed.set()
    thread.join(5)
    assert seen == {"before": "v", "after": "v"}
    assert kept.get("k") == "v"
    kept.set("k", "w")
    assert kept.get("k") == "w"
