"""Invalidate on the write statements Django executes, whichever API sent them.

An ``execute_wrapper`` (public API: ``connection.execute_wrappers``) on every
connection sees ``QuerySet.update()``/``delete()``, ``bulk_create()``,
``bulk_update()`` and raw SQL sent through Django's connection, none of which send
model signals. After a write statement succeeds, its table is mapped to models
(``registry.tables()``) and their tags invalidated:

- rows are known when the statement ends in ``WHERE <pk> = %s`` or
  ``WHERE <pk> IN (%s, ...)`` (``Model.save()``, deletions by the collector,
  ``bulk_update()``, ``filter(pk__in=...).update()``), or inserts name the pk
  (or, in a many-to-many table, both sides) in their column list and give each
  column one ``%s``: those row tags;
  an ``UPDATE`` that also sets that column moves rows to a new key: the new key's
  rows too if it is a bare ``%s``, else all rows;
- an ``INSERT`` without the pk creates rows nobody else could have cached: the
  model tag; inside a transaction, the all-rows tag is also held dirty for this
  thread until it ends (``_transactions.hold_tags``), unless it was a ``save()``'s,
  whose ``post_save`` names the new row: that releases the hold;
- anything else (another ``WHERE``, ``TRUNCATE``, ``REPLACE``/``INSERT OR REPLACE``/
  ``UPDATE OR REPLACE``,
  upserts, ``MERGE``, ``WITH``: every table it writes, in its CTEs too):
  the model tag and every row tag (``model:<label>#*``);
- a statement not read as one table (MySQL's ``DELETE t FROM t JOIN u``, ``UPDATE a
  JOIN b ... SET``, ``UPDATE a, b``, ``DELETE ... USING``, an ``UPDATE ... SET ... FROM``,
  Oracle's ``INSERT ALL``): all rows of every name in it that is a table;
- schema changes that may rewrite or remove rows (``ALTER TABLE``, with the table a
  ``RENAME TO`` names: SQLite's rebuild of a table ends with one; ``DROP TABLE``):
  the same, for each table named.

The hot path for reads is a prefix check on the first characters of the SQL;
leading whitespace and comments are skipped before the verb.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.apps import apps
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.db import connections
from django.db.backends.signals import connection_created
from django.db.models import Model
from django.dispatch import receiver

from . import conf, registry
from ._tag_caches import invalidate_after_schema_change, invalidate_tags
from ._transactions import Holds, hold_tags, in_transaction, release_tags
from .core.tags import InvalidTag
from .registry import family, model_tag, rows_tag

__all__ = ["Write", "install", "parse", "uninstall"]

logger = logging.getLogger("django_smartcache.sqlwatch")

_WRITE_HEADS = (
    "INSERT",
    "UPDATE",
    "DELETE",
    "REPLACE",
    "TRUNCATE",
    "WITH",
    "MERGE",
    "ALTER",
    "DROP",
)
#: Schema statements read as writes of all rows of their table's models.
_SCHEMA_VERBS = frozenset({"ALTER", "DROP"})
#: What may come before a statement's verb: whitespace, empty statements (``;``), a
#: byte order mark (a ``.sql`` file saved as "UTF-8 with BOM"), then a block or line
#: comment (MySQL's ``#`` too; an unclosed ``/*`` is left alone). SQLite runs
#: ``";UPDATE ..."`` and ``"\ufeffUPDATE ..."``: unskipped, they would not be watched.
_LEAD = re.compile(r"[\s;\ufeff]*(?:/\*.*?\*/|--[^\n]*|#[^\n]*)?", re.DOTALL)
#: SQLite's names for a rowid table's key (its INTEGER PRIMARY KEY when it has one):
#: a SET of one may move the row to another pk, which the statement does not name.
_ROWID_ALIASES = frozenset({"rowid", "_rowid_", "oid"})

_IDENT = r'(?:"(?:[^"]|"")+"|`[^`]+`|\[[^\]]+\]|[\w$]+)'
_NAME = rf"{_IDENT}(?:\s*\.\s*{_IDENT})?"
_VERB = re.compile(
    r"\b(?:"
    rf"(?P<insert>INSERT(?!\s+(?:ALL|FIRST)\s)(?:\s+OR\s+\w+)?(?:\s+(?:LOW_PRIORITY|DELAYED|HIGH_PRIORITY))?"
    rf"(?:\s+IGNORE)?(?:\s+INTO)?)\s+(?P<insert_t>{_NAME})"
    rf"|(?P<replace>REPLACE(?:\s+(?:LOW_PRIORITY|DELAYED))?(?:\s+INTO)?)\s+(?P<replace_t>{_NAME})"
    rf"|(?P<update>UPDATE(?:\s+OR\s+\w+)?(?:\s+(?:LOW_PRIORITY|IGNORE)\b)*(?:\s+ONLY)?)"
    rf"\s+(?P<update_t>{_NAME})"
    rf"|(?P<delete>DELETE(?:\s+(?:LOW_PRIORITY|QUICK|IGNORE)\b)*\s+FROM(?:\s+ONLY)?)"
    rf"\s+(?P<delete_t>{_NAME})"
    rf"|(?P<truncate>TRUNCATE(?:\s+TABLE)?(?:\s+ONLY)?)\s+(?P<truncate_t>{_NAME}(?:\s*,\s*{_NAME})*)"
    rf"|(?P<merge>MERGE(?:\s+INTO)?)\s+(?P<merge_t>{_NAME})"
    r")",
    re.IGNORECASE,
)
#: Verbs that may delete rows, so that the database's own ``ON DELETE`` actions run.
#: (SQLite's ``DROP TABLE`` deletes the rows first, foreign key actions included.)
_DELETING_VERBS = frozenset({"DELETE", "TRUNCATE", "REPLACE", "MERGE", "DROP"})
#: Schema changes that may rewrite or remove a table's rows: ``ALTER TABLE`` (a
#: PostgreSQL ``ALTER COLUMN ... TYPE ... USING``; the ``RENAME TO`` that ends
#: SQLite's rebuild of a table through ``"new__<table>"``) and ``DROP TABLE``.
_SCHEMA = re.compile(
    rf"(?:ALTER\s+TABLE(?:\s+IF\s+EXISTS)?(?:\s+ONLY)?\s+(?P<alter>{_NAME})"
    rf"|DROP\s+TABLE(?:\s+IF\s+EXISTS)?\s+(?P<drop>{_NAME}(?:\s*,\s*{_NAME})*))",
    re.IGNORECASE,
)
_RENAME_TO = re.compile(rf"\bRENAME\s+TO\s+({_NAME})", re.IGNORECASE)
_KINDS = ("insert", "replace", "update", "delete", "truncate", "merge")
#: What may follow the table of a one-table ``UPDATE``: an alias, then ``SET``.
#: Anything else (MySQL's ``UPDATE a JOIN b ... SET`` or ``UPDATE a, b SET``) may
#: write another table.
_ONE_UPDATE = re.compile(rf"\s+(?:(?:AS\s+)?(?!SET\b){_IDENT}\s+)?SET\b", re.IGNORECASE)
#: An ``UPDATE ... SET ... FROM u`` (PostgreSQL, SQLite) writes the table after
#: ``UPDATE``, but in SQL Server that may be an alias the ``FROM`` declares.
_FROM = re.compile(r"(?<![\w$])FROM(?![\w$])", re.IGNORECASE)
#: String literals and ``"quoted"`` names (``_unbalanced``'s), and MySQL's and SQL
#: Server's quoted names (a column named ``"from"``, ``'x FROM y'``): blanked before
#: looking for a ``FROM`` clause.
_LITERAL = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"")
_QUOTED_OR_LITERAL = re.compile(rf"{_LITERAL.pattern}|`[^`]*`|\[[^\]]*\]")
#: What may follow the table of a one-table ``DELETE FROM``: an alias, then the end,
#: ``WHERE``, ``RETURNING``, ``ORDER BY``, ``LIMIT``. Anything else (MySQL's
#: ``DELETE FROM a, b USING ...``, and ``USING`` itself: in MySQL the table before it
#: may be an alias it declares) may write another table.
_ONE_DELETE = re.compile(
    rf"(?:\s+(?:AS\s+)?(?!(?:WHERE|RETURNING|ORDER|LIMIT|USING)\b){_IDENT})?"
    r"\s*(?:$|[;)]|(?:WHERE|RETURNING|ORDER|LIMIT)\b)",
    re.IGNORECASE,
)
#: A statement that starts with a write verb. Not read as one table (MySQL's
#: ``DELETE t FROM t JOIN u ...``, Oracle's ``INSERT ALL INTO a ... INTO b``): it
#: writes every table it names, as far as is known.
_HEAD = re.compile(r"(?:INSERT|UPDATE|DELETE|REPLACE|MERGE|TRUNCATE)\b", re.IGNORECASE)
#: The verb of a statement inside a ``WITH``: a CTE's (after its ``(``) or the main
#: statement's (after the last CTE's ``)``). Not ``ON CONFLICT DO UPDATE``, ``FOR
#: UPDATE``, ``THEN DELETE``, nor the ``REPLACE()`` function.
_STATEMENT_VERB = re.compile(
    r"[()]\s*(INSERT|UPDATE|DELETE|MERGE|REPLACE(?!\s*\())\b", re.IGNORECASE
)
#: Every name in a statement: its words, and its quoted names (a quote inside a
#: literal may pair them wrongly; the words are there all the same).
_WORD = re.compile(r"(?<!%)[\w$]+")  # not the s of %s
_QUOTED = re.compile(r'"(?:[^"]|"")+"|`[^`]+`|\[[^\]]+\]')
_PK_TAIL = re.compile(
    rf"\bWHERE\s+\(?\s*(?:({_IDENT})\s*\.\s*)?({_IDENT})\s*"
    r"(?:=\s*%s|IN\s*\(\s*(%s(?:\s*,\s*%s)*)\s*\))\s*\)?\s*$",
    re.IGNORECASE,
)
_CONDITION = rf"(?:{_IDENT}\s*\.\s*)?{_IDENT}\s*=\s*%s"
_CONJUNCTION = rf"{_CONDITION}(?:\s+AND\s+{_CONDITION})+"
#: What Django writes for a ``CompositePrimaryKey``: ``WHERE (a = %s AND b = %s)``,
#: and for several rows ``WHERE ((a = %s AND b = %s) OR (a = %s AND b = %s))``.
_COMPOSITE_TAIL = re.compile(
    rf"\bWHERE\s+\(\s*(?:{_CONJUNCTION}|\(\s*{_CONJUNCTION}\s*\)"
    rf"(?:\s+OR\s+\(\s*{_CONJUNCTION}\s*\))*)\s*\)\s*$",
    re.IGNORECASE,
)
_TERM = (
    rf"(?:{_IDENT}\s*\.\s*)?{_IDENT}\s*"
    r"(?:=\s*%s|IN\s*\(\s*%s(?:\s*,\s*%s)*\s*\))"
)
#: ``WHERE (a = %s AND b IN (%s, ...))``: conditions on several columns, ``AND``-ed.
_AND_TAIL = re.compile(
    rf"\bWHERE\s+\(\s*{_TERM}(?:\s+AND\s+{_TERM})+\s*\)\s*$", re.IGNORECASE
)
_TERM_PARTS = re.compile(
    rf"(?:({_IDENT})\s*\.\s*)?({_IDENT})\s*"
    r"(?:=\s*%s|IN\s*\(\s*(%s(?:\s*,\s*%s)*)\s*\))",
    re.IGNORECASE,
)
_COLUMN_REF = rf"(?:{_IDENT}\s*\.\s*)?{_IDENT}"
_TUPLE_OF_PARAMS = r"\(\s*%s(?:\s*,\s*%s)*\s*\)"
#: The same as Django 6 writes it on backends with tuple comparisons (SQLite among
#: them): ``WHERE (a, b) = (%s, %s)``, several rows ``WHERE (a, b) IN ((%s, %s), ...)``.
_TUPLE_TAIL = re.compile(
    rf"\bWHERE\s+\(\s*({_COLUMN_REF}(?:\s*,\s*{_COLUMN_REF})+)\s*\)\s*"
    rf"(?:=\s*{_TUPLE_OF_PARAMS}"
    rf"|IN\s*\(\s*{_TUPLE_OF_PARAMS}(?:\s*,\s*{_TUPLE_OF_PARAMS})*\s*\))\s*$",
    re.IGNORECASE,
)
_COLUMN_PARTS = re.compile(rf"(?:({_IDENT})\s*\.\s*)?({_IDENT})")
_CONDITION_PARTS = re.compile(
    rf"(?:({_IDENT})\s*\.\s*)?({_IDENT})\s*=\s*%s", re.IGNORECASE
)
_INSERT_COLUMNS = re.compile(
    rf"^\s*\(\s*({_IDENT}(?:\s*,\s*{_IDENT})*)\s*\)\s*VALUES\b", re.IGNORECASE
)
_VALUE_TUPLE = r"\(\s*%s(?:\s*,\s*%s)*\s*\)"
_VALUES = re.compile(
    rf"\s*{_VALUE_TUPLE}(?:\s*,\s*{_VALUE_TUPLE})*\s*(?=;?\s*$|RETURNING\b|ON\s+CONFLICT\b)",
    re.IGNORECASE,
)
_UPSERT = re.compile(
    r"\bON\s+CONFLICT\b.*\bDO\s+UPDATE\b|\bON\s+DUPLICATE\s+KEY\b",
    re.IGNORECASE | re.DOTALL,
)
_OR_REPLACE = re.compile(r"\bOR\s+REPLACE\b", re.IGNORECASE)
_COMMENT = re.compile(r"/\*.*?\*/|--[^\n]*", re.DOTALL)
_SET = re.compile(r"\bSET\b", re.IGNORECASE)
_ASSIGNMENT = re.compile(
    rf"\s*(?:{_IDENT}\s*\.\s*)?({_IDENT})\s*=\s*(.*?)\s*$", re.DOTALL
)
_PLACEHOLDER = re.compile(r"%[%s]")


def _unquote(ident: str) -> str:
    ident = ident.strip()
    if ident[:1] in '"`[':
        ident = ident[1:-1].replace('""', '"')
    return ident.lower()


def _table(name: str) -> str:
    """The table part of ``schema.table`` (quoted or not), lower-cased."""
    parts = re.findall(_IDENT, name)
    return _unquote(parts[-1]) if parts else name.lower()


@dataclass(frozen=True)
class Write:
    """One table a statement writes and what is known of the rows.

    ``pk_params``: the pk is in these parameter positions (negative: from the end);
    ``columns``: an INSERT's column names, for mapping parameters to columns;
    ``assigned``: an UPDATE's SET columns and the parameter each is set to
    (``None``: not a bare placeholder; column ``"*"``: the SET clause was not read),
    out of ``placeholders`` in all: a row moved to another key is a row too;
    an INSERT's ``placeholders`` are ``0`` unless its VALUES tuples hold exactly one
    ``%s`` per column (a literal shifts the columns);
    ``all_rows``: rows are unknown;
    ``key_columns``: for ``WHERE (a = %s AND b = %s)`` (several rows: ``OR``-ed), the
    columns of one row's condition in their order; ``pk_params`` then holds
    ``len(key_columns)`` parameters per row;
    ``conditions``: for a ``WHERE`` that is only ``AND``-ed ``<column> = %s`` and
    ``<column> IN (%s, ...)`` (what ``m2m.remove()`` writes: ``WHERE (book_id = %s
    AND genre_id IN (%s, %s))``), each column and the positions of its parameters:
    every row written holds one of them in that column.
    """

    verb: str
    table: str
    pk_column: str | None = None
    pk_params: tuple[int, ...] = ()
    columns: tuple[str, ...] = ()
    assigned: tuple[tuple[str, int | None], ...] = ()
    placeholders: int = 0
    all_rows: bool = True
    key_columns: tuple[str, ...] = ()
    conditions: tuple[tuple[str, tuple[int, ...]], ...] = ()


@functools.lru_cache(maxsize=1024)
def parse(sql: str) -> tuple[Write, ...]:
    """The tables an SQL statement writes (empty for reads and DDL). Bounded cache."""
    text = _COMMENT.sub(" ", sql[_lead_end(sql) :]).strip()
    if text[:4].upper() == "WITH":
        # the main statement and any CTE may write (WITH d AS (DELETE ...) INSERT ...)
        found = [w for m in _VERB.finditer(text) for w in _all_rows_writes(m)]
        for statement in _STATEMENT_VERB.finditer(text):
            if not _one_target(text, _VERB.match(text, statement.start(1))):
                found += _named(text, statement.group(1).upper())
        return tuple(dict.fromkeys(found))
    match = _VERB.match(text)
    if not _one_target(text, match):
        head = _HEAD.match(text)
        if head is None:
            return _schema_writes(text)
        return _named(text, head.group().upper())
    assert match is not None
    kind, verb = _verb(match)
    if verb in ("TRUNCATE", "MERGE", "REPLACE"):
        return _all_rows_writes(match)
    table = _table(match.group(f"{kind}_t"))
    rest = text[match.end() :]
    if kind in ("update", "delete"):
        tail = _PK_TAIL.search(rest)
        if tail is None:
            return _by_key_columns(text, match.end(), kind, verb, table)
        before = rest[: tail.start()] if tail else ""
        if (
            tail is None
            # the WHERE of a subquery, or a condition on another table's column
            or _unbalanced(before)
            or (tail.group(1) is not None and _table(tail.group(1)) != table)
        ):
            return (Write(verb, table),)
        placeholders = tail.group(3)
        count = 1 if placeholders is None else placeholders.count("%s")
        start = match.end()
        return (
            Write(
                verb,
                table,
                pk_column=_unquote(tail.group(2)),
                pk_params=tuple(range(-count, 0)),
                assigned=_assignments(text, start, start + tail.start())
                if kind == "update"
                else (),
                placeholders=_count_placeholders(text),
                all_rows=False,
            ),
        )
    if kind == "insert":
        cols = _INSERT_COLUMNS.match(rest)
        if cols is None or _UPSERT.search(rest):
            return (Write("INSERT", table),)
        columns = tuple(_unquote(c) for c in re.findall(_IDENT, cols.group(1)))
        if any(column.lower() in _ROWID_ALIASES for column in columns):
            return (Write("INSERT", table),)  # may name the pk under another name
        values = _VALUES.match(rest, cols.end())
        tuples = values.group().split(")")[:-1] if values else []
        if not all(t.count("%s") == len(columns) for t in tuples):
            tuples = []
        return (
            Write(
                "INSERT",
                table,
                columns=columns,
                placeholders=len(tuples) * len(columns),
                all_rows=False,
            ),
        )
    return (Write(verb, table),)


def _one_target(text: str, match: re.Match[str] | None) -> bool:
    """Whether ``match`` (of ``_VERB``) reads the one table its statement writes."""
    if match is None:
        return False
    if match.group("update") is not None:
        one = _ONE_UPDATE.match(text, match.end())
        if one is None:
            return False
        return not _from_outside_parentheses(text, one.end())
    if match.group("delete") is not None:
        return _ONE_DELETE.match(text, match.end()) is not None
    return True


def _from_outside_parentheses(text: str, start: int) -> bool:
    """Whether ``text[start:]`` holds a ``FROM`` not inside parentheses (a subquery's).
    Literals and quoted names are blanked first (only when a FROM is there at all);
    each FROM is found with ``str.find``: a regex scan for it cost more than the rest
    of ``parse()``."""
    rest = text[start:]
    if "FROM" not in rest.upper():
        return False
    rest = _QUOTED_OR_LITERAL.sub("''", rest)
    upper = rest.upper()
    at = upper.find("FROM")
    while at != -1:
        before = rest[:at]
        if (
            _FROM.match(rest, at)
            and not upper[:at].rstrip().endswith("DISTINCT")  # IS DISTINCT FROM
            and not _unbalanced(before)
        ):
            return True
        at = upper.find("FROM", at + 4)
    return False


def _named(text: str, verb: str) -> tuple[Write, ...]:
    """A write of unknown rows to every name in ``text``: the tables it may write are
    among them (the others, columns and aliases and keywords, map to no model)."""
    names = [*_WORD.findall(text), *_QUOTED.findall(text)]
    return tuple(Write(verb, name) for name in dict.fromkeys(map(_unquote, names)))


def _schema_writes(text: str) -> tuple[Write, ...]:
    """The tables an ``ALTER TABLE`` (and the table it is renamed to) or a ``DROP
    TABLE`` changes, rows unknown; nothing for any other statement."""
    match = _SCHEMA.match(text)
    if match is None:
        return ()
    if match.group("drop"):
        names = re.split(r"\s*,\s*", match.group("drop"))
        return tuple(Write("DROP", _table(n)) for n in names)
    writes = [Write("ALTER", _table(match.group("alter")))]
    renamed = _RENAME_TO.search(text, match.end())
    if renamed is not None:
        writes.append(Write("ALTER", _table(renamed.group(1))))
    return tuple(dict.fromkeys(writes))


def _by_key_columns(
    text: str, start: int, kind: str, verb: str, table: str
) -> tuple[Write, ...]:
    """An UPDATE/DELETE of rows named by conditions on several columns (a composite
    pk, see ``_COMPOSITE_TAIL`` and ``_TUPLE_TAIL``), or of rows not known."""
    tail = _COMPOSITE_TAIL.search(text, start)
    if tail is not None:
        parts = _CONDITION_PARTS.findall(text, tail.start())
    else:
        tail = _TUPLE_TAIL.search(text, start)
        if tail is None:
            return _by_conditions(text, start, kind, verb, table)
        names = _COLUMN_PARTS.findall(tail.group(1))
        params = tail.group(0).count("%s")
        if params % len(names):
            return (Write(verb, table),)
        parts = names * (params // len(names))
    if _unbalanced(text[start : tail.start()]):
        return (Write(verb, table),)
    if any(q and _table(q) != table for q, _ in parts):
        return (Write(verb, table),)
    columns = [_unquote(column) for _, column in parts]
    width = len(dict.fromkeys(columns))
    if len(columns) % width or columns != columns[:width] * (len(columns) // width):
        return (Write(verb, table),)
    return (
        Write(
            verb,
            table,
            pk_params=tuple(range(-len(columns), 0)),
            assigned=_assignments(text, start, tail.start())
            if kind == "update"
            else (),
            placeholders=_count_placeholders(text),
            all_rows=False,
            key_columns=tuple(columns[:width]),
        ),
    )


def _by_conditions(
    text: str, start: int, kind: str, verb: str, table: str
) -> tuple[Write, ...]:
    """An UPDATE/DELETE whose ``WHERE`` only ``AND``s ``<column> = %s`` and
    ``<column> IN (%s, ...)`` conditions on the written table (``_AND_TAIL``): the
    values of each of those columns among the rows written are known."""
    tail = _AND_TAIL.search(text, start)
    if tail is None or _unbalanced(text[start : tail.start()]):
        return (Write(verb, table),)
    terms = list(_TERM_PARTS.finditer(text, tail.start() + len("WHERE")))
    if any(t.group(1) and _table(t.group(1)) != table for t in terms):
        return (Write(verb, table),)
    total = _count_placeholders(text[tail.start() :])
    found: dict[str, list[int]] = {}
    seen = 0
    for term in terms:
        count = 1 if term.group(3) is None else term.group(3).count("%s")
        positions = range(seen - total, seen - total + count)
        found.setdefault(_unquote(term.group(2)), []).extend(positions)
        seen += count
    if seen != total:
        return (Write(verb, table),)
    return (
        Write(
            verb,
            table,
            assigned=_assignments(text, start, tail.start())
            if kind == "update"
            else (),
            placeholders=_count_placeholders(text),
            all_rows=False,
            conditions=tuple((c, tuple(p)) for c, p in found.items()),
        ),
    )


def _unbalanced(text: str) -> bool:
    """Whether ``text`` leaves a parenthesis open (or closes one it did not open),
    parentheses inside string literals and quoted names not counted."""
    text = _LITERAL.sub("''", text)
    return text.count("(") != text.count(")")


def _verb(match: re.Match[str]) -> tuple[str, str]:
    """The matched alternative of ``_VERB`` and the statement's verb."""
    kind = next(k for k in _KINDS if match.group(k) is not None)
    if kind in ("insert", "update") and _OR_REPLACE.search(match.group(kind)):
        # a conflict on any unique column deletes that row first, whatever its pk
        return kind, "REPLACE"
    return kind, kind.upper()


def _all_rows_writes(match: re.Match[str]) -> tuple[Write, ...]:
    """The tables of one verb, rows unknown."""
    kind, verb = _verb(match)
    names = match.group(f"{kind}_t")
    if kind != "truncate":
        return (Write(verb, _table(names)),)
    return tuple(Write(verb, _table(n)) for n in re.split(r"\s*,\s*", names))


def _count_placeholders(text: str) -> int:
    return sum(1 for p in _PLACEHOLDER.findall(text) if p == "%s")


def _split_top_level(text: str, start: int, end: int) -> list[tuple[int, int]] | None:
    """Spans of the comma-separated parts outside parentheses and quotes, or ``None``."""
    spans, depth, quote, begin = [], 0, "", start
    for i in range(start, end):
        ch = text[i]
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"`":
            quote = ch
        elif ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        elif ch == "," and depth == 0:
            spans.append((begin, i))
            begin = i + 1
    if quote or depth:
        return None
    spans.append((begin, end))
    return spans


def _assignments(text: str, start: int, end: int) -> tuple[tuple[str, int | None], ...]:
    """The SET clause of an UPDATE in ``text[start:end]``: (column, parameter index)."""
    unknown = (("*", None),)
    found = _SET.search(text, start, end)
    spans = _split_top_level(text, found.end(), end) if found else None
    if spans is None:
        return unknown
    out: list[tuple[str, int | None]] = []
    for begin, stop in spans:
        part = _ASSIGNMENT.fullmatch(text, begin, stop)
        if part is None:  # (a, b) = (...), or something not understood
            return unknown
        index = None
        if part.group(2) == "%s":
            index = _count_placeholders(text[: part.start(2)])
        out.append((_unquote(part.group(1)), index))
    return tuple(out)


def _param_rows(params: Any, many: bool) -> list[Sequence[Any]]:
    if params is None:
        return []
    if many:
        return [p for p in params if isinstance(p, list | tuple)]
    return [params] if isinstance(params, list | tuple) else []


def _tags_for(
    write: Write,
    params: Any,
    many: bool,
    db_timezone: Any = None,
    using: str | None = None,
) -> list[str]:
    tags: list[str] = []
    for use in registry.tables().get(write.table, ()):
        tags.extend(_tags_for_use(write, use, params, many, db_timezone, using))
    return tags + _db_deletions(write)


def _db_deletions(write: Write) -> list[str]:
    """Rows the database deletes or rewrites itself when ``write`` deletes rows
    (Django 6.1's ``DB_CASCADE``, ``DB_SET_NULL``, ``DB_SET_DEFAULT``): Django sends
    no SQL and no signal for them, and which they are is not known."""
    if write.verb not in _DELETING_VERBS:
        return []
    return list(registry.db_deletion_tables().get(write.table, ()))


_everything = registry.all_rows_tags


def _tags_for_use(
    write: Write,
    use: registry.Table,
    params: Any,
    many: bool,
    db_timezone: Any = None,
    using: str | None = None,
) -> list[str]:
    """``db_timezone``: the zone of naive datetimes in ``params`` (the connection's);
    ``using``: its alias (how it compares text pks: see ``registry.row_tags``)."""
    model = use.model
    tags: list[str] = []
    # A parent's table is watched for the rows of its tracked children too.
    tracked = registry.is_watched(model)
    rows = _param_rows(params, many)
    if use.sides:  # a many-to-many table: both sides' rows
        tags.append(model_tag(model))
        for column, side in use.sides:
            # A column of None holds another field's values than the side's pks.
            pks = None if column is None else _values_of(write, column, rows)
            if pks is None:
                tags += _everything(side)
            else:
                tags += [model_tag(m) for m in family(side)]
                tags += registry.row_tags(
                    side, pks, db_timezone=db_timezone, using=using
                )
        if tracked and write.verb != "INSERT":
            tags += _everything(model)
        return tags
    if not tracked:
        return tags
    if (
        write.verb == "INSERT"
        and not write.all_rows
        and not set(use.pk_columns) <= set(write.columns)
    ):
        return [model_tag(m) for m in family(model)]  # new rows only
    pks: list[Any] | None
    if use.pk_column is None:
        pks = _composite_values(write, use.pk_columns, rows)
    else:
        pks = _values_of(write, use.pk_column, rows)
    if pks is None:
        return _everything(model)
    rows_written = registry.row_tags(model, pks, db_timezone=db_timezone, using=using)
    return [model_tag(m) for m in family(model)] + rows_written


def _composite_values(
    write: Write, columns: tuple[str, ...], rows: list[Sequence[Any]]
) -> list[Any] | None:
    """A ``CompositePrimaryKey``'s values (tuples) in the parameters, or ``None``:
    an INSERT naming its columns, or an UPDATE/DELETE by ``WHERE (a = %s AND b = %s)``
    (``OR``-ed for several rows) that does not ``SET`` any of them."""
    if write.all_rows or not rows:
        return None
    if write.key_columns:
        if sorted(write.key_columns) != sorted(columns) or any(
            name in (*columns, "*") for name, _ in write.assigned
        ):
            return None
        width = len(columns)
        order = [write.key_columns.index(column) for column in columns]
        found = []
        for row in rows:
            values = [row[i] for i in write.pk_params]
            for begin in range(0, len(values), width):
                group = values[begin : begin + width]
                found.append(tuple(group[i] for i in order))
        return found
    if not write.columns:
        return None
    parts = [_values_of(write, column, rows) for column in columns]
    if any(part is None for part in parts):
        return None
    return list(zip(*parts, strict=True))  # type: ignore[arg-type]


def _values_of(
    write: Write, column: str, rows: list[Sequence[Any]]
) -> list[Any] | None:
    """Values of ``column`` in the statement's parameters, or ``None`` if not known."""
    if write.all_rows or not rows:
        return None
    try:
        if write.columns:
            if column not in write.columns:
                return None
            width = len(write.columns)
            index = write.columns.index(column)
            values = []
            for row in rows:
                if not write.placeholders or len(row) != write.placeholders:
                    return None
                values += [row[i] for i in range(index, len(row), width)]
            return values
        if write.conditions:
            # Each row written holds one of its column's values in the WHERE.
            positions = dict(write.conditions).get(column)
            if positions is None:
                return None
            values = [row[i] for row in rows for i in positions]
        elif write.key_columns:
            # WHERE (a = %s AND b = %s), OR-ed per row: ``len(key_columns)`` each.
            if column not in write.key_columns:
                return None
            width = len(write.key_columns)
            at = write.key_columns.index(column)
            params = write.pk_params
            values = [
                row[params[group + at]]
                for row in rows
                for group in range(0, len(params), width)
            ]
        elif write.pk_column != column:
            return None
        else:
            values = [row[i] for row in rows for i in write.pk_params]
        for name, index in write.assigned:
            if name.lower() in _ROWID_ALIASES and name != column:
                return None  # may be the pk under another name: every row, then
            if name not in (column, "*"):
                continue
            # the rows also move to the value in SET: that key changes too
            if index is None or any(len(row) != write.placeholders for row in rows):
                return None
            values += [row[index] for row in rows]
        return values
    except IndexError:
        return None


def _wrapper(
    execute: Callable[..., Any],
    sql: Any,
    params: Any,
    many: bool,
    context: dict[str, Any],
) -> Any:
    watched = _state.enabled and isinstance(sql, str) and _may_write(sql)
    try:
        result = execute(sql, params, many, context)
    except Exception:
        # A failed write may have changed rows all the same: executemany() in
        # autocommit commits each parameter row before a later one fails, and a
        # caller may catch the error inside its transaction and commit the rest.
        # Invalidating rows that did not change costs misses; the reverse, stale data.
        if watched:
            _after_write(sql, params, many, context)
        raise
    if watched:
        _after_write(sql, params, many, context)
    return result


def _may_write(sql: str) -> bool:
    """Whether ``sql`` starts with a write verb once leading whitespace and comments
    are skipped. Runs for every statement: one that starts with a letter (``SELECT``)
    is settled by its first characters."""
    head = sql[:8].upper()
    if head.startswith(_WRITE_HEADS):
        return True
    if head[:1].isalnum():
        return False
    pos = _lead_end(sql)
    return sql[pos : pos + 8].upper().startswith(_WRITE_HEADS)


def _lead_end(sql: str) -> int:
    """Where ``sql``'s first word starts, past everything ``_LEAD`` skips."""
    pos = 0
    while (end := _LEAD.match(sql, pos).end()) != pos:  # type: ignore[union-attr]
        pos = end
    return pos


def _all_rows_of(write: Write) -> list[str]:
    """Every tag a write to the table can touch: the fallback that needs no parameter."""
    tags: list[str] = []
    for use in registry.tables().get(write.table, ()):
        tags += _everything(use.model)
        for _column, side in use.sides:
            tags += _everything(side)
    return tags + _db_deletions(write)


def _unnamed_new_rows(write: Write) -> list[tuple[type[Model], list[str]]]:
    """The models an ``INSERT`` adds rows to without naming their pks (``save()`` of
    a new row under an ``AutoField``, ``bulk_create()`` without pks, raw SQL), each
    with the all-rows tags to hold dirty in this thread's transaction
    (``_transactions.hold_tags``), not to invalidate."""
    if write.verb != "INSERT" or write.all_rows:
        return []
    return [
        (use.model, [rows_tag(m) for m in family(use.model)])
        for use in registry.tables().get(write.table, ())
        if registry.is_watched(use.model)
        and not set(use.pk_columns) <= set(write.columns)
    ]


@dataclass
class _Save:
    """A ``Model.save()`` under way in this thread (``pre_save`` sent, ``post_save``
    not yet): ``expected`` are the concrete models (the instance's own and its
    multi-table parents) whose ``AutoField`` pk it had no value for, whose rows it
    inserts without naming the pk; ``claimed``, the holds of such inserts."""

    instance: Model
    using: str
    expected: set[type[Model]]
    claimed: Holds = field(default_factory=list)


class _Saves(threading.local):
    def __init__(self) -> None:
        self.stack: list[_Save] = []


_saves = _Saves()
#: A save that raised sends no ``post_save``: its entry is left behind (harmless: its
#: holds are never released) until this many newer ones push it out.
_MAX_SAVES = 32


def inserts_unnamed(model: type[Model]) -> bool:
    """Whether a ``save()`` of ``model`` can insert a row of a watched table without
    naming its pk (an ``AutoField``; in multi-table inheritance, a parent's): the
    models :func:`save_started` and :func:`save_ended` are connected for
    (``invalidation.connect()``)."""
    concrete = model._meta.concrete_model
    if concrete is None:
        return False
    return any(
        registry.is_watched(m) and m._meta.pk is m._meta.auto_field
        for m in (concrete, *concrete._meta.get_parent_list())
    )


def save_started(
    sender: type[Model], instance: Model, raw: bool, using: str, **kwargs: Any
) -> None:
    """``pre_save``: note a save that will insert rows without naming their pks,
    inside a transaction (where such inserts hold the all-rows tag): its
    ``post_save`` names the new pks (and ``invalidation`` makes their row tags
    dirty), so :func:`save_ended` then releases those holds."""
    if raw or not _state.enabled or not in_transaction(using):
        return
    concrete = sender._meta.concrete_model
    expected = set()
    for model in (concrete, *concrete._meta.get_parent_list()):
        meta = model._meta
        if meta.pk is meta.auto_field and getattr(instance, meta.pk.attname) is None:
            expected.add(model)
    if expected:
        stack = _saves.stack
        if len(stack) >= _MAX_SAVES:
            del stack[0]
        stack.append(_Save(instance, using, expected))


def save_ended(sender: type[Model], instance: Model, **kwargs: Any) -> None:
    """``post_save``: release the holds of the inserts of the save that ends."""
    stack = _saves.stack
    for index in range(len(stack) - 1, -1, -1):
        if stack[index].instance is instance:
            save = stack[index]
            del stack[index:]  # and the saves within it that raised
            release_tags(save.claimed)
            return


def _claim(model: type[Model], alias: str, holds: Holds) -> None:
    """Give the holds of an ``INSERT`` into ``model``'s table without its pk to the
    innermost save under way that inserts such a row (its own, then: a save's
    ``INSERT`` comes after every ``pre_save`` receiver). Once per model and save: any
    other insert into the table (``bulk_create()``, raw SQL) keeps its hold."""
    for save in reversed(_saves.stack):
        if save.using == alias and model in save.expected:
            save.expected.discard(model)
            save.claimed += holds
            return


def _after_write(sql: str, params: Any, many: bool, context: dict[str, Any]) -> None:
    """Invalidate what ``sql`` wrote. The write already ran: a failure to work out
    its rows (a parameter that is no pk value, a misread statement) must not reach
    the caller's ``execute()``, so it falls back to all rows."""
    writes = parse(sql)
    if not writes:
        return
    conn = context["connection"]
    tags: list[str] = []
    for write in writes:
        try:
            # Naive datetimes among the parameters are in the connection's zone.
            tags += _tags_for(write, params, many, conn.timezone, conn.alias)
        except Exception:
            logger.debug("row tags of %r: all rows instead", sql, exc_info=True)
            tags += _all_rows_of(write)
    # Rows added under pks the statement does not name: this thread reads them
    # (``bulk_create()`` returns their pks) before they are committed, and they go
    # if it rolls back (SQLite then gives their pks again), so their row tags are
    # dirty for it until the transaction ends. Not invalidated: no one else can
    # have cached them, and the other rows' entries stay valid.
    # A save() of a new row is one of them until its post_save names the pk (the
    # receivers in ``invalidation`` then invalidate the row): it releases its holds.
    for write in writes:
        for model, held in _unnamed_new_rows(write):
            holds = hold_tags(*held, db=conn.alias)
            if holds and _saves.stack:
                _claim(model, conn.alias, holds)
    if not tags:
        return
    # the tables that mapped to models (not every name of a statement read whole)
    used, deleting = registry.tables(), registry.db_deletion_tables()
    verbs = " ".join(
        sorted(
            {
                f"{w.verb} {w.table}"
                for w in writes
                if w.table in used or w.table in deleting
            }
        )
    )
    if any(w.verb in _SCHEMA_VERBS for w in writes):
        # A schema change (a migration's): made already; a cache that fails must not
        # fail the migration, nor one never used be made (see the function).
        invalidate_after_schema_change(
            *dict.fromkeys(tags), reason=f"sql {verbs}", db=conn.alias
        )
        return
    try:
        invalidate_tags(*dict.fromkeys(tags), reason=f"sql {verbs}", db=conn.alias)
    except InvalidTag:
        logger.debug("row tags of %r: all rows instead", sql, exc_info=True)
        tags = [t for w in writes for t in _all_rows_of(w)]
        invalidate_tags(*dict.fromkeys(tags), reason=f"sql {verbs}", db=conn.alias)


class _State:
    enabled = False


_state = _State()


def _attach(connection: Any, **kwargs: Any) -> None:
    if _wrapper not in connection.execute_wrappers:
        connection.execute_wrappers.insert(0, _wrapper)


def install() -> None:
    """Watch every connection opened from now on, and those of this thread already open."""
    if not conf.get("WATCH_SQL"):
        return
    _state.enabled = True
    connection_created.connect(
        _attach, weak=False, dispatch_uid="django_smartcache.sqlwatch"
    )
    for conn in connections.all(initialized_only=True):
        _attach(conn)


def uninstall() -> None:
    """Undo :func:`install` (connections of other threads keep an inert wrapper)."""
    _state.enabled = False
    connection_created.disconnect(dispatch_uid="django_smartcache.sqlwatch")
    _saves.stack.clear()
    for conn in connections.all(initialized_only=True):
        while _wrapper in conn.execute_wrappers:
            conn.execute_wrappers.remove(_wrapper)


@receiver(setting_changed, dispatch_uid="django_smartcache.sqlwatch.follow")
def _follow(*, setting: str, **kwargs: Any) -> None:
    """Follow ``SMARTCACHE["WATCH_SQL"]`` when it changes (``override_settings``), as
    the signal receivers follow ``MODELS``. Turned on, it watches the connections
    opened from then on and this thread's open ones; turned off, none of them."""
    if setting != "SMARTCACHE" or not apps.ready:
        return
    if not apps.is_installed("django_smartcache"):
        return
    conf.get_config.cache_clear()
    try:
        watch = conf.get("WATCH_SQL")
    except ImproperlyConfigured:
        return  # reported where the settings are read (and by the system check)
    if watch and not _state.enabled:
        install()
    elif not watch and _state.enabled:
        uninstall()
