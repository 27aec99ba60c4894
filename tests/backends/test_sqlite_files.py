"""SQLiteCache and the files at LOCATION that are not (or not only) its own: someone
else's database in the middle of a commit, a foreign WAL, a file it cannot write.

Real files and real processes; every damaged state is built deliberately (a writer
killed with SIGKILL inside an open transaction, a header patched to what a torn commit
leaves), never by racing a kill against a commit.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys

import pytest
from django.core.exceptions import ImproperlyConfigured

from django_smartcache.backends import SQLiteCache, _sqlite_connection

PAGE = 4096

#: Opens a rollback-journal transaction big enough to spill pages into the database
#: file (a tiny page cache), says so, and waits to be killed.
WRITER = r"""
import os, sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("PRAGMA cache_size = 10")
conn.execute("BEGIN")
conn.executemany("INSERT INTO orders (data) VALUES (?)", [(os.urandom(800),) for _ in range(2000)])
print("inside", flush=True)
sys.stdin.read()
"""


def _fresh_process(path: str) -> None:
    """Forget that this process checked ``path`` (as a newly started worker)."""
    _sqlite_connection._prepared.discard(path)
    _sqlite_connection._ever_prepared.discard(path)


def _site_database(path: str) -> None:
    """The site's own database, rollback journal (Django's default), 500 orders."""
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, data BLOB)")
    conn.executemany(
        "INSERT INTO orders (data) VALUES (?)", [(os.urandom(800),) for _ in range(500)]
    )
    conn.execute("CREATE TABLE auth_user (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO auth_user (name) VALUES ('alice')")
    conn.commit()
    conn.close()


def _claim_pages(path: str, pages: int) -> None:
    """Make the header of ``path`` declare ``pages`` pages (its change counter valid)."""
    with open(path, "r+b") as f:
        f.seek(28)
        f.write(pages.to_bytes(4, "big"))


def _looks_truncated(path: str) -> bool:
    """Whether the header, valid, declares more pages than the file holds."""
    with open(path, "rb") as f:
        header = f.read(100)
    valid = header[24:28] == header[92:96]
    declared = int.from_bytes(header[28:32], "big") * int.from_bytes(
        header[16:18], "big"
    )
    return valid and declared > os.path.getsize(path)


def _hot_journal(path: str) -> None:
    """A writer killed inside a commit: pages of its transaction in the file, its
    rollback journal beside it, and page 1 declaring the size the commit was going to
    have (what a kill between writing page 1 and the last page leaves)."""
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, path],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout is not None
        assert writer.stdout.readline().strip() == "inside"
    finally:
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait()
    # Page 1 is in the journal (its original): the rollback restores it whatever
    # the file holds now.
    _claim_pages(path, os.path.getsize(path) // PAGE + 64)


def _truncated_foreign(path: str) -> None:
    """Someone else's database whose header declares more pages than the file has."""
    _claim_pages(path, os.path.getsize(path) // PAGE + 64)


@pytest.mark.parametrize("state", ["hot_journal", "truncated_foreign"])
def test_someone_elses_database_that_looks_truncated_is_never_moved(tmp_path, state):
    """LOCATION at the site's database: a writer killed mid-commit left a hot journal
    (or its header declares more than the file holds). Before, the header check called
    it truncated before asking whose it was: the database was moved aside and its
    journal deleted, so the half-written transaction stayed in it."""
    path = str(tmp_path / "db.sqlite3")
    _site_database(path)
    {"hot_journal": _hot_journal, "truncated_foreign": _truncated_foreign}[state](path)
    assert _looks_truncated(path)  # what the header says, read as bytes
    if state == "hot_journal":
        assert os.path.getsize(path + "-journal") > 0
    with open(path, "rb") as f:
        before = f.read()
    _fresh_process(path)
    with pytest.raises(
        ImproperlyConfigured, match="not (provably )?a SQLiteCache file"
    ) as caught:
        SQLiteCache(path, {"OPTIONS": {"BUSY_TIMEOUT": 1}}).get("k")
    assert path in str(caught.value)
    assert not [name for name in os.listdir(tmp_path) if ".corrupt-" in name]
    if state == "truncated_foreign":  # damaged, but not ours to judge: untouched
        assert sorted(os.listdir(tmp_path)) == ["db.sqlite3", "db.sqlite3.lock"]
        with open(path, "rb") as f:
            assert f.read() == before
        return
    # SQLite rolled the journal back, as the site's next connection would have.
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert conn.execute("SELECT count(*) FROM orders").fetchone() == (500,)
        assert conn.execute("SELECT name FROM auth_user").fetchall() == [("alice",)]
        assert not conn.execute(
            "SELECT name FROM sqlite_master WHERE name LIKE 'smartcache%'"
        ).fetchall()
    finally:
        conn.close()


def test_a_file_moved_aside_takes_its_journal_wal_and_shm_along(tmp_path):
    """Quarantine never deletes a companion file: each goes with the file it belongs to."""
    path = str(tmp_path / "cache.sqlite3")
    with open(path, "wb") as f:
        f.write(b"not a database\n" * 100)
    for suffix in ("-wal", "-shm"):
        with open(path + suffix, "wb") as f:
            f.write(suffix.encode())
    _fresh_process(path)
    cache = SQLiteCache(path, {})
    cache.set("k", "v")
    assert cache.get("k") == "v"
    cache.close()
    (aside,) = [
        name
        for name in os.listdir(tmp_path)
        if ".corrupt-" in name and not name.endswith(("-wal", "-shm", "-journal"))
    ]
    for suffix in ("-wal", "-shm"):
        with open(tmp_path / (aside + suffix), "rb") as f:
            assert f.read() == suffix.encode()


def test_a_symlinked_location_is_checked_and_moved_where_sqlite_keeps_its_wal(tmp_path):
    """SQLite keeps the WAL of a database opened through a symlink beside its target.
    The open-time check looked beside the link, found no WAL, and took a healthy file
    caught mid-checkpoint (its header already counting pages the WAL still held) for a
    truncated one: a starting worker moved the live cache aside and replaced the link
    by a plain file (helper probe: 186,620 of 573,612 checks through the link said
    "truncated" while one process wrote; 0 through the real path)."""
    from django_smartcache.backends import _sqlite_file

    real_dir, link_dir = tmp_path / "fast", tmp_path / "site"
    real_dir.mkdir()
    link_dir.mkdir()
    target, link = str(real_dir / "cache.sqlite3"), str(link_dir / "cache.sqlite3")
    os.symlink(target, link)
    cache = SQLiteCache(link, {})
    cache.set("committed", "kept")
    cache.close()
    assert os.path.exists(target + "-wal") and not os.path.exists(link + "-wal")
    # The state a checkpoint passes through: page 1 copied (the header counts one page
    # more), the page that grows the file not yet, with frames left in the WAL.
    writer = sqlite3.connect(target, isolation_level=None)
    writer.execute("PRAGMA wal_autocheckpoint = 0")
    writer.execute("INSERT INTO smartcache_entry VALUES ('x', x'00', NULL, 0, 1)")
    with open(target, "r+b") as f:
        header = bytearray(f.read(100))
        pages = int.from_bytes(header[28:32], "big") + 1
        f.seek(28)
        f.write(pages.to_bytes(4, "big"))
    assert os.path.getsize(target + "-wal") > 0
    assert _sqlite_file.diagnose(link) is None  # was "truncated: the header says ..."
    writer.close()
    _fresh_process(os.path.abspath(link))
    assert os.path.islink(link)

    # A file that is damaged is moved aside where it is; the link stays and points
    # at a fresh cache.
    with open(target, "wb") as f:
        f.write(b"not a database\n" * 100)
    _fresh_process(os.path.abspath(link))
    fresh = SQLiteCache(link, {})
    fresh.set("k", "v")
    assert fresh.get("k") == "v"
    fresh.close()
    assert os.path.islink(link) and os.readlink(link) == target
    assert [n for n in os.listdir(real_dir) if ".corrupt-" in n]
    assert not [n for n in os.listdir(link_dir) if ".corrupt-" in n]


# -- close() at the end of a request ---------------------------------------------------

#: Holds the write lock of the file named in argv until told to stop.
LOCK_HOLDER = r"""
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.read()
"""


def _hold_write_lock(path: str) -> subprocess.Popen[str]:
    holder = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, path],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "locked"
    return holder


