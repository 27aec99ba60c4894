"""The SQLiteCache file format: tables, indexes, triggers and the statements run on them.

Byte totals and the change log are maintained by triggers so that every statement that
changes an entry (from any process or connection) updates them in the same
transaction, with no ``SELECT SUM`` and no extra round trip from Python.

Statements whose plan must not depend on statistics name their index (``INDEXED BY``):
after an ``ANALYZE`` of a small table (``sqlite_stat1``; ``PRAGMA optimize`` or any
tool may write it), SQLite prefers a scan and a sort to the ``expires`` index, which is
the wrong choice once the table has grown. ``INDEXED BY`` makes SQLite use the index
or refuse the statement, never silently scan.
"""

from __future__ import annotations

#: The version of the file format, recorded twice in every file: ``PRAGMA user_version``
#: (the database header: readable whatever the tables look like) and the meta row.
#:
#: The rule: bump it with EVERY change to :data:`DDL` (a column, an index, a trigger, even
#: whitespace: the check compares the stored ``CREATE`` statements) or to what the stored
#: values mean, and never reuse a number. At open, a file of ours with another version,
#: or whose tables differ from what its version says, is moved aside and replaced (see
#: ``_sqlite_file.check_layout``); list an old version in :data:`STAMPED_IN_PLACE` only
#: when its file is this layout exactly, with the same meaning.
#:
#: History: 1, the first layout (version in the meta row only); 2, ``smartcache_meta``
#: gained ``quiet`` and the triggers a ``WHEN`` (later reverted); 3, the layout of 1
#: again, now also in ``user_version`` and marked with :data:`APPLICATION_ID`.
SCHEMA_VERSION = 3

#: Older versions whose files are :data:`DDL` exactly: opened in place, the version
#: numbers rewritten (a cheap, safe migration: no row is read or changed).
STAMPED_IN_PLACE = frozenset({1})

#: ``PRAGMA application_id`` of a SQLiteCache file (ASCII "SmCa"): what tells our file
#: from someone else's database without reading its tables.
APPLICATION_ID = 0x536D4361

#: Every table, index and trigger of ours starts with this; a file with any other
#: table is someone else's database, never modified or moved.
NAME_PREFIX = "smartcache_"

#: ``WITHOUT ROWID``: a lookup by key is one B-tree descent, not index-then-table.
#: ``value`` has BLOB affinity, so Python ints are stored as SQLite integers (atomic ``incr``)
#: and everything else as pickle bytes. ``expires`` is a Unix time, NULL for "never".
DDL = f"""
CREATE TABLE IF NOT EXISTS smartcache_entry (
    key TEXT PRIMARY KEY NOT NULL,
    value BLOB NOT NULL,
    expires REAL,
    accessed REAL NOT NULL,
    size INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS smartcache_entry_expires
    ON smartcache_entry (expires) WHERE expires IS NOT NULL;
CREATE INDEX IF NOT EXISTS smartcache_entry_accessed ON smartcache_entry (accessed);
CREATE TABLE IF NOT EXISTS smartcache_meta (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    schema INTEGER NOT NULL,
    size INTEGER NOT NULL,
    count INTEGER NOT NULL,
    log_floor INTEGER NOT NULL
);
INSERT OR IGNORE INTO smartcache_meta VALUES (0, {SCHEMA_VERSION}, 0, 0, 0);
CREATE TABLE IF NOT EXISTS smartcache_change (
    seq INTEGER PRIMARY KEY,
    key TEXT
);
CREATE TRIGGER IF NOT EXISTS smartcache_entry_inserted AFTER INSERT ON smartcache_entry
BEGIN
    UPDATE smartcache_meta SET size = size + NEW.size, count = count + 1 WHERE id = 0;
    INSERT INTO smartcache_change (key) VALUES (NEW.key);
END;
CREATE TRIGGER IF NOT EXISTS smartcache_entry_deleted AFTER DELETE ON smartcache_entry
BEGIN
    UPDATE smartcache_meta SET size = size - OLD.size, count = count - 1 WHERE id = 0;
    INSERT INTO smartcache_change (key) VALUES (OLD.key);
END;
CREATE TRIGGER IF NOT EXISTS smartcache_entry_updated
AFTER UPDATE OF value, expires, size ON smartcache_entry
BEGIN
    UPDATE smartcache_meta SET size = size + NEW.size - OLD.size WHERE id = 0;
    INSERT INTO smartcache_change (key) VALUES (NEW.key);
END;
"""

