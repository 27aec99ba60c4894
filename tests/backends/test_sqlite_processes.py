"""SQLiteCache shared by real processes: atomic incr/add, SIGKILL mid-write, fork."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from django_smartcache.backends import SQLiteCache

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]

#: Run as ``python -c WORKER MODE LOCATION GO_FILE``; prints one line per acknowledged write.
WORKER = r"""
import os, sys, time
from django_smartcache.backends import SQLiteCache

mode, location, go = sys.argv[1:4]
cache = SQLiteCache(location, {"OPTIONS": {"BUSY_TIMEOUT": 30}})
cache.get("warm-up")  # open the file before the start line
while not os.path.exists(go):
    time.sleep(0.001)
if mode == "incr":
    for _ in range(250):
        cache.incr("n")
        cache.incr("f")  # a float: the read-modify-write path under BEGIN IMMEDIATE
elif mode == "add":
    for j in range(50):
        if cache.add(f"race{j}", os.getpid()):
            print(j, flush=True)
elif mode == "stream":
    i = 0
    while True:
        if i % 10 == 0:
            cache.set_many({f"b{i}-{m}": i for m in range(10)})
        cache.set(f"k{i}", i)
        print(i, flush=True)  # printed only once set() has returned: committed
        i += 1
"""


def spawn(mode: str, location: str, go: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, mode, location, str(go)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )


def run_all(processes: list[subprocess.Popen[str]], go: Path) -> list[str]:
    time.sleep(0.2)
    go.touch()
    outputs = []
    for process in processes:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        outputs.append(out)
    return outputs


def test_four_processes_lose_no_increment(tmp_path):
    location = str(tmp_path / "cache.sqlite3")
    cache = SQLiteCache(location, {})
    cache.set("n", 0)
    cache.set("f", 0.0)
    go = tmp_path / "go"
    run_all([spawn("incr", location, go) for _ in range(4)], go)
    assert cache.get("n") == 1000
    assert cache.get("f") == 1000.0


def test_add_race_has_exactly_one_winner(tmp_path):
    location = str(tmp_path / "cache.sqlite3")
    go = tmp_path / "go"
    processes = [spawn("add", location, go) for _ in range(4)]
    outputs = run_all(processes, go)
    cache = SQLiteCache(location, {})
    for j in range(50):
        winners = [
            p.pid
            for p, out in zip(processes, outputs, strict=True)
            if str(j) in out.split()
        ]
        assert len(winners) == 1, (j, winners)
        assert cache.get(f"race{j}") == winners[0]


def test_sigkill_mid_stream_keeps_every_committed_write(tmp_path):
    location = str(tmp_path / "cache.sqlite3")
    go = tmp_path / "go"
    go.touch()
    process = spawn("stream", location, go)
    acked = []
    assert process.stdout is not None
    while len(acked) < 400:
        line = process.stdout.readline()
        assert line, process.stderr.read() if process.stderr else "worker died"
        acked.append(int(line))
    os.kill(process.pid, signal.SIGKILL)
    rest, _ = process.communicate(timeout=30)
    acked += [int(line) for line in rest.split()]
    assert process.returncode == -signal.SIGKILL

    conn = sqlite3.connect(location)
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    conn.close()
    cache = SQLiteCache(location, {})
    found = cache.get_many([f"k{i}" for i in acked])
    assert found == {f"k{i}": i for i in acked}
    # Each set_many is one transaction: a batch is whole or absent, never torn.
    for i in range(0, acked[-1] + 20, 10):
        batch = cache.get_many([f"b{i}-{m}" for m in range(10)])
        assert len(batch) in (0, 10), (i, batch)
        if i <= acked[-1]:
            assert len(batch) == 10
    # The totals the triggers keep match the rows that survived.
    stats = cache.stats()
    conn = sqlite3.connect(location)
    assert (stats["bytes_used"], stats["entries"]) == conn.execute(
        "SELECT sum(size), count(*) FROM smartcache_entry"
    ).fetchone()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_forked_child_opens_its_own_connection(tmp_path):
    location = str(tmp_path / "cache.sqlite3")
    cache = SQLiteCache(location, {})
    cache.set("before-fork", 1)
    parent_conn = cache._connection()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit code
        code = 1
        try:
            ok = (
                cache.get("before-fork") == 1 and cache._connection() is not parent_conn
            )
            cache.set("from-child", os.getpid())
            code = 0 if ok else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert cache.get("from-child") == pid
    assert cache._connection() is parent_conn


#: Run as ``python -c INVALIDATOR LOCATION TAG``: invalidates TAG from its own process.
INVALIDATOR = r"""
import sys
import django
django.setup()
from django_smartcache.backends import SQLiteCache

SQLiteCache(sys.argv[1], {}).invalidate_tags(sys.argv[2])
"""


def test_a_tag_invalidated_in_another_process_is_seen_at_once(tmp_path):
    location = str(tmp_path / "cache.sqlite3")
    cache = SQLiteCache(location, {})
    cache.set("tagged", "old", tags=["article#1"])
    cache.set("other", "kept", tags=["article#2"])
    assert cache.get("tagged") == "old"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DJANGO_SETTINGS_MODULE": "tests.settings",
    }
    subprocess.run(
        [sys.executable, "-c", INVALIDATOR, location, "article#1"],
        check=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    # No message, no polling: the version key lives in the file this process reads.
    assert cache.get("tagged") is None
    assert cache.get("other") == "kept"
    assert cache.get_many(["tagged", "other"]) == {"other": "kept"}


_WRITER = """
import sys, time
import django
from django.conf import settings
settings.configure()
django.setup()
from django_smartcache.backends import SQLiteCache
cache = SQLiteCache(sys.argv[1], {"OPTIONS": {"BUSY_TIMEOUT": 0.5}})
print("ready", flush=True)
sys.stdin.readline()
time.sleep(0.3)  # well inside the other process's regex
started = time.monotonic()
cache.set("x", 1)  # raised "database is locked" past BUSY_TIMEOUT before
print(f"{time.monotonic() - started:.3f}", flush=True)
"""


def test_a_slow_regex_delete_does_not_hold_the_write_lock(tmp_path):
    """A regex delete_pattern() ran Python's regex inside the write transaction: a
    catastrophic one (``^(a+)+$``) held the file's write lock for its whole run, and
    another process's set() failed with "database is locked" past BUSY_TIMEOUT
    (pattern probe: 10.2 s for five such keys, the write lost). The keys are matched
    first, outside the lock, then deleted."""
    location = str(tmp_path / "c.sqlite3")
    cache = SQLiteCache(location, {})
    evil = "a" * 24 + "!"
    for i in range(4):
        cache.set(f"{evil}{i}", i)
    cache.set("aaa", 0)
    writer = subprocess.Popen(
        [sys.executable, "-c", _WRITER, location],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    try:
        assert writer.stdout is not None and writer.stdin is not None
        assert writer.stdout.readline().strip() == "ready"
        writer.stdin.write("go\n")
        writer.stdin.flush()
        started = time.monotonic()
        assert cache.delete_pattern(r"^(a+)+$", regex=True) == 1  # "aaa" only
        took = time.monotonic() - started
        waited = float(writer.stdout.readline())
        assert writer.wait(30) == 0
    finally:
        writer.kill()
    assert took > 0.6  # (the regex did run long enough to be in the writer's way)
    assert waited < 0.5
    assert cache.get("x") == 1
    cache.close()