def _release(holder: subprocess.Popen[str]) -> None:
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()


def test_close_never_raises_nor_waits_for_a_locked_file(tmp_path):
    """A read noted an access; at the request's end another process holds the write
    lock. Before, close() waited BUSY_TIMEOUT and raised "database is locked" out of
    request_finished. Now it waits at most a moment, raises nothing, and writes the
    refresh at a later close() once the lock is free."""
    import time

    path = str(tmp_path / "cache.sqlite3")
    cache = SQLiteCache(path, {"OPTIONS": {"BUSY_TIMEOUT": 3, "ACCESS_INTERVAL": 1}})
    cache.set("page", "html", timeout=None)
    clock = time.time() + 60
    cache._clock = lambda: clock  # the entry's access time is a minute old
    holder = _hold_write_lock(path)
    try:
        assert cache.get("page") == "html"  # reads need no lock in WAL mode
        assert cache._state.pending
        started = time.monotonic()
        cache.close()
        assert time.monotonic() - started < 1.5  # not BUSY_TIMEOUT (3 s)
        assert cache._state.pending  # deferred, not lost
    finally:
        _release(holder)
    cache.close()
    assert not cache._state.pending
    conn = sqlite3.connect(path)
    (accessed,) = conn.execute("SELECT accessed FROM smartcache_entry").fetchone()
    conn.close()
    assert accessed == clock