#: Tables a usable file must hold (a file with other tables only is not ours: rebuilt).
TABLES = frozenset({"smartcache_entry", "smartcache_meta", "smartcache_change"})

GET = "SELECT value, expires, accessed FROM smartcache_entry WHERE key = ?"
#: A live entry's value, and whether its ``accessed`` is older than the first parameter
#: (expiry is filtered in SQL: no floats cross into Python on the read path).
GET_LIVE = (
    "SELECT value, accessed < ? FROM smartcache_entry"
    " WHERE key = ? AND (expires IS NULL OR expires > ?)"
)
GET_MANY_LIVE = (
    "SELECT key, value, accessed < ? FROM smartcache_entry"
    " WHERE key IN {} AND (expires IS NULL OR expires > ?)"
)
#: ``get_many`` in one statement and one parameter (a JSON array of the keys): one row
#: per key, in the array's order (``json_each`` is the outer loop of the LEFT JOIN),
#: with one column and no key to decode: CPython's sqlite3 pays per row and per column.
#: The column is the value of a live entry whose ``accessed`` is at least the first
#: parameter, or NULL for a miss. An entry whose ``accessed`` is older (due a refresh,
#: once per ``ACCESS_INTERVAL``) comes back marked: a pickle as ``b"\x00" + pickle`` (no pickle
#: starts with a zero byte: it is not an opcode), an int as its decimal text (a ``str``).
#: Needs SQLite's JSON functions (built in since 3.38); :data:`GET_MANY_LIVE` otherwise.
GET_MANY_JSON = (
    "SELECT CASE WHEN e.accessed >= ? THEN e.value"
    " WHEN typeof(e.value) = 'blob' THEN CAST(x'00' || e.value AS BLOB)"
    " WHEN typeof(e.value) = 'integer' THEN CAST(e.value AS TEXT)"
    " ELSE e.value END"
    " FROM json_each(?) j LEFT JOIN smartcache_entry e"
    " ON e.key = j.value AND (e.expires IS NULL OR e.expires > ?)"
)
#: Whether a connection has ``json_each`` (SQLite compiled without JSON has not).
HAS_JSON = "SELECT count(*) FROM json_each('[]')"
#: A live entry's expiry (NULL: never), for ``ttl``/``ttl_many``.
TTL_MANY = (
    "SELECT key, expires FROM smartcache_entry"
    " WHERE key IN {} AND (expires IS NULL OR expires > ?)"
)
HAS_KEY = (
    "SELECT 1 FROM smartcache_entry WHERE key = ? AND (expires IS NULL OR expires > ?)"
)
_UPSERT = (
    " ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires = excluded.expires,"
    " accessed = excluded.accessed, size = excluded.size"
)
SET = (
    "INSERT INTO smartcache_entry (key, value, expires, accessed, size)"
    " VALUES (?, ?, ?, ?, ?)" + _UPSERT
)
#: Stores only when the key is absent or expired (at the 6th parameter, the wall clock:
#: ``accessed`` may be ahead of it, see ``_stamp``): ``rowcount`` says whether it stored.
ADD = SET + " WHERE smartcache_entry.expires <= ?"
DELETE = "DELETE FROM smartcache_entry WHERE key = ?"
#: A stale tagged envelope, only if the key still holds it (its write id is in the blob).
DELETE_IF_HOLDS = (
    "DELETE FROM smartcache_entry"
    " WHERE key = ? AND typeof(value) = 'blob' AND instr(value, ?) > 0"
)
#: An unreadable value, only if the key still holds exactly it.
DELETE_IF_VALUE = "DELETE FROM smartcache_entry WHERE key = ? AND value = ?"
DELETE_LIVE = (
    "DELETE FROM smartcache_entry WHERE key = ? AND (expires IS NULL OR expires > ?)"
)
DELETE_EXPIRED_ONE = "DELETE FROM smartcache_entry WHERE key = ? AND expires <= ?"
#: A touch is a use: ``accessed`` moves forward too (LRU eviction). Named parameters.
TOUCH = (
    "UPDATE smartcache_entry SET expires = :expires, accessed = max(accessed, :stamp)"
    " WHERE key = :key AND (expires IS NULL OR expires > :now)"
)
#: One statement, atomic across processes; refuses (no row) when the sum would leave the
#: 64-bit range, where SQLite would silently turn it into a float. An increment is a
#: use: ``accessed`` moves forward (a counter bumped on every request would otherwise
#: be as old as its first ``set`` for LRU eviction, and evicted first).
#: Named parameters (a dict): numbered ones (``?1``) with a sequence warn on Python 3.12
#: and 3.13 and fail from 3.14.
INCR = (
    "UPDATE smartcache_entry SET value = value + :delta,"
    " accessed = max(accessed, :stamp) WHERE key = :key"
    " AND (expires IS NULL OR expires > :now) AND typeof(value) = 'integer'"
    " AND (:delta <= 0 OR value <= 9223372036854775807 - :delta)"
    " AND (:delta >= 0 OR value >= -9223372036854775808 - :delta)"
    " RETURNING value"
)
#: Parameters ``(time, key, time)``.
REFRESH_ACCESS = (
    "UPDATE smartcache_entry SET accessed = ? WHERE key = ? AND accessed < ?"
)
TOTALS = "SELECT size, count FROM smartcache_meta WHERE id = 0"
#: The newest ``accessed`` up to the parameter (one descent of its index): what a
#: process's stamps are raised to (``BaseSQLiteCache._mark``); a stray row beyond the
#: parameter (a day ahead of the clock) does not hide the newest of the others.
NEWEST_ACCESS = (
    "SELECT accessed FROM smartcache_entry INDEXED BY smartcache_entry_accessed"
    " WHERE accessed <= ? ORDER BY accessed DESC LIMIT 1"
)
#: The oldest ``accessed`` (one descent of its index) and the totals.
OLDEST_ACCESS_AND_TOTALS = (
    "SELECT (SELECT min(accessed) FROM smartcache_entry), size, count"
    " FROM smartcache_meta WHERE id = 0"
)
EXPIRED_VICTIMS = (
    "SELECT key, size FROM smartcache_entry INDEXED BY smartcache_entry_expires"
    " WHERE expires <= ? ORDER BY expires LIMIT ?"
)
LRU_VICTIMS = (
    "SELECT key, size FROM smartcache_entry INDEXED BY smartcache_entry_accessed"
    " ORDER BY accessed LIMIT ?"
)
PURGE_EXPIRED = (
    "DELETE FROM smartcache_entry INDEXED BY smartcache_entry_expires"
    " WHERE expires <= ?"
)
PURGE_EXPIRED_SOME = (
    "DELETE FROM smartcache_entry WHERE key IN"
    " (SELECT key FROM smartcache_entry INDEXED BY smartcache_entry_expires"
    " WHERE expires <= ? ORDER BY expires LIMIT ?)"
)

