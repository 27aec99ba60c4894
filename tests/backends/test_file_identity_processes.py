"""The SQLite file replaced under running processes: every process ends on the new one.

Real processes drive a cache over stdin/stdout (``python -m
tests.backends.test_file_identity_processes agent``: one JSON command per line, one JSON
answer per line). The file is replaced the ways it happens in production: deleted with
its WAL and shared memory (a clean-up script), moved aside as damaged by another process
(``_sqlite_file.quarantine``, what the process that meets the damage runs), moved aside
as "schema" by a new process after its WAL was deleted, and damaged so that one process
moves it aside while another holds a change-log cursor from the old file.
"""

from __future__ import annotations

import json
import os
import pickle
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from django_smartcache.backends import _sqlite_file as sqlite_file

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]

#: How long another process may keep serving the old file's data. The detection runs
#: every FILE_CHECK_INTERVAL (and at each change-log poll, every COHERENCE_INTERVAL);
#: the rest is a margin for a loaded machine. L1_MAX_TTL is set far above it (60 s), so
#: only the detection can meet it.
BOUND = 1.0


def _setting(kind: str, location: str) -> dict[str, Any]:
    if kind == "sqlite":
        return {
            "BACKEND": "django_smartcache.backends.SQLiteCache",
            "LOCATION": location,
        }
    return {
        "BACKEND": "django_smartcache.backends.MultiLevelCache",
        "LOCATION": location,
        "OPTIONS": {"L1_MAX_TTL": 60},
    }


class Agent:
    """A cache process: ``agent(op, *args)`` runs ``cache.op(*args)`` there."""

    def __init__(self, kind: str, location: str, stderr: Path) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        env.pop("DJANGO_SETTINGS_MODULE", None)
        self.stderr = stderr
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.backends.test_file_identity_processes"]
            + ["agent", kind, location],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr.open("a"),
            text=True,
            env=env,
            cwd=ROOT,
        )

    def __call__(self, op: str, *args: Any) -> Any:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps([op, *args]) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        assert line, f"agent died: {self.stderr.read_text()[-2000:]}"
        answer = json.loads(line)
        assert "error" not in answer, answer["error"]
        return answer["result"]

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=10)


def agent_main(kind: str, location: str) -> None:
    import logging

    from django.conf import settings

    settings.configure(CACHES={"default": _setting(kind, location)})
    import django

    django.setup()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    from django.core.cache import cache

    for line in sys.stdin:
        op, *args = json.loads(line)
        try:
            if op == "cursor":
                result: Any = cache._co.cursor  # type: ignore[attr-defined]
                result = None if result is None else int(result)
            else:
                result = getattr(cache, op)(*args)
            answer = {"result": result}
        except Exception as exc:  # noqa: BLE001 - reported to the test
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


@pytest.fixture
def agents(tmp_path: Path):
    started: list[Agent] = []

    def start(kind: str, location: str) -> Agent:
        agent = Agent(kind, location, tmp_path / "agents.log")
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.close()


def _until(read: Any, expected: Any, bound: float = BOUND) -> float | None:
    """Seconds until ``read()`` answers ``expected`` (None: not within ``bound``)."""
    start = time.monotonic()
    while True:
        if read() == expected:
            return time.monotonic() - start
        if time.monotonic() - start > bound:
            return None
        time.sleep(0.02)


def _remove(location: str) -> None:
    for suffix in ("", "-wal", "-shm"):
        try:
            os.remove(location + suffix)
        except FileNotFoundError:
            pass


