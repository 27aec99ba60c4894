"""The byte and entry budget of a SQLiteCache file, and its periodic maintenance.

Both run inside the write transaction that may have grown the file, so the budget holds
at every commit: culling deletes expired rows first, then the least recently accessed.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Set as AbstractSet

from . import _sqlite_schema as sql
from ._sqlite_connection import gated

#: Rows inspected per eviction batch.
_VICTIM_BATCH = 64
#: Writes between two maintenance passes (log pruning, bounded purge of expired rows).
_MAINTENANCE_EVERY = 512
#: Expired rows deleted per maintenance pass (bounded so no write pays for a big purge).
_PURGE_BATCH = 256


class BudgetMixin:
    """``_housekeep`` after each write; ``clear_expired`` on demand."""

    def _housekeep(
        self,
        conn: sqlite3.Connection,
        now: float,
        protected: AbstractSet[str],
        writes: int,
    ) -> None:
        if self._state.pending:
            self._flush_access(conn)
        size, count = conn.execute(sql.TOTALS).fetchone()
        if size > self._max_size or (
            self._max_entries is not None and count > self._max_entries
        ):
            self._cull(conn, now, size, count, protected)
        with self._maintenance_lock:
            self._writes += writes
            due = self._writes >= _MAINTENANCE_EVERY
            if due:
                self._writes = 0
        if due:
            self._maintain(conn, now)

    def _cull(
        self,
        conn: sqlite3.Connection,
        now: float,
        size: int,
        count: int,
        protected: AbstractSet[str],
    ) -> None:
        """Delete expired entries, then the least recently used, until within budget."""
        if self._turnover[1] is None:
            # Full after all: the next read looks again.
            self._turnover = (0.0, None, self._turnover[2])
        excess_bytes = size - self._max_size
        excess_entries = 0
        max_entries = self._max_entries
        if max_entries is not None and count > max_entries:
            # Django's MAX_ENTRIES semantics: drop 1/CULL_FREQUENCY of the entries (0: all).
            if self._cull_frequency == 0:
                excess_entries = count
            else:
                excess_entries = max(
                    count - max_entries, (count - 1) // self._cull_frequency
                )
        limit = _VICTIM_BATCH + len(protected)
        target_entries = excess_entries
        for query, params in (
            (sql.EXPIRED_VICTIMS, (now, limit)),
            (sql.LRU_VICTIMS, (limit,)),
        ):
            excess_bytes, excess_entries = _delete_victims(
                conn, query, params, excess_bytes, excess_entries, protected
            )
        # Only the keys just written are left and still over the budget: a batch that
        # alone exceeds it loses its least recently used keys too, down to the budget
        # itself (as a loop of set() would, each culling before the next), so no
        # transaction ends above it. ``excess_bytes`` is that excess already; the
        # entries are counted against MAX_ENTRIES itself, not the cull's target, and
        # the last key written stays whatever MAX_ENTRIES says, as in Django (a set
        # culls, then stores; test_cull_delete_when_store_empty sets it to -1).
        left = count - (target_entries - excess_entries)
        over_entries = left - max(max_entries, 1) if max_entries is not None else 0
        _delete_victims(
            conn,
            sql.LRU_VICTIMS,
            (_VICTIM_BATCH,),
            excess_bytes,
            over_entries,
            frozenset(),
        )

    def _maintain(self, conn: sqlite3.Connection, now: float) -> None:
        """Bounded purge of expired rows, and pruning of the change log."""
        conn.execute(sql.PURGE_EXPIRED_SOME, (now, _PURGE_BATCH))
        (head,) = conn.execute(sql.LOG_HEAD).fetchone()
        if head is None:
            return
        with self._maintenance_lock:
            checkpoints = self._checkpoints
            checkpoints.append((now, head))
            cut = 0
            horizon = now - self._options.log_retention
            while checkpoints and checkpoints[0][0] <= horizon:
                cut = checkpoints.popleft()[1]
        cut = max(cut, head - self._options.log_max_rows)
        cut = min(cut, head - 1)  # the newest row stays: sequence numbers never go back
        if cut > 0:
            conn.execute(sql.LOG_PRUNE, (cut,))
            conn.execute(sql.LOG_RAISE_FLOOR, (cut,))

    @gated
    def clear_expired(self) -> int:
        """Delete every expired entry now (through the ``expires`` index); return how many.

        The name is SmartCache's: one call purges either backend."""
        return self._write(self._autocommit_count, sql.PURGE_EXPIRED, (self._clock(),))


def _delete_victims(
    conn: sqlite3.Connection,
    query: str,
    params: tuple[object, ...],
    excess_bytes: int,
    excess_entries: int,
    protected: AbstractSet[str],
) -> tuple[int, int]:
    """Delete the rows ``query`` lists (``key, size``, in eviction order), skipping
    ``protected``, until neither excess is positive or none is left; the excesses left."""
    while excess_bytes > 0 or excess_entries > 0:
        victims = []
        for key, victim_size in conn.execute(query, params).fetchall():
            if key in protected:
                continue
            victims.append((key,))
            excess_bytes -= victim_size
            excess_entries -= 1
            if excess_bytes <= 0 and excess_entries <= 0:
                break
        if not victims:
            break
        conn.executemany(sql.DELETE, victims)
    return excess_bytes, excess_entries
