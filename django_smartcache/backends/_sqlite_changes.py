"""The change log of a SQLiteCache file, read by MultiLevelCache for coherence.

Triggers append every changed key to ``smartcache_change`` in the writing transaction;
a reader keeps a cursor (the last sequence number it saw) and asks what changed since.
"""

from __future__ import annotations

from typing import Self

from . import _sqlite_schema as sql
from ._sqlite_connection import FileId, gated

#: Beyond this many changes, ``changes_since`` tells the caller to drop everything.
_CHANGES_LIMIT = 10_000


class ChangeCursor(int):
    """A change-log sequence number that remembers the file it was read from.

    An ``int`` (arithmetic and comparisons as before); ``file`` is the identity of the
    file whose log it counts, so :meth:`BaseSQLiteCache.changes_since` can tell a cursor
    of a file that was since replaced (another log, other sequence numbers) and answer
    "drop everything" instead of comparing numbers of two different logs.
    """

    file: FileId | None

    def __new__(cls, seq: int, file: FileId | None) -> Self:
        cursor = super().__new__(cls, seq)
        cursor.file = file
        return cursor

    def __repr__(self) -> str:
        return f"ChangeCursor({int(self)}, file={self.file})"


class ChangeLogMixin:
    """``change_cursor`` and ``changes_since`` over the file's change log.

    Needs ``ConnectionMixin``'s ``_state`` and ``_reconnect``.
    """

    @gated
    def change_cursor(self) -> ChangeCursor:
        """The sequence number of the newest change; pass it to :meth:`changes_since`.

        An ``int`` that also names the file it counts in (:class:`ChangeCursor`).
        """
        state = self._state
        conn = self._reconnect(state, force_check=True)
        (version,) = conn.execute("PRAGMA data_version").fetchone()
        (head,) = conn.execute(sql.LOG_HEAD).fetchone()
        if head is None:
            (head,) = conn.execute(sql.LOG_FLOOR).fetchone()
        # As a changes_since answer ending at ``head``: see its own-changes rule.
        state.seen = (version, conn.total_changes, int(head))
        return ChangeCursor(int(head), state.file)

    @gated
    def changes_since(
        self, cursor: int, *, skip_own: bool = False
    ) -> tuple[ChangeCursor, list[str] | None]:
        """The new cursor and the DB keys changed after ``cursor``.

        ``None`` instead of the list means "drop everything": a ``clear()`` happened, the
        log was pruned past ``cursor``, more than 10,000 keys changed, or ``cursor``
        counts in another file's log: LOCATION was replaced since (a
        :class:`ChangeCursor` of another file, or a number above this log's head).
        Checks first that LOCATION still names this thread's file (one ``os.stat``).
        When no other connection committed since this thread's last call, answering
        costs that and one ``PRAGMA data_version``. ``skip_own``: the caller made
        every write of this thread's connection itself (MultiLevelCache: its L1 has
        them), so when only this connection committed since its last answer, the
        answer is the new head and nothing to drop.
        """
        state = self._state
        conn = self._reconnect(state, force_check=True)
        file = state.file
        other_file = getattr(cursor, "file", file) != file
        (version,) = conn.execute("PRAGMA data_version").fetchone()
        mark = (version, conn.total_changes, cursor)
        seen = state.seen
        if seen == mark and not other_file:
            return ChangeCursor(cursor, file), []
        if (
            skip_own
            and seen is not None
            and seen[0] == version
            and seen[2] == cursor
            and not other_file
        ):
            # No other connection committed since this one's last answer, which ended
            # at ``cursor``: every change after it is this connection's own, made
            # through the caller (whose L1 has them). Nothing to drop: the new head.
            (last,) = conn.execute(sql.LOG_HEAD).fetchone()
            head = max(int(last or 0), int(cursor))
            state.seen = (version, conn.total_changes, head)
            return ChangeCursor(head, file), []
        conn.execute("BEGIN")  # one snapshot for the floor, the head and the rows
        try:
            (floor,) = conn.execute(sql.LOG_FLOOR).fetchone()
            rows = (
                []
                if other_file
                else conn.execute(
                    sql.LOG_SINCE + " LIMIT ?", (cursor, _CHANGES_LIMIT + 1)
                ).fetchall()
            )
            keys: list[str] | None
            if rows and len(rows) <= _CHANGES_LIMIT and cursor >= floor:
                head = rows[-1][0]
                keys = []
                for _, key in rows:
                    if key is None:
                        keys = None
                        break
                    keys.append(key)
            else:
                (last,) = conn.execute(sql.LOG_HEAD).fetchone()
                head = max(int(last or 0), floor)
                # Nothing new, and the cursor is this file's: nothing to drop. A cursor
                # above the head counts in the log of a file since replaced.
                same = not other_file and not rows and floor <= cursor <= head
                keys = [] if same else None
                if same:
                    head = int(cursor)
        finally:
            conn.execute("COMMIT")
        if keys:
            keys = list(dict.fromkeys(keys))
        state.seen = (version, conn.total_changes, head)
        return ChangeCursor(head, file), keys
