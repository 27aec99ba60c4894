"""A model with a ``CompositePrimaryKey`` (Django 5.2): its writes are tagged by the
tuple, and it breaks no write of any other model (an outside probe's crash)."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection

from django_smartcache import model_tag, registry, sqlwatch
from tests.testapp.models import Author, Seat

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def cache(tagged_cache: Any) -> Any:
    return tagged_cache


def test_sql_by_a_composite_pk_names_its_rows() -> None:
    (write,) = sqlwatch.parse(
        'DELETE FROM "testapp_seat" WHERE (("testapp_seat"."number" = %s AND '
        '"testapp_seat"."hall" = %s) OR ("testapp_seat"."number" = %s AND '
        '"testapp_seat"."hall" = %s))'
    )
    assert write.key_columns == ("number", "hall") and not write.all_rows
    (use,) = registry.tables()["testapp_seat"]
    tags = sqlwatch._tags_for_use(write, use, [1, "A", 2, "B b"], False)
    assert set(tags) == {
        "model:testapp.seat",
        "model:testapp.seat#A,1",
        "model:testapp.seat#B%20b,2",
    }
    for sql in (
        'UPDATE "testapp_seat" SET "hall" = %s WHERE ("hall" = %s AND "number" = %s)',
        'DELETE FROM "testapp_seat" WHERE ("hall" = %s AND "other"."number" = %s)',
        'DELETE FROM "testapp_seat" WHERE ("hall" = %s AND "hall" = %s)',
    ):
        (write,) = sqlwatch.parse(sql)
        tags = sqlwatch._tags_for_use(write, use, ["x", "A", 1], False)
        assert "model:testapp.seat#*" in tags, sql


def test_its_table_maps_to_the_pk_columns_and_other_writes_work() -> None:
    (use,) = registry.tables()["testapp_seat"]
    assert (use.pk_column, use.pk_columns) == (None, ("hall", "number"))
    Author.objects.create(name="a")  # crashed in the SQL watcher, after the insert
    Seat.objects.create(hall="A", number=1)


def test_row_tag_is_the_text_of_the_tuple() -> None:
    seat = Seat.objects.create(hall="A b", number=7)
    assert model_tag(seat) == "model:testapp.seat#A%20b,7"
    assert model_tag(Seat, ("A b", "7")) == model_tag(seat)
    assert model_tag(Seat, ["A b", 7]) == model_tag(seat)
    # "," joins the parts, so a "," inside one is escaped: no two tuples share a tag
    assert model_tag(Seat, ("a,1", 2)) != model_tag(Seat, ("a", 12))
    with pytest.raises(ValueError, match="composite"):
        model_tag(Seat, 7)


def test_writes_invalidate_its_rows(cache: Any) -> None:
    seat = Seat.objects.create(hall="A", number=1, holder="old")
    other = Seat.objects.create(hall="A", number=2, holder="x")

    def cached(key: str, obj: Seat) -> str:
        def read() -> str:
            return Seat.objects.get(pk=obj.pk).holder

        return cache.get_or_set(key, read, tags=[model_tag(obj)])  # type: ignore[no-any-return]

    assert cached("one", seat) == "old" and cached("two", other) == "x"
    seat.holder = "saved"
    seat.save()  # post_save: that row only
    assert cached("one", seat) == "saved"
    assert cache.get("two") == "x"
    Seat.objects.filter(pk=(seat.hall, seat.number)).update(holder="updated")
    assert cached("one", seat) == "updated"  # WHERE (hall = %s AND number = %s)
    assert cache.get("two") == "x"
    Seat.objects.filter(pk__in=[("A", 9), ("A", 2)]).update(holder="y")
    assert cache.get("one") == "updated"  # OR-ed conditions: those rows
    assert cached("two", other) == "y"
    Seat.objects.filter(hall="A").update(holder="z")
    assert cache.get("one") is None  # any other condition: all rows
    assert cached("one", seat) == "z"
    Seat.objects.bulk_create([Seat(hall="B", number=1, holder="bulk")])
    assert cache.get("one") == "z"  # an INSERT naming the pk: that row only
    assert cached("new", Seat(hall="B", number=1)) == "bulk"
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO testapp_seat (hall, number, holder) VALUES (%s, %s, %s)",
            ["C", 1, "raw"],
        )
    assert cache.get("new") == "bulk" and cache.get("one") == "z"
    Seat.objects.filter(pk=("B", 1)).delete()
    assert cache.get("new") is None


def test_django_6_tuple_comparisons_name_the_rows() -> None:
    # Django 6 writes a composite pk's rows as tuples on SQLite: save() and pk__in
    # invalidated every row of the model until the watcher read them (matrix, 6.1).
    one = 'UPDATE "t" SET "x" = %s WHERE ("t"."hall", "t"."number") = (%s, %s)'
    (write,) = sqlwatch.parse(one)
    assert not write.all_rows and write.key_columns == ("hall", "number")
    assert write.pk_params == (-2, -1)
    two = 'DELETE FROM "t" WHERE ("t"."hall", "t"."number") IN ((%s, %s), (%s, %s))'
    (write,) = sqlwatch.parse(two)
    assert not write.all_rows and write.pk_params == (-4, -3, -2, -1)
    other = 'DELETE FROM "t" WHERE ("t"."hall", "u"."number") IN ((%s, %s))'
    assert sqlwatch.parse(other)[0].all_rows  # another table's column: unknown rows