# -- pattern deletion ------------------------------------------------------------------
#: Rows whose key lies in ``[:low, :high)`` (the pattern's literal prefix: a range on
#: the primary key) and whose caller's part (from character ``:start`` on) matches
#: ``:pattern``. ``{op}`` is ``GLOB`` or ``REGEXP`` (the latter registered on every
#: connection). Parameters are a dict.
#: SQLite's text functions (``substr``, ``GLOB``, ``length``) stop at a key's first NUL
#: character, so keys holding one are left to :data:`DELETE_PATTERN_NUL`.
_NO_NUL = " AND instr(CAST(key AS BLOB), x'00') = 0"
DELETE_PATTERN = (
    "DELETE FROM smartcache_entry WHERE key >= :low AND key < :high"
    + _NO_NUL
    + " AND substr(key, :start) {op} :pattern RETURNING key, expires"
)
#: The same without an upper bound (a prefix of U+10FFFF characters has none).
DELETE_PATTERN_OPEN = (
    "DELETE FROM smartcache_entry WHERE key >= :low"
    + _NO_NUL
    + " AND substr(key, :start) {op} :pattern RETURNING key, expires"
)
#: The keys of the range holding a NUL, matched in Python on the whole key
#: (``smartcache_tail_regexp``: ``:tail`` searched from character ``:start`` on).
DELETE_PATTERN_NUL = (
    "DELETE FROM smartcache_entry WHERE key >= :low AND key < :high"
    " AND instr(CAST(key AS BLOB), x'00') > 0"
    " AND smartcache_tail_regexp(:tail, :start, key) RETURNING key, expires"
)
DELETE_PATTERN_NUL_OPEN = (
    "DELETE FROM smartcache_entry WHERE key >= :low"
    " AND instr(CAST(key AS BLOB), x'00') > 0"
    " AND smartcache_tail_regexp(:tail, :start, key) RETURNING key, expires"
)