def test_multilevel_close_closes_every_level_when_one_fails(tmp_path, caplog):
    from django_smartcache.backends import MultiLevelCache

    cache = MultiLevelCache(
        str(tmp_path / "levels.sqlite3"), {"OPTIONS": {"COHERENCE": "none"}}
    )
    closed = []
    first, *rest = cache.levels

    def broken(**kwargs):
        raise sqlite3.OperationalError("database is locked")

    first.close = broken  # type: ignore[method-assign]
    for level in rest:
        level.close = lambda level=level, **kw: closed.append(level)  # type: ignore[method-assign]
    try:
        cache.close()
    finally:
        for health in cache._health:
            health.stop()
    assert closed == rest
    assert "failed to close" in caplog.text


# -- another database's WAL beside the cache file --------------------------------------


def test_another_databases_wal_beside_the_cache_file_is_quarantined(tmp_path, caplog):
    """Our header passes, SQLite replays the foreign WAL: before, every call of every
    worker raised "not a SQLiteCache file (tables: t...)" forever, nothing logged or
    moved. A file whose header is ours is a damaged cache file: moved aside with its
    WAL, logged, and a fresh cache serves."""
    import logging

    path = str(tmp_path / "cache.sqlite3")
    writer = SQLiteCache(path, {})
    writer.set_many({f"k{i}": "v" * 200 for i in range(300)})
    writer._state.conn.close()
    writer._state.conn = None
    other = str(tmp_path / "other.sqlite3")
    conn = sqlite3.connect(other, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    conn.execute("CREATE TABLE t (x BLOB)")
    conn.executemany(
        "INSERT INTO t VALUES (?)", [(os.urandom(500),) for _ in range(200)]
    )
    with open(other + "-wal", "rb") as f:
        foreign_wal = f.read()
    conn.close()
    checkpoint = sqlite3.connect(path)  # our own WAL goes into the file first
    checkpoint.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    checkpoint.close()
    with open(path + "-wal", "wb") as f:
        f.write(foreign_wal)
    _fresh_process(path)
    with caplog.at_level(logging.ERROR, "django_smartcache.sqlite"):
        cache = SQLiteCache(path, {})
        cache.set("a", 1)
        assert cache.get("a") == 1
        assert cache.incr("a") == 2
    cache.close()
    aside = [name for name in os.listdir(tmp_path) if ".corrupt-" in name]
    (moved,) = [name for name in aside if not name.endswith(("-wal", "-shm"))]
    assert path in caplog.text and str(tmp_path / moved) in caplog.text
    assert "another database" in caplog.text


# -- eviction order when the cache turns over faster than ACCESS_INTERVAL ----------------


def test_a_hot_entry_survives_a_turnover_faster_than_the_access_interval(tmp_path):
    """Before, a read refreshed ``accessed`` only when it was older than ACCESS_INTERVAL
    (30 s): a cache replacing its contents every 3 s never refreshed anything, and
    evicted in insertion order (FIFO) however often an entry was read."""
    from django_smartcache.backends.sqlite import ROW_OVERHEAD

    now = [1_000_000.0]
    size = len(":1:k0000") + len(b"x" * 100) + 40 + ROW_OVERHEAD
    cache = SQLiteCache(
        str(tmp_path / "cache.sqlite3"),
        {"OPTIONS": {"MAX_SIZE": 300 * size, "ACCESS_INTERVAL": 30}},
    )
    cache._clock = lambda: now[0]
    cache.set("hot", b"x" * 100, timeout=None)
    for i in range(2000):  # 0.01 s per write: 300 entries turn over in about 3 s
        now[0] += 0.01
        cache.set(f"k{i:04d}", b"x" * 100, timeout=None)
        if i % 10 == 0:
            assert cache.get("hot") is not None, f"evicted after {i} writes"
    assert cache.stats()["entries"] < 400  # the budget did turn over
    cache.close()


def test_a_wal_grown_past_its_limit_is_restarted_by_the_next_write(tmp_path):
    """Two processes writing without pause: every automatic (PASSIVE) checkpoint
    completed, yet the WAL never restarted (the other writer's write had always begun
    by then) and grew to 100-245 MB. Built here deterministically: a reader holds an
    old snapshot while 40 MB are written, so the WAL cannot restart; the reader goes.
    Before, the next write left the WAL over 32 MB (a restart waits for a write that
    begins with everything checkpointed). Now that write restarts it, and while the
    reader was there the writes were not held up by the attempts."""
    import time

    path = str(tmp_path / "cache.sqlite3")
    cache = SQLiteCache(path, {"OPTIONS": {"BUSY_TIMEOUT": 5}})
    cache.set("seed", b"x", timeout=None)
    reader = sqlite3.connect(path, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM smartcache_entry").fetchone()
    value = os.urandom(1_000_000)
    slowest = 0.0
    for i in range(40):
        started = time.monotonic()
        cache.set(f"big{i}", value, timeout=None)
        slowest = max(slowest, time.monotonic() - started)
    assert os.path.getsize(path + "-wal") > 40_000_000
    assert slowest < 1.0  # the checkpoint attempts gave up quickly, not BUSY_TIMEOUT
    reader.execute("COMMIT")
    reader.close()
    cache._wal_check_at = 0.0  # (the writes above may have looked a moment ago)
    cache.set("small", b"y", timeout=None)
    assert os.path.getsize(path + "-wal") < 1_000_000
    assert cache.get("big39") == value


#: In a process that may not write the cache file (its mode obeyed: no
#: CAP_DAC_OVERRIDE), what a first call raises, then what a thread opening the file
#: after it was made read-only (``late``) raises and logs.
READ_ONLY_CHILD = r"""
import json, logging, os, sys, threading
import django
from django.conf import settings
settings.configure(CACHES={}, INSTALLED_APPS=[])
django.setup()
from django_smartcache.backends import SQLiteCache
path, late = sys.argv[1], sys.argv[2]
out = {"can_write": os.access(path, os.W_OK)}
warnings = []
class Count(logging.Handler):
    def emit(self, record):
        if record.levelno >= logging.WARNING:
            warnings.append(record.getMessage())
logging.getLogger("django_smartcache").addHandler(Count())
def attempt(name, call):
    try:
        out[name] = ["ok", repr(call())]
    except Exception as exc:
        out[name] = [type(exc).__name__, str(exc)]
cache = SQLiteCache(path, {"OPTIONS": {"ACCESS_INTERVAL": 0}})
attempt("first_get", lambda: cache.get("k0"))
attempt("set", lambda: cache.set("new", 1))
attempt("incr", lambda: cache.incr("k0"))
if late:
    cache = SQLiteCache(late, {"OPTIONS": {"ACCESS_INTERVAL": 0}})
    cache.set_many({f"k{i}": i for i in range(300)}, timeout=None)
    for suffix in ("", "-wal", "-shm"):
        os.chmod(late + suffix, 0o444)
    def later():
        attempt("late_set", lambda: cache.set("new", 1))
        attempt("late_incr", lambda: cache.incr("k1"))
        for _ in range(2):
            for i in range(300):
                cache.get(f"k{i}")
        attempt("late_get", lambda: cache.get("k299"))
    thread = threading.Thread(target=later)
    thread.start()
    thread.join()
out["warnings"] = warnings
print(json.dumps(out))
"""


READ_ONLY_SETUP = r"""
import os, sys
import django
from django.conf import settings
settings.configure(CACHES={}, INSTALLED_APPS=[])
django.setup()
from django_smartcache.backends import SQLiteCache
cache = SQLiteCache(sys.argv[1], {})  # kept: its connection is never closed
cache.set_many({f"k{i}": i for i in range(300)}, timeout=None)
os._exit(0)
"""


def _without_dac_override(args: list[str]) -> list[str]:
    """``args`` run so that file modes bind the process even as root."""
    import shutil

    if os.geteuid() != 0:
        return args
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root and util-linux's setpriv is missing")
    caps = "-dac_override,-dac_read_search"
    return [setpriv, f"--inh-caps={caps}", f"--bounding-set={caps}", *args]


def test_a_cache_file_this_process_cannot_write(tmp_path):
    """The cache file and its -wal/-shm exist, read-only to the worker (created by
    manage.py as root, workers as www-data). Before, reads worked and set/incr raised
    a bare 'attempt to write a readonly database' naming neither the file nor the
    cause. Now the first call raises ImproperlyConfigured naming LOCATION and the OS
    error. A file made read-only after it was opened: a new thread's write raises an
    OperationalError naming LOCATION and the OS error, reads still work, and the
    access-time refreshes that cannot be written are dropped with one WARNING, not
    retried and logged on every read."""
    import json

    path = str(tmp_path / "ro" / "cache.sqlite3")
    late = str(tmp_path / "late" / "cache.sqlite3")
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    # Written by another process that exits without closing: -wal and -shm stay.
    subprocess.run(
        [sys.executable, "-c", READ_ONLY_SETUP, path],
        check=True,
        timeout=60,
        env=env,
    )
    for suffix in ("", "-wal", "-shm"):
        assert os.path.exists(path + suffix)
        os.chmod(path + suffix, 0o444)
    run = subprocess.run(
        _without_dac_override([sys.executable, "-c", READ_ONLY_CHILD, path, late]),
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["can_write"] is False
    for call in ("first_get", "set", "incr"):
        kind, message = out[call]
        assert kind == "UnusableLocation", (call, out[call])  # ImproperlyConfigured
        assert path in message and "Permission denied" in message, message
    for call in ("late_set", "late_incr"):
        kind, message = out[call]
        assert kind == "OperationalError", (call, out[call])
        assert late in message and "Permission denied" in message, message
    assert out["late_get"] == ["ok", "299"]
    assert 1 <= len(out["warnings"]) <= 3, out["warnings"]


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root (CI is root)"
)
def test_files_made_as_root_go_to_the_owner_of_their_directory(tmp_path):
    """An outside probe: a command run as root (smartcache_warm in a deploy, shell)
    made the cache file, its directory and .lock root's; every worker call then
    raised UnusableLocation (a MultiLevelCache's L2 stayed down for good). What the
    call creates now goes to the owner of the directory it is created in."""
    import pathlib
    import shutil
    import tempfile

    worker = 65534  # nobody
    top = pathlib.Path(tempfile.mkdtemp(dir="/tmp"))  # (pytest's tmp_path is 0700)
    os.chmod(top, 0o755)
    try:
        _files_go_to_their_owner(top, worker)
    finally:
        shutil.rmtree(top)


def _files_go_to_their_owner(tmp_path, worker):
    site = tmp_path / "var"
    site.mkdir()
    os.chown(site, worker, worker)
    path = site / "cache" / "c.sqlite3"
    cache = SQLiteCache(str(path), {})
    cache.set("root", "made")
    for made in (path.parent, path, path.parent / "c.sqlite3.lock"):
        assert made.stat().st_uid == worker, made
    cache.close()
    pid = os.fork()  # a worker: everything imported already, then not root
    if pid == 0:
        code = 1
        try:
            os.setgid(worker)
            os.setuid(worker)
            worker_cache = SQLiteCache(str(path), {})
            worker_cache.set("worker", 1)
            if worker_cache.get("root") == "made" and worker_cache.get("worker") == 1:
                code = 0
        finally:
            os._exit(code)
    assert os.waitpid(pid, 0)[1] == 0
    own = tmp_path / "root-owned"  # a directory of root's: nothing changes
    own.mkdir()
    SQLiteCache(str(own / "c.sqlite3"), {}).set("k", 1)
    assert (own / "c.sqlite3").stat().st_uid == 0


def test_what_the_cache_creates_is_private_to_its_user(tmp_path):
    """An outside probe: the file (pickles: sessions, pages), its -wal and -shm were
    created 0644, readable by any local user. Directories it creates are 0700 and
    files 0600 now, as Django's FileBasedCache makes them; a file that existed keeps
    its mode."""
    import stat

    path = tmp_path / "a" / "b" / "c.sqlite3"
    cache = SQLiteCache(str(path), {})
    cache.set("k", 1)
    try:
        for made, mode in (
            (tmp_path / "a", 0o700),
            (tmp_path / "a" / "b", 0o700),
            (path, 0o600),
            (path.with_name("c.sqlite3-wal"), 0o600),
            (path.with_name("c.sqlite3-shm"), 0o600),
            (path.with_name("c.sqlite3.lock"), 0o600),
        ):
            assert stat.S_IMODE(made.stat().st_mode) == mode, made
    finally:
        cache.close()
    kept = tmp_path / "kept.sqlite3"
    SQLiteCache(str(kept), {}).set("k", 1)
    os.chmod(kept, 0o640)
    other = SQLiteCache(str(kept), {"OPTIONS": {"BUSY_TIMEOUT": 1}})
    other.set("k", 2)
    assert stat.S_IMODE(kept.stat().st_mode) == 0o640


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root (CI is root)"
)
def test_as_root_no_symlink_of_another_user_is_followed(tmp_path):
    """A review: the directory's owner (the workers' user) could plant symlinks that
    root then followed: ``c.sqlite3.lock -> /etc/nologin`` created that file (every
    non-root login refused), ``c.sqlite3 -> /etc/x`` made a database there, and the
    chmod of a new file's -wal (gone at SQLite's close) followed one put there."""
    from django_smartcache.backends._sqlite_file import UnusableLocation

    site = tmp_path / "site"
    site.mkdir()
    os.chown(site, 65534, 65534)
    victim = tmp_path / "victim"
    for planted in ("c.sqlite3.lock", "c.sqlite3"):
        link = site / planted
        link.symlink_to(victim)
        os.chown(link, 65534, 65534, follow_symlinks=False)
        with pytest.raises(UnusableLocation, match="symlink"):
            SQLiteCache(str(site / "c.sqlite3"), {}).get("k")
        assert not victim.exists()
        link.unlink()
    mine = site / "mine"  # root's own symlink is followed
    mine.symlink_to(site / "real.sqlite3")
    SQLiteCache(str(mine), {}).set("k", 1)
    assert (site / "real.sqlite3").exists()


def test_a_fifo_at_location_does_not_hang_the_opener(tmp_path):
    """A review: diagnose() opened LOCATION blocking, so a FIFO there (no writer) hung
    the call while it held the .lock, and every other opener behind it. (It is now
    refused untouched, see below: the call must still return, not hang.)"""
    import threading

    from django_smartcache.backends._sqlite_file import UnusableLocation

    path = tmp_path / "c.sqlite3"
    os.mkfifo(path)
    done: list[object] = []

    def use() -> None:
        cache = SQLiteCache(str(path), {})
        try:
            cache.set("k", 1)
        except UnusableLocation as exc:
            done.append(exc)

    thread = threading.Thread(target=use, daemon=True)
    thread.start()
    thread.join(20)
    assert len(done) == 1 and "FIFO" in str(done[0])


def _special_files(tmp_path):
    """Things that are not regular files, made under ``tmp_path`` (never /dev)."""
    import socket
    import stat

    made = {}
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    made[fifo] = "a FIFO (named pipe)"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "sock"))
    sock.close()
    made[tmp_path / "sock"] = "a socket"
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        os.mknod(tmp_path / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        made[tmp_path / "null"] = "a character device"
    return made


def test_a_location_that_is_not_a_regular_file_is_refused_untouched(tmp_path):
    """An outside probe (t5_dev.py): a device, FIFO or socket at LOCATION was
    "diagnosed" as damaged ("not a regular file"), renamed aside and replaced by a
    fresh cache file: ``LOCATION="/dev/null"`` (to turn the level off) moved the
    system's /dev/null aside. Now ImproperlyConfigured names LOCATION, the path and
    what it is, and nothing is moved or created (not even the ``.lock``); a symlink is
    judged by its target."""
    import stat

    from django_smartcache.backends._sqlite_file import UnusableLocation

    for special, what in _special_files(tmp_path).items():
        link = tmp_path / (special.name + "-link")
        link.symlink_to(special)
        for location in (special, link):
            before = {p.name: os.lstat(p).st_mode for p in tmp_path.iterdir()}
            with pytest.raises(UnusableLocation) as info:
                SQLiteCache(str(location), {}).set("k", 1)
            message = str(info.value)
            assert f"LOCATION {str(location)!r}" in message, message
            assert f"{special} is {what}, not a regular file" in message, message
            after = {p.name: os.lstat(p).st_mode for p in tmp_path.iterdir()}
            assert after == before
            assert not stat.S_ISREG(os.lstat(special).st_mode)
    directory = tmp_path / "adir"
    cache = SQLiteCache(str(directory), {})
    directory.mkdir()  # after the build, which refuses an existing directory
    with pytest.raises(UnusableLocation, match="is a directory, not a regular file"):
        cache.set("k", 1)
    assert list(directory.iterdir()) == []
    # A symlink to a regular file is fine.
    (tmp_path / "real.sqlite3").touch()
    (tmp_path / "ok").symlink_to(tmp_path / "real.sqlite3")
    cache = SQLiteCache(str(tmp_path / "ok"), {})
    cache.set("k", 1)
    assert cache.get("k") == 1
    cache.close()


def test_a_damaged_file_is_not_moved_aside_with_a_companion_that_is_not_a_file(
    tmp_path,
):
    """Moving a damaged file aside moves its -wal/-shm/-journal along: one of those
    that is a FIFO, a symlink or a device is refused, and nothing is moved."""
    from django_smartcache.backends._sqlite_file import UnusableLocation

    path = tmp_path / "c.sqlite3"
    path.write_bytes(b"not a database" * 100)
    os.mkfifo(tmp_path / "c.sqlite3-shm")
    (tmp_path / "elsewhere").write_bytes(b"x")
    (tmp_path / "c.sqlite3-wal").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UnusableLocation, match="not a regular file"):
        SQLiteCache(str(path), {}).set("k", 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "c.sqlite3",
        "c.sqlite3-shm",
        "c.sqlite3-wal",
        "c.sqlite3.lock",
        "elsewhere",
    ]
    assert path.read_bytes() == b"not a database" * 100


