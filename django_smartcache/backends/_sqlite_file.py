"""Opening the SQLiteCache file: create it, check it, and move a damaged one aside.

A cache must never take the site down: a file that is not an SQLite database, is
truncated, or is a cache file of another schema version (an upgrade or a downgrade of
this package), is renamed next to itself (both paths logged at ERROR) and replaced by a
fresh store. A database of someone else's is refused untouched (``ImproperlyConfigured``):
only a file whose header carries our ``application_id`` is ever judged from its bytes
and moved; a ``-journal`` beside it is settled by SQLite (rolled back) before anything
else, and companions (``-wal``, ``-shm``, ``-journal``) move with a file, never deleted.
An exclusive ``flock`` on a sibling ``.lock`` file serialises this between the
processes that open the file at once: the second one checks the file the first one
left, which is current, so it never moves a fresh file aside.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import re
import sqlite3
import stat
import time
import urllib.parse
import weakref
from collections.abc import Iterator

from django.core.exceptions import ImproperlyConfigured

from . import _sqlite_schema as schema

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no cross-process lock on open
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger("django_smartcache.sqlite")

_MAGIC = b"SQLite format 3\x00"
#: SQLite result codes (low byte of ``sqlite_errorcode``) that mean "this file is damaged".
CORRUPTION_CODES = frozenset({11, 26})  # SQLITE_CORRUPT, SQLITE_NOTADB
#: SQLITE_BUSY, SQLITE_LOCKED: another connection holds a lock (transient).
_BUSY_CODES = frozenset({5, 6})
#: SQLITE_READONLY (and its extended codes): the file cannot be written.
READONLY_CODE = 8
#: WAL pages between automatic checkpoints (SQLite's default is 1000).
WAL_AUTOCHECKPOINT_PAGES = 4000
#: Bytes SQLite truncates the WAL file back to when it restarts it (``journal_size_limit``).
JOURNAL_SIZE_LIMIT = 32 * 1024 * 1024
#: The files SQLite keeps beside a database: moved along with it, never deleted.
_COMPANIONS = ("-wal", "-shm", "-journal")


class ForeignDatabaseError(Exception):
    """``LOCATION`` holds a valid SQLite database that is not a cache."""


class UnusableLocation(ImproperlyConfigured, sqlite3.OperationalError):
    """LOCATION cannot be created or written (permissions, a missing mount...).

    A configuration error to a SQLiteCache used alone, raised at its first use; an
    ``sqlite3.OperationalError`` too, so a MultiLevelCache treats it as a level that is
    down (skipped, logged once per interval, retried): a worker started while the file
    is briefly unwritable serves from its other levels instead of failing every call.
    """


class NotRegularFileError(ForeignDatabaseError):
    """``LOCATION`` (or a file beside it) is not a regular file this process may have
    written: a device, a FIFO, a socket, a directory, a symlink. Refused untouched."""


class IncompatibleSchemaError(Exception):
    """``LOCATION`` holds a SQLiteCache file this release cannot use as it is."""


class DamagedCacheError(Exception):
    """``LOCATION``'s header says it is a SQLiteCache file, but SQLite reads another
    database there (another database's WAL beside it, replayed on opening)."""


def result_code(exc: BaseException) -> int:
    """SQLite's primary result code in ``exc`` (the low byte of ``sqlite_errorcode``),
    0 when it carries none."""
    return getattr(exc, "sqlite_errorcode", 0) & 0xFF


def is_busy(exc: BaseException) -> bool:
    """Whether ``exc`` says another connection holds a lock (transient)."""
    return result_code(exc) in _BUSY_CODES


def is_corruption(exc: BaseException) -> bool:
    """Whether ``exc`` says the file is damaged (as opposed to busy, full, read-only...)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return (code & 0xFF) in CORRUPTION_CODES
    text = str(exc)
    return "malformed" in text or "not a database" in text


def real_path(path: str) -> str:
    """``path`` with its symlinks resolved: where SQLite keeps the ``-wal``/``-shm`` of a
    database opened through a symlink, so where ours must be looked for and moved.

    Checked beside the link, a LOCATION that is a symlink would show no WAL while one
    is live beside the target: a file in mid-checkpoint would read as "truncated", and
    the healthy cache be moved aside (the link replaced by a plain file).
    """
    return os.path.realpath(path)


def _what(mode: int) -> str:
    """What a file of ``st_mode`` ``mode`` is, in words."""
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISLNK, "a symlink"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def refuse_unless_regular(path: str, *, follow: bool = True) -> None:
    """Raise ``NotRegularFileError`` if ``path`` exists and is not a regular file
    (``follow``: its symlinks followed, judging the target; else a symlink is refused).

    Diagnosed as a damaged cache file, a device, FIFO or socket at ``LOCATION`` would
    be renamed aside and replaced by a fresh cache file: ``LOCATION="/dev/null"`` (to
    turn the level off) would move the system's ``/dev/null`` aside.
    """
    try:
        st = os.stat(path) if follow else os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return
    if not stat.S_ISREG(st.st_mode):
        raise NotRegularFileError(
            f"{path} is {_what(st.st_mode)}, not a regular file; refusing to touch it"
        )


def _movable(path: str) -> None:
    """Raise ``NotRegularFileError`` unless ``path`` (not followed if a symlink) is a
    regular file this process could have written: the only kind ever moved aside."""
    refuse_unless_regular(path, follow=False)
    effective = os.access in os.supports_effective_ids
    if os.path.lexists(path) and not os.access(path, os.W_OK, effective_ids=effective):
        raise NotRegularFileError(
            f"{path} is a file this process cannot write, so not one it made; "
            f"refusing to move it"
        )


def diagnose(path: str) -> str | None:
    """Why the file at ``path`` cannot be used, read from its header; ``None`` if it can.

    Cheap (one 100-byte read and a ``stat``), so it runs on every open: it catches a
    foreign file and a truncated database, which SQLite itself would only notice when a
    query reaches a missing page.
    """
    path = real_path(path)
    try:
        # Without blocking: a FIFO there hung every opener behind the ``.lock``.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            # Never "damaged": a device or FIFO is not ours to move (prepare() refuses
            # it before this; here if one was put there meanwhile).
            raise NotRegularFileError(
                f"{path} is {_what(st.st_mode)}, not a regular file; refusing to touch it"
            )
        header = f.read(100)
        length = st.st_size
    if length == 0:
        return None
    if len(header) < 100 or not header.startswith(_MAGIC):
        return "not an SQLite database (bad header)"
    if int.from_bytes(header[68:72], "big") != schema.APPLICATION_ID:
        # Someone else's database (or ours before it was stamped): SQLite decides,
        # never these bytes. A rollback-journal database read in the middle of a
        # commit, or left by a writer killed in one, looks truncated here and is
        # healthy once SQLite rolls its journal back.
        return None
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    # The in-header page count is only valid when "version-valid-for" matches the change
    # counter; the WAL may legitimately hold pages past the end of the main file.
    header_valid = header[24:28] == header[92:96]
    try:
        wal_empty = os.path.getsize(path + "-wal") == 0
    except FileNotFoundError:  # (or deleted meanwhile: another process's last close)
        wal_empty = True
    if header_valid and wal_empty and pages * page_size > length:
        return f"truncated: the header says {pages * page_size} bytes, the file has {length}"
    return None


def ours_by_header(path: str) -> bool:
    """Whether the header of the file at ``path`` carries our ``application_id``."""
    try:
        with open(path, "rb") as f:
            header = f.read(100)
    except OSError:
        return False
    return (
        header.startswith(_MAGIC)
        and len(header) == 100
        and int.from_bytes(header[68:72], "big") == schema.APPLICATION_ID
    )


def _identity(conn: sqlite3.Connection) -> tuple[set[str], int, int]:
    """The tables, ``application_id`` and ``user_version`` SQLite reads in the file."""
    tables = {
        row[0]
        for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'"
            " AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'"
        )
    }
    (app_id,) = conn.execute("PRAGMA application_id").fetchone()
    (found,) = conn.execute("PRAGMA user_version").fetchone()
    return tables, app_id, found


def _not_ours(tables: set[str], app_id: int, found: int) -> str | None:
    """Why a readable database is someone else's; ``None`` when it may be ours."""
    others = sorted(t for t in tables if not t.startswith(schema.NAME_PREFIX))
    known = {0, schema.SCHEMA_VERSION, *schema.STAMPED_IN_PLACE}
    if (
        others
        or app_id not in (0, schema.APPLICATION_ID)
        or (app_id == 0 and not tables and found not in known)
    ):
        return (
            f"it is an SQLite database but not a SQLiteCache file (tables: "
            f"{', '.join(sorted(tables)) or 'none'}, application_id {app_id}); "
            f"user_version {found}; refusing to touch it"
        )
    return None


def settle_journal(path: str, busy_timeout: float) -> None:
    """A ``-journal`` lies beside ``path``: let SQLite settle it, then refuse what is not ours.

    SQLiteCache files use a WAL; a rollback journal is someone else's database
    (or ours killed while it was being created). Its bytes are not ours to judge:
    a hot journal (a writer killed mid-commit) or a live writer's journal means the
    file is half-written and healthy once the journal is rolled back. So SQLite
    opens it first, as any connection of its owner would: a hot journal is rolled
    back (restoring the database), a live writer is waited for (``BUSY_TIMEOUT``).
    Raises ``ForeignDatabaseError`` unless SQLite then reads an empty file or ours.
    """
    path = real_path(path)
    conn = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None)
    try:
        identity = _identity(conn)
    except sqlite3.DatabaseError as exc:
        if is_busy(exc):
            raise  # a live writer past BUSY_TIMEOUT: transient
        raise ForeignDatabaseError(
            f"SQLite cannot read it ({exc}) and a rollback journal lies beside it "
            f"({path}-journal), which a SQLiteCache file never keeps: it is not "
            f"provably a SQLiteCache file; refusing to touch it or its journal"
        ) from exc
    finally:
        conn.close()
    reason = _not_ours(*identity)
    if reason is not None:
        raise ForeignDatabaseError(reason)


