"""Writes that send no signal: update(), bulk_create(), bulk_update(), QuerySet.delete(), raw SQL."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection

from django_smartcache import sqlwatch
from django_smartcache.signals import tags_invalidated
from tests.fixtures.tagged_caches import on_every_tagged_backend
from tests.testapp.models import Author, Book, Genre, Place, Restaurant
from tests.testapp.reads import assert_fresh, cached

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def cache(tagged_cache: Any) -> Any:
    """The "tagged" alias (TaggedLocMemCache unless parametrized)."""
    return tagged_cache


@pytest.fixture
def books() -> list[Book]:
    ann = Author.objects.create(name="Ann")
    out = [Book.objects.create(title=f"T{i}", author=ann) for i in range(3)]
    poetry = Genre.objects.create(name="poetry")
    out[0].genres.add(poetry)
    return out


def _reads(books: list[Book]) -> list[tuple[str, Any]]:
    return [("book_row", b.pk) for b in books] + [
        ("book_titles", None),
        ("book_genres", books[0].pk),
        ("genre_books", Genre.objects.get().pk),
    ]


def _table(model: Any) -> str:
    return connection.ops.quote_name(model._meta.db_table)


WRITES = {
    "update_filtered": lambda b: Book.objects.filter(title__startswith="T").update(
        title="U"
    ),
    "update_by_pk": lambda b: Book.objects.filter(pk=b[1].pk).update(title="U1"),
    "bulk_create": lambda b: Book.objects.bulk_create(
        [Book(title="N", author=b[0].author)]
    ),
    "bulk_update": lambda b: Book.objects.bulk_update(
        [Book(pk=x.pk, title=f"B{x.pk}") for x in b], ["title"]
    ),
    "queryset_delete": lambda b: Book.objects.filter(
        pk__in=[b[0].pk, b[2].pk]
    ).delete(),
    "raw_update": lambda b: connection.cursor().execute(
        f"UPDATE {_table(Book)} SET title = %s", ["raw"]
    ),
    "raw_delete_through": lambda b: connection.cursor().execute(
        f"DELETE FROM {_table(Book.genres.through)}"
    ),
    "raw_insert_through": lambda b: connection.cursor().execute(
        f"INSERT INTO {_table(Book.genres.through)} (book_id, genre_id) VALUES (%s, %s)",
        [b[1].pk, Genre.objects.get().pk],
    ),
    "through_bulk_create": lambda b: Book.genres.through.objects.bulk_create(
        [Book.genres.through(book_id=b[2].pk, genre_id=Genre.objects.get().pk)]
    ),
}


@on_every_tagged_backend
@pytest.mark.parametrize("write", sorted(WRITES))
def test_no_stale_read_after_bulk_write(books: list[Book], write: str) -> None:
    reads = _reads(books)
    for name, arg in reads:
        cached(name, arg)
    WRITES[write](books)
    assert_fresh(*reads)


def test_a_failed_executemany_invalidates_the_rows_it_committed(
    books: list[Book],
) -> None:
    # An outside probe: in autocommit, executemany() commits each parameter row; the
    # second failing left the first row's cached read stale (invalidation ran only
    # after a successful execute()).
    from django.db import IntegrityError

    reads = _reads(books)
    for name, arg in reads:
        cached(name, arg)
    with pytest.raises(IntegrityError), connection.cursor() as cursor:
        cursor.executemany(
            f"UPDATE {_table(Book)} SET title = %s WHERE id = %s",
            [["changed", books[0].pk], [None, books[1].pk]],  # NOT NULL: fails
        )
    assert Book.objects.get(pk=books[0].pk).title == "changed"
    assert_fresh(*reads)


@on_every_tagged_backend
def test_pk_update_keeps_other_rows(books: list[Book], cache: Any) -> None:
    for b in books:
        cached("book_row", b.pk)
    Book.objects.filter(pk=books[1].pk).update(title="U1")
    assert (
        cache.get(f"book_row:{books[0].pk}") is not None
    )  # rows known: only one moved
    assert cache.get(f"book_row:{books[1].pk}") is None


@on_every_tagged_backend
def test_mti_update_of_parent_table_reaches_child_rows() -> None:
    r = Restaurant.objects.create(name="Luigi")
    cached("restaurant_row", r.pk)
    Place.objects.filter(name="Luigi").update(name="Mario")
    assert_fresh(("restaurant_row", r.pk), ("place_row", r.pk))


def test_reason_names_the_statement(books: list[Book]) -> None:
    seen: list[str] = []

    def receiver(reason: str, **kwargs: Any) -> None:
        seen.append(reason)

    tags_invalidated.connect(receiver)
    try:
        Book.objects.update(title="x")
    finally:
        tags_invalidated.disconnect(receiver)
    assert seen == ["sql UPDATE testapp_book"]


def test_uninstall_is_symmetric(books: list[Book], cache: Any) -> None:
    assert sqlwatch._wrapper in connection.execute_wrappers
    sqlwatch.uninstall()
    try:
        assert sqlwatch._wrapper not in connection.execute_wrappers
        cached("book_titles")
        Book.objects.update(title="unseen")
        assert cache.get("book_titles:None") is not None  # nothing watches any more
    finally:
        sqlwatch.install()
    assert connection.execute_wrappers.count(sqlwatch._wrapper) == 1


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT * FROM t", ()),
        ("CREATE TABLE t (id int)", ()),
        (
            'UPDATE "t" SET "a" = %s WHERE "t"."id" = %s',
            (("UPDATE", "t", "id", (-1,), False),),
        ),
        (
            'DELETE FROM "t" WHERE "t"."id" IN (%s, %s)',
            (("DELETE", "t", "id", (-2, -1), False),),
        ),
        ("update t set a = 1", (("UPDATE", "t", None, (), True),)),
        (
            'UPDATE "t" SET "a" = (SELECT b FROM u WHERE u.id = %s)',
            (("UPDATE", "t", None, (), True),),
        ),
        (
            'UPDATE "t" SET "a" = %s WHERE "u"."id" = %s',
            (("UPDATE", "t", None, (), True),),
        ),
        (
            'TRUNCATE TABLE a, "b"',
            (("TRUNCATE", "a", None, (), True), ("TRUNCATE", "b", None, (), True)),
        ),
        (
            "WITH x AS (SELECT 1) DELETE FROM z WHERE id = %s",
            (("DELETE", "z", None, (), True),),
        ),
        (
            "/* c */ DELETE FROM `q`.`t` WHERE id = %s",
            (("DELETE", "t", "id", (-1,), False),),
        ),
        ("REPLACE INTO t (id) VALUES (%s)", (("REPLACE", "t", None, (), True),)),
        (
            'INSERT INTO "t" ("a") VALUES (%s) ON CONFLICT("a") DO UPDATE SET "a" = 1',
            (("INSERT", "t", None, (), True),),
        ),
    ],
)
def test_parse(sql: str, expected: tuple[Any, ...]) -> None:
    got = tuple(
        (w.verb, w.table, w.pk_column, w.pk_params, w.all_rows)
        for w in sqlwatch.parse(sql)
    )
    assert got == expected


def test_insert_columns_are_parsed() -> None:
    (write,) = sqlwatch.parse(
        'INSERT OR IGNORE INTO "m" ("book_id", "genre_id") VALUES (%s, %s), (%s, %s)'
    )
    assert (write.verb, write.columns, write.all_rows) == (
        "INSERT",
        ("book_id", "genre_id"),
        False,
    )