#: A worker: opens the cache, writes, says "ready", then (as an idle gunicorn worker
#: or an open ``manage.py shell``) makes no call until its stdin says so.
IDLE_WORKER = r"""
import sys
import django
from django.conf import settings
settings.configure(CACHES={}, INSTALLED_APPS=[])
django.setup()
from django_smartcache.backends import SQLiteCache
cache = SQLiteCache(sys.argv[1], {})
cache.set_many({f"i{j}": "x" * 100 for j in range(100)})
print("ready", flush=True)
sys.stdin.readline()
print(cache.get("i1"), flush=True)
"""

#: A worker that starts now: writes and reads, prints what it got or raised.
BUSY_WORKER = r"""
import sys
import django
from django.conf import settings
settings.configure(CACHES={}, INSTALLED_APPS=[])
django.setup()
from django_smartcache.backends import SQLiteCache
cache = SQLiteCache(sys.argv[1], {})
try:
    for i in range(20):
        cache.set("k", i)
    print("ok", cache.get("k"), flush=True)
except Exception as exc:
    print("ERR", type(exc).__name__, exc, flush=True)
"""


def test_rm_of_the_file_while_an_idle_process_keeps_its_wal(tmp_path):
    """An outside probe (t1_idle_proc.py, t1_raw.py): ``rm cache.sqlite3`` (the file
    alone) while another worker was idle with it open left that worker's -wal and
    -shm; the new empty file SQLite created joined them, and every call of every other
    worker failed with 'disk I/O error' (SQLITE_IOERR_SHORT_READ) until the idle one
    made a call. The -wal/-shm without a file are now moved aside (logged) before the
    file is created; the idle worker leaves the old file at its next call."""
    import django_smartcache

    root = os.path.dirname(os.path.dirname(os.path.abspath(django_smartcache.__file__)))
    env = {**os.environ, "PYTHONPATH": root}
    path = str(tmp_path / "c.sqlite3")
    idle = subprocess.Popen(
        [sys.executable, "-c", IDLE_WORKER, path],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert idle.stdout.readline().strip() == "ready"
        assert os.path.exists(path + "-wal") and os.path.exists(path + "-shm")
        os.unlink(path)
        # Three workers at once race to create the file: one moves the orphans.
        workers = [
            subprocess.Popen(
                [sys.executable, "-c", BUSY_WORKER, path],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )
            for _ in range(3)
        ]
        runs = [worker.communicate(timeout=60) for worker in workers]
        assert [out.strip() for out, _ in runs] == ["ok 19"] * 3, runs
        logged = [err for _, err in runs if "moved them to" in err]
        assert len(logged) == 1 and "wal and shm" in logged[0], runs
        moved = sorted(p.name for p in tmp_path.iterdir() if ".orphaned-" in p.name)
        assert [name.rsplit("-", 1)[1] for name in moved] == ["shm", "wal"]
        idle.stdin.write("go\n")
        idle.stdin.flush()
        # The idle worker's old entries went with its file: a miss, not an error.
        assert idle.stdout.readline().strip() == "None"
    finally:
        idle.kill()
        idle.wait()


def test_a_file_made_by_a_first_open_that_failed_is_private_too(tmp_path, monkeypatch):
    """An outside probe (t3_perm.py): a worker's first open on a full disk failed after
    SQLite had created the file, 0644 (the umask's); the next open found an existing
    file and kept its mode, so the cache (pickled sessions, pages) stayed readable by
    every local user. The file is now created 0600 before SQLite opens it, and a file
    that held no cache yet (such a leftover) is made private when its schema is
    written; one that holds a cache keeps its mode (test above)."""
    import stat

    from django_smartcache.backends import _sqlite_file
    from django_smartcache.backends._sqlite_file import UnusableLocation

    real_identity = _sqlite_file._identity

    def disk_full(conn):
        conn.execute("PRAGMA user_version")  # SQLite creates the file here
        raise sqlite3.OperationalError("database or disk is full")

    old_umask = os.umask(0o022)
    try:
        path = tmp_path / "c.sqlite3"
        monkeypatch.setattr(_sqlite_file, "_identity", disk_full)
        with pytest.raises(UnusableLocation, match="full"):
            SQLiteCache(str(path), {}).get("k")
        assert path.exists()
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        monkeypatch.setattr(_sqlite_file, "_identity", real_identity)
        _fresh_process(str(path))
        cache = SQLiteCache(str(path), {})
        cache.set("k", 1)
        # A file left 0644 and empty by an earlier release's failed open.
        left = tmp_path / "left.sqlite3"
        left.touch(0o644)
        other = SQLiteCache(str(left), {})
        other.set("k", 1)
        for made in (path, left, tmp_path / "left.sqlite3-wal"):
            assert stat.S_IMODE(made.stat().st_mode) == 0o600, made
        cache.close()
        other.close()
    finally:
        os.umask(old_umask)


def test_a_full_disk_is_not_blamed_on_location(tmp_path, monkeypatch):
    """An outside probe (t3_full_open.py): a worker started on a full disk raised
    UnusableLocation 'disk I/O error ... Point LOCATION at a file in a directory this
    process can create and write', blaming the configuration. A full filesystem
    (ENOSPC, SQLITE_FULL, or a disk I/O error with under 1 MiB free, as os.statvfs
    says) is now named as such; other errors keep the old advice."""
    from django_smartcache.backends import _sqlite_file
    from django_smartcache.backends._sqlite_file import UnusableLocation

    def fails(code, text):
        def identity(conn):
            exc = sqlite3.OperationalError(text)
            exc.sqlite_errorcode = code
            raise exc

        return identity

    def disk(free):
        return lambda _: os.statvfs_result(
            (4096, 4096, 1000, free, free, 99, 9, 9, 0, 255)
        )

    cases = [
        (10 | (19 << 8), "disk I/O error", 0, "is full (0 bytes free; disk I/O error)"),
        (13, "database or disk is full", 512, "is full (2097152 bytes free; database"),
        (
            10 | (19 << 8),
            "disk I/O error",
            4096,
            "is not usable: disk I/O error. Point",
        ),
        (14, "unable to open database file", 0, "is not usable: unable to open"),
    ]
    for n, (code, text, free, expected) in enumerate(cases):
        path = str(tmp_path / f"c{n}.sqlite3")
        monkeypatch.setattr(_sqlite_file, "_identity", fails(code, text))
        monkeypatch.setattr(_sqlite_file.os, "statvfs", disk(free))
        with pytest.raises(UnusableLocation) as info:
            SQLiteCache(path, {}).get("k")
        assert expected in str(info.value), (code, free, str(info.value))
        if "is full" in expected:
            assert "Point LOCATION" not in str(info.value)
            assert "Free space there" in str(info.value)


def test_a_thread_that_reaches_a_file_before_its_tables_waits_for_them(tmp_path):
    """After an ``rm`` of the cache, another process recreates the file and installs
    our tables under the ``.lock``; a new thread of this process (a new request)
    connected to the new file straight away and met it without tables: "no such
    table" raised from a get() (filesystem probe: 1 request in ~340 per worker). Now
    the read is a miss and a write prepares the file again (waiting for the install)."""
    import threading

    path = str(tmp_path / "cache.sqlite3")
    first = SQLiteCache(path, {})
    first.set("k", "old")  # this process has prepared LOCATION
    first.close()
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    sqlite3.connect(path).close()  # another process's file, its tables not yet there
    answers = {}

    def request():
        cache = SQLiteCache(path, {})
        answers["get"] = cache.get("k", "miss")
        cache.set("k", "new")
        answers["after"] = cache.get("k")
        cache.close()

    thread = threading.Thread(target=request)
    thread.start()
    thread.join()
    assert answers == {"get": "miss", "after": "new"}


def test_writability_of_a_busy_file_is_asked_without_statvfs(tmp_path, monkeypatch):
    """Where ``os.statvfs`` is missing (Windows), asking whether a file this process
    has open may be written raised AttributeError (review)."""
    from django_smartcache.backends import _sqlite_file as sqlite_file

    path = str(tmp_path / "cache.sqlite3")
    sqlite3.connect(path).close()
    monkeypatch.delattr(os, "statvfs")
    assert sqlite_file._access_denied(path) is None