def foreign_beside_a_wal(path: str) -> str | None:
    """Why ``path`` is someone else's database though a WAL file lies beside it; None if not.

    A WAL left by a cache process (killed, or still running on a file since moved
    away) would be replayed by SQLite into whatever database is now at ``path``,
    destroying it: renaming a database onto ``LOCATION`` did exactly that. So when a
    WAL is there and the header is not ours, the file is read without its WAL
    (``immutable=1``: nothing replayed, nothing written) before anything opens it.
    """
    path = real_path(path)
    wal = path + "-wal"
    try:
        if os.path.getsize(wal) == 0:
            return None
        with open(path, "rb") as f:
            header = f.read(100)
    except FileNotFoundError:
        return None
    if not header.startswith(_MAGIC) or len(header) < 100:
        return None  # not a database: diagnose() moves it aside
    app_id = int.from_bytes(header[68:72], "big")
    if app_id == schema.APPLICATION_ID:
        return None
    uri = "file:" + urllib.parse.quote(os.path.abspath(path)) + "?immutable=1"
    try:
        conn = sqlite3.connect(uri, uri=True)
        try:
            tables = [
                row[0]
                for row in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table'"
                    " AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'"
                )
            ]
        finally:
            conn.close()
    except sqlite3.DatabaseError:
        return None  # damaged: diagnose() and _install() decide
    others = sorted(t for t in tables if not t.startswith(schema.NAME_PREFIX))
    if not others and app_id == 0:
        return None  # empty, or ours before its first checkpoint
    return (
        f"it is an SQLite database but not a SQLiteCache file (tables: "
        f"{', '.join(sorted(tables)) or 'none'}, application_id {app_id}), and a WAL "
        f"file lies beside it ({wal}) that SQLite would replay into it; refusing to "
        f"open it (move the WAL away if it is stale, or point LOCATION elsewhere)"
    )


