"""SQL shapes the statement watcher once misread: moved rows, REPLACE, literals, indentation."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection

from django_smartcache import model_tag, registry, sqlwatch
from tests.fixtures.tagged_caches import on_every_tagged_backend
from tests.testapp.models import Author, Book, Club, Genre, Membership
from tests.testapp.reads import assert_fresh, cached

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def cache(tagged_cache: Any) -> Any:
    """The "tagged" alias (TaggedLocMemCache unless parametrized)."""
    return tagged_cache


@pytest.fixture
def ann() -> Author:
    return Author.objects.create(name="Ann")


def _table(model: Any) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def _title(pk: int) -> str | None:
    return Book.objects.filter(pk=pk).values_list("title", flat=True).first()


def _cached_title(cache: Any, pk: int) -> str | None:
    """A read tagged with the row tag only: a row that appears must bump it."""
    return cache.get_or_set(
        f"title:{pk}", lambda: _title(pk), tags=[model_tag(Book, pk)]
    )


def _execute(sql: str, params: Any = None) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


# 4. an UPDATE whose SET moves rows to another key ---------------------------------


@on_every_tagged_backend
def test_custom_through_update_reaches_the_destination_row(
    ann: Author, cache: Any
) -> None:
    c1, c2 = Club.objects.create(name="c1"), Club.objects.create(name="c2")
    Membership.objects.create(club=c1, author=ann)

    def count() -> int:
        return Membership.objects.filter(club_id=c2.pk).count()

    assert cache.get_or_set("members", count, tags=[model_tag(c2)]) == 0
    Membership.objects.filter(club_id=c1.pk).update(club_id=c2.pk)
    assert cache.get_or_set("members", count, tags=[model_tag(c2)]) == 1


@on_every_tagged_backend
def test_auto_through_update_reaches_the_destination_row(ann: Author) -> None:
    b1, b2 = (Book.objects.create(title=t, author=ann) for t in ("b1", "b2"))
    b1.genres.add(Genre.objects.create(name="g"))
    reads = [("book_genres", b1.pk), ("book_genres", b2.pk)]
    for name, arg in reads:
        cached(name, arg)
    Book.genres.through.objects.filter(book_id=b1.pk).update(book_id=b2.pk)
    assert_fresh(*reads)


@on_every_tagged_backend
def test_pk_update_reaches_the_new_pk(ann: Author, cache: Any) -> None:
    book = Book.objects.create(title="old", author=ann)
    new_pk = book.pk + 100
    assert _cached_title(cache, new_pk) is None  # "no such book", under its row tag
    _cached_title(cache, book.pk)
    Book.objects.filter(pk=book.pk).update(id=new_pk)
    assert _cached_title(cache, new_pk) == "old"
    assert _cached_title(cache, book.pk) is None


def test_pk_update_keeps_other_rows(ann: Author, cache: Any) -> None:
    """Moving a row by a placeholder in SET still knows its rows."""
    books = [Book.objects.create(title=f"T{i}", author=ann) for i in range(2)]
    for b in books:
        _cached_title(cache, b.pk)
    Book.objects.filter(pk=books[0].pk).update(id=books[0].pk + 100)
    assert cache.get(f"title:{books[1].pk}") == "T1"


@pytest.mark.parametrize(
    ("sql", "params", "expected"),
    [
        # the WHERE column is also assigned from a placeholder: old and new value
        ('UPDATE "m" SET "club_id" = %s WHERE "m"."club_id" = %s', [2, 1], [1, 2]),
        (
            'UPDATE "m" SET "a" = %s, "club_id" = %s WHERE "club_id" = %s',
            [0, 2, 1],
            [1, 2],
        ),
        (
            'UPDATE "m" SET "a" = \'%%s\', "club_id" = %s WHERE club_id = %s',
            [2, 1],
            [1, 2],
        ),
        (
            'UPDATE "m" SET "club_id" = %s WHERE "club_id" IN (%s, %s)',
            [3, 1, 2],
            [1, 2, 3],
        ),
        # anything but a placeholder: the new value is not known
        ('UPDATE "m" SET "club_id" = 2 WHERE "club_id" = %s', [1], None),
        (
            'UPDATE "m" SET "club_id" = ("club_id" + %s) WHERE "club_id" = %s',
            [1, 1],
            None,
        ),
        ('UPDATE "m" SET "m"."club_id" = "a" WHERE "club_id" = %s', [1], None),
        # another column assigned: only the WHERE rows
        ('UPDATE "m" SET "author_id" = %s WHERE "club_id" = %s', [5, 1], [1]),
    ],
)
def test_values_of_an_update_include_the_assigned_value(
    sql: str, params: list[Any], expected: list[Any] | None
) -> None:
    (write,) = sqlwatch.parse(sql)
    got = sqlwatch._values_of(write, "club_id", [params])
    assert (None if got is None else sorted(got)) == expected


# 5. REPLACE deletes the row it conflicts with --------------------------------------


@on_every_tagged_backend
@pytest.mark.parametrize("verb", ["INSERT OR REPLACE", "REPLACE"])
def test_replace_on_a_unique_conflict_reaches_the_deleted_row(
    ann: Author, cache: Any, verb: str
) -> None:
    through = Book.genres.through
    book = Book.objects.create(title="b", author=ann)
    genre = Genre.objects.create(name="g")
    book.genres.add(genre)
    old = through.objects.get()

    def exists() -> bool:
        return through.objects.filter(pk=old.pk).exists()

    assert cache.get_or_set("link", exists, tags=[model_tag(old)]) is True
    # (book_id, genre_id) is unique: SQLite deletes row `old` and inserts a new pk
    _execute(
        f"{verb} INTO {_table(through)} (book_id, genre_id) VALUES (%s, %s)",
        [book.pk, genre.pk],
    )
    assert through.objects.get().pk != old.pk
    assert cache.get_or_set("link", exists, tags=[model_tag(old)]) is False


@on_every_tagged_backend
def test_update_or_replace_reaches_the_row_it_deletes(ann: Author, cache: Any) -> None:
    """SQLite's UPDATE OR REPLACE: moving a row onto a unique value deletes the row
    that held it, whose pk the WHERE never names."""
    through = Book.genres.through
    book = Book.objects.create(title="b", author=ann)
    first, second = Genre.objects.create(name="g1"), Genre.objects.create(name="g2")
    book.genres.add(first, second)
    moved = through.objects.get(genre=first)
    kept = through.objects.get(genre=second)

    def exists() -> bool:
        return through.objects.filter(pk=kept.pk).exists()

    assert cache.get_or_set("kept", exists, tags=[model_tag(kept)]) is True
    _execute(
        f"UPDATE OR REPLACE {_table(through)} SET genre_id = %s WHERE id = %s",
        [second.pk, moved.pk],
    )
    assert not through.objects.filter(pk=kept.pk).exists()
    assert cache.get_or_set("kept", exists, tags=[model_tag(kept)]) is False


@pytest.mark.parametrize(
    ("sql", "verb", "all_rows"),
    [
        ('INSERT OR REPLACE INTO "t" ("a") VALUES (%s)', "REPLACE", True),
        ('insert or replace into "t" ("a") VALUES (%s)', "REPLACE", True),
        ('REPLACE INTO "t" ("id") VALUES (%s)', "REPLACE", True),
        ('INSERT OR IGNORE INTO "t" ("a") VALUES (%s)', "INSERT", False),
        ('INSERT OR ABORT INTO "t" ("a") VALUES (%s)', "INSERT", False),
        ('UPDATE OR REPLACE "t" SET "a" = %s WHERE "t"."id" = %s', "REPLACE", True),
        ('update or replace "t" SET "a" = %s WHERE "id" IN (%s)', "REPLACE", True),
        ('UPDATE OR IGNORE "t" SET "a" = %s WHERE "t"."id" = %s', "UPDATE", False),
        # MySQL: modifiers, and INTO is optional
        ("INSERT IGNORE INTO `t` (`a`) VALUES (%s)", "INSERT", False),
        ("INSERT `t` (`a`) VALUES (%s)", "INSERT", False),
        ("REPLACE LOW_PRIORITY INTO `t` (`a`) VALUES (%s)", "REPLACE", True),
        ("REPLACE `t` (`a`) VALUES (%s)", "REPLACE", True),
    ],
)
def test_replace_is_all_rows(sql: str, verb: str, all_rows: bool) -> None:
    (write,) = sqlwatch.parse(sql)
    assert (write.verb, write.table, write.all_rows) == (verb, "t", all_rows)


# 6. multi-row INSERT with literals; no failure of the watcher reaches execute() ---


@on_every_tagged_backend
def test_insert_with_a_literal_column_reaches_its_rows(ann: Author, cache: Any) -> None:
    assert _cached_title(cache, 81) is None
    _execute(
        f"INSERT INTO {_table(Book)} (id, author_id, title)"
        " VALUES (%s, %s, 'x'), (%s, %s, 'y'), (%s, %s, 'z')",
        [80, ann.pk, 81, ann.pk, 82, ann.pk],
    )
    assert _cached_title(cache, 81) == "y"


@on_every_tagged_backend
def test_insert_with_a_literal_pk_type_mismatch_does_not_raise(
    ann: Author, cache: Any
) -> None:
    """Parameters taken for pks that are not: the insert ran, execute() must not raise."""
    assert _cached_title(cache, 61) is None
    _execute(
        f"INSERT INTO {_table(Book)} (id, title, author_id)"
        f" VALUES (%s, %s, {ann.pk}), (%s, %s, {ann.pk}), (%s, %s, {ann.pk})",
        [60, "x", 61, "y", 62, "z"],
    )
    assert _cached_title(cache, 61) == "y"


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO t (id, a) VALUES (%s, %s), (%s, 'x')",
        "INSERT INTO t (id, a, b) VALUES (%s, %s, 'x'), (%s, %s, 'y')",
        "INSERT INTO t (id, a) VALUES (%s, %s), (%s, %s), (DEFAULT, %s)",
        "INSERT INTO t (id, a) VALUES (%s, lower(%s))",
        "INSERT INTO t (id, a) SELECT %s, %s",
    ],
)
def test_insert_values_not_one_placeholder_per_column(sql: str) -> None:
    (write,) = sqlwatch.parse(sql)
    assert sqlwatch._values_of(write, "id", [[1, 2, 3, 4, 5, 6]]) is None


@pytest.mark.parametrize(
    ("sql", "params", "many", "expected"),
    [
        ("INSERT INTO t (id, a) VALUES (%s, %s)", [[1, "a"], [2, "b"]], True, [1, 2]),
        (
            "INSERT INTO t (a, id) VALUES (%s, %s), (%s, %s)",
            [["a", 1, "b", 2]],
            False,
            [1, 2],
        ),
        (
            'INSERT INTO t (a, id) VALUES (%s,%s) RETURNING "t"."id"',
            [["a", 3]],
            False,
            [3],
        ),
    ],
)
def test_insert_values_one_placeholder_per_column(
    sql: str, params: Any, many: bool, expected: list[Any]
) -> None:
    (write,) = sqlwatch.parse(sql)
    rows = sqlwatch._param_rows(params if many else params[0], many)
    assert sqlwatch._values_of(write, "id", rows) == expected


@on_every_tagged_backend
def test_failing_row_tags_fall_back_to_all_rows(
    ann: Author, cache: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    book = Book.objects.create(title="old", author=ann)
    _cached_title(cache, book.pk)

    def broken(model: Any, pks: Any) -> list[str]:
        raise RuntimeError("row tags")

    monkeypatch.setattr(registry, "row_tags", broken)
    Book.objects.filter(pk=book.pk).update(title="new")  # must not raise
    monkeypatch.undo()
    assert _cached_title(cache, book.pk) == "new"


@on_every_tagged_backend
def test_invalid_row_tags_fall_back_to_all_rows(
    ann: Author, cache: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    book = Book.objects.create(title="old", author=ann)
    _cached_title(cache, book.pk)
    monkeypatch.setattr(registry, "row_tags", lambda model, pks: ["not a tag"])
    Book.objects.filter(pk=book.pk).update(title="new")  # must not raise
    monkeypatch.undo()
    assert _cached_title(cache, book.pk) == "new"


@on_every_tagged_backend
def test_failing_row_tags_of_a_through_table_fall_back_to_both_sides(
    ann: Author, monkeypatch: pytest.MonkeyPatch
) -> None:
    book = Book.objects.create(title="b", author=ann)
    genre = Genre.objects.create(name="g")
    reads = [("book_genres", book.pk), ("genre_books", genre.pk)]
    for name, arg in reads:
        cached(name, arg)

    def broken(model: Any, pks: Any) -> list[str]:
        raise RuntimeError("row tags")

    monkeypatch.setattr(registry, "row_tags", broken)
    _execute(
        f"INSERT INTO {_table(Book.genres.through)} (book_id, genre_id) VALUES (%s, %s)",
        [book.pk, genre.pk],
    )
    monkeypatch.undo()
    assert_fresh(*reads)


# 7. whitespace and comments before the verb ----------------------------------------


@on_every_tagged_backend
@pytest.mark.parametrize(
    "lead",
    [
        "\n" + " " * 28,
        "\t" * 40,
        "/* report job */ ",
        "-- nightly fix\n",
        "  /* a */\n  -- b\n  /* c\n  d */\n    ",
    ],
)
def test_leading_whitespace_and_comments_do_not_hide_a_write(
    ann: Author, cache: Any, lead: str
) -> None:
    book = Book.objects.create(title="old", author=ann)
    _cached_title(cache, book.pk)
    _execute(
        f"{lead}UPDATE {_table(Book)} SET title = %s WHERE id = %s", ["new", book.pk]
    )
    assert _cached_title(cache, book.pk) == "new"


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ('SELECT "a" FROM "t"', False),
        ("select 1", False),
        ("SAVEPOINT s1", False),
        ("   SELECT 1", False),
        ("/* UPDATE t */ SELECT 1", False),
        ("-- DELETE FROM t\nSELECT 1", False),
        ("/* never closed UPDATE t", False),
        ("-- only a comment", False),
        ("", False),
        ("UPDATE t SET a = 1", True),
        ("delete from t", True),
        (" " * 30 + "INSERT INTO t VALUES (1)", True),
        ("/**/UPDATE t SET a = 1", True),
        ("--\n--x\n\tMERGE INTO t USING u ON 1 WHEN MATCHED THEN DELETE", True),
        ("\n  WITH x AS (SELECT 1) DELETE FROM t", True),
        ('ALTER TABLE "new__t" RENAME TO "t"', True),
        ("drop table t", True),
    ],
)
def test_may_write(sql: str, expected: bool) -> None:
    assert sqlwatch._may_write(sql) is expected


def test_may_write_is_linear_on_pathological_comments() -> None:
    assert sqlwatch._may_write("-" * 20000 + "\nSELECT 1") is False
    assert sqlwatch._may_write("/*" * 20000) is False


# MERGE, and WITH statements that write more than one table -------------------------


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        (
            (
                'MERGE INTO "t" AS x USING "u" ON x.id = u.id WHEN MATCHED'
                " THEN UPDATE SET a = u.a WHEN NOT MATCHED THEN INSERT (a) VALUES (u.a)"
            ),
            {("MERGE", "t")},
        ),
        ("merge t USING u ON t.id = u.id WHEN MATCHED THEN DELETE", {("MERGE", "t")}),
        (
            (
                "WITH moved AS (DELETE FROM a WHERE id = %s RETURNING *)"
                " INSERT INTO b SELECT * FROM moved"
            ),
            {("DELETE", "a"), ("INSERT", "b")},
        ),
        # Schema changes: SQLite's rebuild of a table ends renaming "new__<table>";
        # PostgreSQL converts values in place.
        ('ALTER TABLE "new__t" RENAME TO "t"', {("ALTER", "t"), ("ALTER", "new__t")}),
        (
            'ALTER TABLE "t" ALTER COLUMN "c" TYPE numeric(5, 1) USING "c"::numeric',
            {("ALTER", "t")},
        ),
        ("/* x */ alter table if exists only s.t add column c int", {("ALTER", "t")}),
        ('DROP TABLE "t"', {("DROP", "t")}),
        ("drop table if exists a, b", {("DROP", "a"), ("DROP", "b")}),
    ],
)
def test_parse_all_rows_writes(sql: str, expected: set[tuple[str, str]]) -> None:
    writes = sqlwatch.parse(sql)
    assert all(w.all_rows for w in writes)
    assert {(w.verb, w.table) for w in writes} >= expected


@pytest.mark.parametrize(
    "sql",
    [
        "DELETE FROM t WHERE code = ':)' OR code IN (SELECT name FROM u WHERE id = %s)",
        "UPDATE t SET a = 1 WHERE b = 'x)' OR c IN (SELECT d FROM u WHERE id = %s)",
        'DELETE FROM t WHERE "odd)" = 1 OR x IN (SELECT y FROM u WHERE id = %s)',
    ],
)
def test_a_parenthesis_in_a_literal_does_not_close_a_subquery(sql: str) -> None:
    (write,) = sqlwatch.parse(sql)
    assert write.all_rows


def test_a_parenthesis_in_a_literal_of_a_pk_delete_keeps_its_row() -> None:
    (write,) = sqlwatch.parse("DELETE FROM t WHERE (id = %s)")
    assert not write.all_rows
    (write,) = sqlwatch.parse("DELETE FROM t WHERE id = %s")
    assert not write.all_rows


# m2m.remove(): WHERE (a = %s AND b IN (%s, ...)) names the rows of both sides ---------


def _genre_library(ann: Author) -> tuple[list[Book], list[Genre]]:
    books = [Book.objects.create(title=f"b{i}", author=ann) for i in range(3)]
    genres = [Genre.objects.create(name=f"g{i}") for i in range(3)]
    for book in books:
        book.genres.add(*genres)
    return books, genres


def _warm_sides(cache: Any, books: list[Book], genres: list[Genre]) -> None:
    for obj in (*books, *genres):
        cache.set(f"row:{model_tag(obj)}", 1, tags=[model_tag(obj)])


def _lost(cache: Any, objs: list[Any]) -> list[Any]:
    return [o for o in objs if cache.get(f"row:{model_tag(o)}") is None]


@pytest.mark.parametrize("watch", ["sql only", "signals+sql"])
@pytest.mark.parametrize("side", ["forward", "reverse"])
def test_m2m_remove_invalidates_the_rows_it_names_only(
    ann: Author, cache: Any, side: str, watch: str
) -> None:
    """``b.genres.remove(g)`` invalidated every book and every genre: the watcher
    did not read ``WHERE (book_id = %s AND genre_id IN (%s))``."""
    from django_smartcache import invalidation

    books, genres = _genre_library(ann)
    _warm_sides(cache, books, genres)
    cached("genre_books", genres[0].pk)
    cached("book_genres", books[0].pk)
    if watch == "sql only":
        invalidation.disconnect()
    try:
        if side == "forward":
            books[0].genres.remove(genres[0], genres[1])
        else:
            genres[0].books.remove(books[0], books[1])
    finally:
        invalidation.connect()
    touched = (
        ([books[0]], genres[:2]) if side == "forward" else (books[:2], [genres[0]])
    )
    assert _lost(cache, books) == touched[0]
    assert _lost(cache, genres) == touched[1]
    assert_fresh(("genre_books", genres[0].pk), ("book_genres", books[0].pk))


def test_through_rows_named_by_both_links_or_moved_by_update(
    ann: Author, cache: Any
) -> None:
    """A through table's ``WHERE (book_id = %s AND genre_id = %s)`` and an UPDATE
    that moves links named that way reach the rows they name, the destination too."""
    books, genres = _genre_library(ann)
    Through = Book.genres.through
    reads = [("genre_books", g.pk) for g in genres] + [
        ("book_genres", b.pk) for b in books
    ]
    for name, arg in reads:
        cached(name, arg)
    _warm_sides(cache, books, genres)
    Through.objects.filter(book=books[0], genre=genres[0]).delete()
    assert _lost(cache, books) == [books[0]]
    assert _lost(cache, genres) == [genres[0]]
    assert_fresh(*reads)
    _warm_sides(cache, books, genres)
    # books[1]'s link to genres[0] moves to books[0] (which has lost its own).
    Through.objects.filter(book=books[1], genre__in=[genres[0]]).update(book=books[0])
    assert _lost(cache, books) == books[:2]
    assert _lost(cache, genres) == [genres[0]]
    assert_fresh(*reads)


@pytest.mark.parametrize(
    "sql",
    [
        "DELETE FROM t WHERE (u.a = %s AND b IN (%s))",  # another table's column
        "DELETE FROM t WHERE (a = %s AND b IN (%s) OR c = %s)",
        "DELETE FROM t WHERE (a = %s AND b IN (SELECT x FROM u WHERE y = %s))",
        "DELETE FROM t WHERE (a = %s AND b > %s)",
    ],
)
def test_conditions_not_all_anded_equalities_are_all_rows(sql: str) -> None:
    (write,) = sqlwatch.parse(sql)
    assert write.all_rows
    assert sqlwatch._values_of(write, "a", [(1, 2, 3)]) is None


def test_anded_conditions_give_each_columns_values() -> None:
    (write,) = sqlwatch.parse(
        'UPDATE "t" SET "c" = %s WHERE ("t"."a" = %s AND "t"."b" IN (%s, %s))'
    )
    row = ("new", 1, 2, 3)
    assert sqlwatch._values_of(write, "a", [row]) == [1]
    assert sqlwatch._values_of(write, "b", [row]) == [2, 3]
    assert sqlwatch._values_of(write, "c", [row]) is None  # not in the WHERE


@pytest.mark.parametrize("watch", ["sql only", "signals+sql", "signals only"])
@pytest.mark.parametrize(
    "write",
    [
        "update(player=p2) where team=, sponsor=",
        "delete() where team=, sponsor__in=",
        "sponsor.sponsored.remove(team)",
    ],
)
def test_a_through_model_two_fields_share_invalidates_every_side(
    cache: Any, write: str, watch: str
) -> None:
    """Player.teams and Player.sponsored share Roster. Only the last field's two sides
    were known, so a WHERE naming team and sponsor read as rows known, and the player
    whose link moved or went was never invalidated: his teams served stale after the
    commit (outside probe: 4 stale reads, 6 with Roster opted out)."""
    from django.test import override_settings

    from django_smartcache import invalidation
    from tests.testapp.models import Player, Roster, Team

    if watch == "signals only" and write.startswith("update"):
        pytest.skip(
            "QuerySet.update() sends no signal: without the watcher, not caught"
        )
    p1, p2, sponsor = (Player.objects.create(name=n) for n in ("p1", "p2", "s"))
    team = Team.objects.create(name="t")
    Roster.objects.create(player=p1, sponsor=sponsor, team=team)

    def teams_of(player: Player) -> list[int]:
        return sorted(
            Player.objects.get(pk=player.pk).teams.values_list("pk", flat=True)
        )

    for player in (p1, p2):
        cache.get_or_set(
            f"teams:{player.pk}", lambda p=player: teams_of(p), tags=[model_tag(player)]
        )
    watch_sql = watch != "signals only"
    with override_settings(SMARTCACHE={"WATCH_SQL": watch_sql}):
        if watch == "sql only":
            invalidation.disconnect()
        try:
            rows = Roster.objects.filter(team_id=team.pk)
            if write.startswith("update"):
                rows.filter(sponsor_id=sponsor.pk).update(player_id=p2.pk)
            elif write.startswith("delete"):
                rows.filter(sponsor_id__in=[sponsor.pk]).delete()
            else:
                Player.objects.get(pk=sponsor.pk).sponsored.remove(team)
        finally:
            invalidation.connect()
    for player in (p1, p2):
        cached_teams = cache.get(f"teams:{player.pk}")
        assert cached_teams is None or cached_teams == teams_of(player), player


def test_a_shared_through_models_sides_are_its_links_once_each() -> None:
    """Sides are counted by link field, not by (column, model): two ``to_field``
    links of one model are both ``(None, model)`` and were merged into one side, which
    dropped a self-referential relation from m2m_relations (reviewer)."""
    from django_smartcache import registry
    from tests.testapp.models import Player, Roster, Team

    sides = registry.through_sides(Roster)
    assert sorted((c or "", m.__name__) for c, m in sides) == [
        ("player_id", "Player"),
        ("sponsor_id", "Player"),
        ("team_id", "Team"),
    ]
    assert registry.m2m_relations(Team) == [Player]
    assert set(registry.m2m_relations(Player)) == {Player, Team}


@pytest.mark.parametrize(
    ("sql", "verb", "all_rows"),
    [
        # MySQL's modifiers: the table is the word after them
        ("DELETE IGNORE FROM t WHERE title = %s", "DELETE", False),
        ("DELETE LOW_PRIORITY QUICK IGNORE FROM t WHERE id = %s", "DELETE", False),
        ("delete quick from `t` where `id` = %s", "DELETE", False),
        ("UPDATE IGNORE t SET a = %s WHERE id = %s", "UPDATE", False),
        ("UPDATE LOW_PRIORITY IGNORE `t` SET a = %s", "UPDATE", True),
        # the target is certain: its rows are read as before
        ('UPDATE "t" SET "a" = %s WHERE "t"."id" = %s', "UPDATE", False),
        ('UPDATE "t" AS x SET "a" = %s', "UPDATE", True),
        (
            'UPDATE "t" SET "a" = (SELECT b FROM u WHERE u.id = %s) WHERE "id" = %s',
            "UPDATE",
            False,
        ),
        ("UPDATE t SET a = %s WHERE a IS DISTINCT FROM %s", "UPDATE", True),
        ('DELETE FROM "t" WHERE "t"."id" IN (SELECT id FROM u)', "DELETE", True),
        ('DELETE FROM "t" x WHERE x.id = %s', "DELETE", True),
        ('DELETE FROM "t" WHERE "id" = %s RETURNING "id"', "DELETE", True),
        ("DELETE FROM t ORDER BY id LIMIT 1", "DELETE", True),
        ("DELETE FROM t", "DELETE", True),
        ("INSERT OR IGNORE INTO t (id) VALUES (%s)", "INSERT", False),
        ("UPDATE OR REPLACE t SET a = %s WHERE id = %s", "REPLACE", True),
        ("REPLACE INTO t (id) VALUES (%s)", "REPLACE", True),
        (
            "MERGE INTO t USING u ON (t.id = u.id) WHEN MATCHED THEN DELETE",
            "MERGE",
            True,
        ),
    ],
)
def test_a_one_table_write_is_read_as_its_table(
    sql: str, verb: str, all_rows: bool
) -> None:
    """``DELETE IGNORE FROM t`` was read as no write, ``UPDATE IGNORE t`` as a write
    to a table ``ignore`` (outside probe, MySQL raw SQL). A statement whose target is
    certain keeps its rows, whatever other tables it reads."""
    (write,) = sqlwatch.parse(sql)
    assert (write.verb, write.table, write.all_rows) == (verb, "t", all_rows)


# Statements that may write more than one table, or whose table is not where it is
# in one-table SQL: every table they name, all rows ---------------------------------

#: Django 5.2's MySQL compiler (captured on MariaDB 10.11) for
#: ``Book.genres.through.objects.filter(genre__name=...).delete()``: a fast delete
#: filtered through a relation is ``DELETE <table> FROM <table> INNER JOIN ...``.
MYSQL_JOIN_DELETE = (
    "DELETE `{through}` FROM `{through}` INNER JOIN `{genre}` ON "
    "(`{through}`.`genre_id` = `{genre}`.`id`) WHERE `{genre}`.`name` = %s"
)
#: ... and for ``filter(book__author__name=...).delete()``: two joins.
MYSQL_TWO_JOINS_DELETE = (
    "DELETE `{through}` FROM `{through}` INNER JOIN `{book}` ON "
    "(`{through}`.`book_id` = `{book}`.`id`) INNER JOIN `{author}` ON "
    "(`{book}`.`author_id` = `{author}`.`id`) WHERE `{author}`.`name` = %s"
)


def _mysql(sql: str) -> str:
    return sql.format(
        through=Book.genres.through._meta.db_table,
        genre=Genre._meta.db_table,
        book=Book._meta.db_table,
        author=Author._meta.db_table,
    )


@pytest.mark.parametrize(
    ("sql", "tables"),
    [
        (
            MYSQL_JOIN_DELETE,
            {"testapp_book_genres", "testapp_genre"},
        ),
        (
            MYSQL_TWO_JOINS_DELETE,
            {"testapp_book_genres", "testapp_book", "testapp_author"},
        ),
        # MySQL's multi-table forms: the SET may write any table joined
        (
            "UPDATE book b JOIN author a ON a.id = b.author_id SET a.name = %s",
            {"book", "author"},
        ),
        ("UPDATE book, author SET author.name = %s", {"book", "author"}),
        ("DELETE book, author FROM book JOIN author ON 1", {"book", "author"}),
        ("DELETE FROM a, b USING a JOIN b ON a.id = b.id", {"a", "b"}),
        # in MySQL, the table before USING may be an alias declared after it
        ("DELETE FROM x USING book AS x JOIN author", {"book", "author"}),
        ("DELETE FROM t USING u WHERE t.u_id = u.id", {"t", "u"}),  # PostgreSQL
        # in SQL Server, the table after UPDATE may be an alias declared in FROM
        ("UPDATE x SET a = 1 FROM book AS x JOIN author ON 1", {"book", "author"}),
        ('UPDATE "t" SET "a" = "u"."a" FROM "u" WHERE "t"."id" = "u"."id"', {"t"}),
        # Oracle: a DELETE without FROM, an INSERT into several tables
        ('DELETE "T" WHERE "ID" = %s', {"t"}),
        (
            "INSERT ALL INTO a (x) VALUES (1) INTO b (x) VALUES (2) SELECT 1 FROM dual",
            {"a", "b"},
        ),
        ("INSERT FIRST WHEN x > 1 THEN INTO a VALUES (x) SELECT x FROM u", {"a"}),
        # a CTE's (or the main statement's) multi-table write
        ("WITH x AS (SELECT id FROM u) DELETE t FROM t JOIN x ON t.id = x.id", {"t"}),
        ("WITH d AS (DELETE t FROM t JOIN u ON 1) SELECT 1", {"t", "u"}),
    ],
)
def test_a_statement_not_read_as_one_table_writes_every_table_it_names(
    sql: str, tables: set[str]
) -> None:
    """``DELETE t FROM t INNER JOIN ...`` (Django's MySQL compiler) was read as no
    write at all, ``UPDATE IGNORE t`` as a write to ``ignore``, and MySQL's
    ``UPDATE a JOIN b ... SET b.x = ...`` as a write to ``a`` only (outside probe)."""
    writes = sqlwatch.parse(_mysql(sql))
    assert all(w.all_rows for w in writes)
    assert {w.table for w in writes} >= tables


@pytest.mark.parametrize(
    "sql",
    [
        # Model.save() of a model with a column named "from" (every backend's quoting)
        'UPDATE "t" SET "from" = %s, "body" = %s WHERE "t"."id" = %s',
        "UPDATE `t` SET `from` = %s WHERE `t`.`id` = %s",
        "UPDATE [t] SET [from] = %s WHERE [t].[id] = %s",
        # FROM inside a literal, a JSON literal, IS DISTINCT FROM however spaced
        "UPDATE t SET name = 'x FROM y' WHERE id = %s",
        """UPDATE t SET doc = '{"from": 1}' WHERE id = %s""",
        "UPDATE t SET a = (b IS DISTINCT  FROM %s) WHERE id = %s",
    ],
)
def test_from_in_a_quoted_name_or_literal_keeps_the_row(sql: str) -> None:
    """A quoted column ``"from"`` (or ``FROM`` in a literal) was read as an ``UPDATE
    ... SET ... FROM`` clause: every save() of such a model invalidated all its rows
    (review of 70e0830)."""
    (write,) = sqlwatch.parse(sql)
    assert (write.table, write.all_rows) == ("t", False)


def test_an_insert_into_a_table_named_first_or_all_is_read_as_it() -> None:
    """``INSERT INTO first ...`` was read as a write to a table ``into`` (the check
    for Oracle's INSERT FIRST came after the optional INTO; review of 70e0830)."""
    for name in ("first", "all"):
        (write,) = sqlwatch.parse(f"INSERT INTO {name} (a) VALUES (%s)")
        assert write.table == name


@pytest.mark.parametrize(
    "sql",
    [
        "WITH x AS (SELECT REPLACE(name, 'a', 'b') AS n FROM t) SELECT * FROM x",
        "WITH x AS (SELECT id FROM t FOR UPDATE) SELECT * FROM x",
    ],
)
def test_a_with_that_only_reads_writes_nothing(sql: str) -> None:
    assert sqlwatch.parse(sql) == ()


@pytest.mark.parametrize("shape", ["one join", "two joins"])
def test_a_mysql_join_delete_invalidates_both_sides(
    ann: Author, cache: Any, shape: str
) -> None:
    """What Django's MySQL compiler writes for a through model's fast delete filtered
    through a relation, seen by the watcher (SQLite cannot run it: the rows go by a
    statement the watcher does not see). Nothing was invalidated: the books' genres
    were served stale (outside probe on MariaDB)."""
    books, genres = _genre_library(ann)
    reads = [("book_genres", b.pk) for b in books] + [
        ("genre_books", g.pk) for g in genres
    ]
    for name, arg in reads:
        cached(name, arg)
    through = Book.genres.through._meta.db_table
    if shape == "one join":
        sql, params = _mysql(MYSQL_JOIN_DELETE), ["g0"]
        gone = f"DELETE FROM {through} WHERE genre_id = {genres[0].pk}"
    else:
        sql, params = _mysql(MYSQL_TWO_JOINS_DELETE), ["Ann"]
        gone = f"DELETE FROM {through}"

    def execute(*args: Any) -> None:
        connection.connection.execute(gone)  # past the execute wrappers

    sqlwatch._wrapper(execute, sql, params, False, {"connection": connection})
    assert_fresh(*reads)


def test_a_mysql_multi_table_update_invalidates_the_joined_table(
    ann: Author, cache: Any
) -> None:
    """``UPDATE book JOIN author ... SET author.name = %s`` invalidated books only."""
    book = Book.objects.create(title="t", author=ann)
    name = cache.get_or_set(
        "name", lambda: Author.objects.get(pk=ann.pk).name, tags=[model_tag(ann)]
    )
    assert name == "Ann"
    sql = _mysql(
        "UPDATE `{book}` b JOIN `{author}` a ON a.`id` = b.`author_id` "
        "SET a.`name` = %s WHERE b.`id` = %s"
    )

    def execute(*args: Any) -> None:
        connection.connection.execute(
            f"UPDATE {Author._meta.db_table} SET name = 'Bea' WHERE id = {ann.pk}"
        )

    sqlwatch._wrapper(execute, sql, ["Bea", book.pk], False, {"connection": connection})
    assert cache.get("name") is None


# What comes before the verb: empty statements, a byte order mark, MySQL's # ---------


@pytest.mark.parametrize(
    "lead",
    [";", "; /* c */ ", ";;\n", "\ufeff", "\ufeff-- from fix.sql\n", "# note\n"],
    ids=["semicolon", "semicolon-comment", "semicolons", "bom", "bom-comment", "hash"],
)
def test_a_write_after_a_lead_is_watched(lead: str) -> None:
    """SQLite runs ``";UPDATE ..."`` and ``"\\ufeffUPDATE ..."`` (a .sql file saved as
    UTF-8 with BOM, read and executed): the watcher saw no write and the cached
    value stayed stale (ORM probe). MySQL's ``#`` comment is skipped too (parsed
    only: SQLite refuses it)."""
    sql = f"{lead}UPDATE testapp_book SET title = %s WHERE id = %s"
    assert sqlwatch._may_write(sql)
    [write] = sqlwatch.parse(sql)
    assert (write.verb, write.table, write.pk_column) == (
        "UPDATE",
        "testapp_book",
        "id",
    )


@on_every_tagged_backend
@pytest.mark.parametrize("lead", [";", "; /* c */ ", "\ufeff"])
def test_a_raw_update_after_a_lead_invalidates(
    ann: Author, cache: Any, lead: str
) -> None:
    book = Book.objects.create(title="old", author=ann)
    assert _cached_title(cache, book.pk) == "old"
    _execute(
        f"{lead}UPDATE {_table(Book)} SET title = %s WHERE id = %s", ["new", book.pk]
    )
    assert _cached_title(cache, book.pk) == "new"


@on_every_tagged_backend
@pytest.mark.parametrize("alias", ["rowid", "_rowid_", "oid", "ROWID"])
def test_a_row_moved_by_a_rowid_alias_reaches_the_new_pk(
    ann: Author, cache: Any, alias: str
) -> None:
    """SQLite's ``rowid``/``_rowid_``/``oid`` are an INTEGER PRIMARY KEY under other
    names: ``SET rowid = %s`` moved the row, and a cached "no row at the new pk"
    stayed (ORM probe). The statement no longer names its rows: all of them."""
    book = Book.objects.create(title="moved", author=ann)
    new_pk = book.pk + 100_000
    assert _cached_title(cache, new_pk) is None
    _execute(
        f"UPDATE {_table(Book)} SET title = %s, {alias} = %s WHERE id = %s",
        ["moved", new_pk, book.pk],
    )
    assert _cached_title(cache, new_pk) == "moved"


@on_every_tagged_backend
@pytest.mark.parametrize("alias", ["rowid", "oid", "_rowid_"])
def test_an_insert_naming_a_rowid_alias_reaches_its_row(
    ann: Author, cache: Any, alias: str
) -> None:
    """An INSERT whose column list names SQLite's rowid under an alias names the pk:
    a cached "no row at that pk" stayed (review). All rows now."""
    new_pk = 424_242
    assert _cached_title(cache, new_pk) is None
    _execute(
        f"INSERT INTO {_table(Book)} (title, author_id, {alias}) VALUES (%s, %s, %s)",
        ["ins", ann.pk, new_pk],
    )
    assert _cached_title(cache, new_pk) == "ins"