@pytest.mark.parametrize("kind", ["sqlite", "multilevel"])
def test_a_deleted_file_is_left_for_the_new_one(tmp_path, agents, kind):
    """rm of the file, its WAL and its shm: the process that had it open used to keep
    the unlinked inode forever, each side blind to the other's writes."""
    location = str(tmp_path / "cache.sqlite3")
    a = agents(kind, location)
    a("set", "k", "old", None)
    assert a("get", "k") == "old"
    _remove(location)
    c = agents(kind, location)  # creates a fresh file at LOCATION
    c("set", "k", "new", None)
    c("set", "from-c", 1, None)
    assert _until(lambda: a("get", "from-c"), 1) is not None
    assert a("get", "k") == "new"
    a("set", "from-a", 2, None)
    assert _until(lambda: c("get", "from-a"), 2) is not None
    # Both on the file now at LOCATION, and it holds both writes.
    conn = sqlite3.connect(location)
    keys = {k for (k,) in conn.execute("SELECT key FROM smartcache_entry")}
    conn.close()
    assert {":1:from-a", ":1:from-c"} <= keys


@pytest.mark.parametrize("kind", ["sqlite", "multilevel"])
def test_a_file_moved_aside_by_another_process_is_left_for_the_new_one(
    tmp_path, agents, kind
):
    """Another process met damage and moved the file aside: a process that never read
    the damaged page used to keep reading and writing the moved-aside file."""
    location = str(tmp_path / "cache.sqlite3")
    b = agents(kind, location)
    b("set", "bk", "before", None)
    assert b("get", "bk") == "before"
    aside = sqlite_file.quarantine(location, "damaged (test)")
    c = agents(kind, location)
    c("set", "ck", 1, None)
    assert _until(lambda: b("get", "ck"), 1) is not None
    b("set", "bk", "after", None)
    assert _until(lambda: c("get", "bk"), "after") is not None
    conn = sqlite3.connect(aside)
    (stored,) = conn.execute(
        "SELECT value FROM smartcache_entry WHERE key = ':1:bk'"
    ).fetchone()
    conn.close()
    assert pickle.loads(stored) == "before"  # B's later write went to the new file


def test_a_deleted_wal_ends_with_every_process_on_one_file(tmp_path, agents):
    """The WAL deleted under a running process: a new process finds the meta row
    missing and moves the file aside as "schema"; the running one follows it."""
    location = str(tmp_path / "cache.sqlite3")
    a = agents("multilevel", location)
    a("set", "k", "committed", None)
    os.remove(location + "-wal")
    c = agents("multilevel", location)
    assert c("get", "k") is None  # the file it found was moved aside: a fresh one
    assert any(".schema-" in name for name in os.listdir(tmp_path))
    c("set", "from-c", 1, None)
    a("set", "from-a", 2, None)
    assert _until(lambda: a("get", "from-c"), 1) is not None
    assert _until(lambda: c("get", "from-a"), 2) is not None


def test_a_cursor_of_the_replaced_file_does_not_hide_invalidations(tmp_path, agents):
    """B's change-log cursor counts in the old file's log (500 changes); the new file
    starts again at 1. B used to miss every invalidation until the new log passed 500,
    serving its L1 copy for L1_MAX_TTL (60 s here)."""
    location = str(tmp_path / "cache.sqlite3")
    a = agents("multilevel", location)
    b = agents("multilevel", location)
    a("set_many", {f"f{i}": i for i in range(500)}, None)
    b("get", "f1")
    assert _until(lambda: b("cursor") >= 500, True) is not None
    conn = sqlite3.connect(location)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    with open(location, "r+b") as f:  # keep the header, wreck every page after it
        f.seek(4096)
        f.write(os.urandom(os.path.getsize(location) - 4096))
    a(
        "set", "k", 1, None
    )  # meets the damage: moves the file aside, retries on a fresh one
    a("set", "k", 1, None)
    assert _until(lambda: b("get", "k"), 1) is not None  # now in B's L1
    assert b("get", "k") == 1
    a("set", "k", 2, None)
    delay = _until(lambda: b("get", "k"), 2)
    assert delay is not None, "B kept serving k=1 from L1 after A set k=2"


if __name__ == "__main__":
    if sys.argv[1] == "agent":
        agent_main(sys.argv[2], sys.argv[3])