def _aside(path: str, kind: str) -> str:
    """A name beside ``path`` for a file moved aside, taken by no file nor companion."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = f"{path}.{kind}-{stamp}-{os.getpid()}"
    n = 1
    while any(os.path.lexists(aside + suffix) for suffix in ("", *_COMPANIONS)):
        # Two files moved aside by one process in one second: never overwrite the first.
        n += 1
        aside = f"{path}.{kind}-{stamp}-{os.getpid()}-{n}"
    return aside


def set_aside_orphans(path: str) -> str | None:
    """No file at ``path`` but a ``-wal``, ``-shm`` or ``-journal`` beside it: move them
    aside (regular files only), log it, return their new name (without the suffix).

    ``rm cache.sqlite3`` (the file alone) while another process has it open and idle
    leaves that process's ``-wal`` and ``-shm``; left there, they join the new empty
    file SQLite creates, and every call of every other process fails with ``disk I/O
    error`` (SQLITE_IOERR_SHORT_READ: the old WAL index points past the new file's end)
    until the idle one makes a call. A hot ``-journal`` would be rolled back into the
    new file alike. Run under ``open_lock`` (as every creation of the file): the first
    process moves them and creates the file before it releases the lock, so the next
    ones find a file and move nothing. The idle process keeps its descriptors on the
    moved files and leaves them at its next call (``LOCATION`` names another file);
    SQLite neither checkpoints nor deletes a WAL by name for a file that has moved.
    """
    path = real_path(path)
    if os.path.lexists(path):
        return None
    found = [s for s in _COMPANIONS if os.path.lexists(path + s)]
    if not found:
        return None
    for suffix in found:
        _movable(path + suffix)
    aside = _aside(path, "orphaned")
    for suffix in found:
        with contextlib.suppress(FileNotFoundError):
            os.replace(path + suffix, aside + suffix)
    logger.warning(
        "SQLiteCache: %s was gone but its %s remained (the file was deleted while "
        "a process still had it open, or a process was killed); moved them to %s%s "
        "so that the new file does not read them.",
        path,
        " and ".join(s.lstrip("-") for s in found),
        aside,
        "{" + ",".join(found) + "}" if len(found) > 1 else found[0],
    )
    return aside


def quarantine(path: str, reason: str, kind: str = "corrupt") -> str:
    """Rename the unusable file (and its WAL) aside, log both paths, return the new path.

    ``kind`` names the copy: ``corrupt`` (damaged) or ``schema`` (another version).
    Only regular files this process could have written are moved: anything else there
    (the file or a companion a device, FIFO, socket, directory or symlink) raises
    ``NotRegularFileError`` before anything moves.
    """
    path = real_path(path)
    for name in (path, *(path + suffix for suffix in _COMPANIONS)):
        _movable(name)
    aside = _aside(path, kind)
    os.replace(path, aside)
    # Its WAL, shared memory and journal go with it, never deleted: a journal or WAL
    # is part of the database (deleting one alone is what damages a database).
    for suffix in _COMPANIONS:
        with contextlib.suppress(FileNotFoundError):
            os.replace(path + suffix, aside + suffix)
    logger.error(
        "SQLiteCache: %s is unusable (%s); moved it to %s and started a fresh cache there.",
        path,
        reason,
        aside,
    )
    return aside


@contextlib.contextmanager
def open_lock(path: str) -> Iterator[None]:
    """Hold an exclusive lock on ``<path>.lock`` (one opener/repairer at a time)."""
    path = real_path(path)
    if fcntl is None:  # pragma: no cover
        yield
        return
    # Never through a symlink: root would create or truncate-open any file named.
    fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the flock


@functools.lru_cache(maxsize=64)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def regexp(pattern: str, value: object) -> bool:
    """SQLite's ``value REGEXP pattern``: Python's ``re.search`` (SQLite has no built-in)."""
    return isinstance(value, str) and _compiled(pattern).search(value) is not None


def tail_regexp(pattern: str, start: int, value: object) -> bool:
    """``re.search(pattern, value[start - 1:])`` (``start`` as SQLite counts): the
    pattern test on a key holding a NUL, which SQLite's ``substr`` would cut there."""
    return isinstance(value, str) and (
        _compiled(pattern).search(value[start - 1 :]) is not None
    )


#: A file's identity: (st_dev, st_ino). While a connection holds the file open its inode
#: cannot be reused, so another identity at LOCATION means another file.
FileId = tuple[int, int]


def file_id(path: str) -> FileId | None:
    """The identity of the file ``path`` names now; ``None`` if there is none."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return (st.st_dev, st.st_ino)


class Connection(sqlite3.Connection):
    """A cache connection: one that can be weakly referenced (a forked child finds and
    closes every connection it inherited), and that knows its file (``in_use``)."""

    #: (process, thread) that opened it: the only thread that uses it.
    owner: tuple[int, int] = (0, 0)
    #: The identity of the file it opened.
    file: FileId | None = None
    closed = False

    def close(self) -> None:
        self.closed = True
        super().close()


#: Every connection ``connect`` made in this process (see ``in_use``).
_connections: weakref.WeakSet[Connection] = weakref.WeakSet()


def _file_of(path: str) -> FileId | None:
    """``file_id``, ``None`` also when it cannot tell (no permission on the way)."""
    try:
        return file_id(path)
    except OSError:
        return None


def in_use(path: str) -> bool:
    """Whether a connection of this process has the file ``path`` names open.

    Then this file, its ``-wal`` and its ``-shm`` must not be opened from Python:
    closing any descriptor of a file drops every POSIX lock the process holds on it,
    SQLite's too. Another process would then take itself for the file's last user
    and, at its close, checkpoint and delete the ``-wal`` and ``-shm`` under our live
    connection, which goes on alone on the deleted ones: two histories of one file
    for as long as the process lives, stale reads, and writes lost at the end (two
    aliases on one file spelled two ways, a symlinked deploy directory).
    Callers hold the connection module's ``_prepare_lock``, which ``connect`` runs
    under too, so no connection opens between this answer and their descriptors'
    close.
    """
    file = _file_of(real_path(path))
    return file is not None and any(
        conn.file == file and not conn.closed for conn in list(_connections)
    )


_NO_LOCK = contextlib.nullcontext()


def connect(
    path: str,
    busy_timeout: float,
    synchronous: str,
    registering: contextlib.AbstractContextManager[object] = _NO_LOCK,
) -> Connection:
    """A connection in autocommit mode (transactions are explicit) with our pragmas.

    It is opened and registered (``in_use``) inside ``registering`` (the lock the
    file checks run under), before it reads anything, so before SQLite takes any
    lock on the file; its pragmas run after, outside: the first reads the schema and
    may wait up to ``busy_timeout`` for another process's lock, which under the lock
    would hold every other thread's connection (any file's) behind it, each waiting
    its own ``busy_timeout`` in turn (4.8 s for a connection to an unrelated file)."""
    with registering:
        conn = sqlite3.connect(
            path,
            timeout=busy_timeout,
            isolation_level=None,
            check_same_thread=False,
            cached_statements=256,
            factory=Connection,
        )
        conn.file = _file_of(path)  # (open now: SQLite opened it above)
        _connections.add(conn)
    try:
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        conn.execute("PRAGMA temp_store = MEMORY")
        conn.create_function("regexp", 2, regexp, deterministic=True)
        conn.create_function(
            "smartcache_tail_regexp", 3, tail_regexp, deterministic=True
        )
        # Checkpoints are where WAL mode fsyncs; every 4000 pages (16 MB at 4 KiB
        # pages) instead of SQLite's 1000 halves the cost of a small write (see
        # docs/sqlite.md). The WAL is truncated back to 32 MB after a checkpoint that
        # let it grow past that.
        conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES}")
        conn.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT}")
    except BaseException:
        conn.close()  # not left open until its traceback goes
        raise
    return conn


def _install(path: str, busy_timeout: float, busy: bool = False) -> bool:
    """Create or check the schema; return whether the file held no tables (a new
    file: its schema written now).

    Raises ``ForeignDatabaseError`` for someone else's database, ``IncompatibleSchemaError``
    for a cache file of another version, ``DamagedCacheError`` for a file whose header
    is ours but whose tables are not, ``sqlite3.DatabaseError`` when it is damaged.
    """
    _create_private(path)
    # Before SQLite reads a WAL into it; never by a descriptor of a file in use here.
    ours = not busy and ours_by_header(path)
    conn = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None)
    try:
        tables, app_id, found = _identity(conn)
        reason = _not_ours(tables, app_id, found)
        if reason is not None and ours:
            # Our file, and SQLite reads someone else's tables: another database's
            # WAL lay beside it and was replayed. A damaged cache file, not theirs.
            raise DamagedCacheError(
                f"its header is a SQLiteCache file's but SQLite reads another "
                f"database in it (tables: {', '.join(sorted(tables)) or 'none'}, "
                f"application_id {app_id}): the WAL beside it was another database's"
            )
        if reason is not None:
            # A healthy database of something else: most likely LOCATION pointing at
            # the site's own data. Never modify it, never move it.
            raise ForeignDatabaseError(reason)
        if tables:
            problem = check_layout(conn, found)
            if problem is not None:
                raise IncompatibleSchemaError(problem)
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise sqlite3.OperationalError(f"cannot switch {path} to WAL (got {mode})")
        if (
            tables
            and found == schema.SCHEMA_VERSION
            and app_id == schema.APPLICATION_ID
        ):
            # Installed and current: nothing to write. Taking the write lock here made a
            # worker's first call wait for (and, past BUSY_TIMEOUT, fail on) any long
            # write of another process, though reads need no lock in WAL mode.
            return False
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _statements(schema.DDL):
                conn.execute(statement)
            if found != schema.SCHEMA_VERSION or app_id != schema.APPLICATION_ID:
                # A new file, or one of STAMPED_IN_PLACE: record the version.
                v = schema.SCHEMA_VERSION
                conn.execute("UPDATE smartcache_meta SET schema = ? WHERE id = 0", (v,))
                conn.execute(f"PRAGMA user_version = {v}")
                conn.execute(f"PRAGMA application_id = {schema.APPLICATION_ID}")
            conn.execute("COMMIT")
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        return not tables
    finally:
        conn.close()


@functools.lru_cache(maxsize=1)
def _reference_layout() -> frozenset[tuple[str, str, str, str]]:
    """Our tables, indexes and triggers as SQLite stores them, from :data:`schema.DDL`."""
    conn = sqlite3.connect(":memory:")
    try:
        for statement in _statements(schema.DDL):
            conn.execute(statement)
        return _layout(conn)
    finally:
        conn.close()


def _layout(conn: sqlite3.Connection) -> frozenset[tuple[str, str, str, str]]:
    return frozenset(
        (kind, name, table, " ".join(sql.split()))
        for kind, name, table, sql in conn.execute(
            "SELECT type, name, tbl_name, sql FROM sqlite_master"
            " WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'"
        )
    )


def check_layout(conn: sqlite3.Connection, user_version: int) -> str | None:
    """Why this file of ours cannot be used as it is (``None``: it can).

    Usable: the current :data:`schema.SCHEMA_VERSION`, or one of
    :data:`schema.STAMPED_IN_PLACE`, with exactly the tables, indexes and triggers
    :data:`schema.DDL` creates. Files written before the version was in the header
    (``user_version`` 0) say it in their meta row.
    """
    try:
        row = conn.execute("SELECT schema FROM smartcache_meta WHERE id = 0").fetchone()
    except sqlite3.OperationalError:  # no such table or column: an unknown layout
        row = None
    meta = row[0] if row is not None else None
    version = user_version or meta
    expected = schema.SCHEMA_VERSION
    if version is None:
        return (
            f"a SQLiteCache file with no schema version; this release uses {expected}"
        )
    if version != expected and version not in schema.STAMPED_IN_PLACE:
        return f"SQLiteCache schema version {version}; this release uses {expected}"
    if user_version and meta != user_version:
        return f"SQLiteCache schema version {user_version} in the header, {meta} in the meta row"
    reference = _reference_layout()
    found = _layout(conn)
    if found != reference:
        differ = sorted({name for _, name, _, _ in found ^ reference})
        return (
            f"SQLiteCache schema version {version} but its tables differ from that "
            f"layout ({', '.join(differ)})"
        )
    return None


def _statements(script: str) -> Iterator[str]:
    """Split the DDL script into statements (``sqlite3.complete_statement`` knows triggers)."""
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            yield buffer.strip()
            buffer = ""


def _make_dirs(directory: str) -> list[str]:
    """``os.makedirs(directory)``, each directory it creates private (0700, as
    Django's FileBasedCache makes its own): the directories created, outermost first."""
    missing = []
    current = directory
    while not os.path.isdir(current) and os.path.dirname(current) != current:
        missing.append(current)
        current = os.path.dirname(current)
    for name in reversed(missing):
        try:
            os.mkdir(name, 0o700)
        except FileExistsError:
            if not os.path.isdir(name):
                raise
    return missing[::-1]


def _create_private(path: str) -> None:
    """Create ``path`` empty and 0600 unless something is there (SQLite then takes an
    empty file for a new database).

    SQLite creates a missing file 0644 (the umask's), and a first open that fails
    after that (a full disk) leaves it so: the next open finds an existing file and
    keeps its mode, readable by any local user. Made private from its creation, a
    file is never broader than promised, whatever fails next; SQLite gives the
    ``-wal`` and ``-shm`` it creates the file's mode.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        return
    os.close(fd)


def _make_private(path: str) -> None:
    """A new cache file, its ``-wal`` and ``-shm``, readable by their owner only (0600,
    as FileBasedCache's files): they hold pickles (sessions, pages), which any local
    user could read at SQLite's 0644. Called for a file created here or one whose
    schema was just written (it held nothing: one left 0644 by an open that failed
    half-way, an earlier release's): one that already held a cache keeps its mode."""
    for name in (path, path + "-wal", path + "-shm"):
        fd = _made_here(name)
        if fd is None:
            continue
        try:
            if stat.S_IMODE(os.fstat(fd).st_mode) & 0o077:
                os.fchmod(fd, 0o600)
        except OSError as exc:
            logger.warning("SQLiteCache: could not make %s private: %s", name, exc)
        finally:
            os.close(fd)


def _made_here(name: str) -> int | None:
    """A descriptor of ``name`` if it is a regular file of this process's user with one
    link, opened without following a symlink; else ``None``. A chmod or chown by
    name followed a symlink (or a hard link) the directory's owner put there in the
    moment between SQLite's close and ours: as root, any file of the system."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:  # gone, or a symlink (ELOOP)
        return None
    st = os.fstat(fd)
    if stat.S_ISREG(st.st_mode) and st.st_nlink == 1 and st.st_uid == os.geteuid():
        return fd
    os.close(fd)
    return None


def _check_symlinks(path: str) -> None:
    """As root, refuse a path through a symlink someone else owns (``OSError``): the
    directory's owner (the workers' user) could point ``LOCATION`` or a directory on
    the way at any file, and root would make a database there. Root's own symlinks,
    and any symlink for another user, are followed (the kernel's protected_symlinks
    guards only sticky directories)."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return
    prefix = os.sep
    for part in os.path.abspath(path).split(os.sep):
        if not part:
            continue
        prefix = os.path.join(prefix, part)
        try:
            st = os.lstat(prefix)
        except FileNotFoundError:
            return
        if stat.S_ISLNK(st.st_mode) and st.st_uid != 0:
            raise OSError(
                errno.EPERM,
                f"a symlink of uid {st.st_uid}: run as root, SQLiteCache follows no "
                f"one else's symlink",
                prefix,
            )


def _inode(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def _warn_root(path: str) -> None:
    """As root, on a file in another user's directory: say once what that means."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or path in _warned_root:
        return
    try:
        owner = os.stat(os.path.dirname(path)).st_uid
    except OSError:
        return
    if owner != 0:
        _warned_root.add(path)
        logger.warning(
            "SQLiteCache: running as root on %s, a directory of uid %d. Root then "
            "unpickles what that user wrote (their code runs as root) and SQLite "
            "follows what they put in the directory: run manage.py as that user "
            "(sudo -u <user> python manage.py ...). See docs/installation.md.",
            path,
            owner,
        )


_warned_root: set[str] = set()


def _give_to_owner(path: str, made: list[str], new_file: bool, new_lock: bool) -> None:
    """Run as root, hand what this call created (directories, the file, ``.lock``) to
    the owner of the directory it was created in.

    Otherwise a command run as root (a deploy's ``smartcache_warm``, ``shell``) makes
    them root's, and every worker then fails to open the cache (SQLiteCache raises
    UnusableLocation at each call; a MultiLevelCache's L2 stays down). SQLite does
    the same for its journals (they follow the database file's owner under root).
    Nothing changes where that directory is root's too, or not run as root. Files
    are changed through a descriptor opened without following symlinks
    (``_made_here``), directories with ``lchown``."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return
    owner = os.stat(os.path.dirname(made[0]) if made else os.path.dirname(path))
    if owner.st_uid == 0:
        return
    for directory in made:
        try:
            st = os.lstat(directory)
            if stat.S_ISDIR(st.st_mode) and st.st_uid == 0:
                os.chown(directory, owner.st_uid, owner.st_gid, follow_symlinks=False)
        except OSError as exc:
            _not_given(directory, owner.st_uid, exc)
    files = [path] if new_file else []
    if new_lock:
        files.append(path + ".lock")
    for name in files:
        fd = _made_here(name)
        if fd is None:
            continue
        try:
            os.fchown(fd, owner.st_uid, owner.st_gid)
        except OSError as exc:
            _not_given(name, owner.st_uid, exc)
        finally:
            os.close(fd)


def _not_given(name: str, uid: int, exc: OSError) -> None:
    logger.warning(
        "SQLiteCache: could not give %s to the owner of its directory (uid %d): %s; "
        "processes running as that user may not write it",
        name,
        uid,
        exc,
    )


def write_denied(path: str) -> OSError | None:
    """The OS error that opening the cache file, its ``-wal`` or ``-shm`` for writing
    raises in this process (the call SQLite makes); ``None`` if none does. While a
    connection of this process has the file open (``in_use``), asked of ``access()``
    and the mount instead: a descriptor's close would drop SQLite's locks."""
    path = real_path(path)
    if fcntl is not None and in_use(path):  # (Windows: a lock belongs to its handle)
        return _access_denied(path)
    for name in (path, path + "-wal", path + "-shm"):
        try:
            fd = os.open(name, os.O_RDWR)
        except FileNotFoundError:
            continue
        except OSError as exc:
            return exc
        os.close(fd)
    return None


def _access_denied(path: str) -> OSError | None:
    """``write_denied`` without opening anything: the mount's read-only flag, then
    ``access(W_OK)`` (which root passes wherever the mount allows)."""
    if hasattr(os, "statvfs"):
        try:
            if os.statvfs(os.path.dirname(path)).f_flag & os.ST_RDONLY:
                return OSError(errno.EROFS, os.strerror(errno.EROFS), path)
        except OSError as exc:
            return exc
    effective = os.access in os.supports_effective_ids
    for name in (path, path + "-wal", path + "-shm"):
        if os.path.exists(name) and not os.access(
            name, os.W_OK, effective_ids=effective
        ):
            return PermissionError(errno.EACCES, os.strerror(errno.EACCES), name)
    return None


def check_writable(path: str) -> None:
    """Raise ``OSError`` (SQLite's error if it sees no OS one) unless this process can
    write the cache file and the ``-wal`` and ``-shm`` beside it.

    SQLite opens a file it may not write read-only, without a word: reads work and
    every write raises a bare "attempt to write a readonly database" naming neither
    the file nor the cause. ``os.open(O_RDWR)`` is the call SQLite makes, so it
    answers as the file's mode, the mount and the process's capabilities do, and its
    error names the path. Then SQLite itself is asked to begin a write (not waiting
    for another writer's lock: a busy file is a writable one), for what the OS
    allows and SQLite refuses.
    """
    denied = write_denied(path)
    if denied is not None:
        raise denied
    conn = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
    except sqlite3.OperationalError as exc:
        if result_code(exc) != READONLY_CODE:
            return  # busy (another process writes it, so it can be written), or else
        raise PermissionError(
            errno.EACCES, f"SQLite cannot write it ({exc})", path
        ) from exc
    finally:
        conn.close()


def prepare(path: str, busy_timeout: float) -> None:
    """Make ``path`` a usable store: create it, or repair it by starting afresh.

    Raises ``ImproperlyConfigured`` naming ``LOCATION`` when the location itself is
    unusable (a missing parent that cannot be created, no write permission, a directory).
    """
    try:
        _check_symlinks(path)
    except OSError as exc:
        raise UnusableLocation(
            f"SQLiteCache LOCATION {path!r} is not usable: {exc}. Point LOCATION at a "
            f"file reached without another user's symlinks."
        ) from exc
    location = path
    path = real_path(path)
    directory = os.path.dirname(os.path.abspath(path))
    try:
        made = _make_dirs(directory)
        # Before the lock (whose name it does not create) and again under it.
        refuse_unless_regular(path)
        had = _inode(path), os.path.lexists(path + ".lock")
        with open_lock(path):
            refuse_unless_regular(path)
            # A file a connection of this process has open (another alias on it, or
            # one that connected to it before this one saw the old file go): it is
            # read by SQLite only, never by a descriptor of ours (``in_use``). It was
            # checked by whichever process made it.
            busy = in_use(path)
            set_aside_orphans(path)
            if os.path.lexists(path + "-journal"):
                settle_journal(path, busy_timeout)
            foreign = None if busy else foreign_beside_a_wal(path)
            if foreign is not None:
                raise ForeignDatabaseError(foreign)
            problem = None if busy else diagnose(path)
            if problem is not None:
                quarantine(path, problem)
            try:
                created = _install(path, busy_timeout, busy)
            except IncompatibleSchemaError as exc:
                quarantine(path, str(exc), "schema")
                created = _install(path, busy_timeout)
            except DamagedCacheError as exc:
                quarantine(path, str(exc))
                created = _install(path, busy_timeout)
            except sqlite3.DatabaseError as exc:
                if not is_corruption(exc):
                    raise
                if not busy and not ours_by_header(path):
                    # Damaged, or read half-way through someone's commit: only a
                    # file that says it is ours is ever moved.
                    raise ForeignDatabaseError(
                        f"SQLite cannot read it ({exc}) and its header does not carry "
                        f"the SQLiteCache application_id: it is not provably a "
                        f"SQLiteCache file; refusing to move it"
                    ) from exc
                quarantine(path, str(exc))
                created = _install(path, busy_timeout)
            # A new file: made here, or fresh after a quarantine (another inode).
            new_file = _inode(path) != had[0]
            busy = in_use(path)  # (the file may be another one since a quarantine)
            if (new_file or created) and not busy:
                _make_private(path)
            _give_to_owner(path, made, new_file and not busy, not had[1])
            _warn_root(path)
            check_writable(path)
    except NotRegularFileError as exc:
        # ImproperlyConfigured, and a level that is down to a MultiLevelCache.
        raise UnusableLocation(
            f"SQLiteCache LOCATION {location!r} is not usable: {exc}. Point LOCATION at "
            f"a regular file of its own (or a path where one can be created)."
        ) from exc
    except ForeignDatabaseError as exc:
        raise ImproperlyConfigured(
            f"SQLiteCache LOCATION {path!r} is not usable: {exc}. Point LOCATION at a file "
            f"of its own."
        ) from exc
    except sqlite3.OperationalError as exc:
        if is_busy(exc):
            raise  # another process holds the lock past BUSY_TIMEOUT: transient
        raise UnusableLocation(_unusable(path, directory, exc)) from exc
    except OSError as exc:
        raise UnusableLocation(_unusable(path, directory, exc)) from exc


#: SQLITE_IOERR, SQLITE_FULL: what SQLite raises on a full filesystem (a disk I/O
#: error when there is no room for the ``-shm``: SQLITE_IOERR_SHMSIZE and others).
_IOERR, _FULL = 10, 13
#: Bytes free below which a disk I/O error is put down to a full filesystem.
_NEARLY_FULL = 1024 * 1024


def _no_space(directory: str, exc: BaseException) -> str | None:
    """How full the filesystem of ``directory`` is, when ``exc`` comes of that."""
    code = result_code(exc)
    errno_ = getattr(exc, "errno", None)
    said = errno_ in (errno.ENOSPC, errno.EDQUOT) or code == _FULL
    if not said and code != _IOERR:
        return None
    try:
        st = os.statvfs(directory)
    except OSError:
        return "no space left" if said else None
    root = hasattr(os, "geteuid") and os.geteuid() == 0
    free = (st.f_bfree if root else st.f_bavail) * st.f_frsize
    inodes = st.f_ffree if root else st.f_favail
    if inodes == 0 and st.f_files:
        return f"no free inodes ({free} bytes free)"
    if said or free < _NEARLY_FULL:
        return f"{free} bytes free"
    return None


def _unusable(path: str, directory: str, exc: BaseException) -> str:
    """The message of an ``UnusableLocation``: a full filesystem is told from a bad
    location (a full disk raised "disk I/O error ... Point LOCATION at a file in a
    directory this process can create and write", blaming the configuration)."""
    full = _no_space(directory, exc)
    if full is not None:
        return (
            f"SQLiteCache LOCATION {path!r} cannot be written now: the filesystem of "
            f"{directory} is full ({full}; {exc}). Free space there: the cache needs "
            f"room for its file, its -wal and its -shm; LOCATION itself is fine."
        )
    return (
        f"SQLiteCache LOCATION {path!r} is not usable: {exc}. Point LOCATION at a file "
        f"in a directory this process can create and write."
    )