#: The keys a regex pattern matches, read first (no write lock: ``_delete_key_pattern``),
#: then deleted by key.
SELECT_PATTERN = DELETE_PATTERN.replace("DELETE FROM", "SELECT key FROM").replace(
    " RETURNING key, expires", ""
)
SELECT_PATTERN_OPEN = DELETE_PATTERN_OPEN.replace(
    "DELETE FROM", "SELECT key FROM"
).replace(" RETURNING key, expires", "")
SELECT_PATTERN_NUL = DELETE_PATTERN_NUL.replace(
    "DELETE FROM", "SELECT key FROM"
).replace(" RETURNING key, expires", "")
SELECT_PATTERN_NUL_OPEN = DELETE_PATTERN_NUL_OPEN.replace(
    "DELETE FROM", "SELECT key FROM"
).replace(" RETURNING key, expires", "")
DELETE_KEYS_RETURNING = (
    "DELETE FROM smartcache_entry WHERE key IN {} RETURNING key, expires"
)

LOG_HEAD = "SELECT max(seq) FROM smartcache_change"
LOG_FLOOR = "SELECT log_floor FROM smartcache_meta WHERE id = 0"
LOG_SINCE = "SELECT seq, key FROM smartcache_change WHERE seq > ? ORDER BY seq"
LOG_MARK_CLEAR = "INSERT INTO smartcache_change (key) VALUES (NULL)"
LOG_PRUNE = "DELETE FROM smartcache_change WHERE seq <= ?"
LOG_RAISE_FLOOR = (
    "UPDATE smartcache_meta SET log_floor = max(log_floor, ?) WHERE id = 0"
)


#: Rows per multi-row upsert (5 parameters each: within SQLite's historical 999).
SET_ROWS_PER_STATEMENT = 100


def set_rows(count: int) -> str:
    """:data:`SET` for ``count`` rows in one statement (parameters flattened, row-major).

    One statement instead of ``executemany``: measured a third cheaper for 100 rows
    (the per-row reset/bind/step round trips of ``executemany`` are most of its cost).
    A key given twice is inserted then updated: the later row wins, as sequential sets.
    """
    return (
        "INSERT INTO smartcache_entry (key, value, expires, accessed, size) VALUES "
        + ",".join(["(?,?,?,?,?)"] * count)
        + _UPSERT
    )


def in_clause(count: int) -> str:
    """``(?, ?, ...)`` for ``count`` parameters."""
    return "(" + ",".join("?" * count) + ")"


def glob_operand(pattern: str) -> str | None:
    """Our glob (``core.patterns``) in SQLite's ``GLOB`` syntax, or ``None`` if it has none.

    SQLite's glob has no escape character: a literal ``*``, ``?`` or ``[`` becomes a
    one-character class. A class holding ``]``, ``^``, ``-`` or ``\\`` literally is
    left to the regex path rather than spelled in SQLite's positional rules, and so is
    a pattern holding a NUL (SQLite's ``GLOB`` would end the pattern there).
    """
    if "\x00" in pattern:
        return None
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        i += 1
        if ch in "*?":
            out.append(ch)
        elif ch == "\\" and i < n:
            ch = pattern[i]
            i += 1
            out.append(f"[{ch}]" if ch in "*?[" else ch)
        elif ch == "[":
            start = i + 1 if pattern[i : i + 1] in ("!", "^") else i
            if pattern[start : start + 1] == "]":
                return None  # "]" as the first member
            close = pattern.find("]", start)
            if close < 0:  # no closing bracket: a literal "["
                out.append("[[]")
                continue
            body = pattern[start:close]
            if any(c in body for c in "\\^") or body[0] == "-" or body[-1] == "-":
                return None
            out.append(("[^" if start > i else "[") + body + "]")
            i = close + 1
        elif ch == "\\":
            out.append("\\")  # a trailing backslash is literal
        else:
            out.append(ch)
    return "".join(out)
