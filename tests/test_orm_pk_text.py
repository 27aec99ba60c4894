"""One row tag per row whatever form its pk's value takes: a ``DecimalField`` pk as
created (``1.5``) and as read back (``1.50``), a ``DateTimeField`` pk aware in Python
and naive UTC text in SQL parameters (an outside probe found both stale)."""

from __future__ import annotations

import datetime
import zoneinfo
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection
from django.test import override_settings

from django_smartcache import model_tag
from django_smartcache.registry import normalize_pk
from tests.testapp.models import Brand, City, Price, Reading

pytestmark = pytest.mark.django_db(transaction=True)

NOON_UTC = datetime.datetime(2024, 1, 1, 12, 0, tzinfo=datetime.UTC)


@pytest.fixture
def cache(tagged_cache: Any) -> Any:
    return tagged_cache


def test_a_decimal_pk_has_one_text_at_the_fields_places() -> None:
    forms = [Decimal("1.5"), Decimal("1.50"), "1.5", 1.5, Decimal("15E-1")]
    assert {model_tag(Price, f) for f in forms} == {"model:testapp.price#1.50"}
    assert model_tag(Price, Decimal("-0")) == model_tag(Price, 0)


def test_a_datetime_pk_has_one_text_in_utc() -> None:
    paris = NOON_UTC.astimezone(zoneinfo.ZoneInfo("Europe/Paris"))
    assert model_tag(Reading, paris) == model_tag(Reading, NOON_UTC)
    assert (
        model_tag(Reading, NOON_UTC)
        == "model:testapp.reading#2024-01-01T12:00:00.000000Z"
    )
    # an SQL parameter: naive text in the connection's zone (UTC)
    assert normalize_pk(
        Reading, "2024-01-01 12:00:00", db_timezone=datetime.UTC
    ) == normalize_pk(Reading, NOON_UTC)
    # a naive value in Python: the default time zone, as Django saves it
    with override_settings(TIME_ZONE="Europe/Paris"):
        assert model_tag(Reading, datetime.datetime(2024, 1, 1, 13, 0)) == model_tag(
            Reading, NOON_UTC
        )
    with override_settings(USE_TZ=False):
        naive = datetime.datetime(2024, 1, 1, 12, 0)
        assert model_tag(Reading, naive) == model_tag(Reading, "2024-01-01 12:00:00")


def test_a_decimal_pk_row_read_back_is_invalidated_by_a_save(cache: Any) -> None:
    created = Price.objects.create(amount=Decimal("1.5"), label="old")
    loaded = Price.objects.get(pk=created.pk)

    def label() -> str:
        return Price.objects.get(pk=created.pk).label

    assert cache.get_or_set("p", label, tags=[model_tag(loaded)]) == "old"
    created.label = "new"
    created.save()
    assert cache.get_or_set("p", label, tags=[model_tag(loaded)]) == "new"


def test_a_datetime_pk_row_is_invalidated_by_sql(cache: Any) -> None:
    reading = Reading.objects.create(taken_at=NOON_UTC, value=1)

    def value() -> int:
        return Reading.objects.get(pk=NOON_UTC).value

    def cached() -> int:
        return cache.get_or_set("r", value, tags=[model_tag(reading)])  # type: ignore[no-any-return]

    assert cached() == 1
    Reading.objects.filter(pk=NOON_UTC).update(value=2)  # a parameter of naive text
    assert cached() == 2
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE testapp_reading SET value = %s WHERE taken_at = %s",
            [3, "2024-01-01 12:00:00"],
        )
    assert cached() == 3
    Reading.objects.bulk_update([Reading(taken_at=NOON_UTC, value=4)], ["value"])
    assert cached() == 4


def test_a_pk_compared_without_case_is_invalidated_whatever_case_a_write_uses(
    cache: Any,
) -> None:
    """A text pk under a collation that folds case (SQLite's ``NOCASE``, MySQL's
    default ``_ci``, PostgreSQL's ``citext``): ``filter(pk="acme").update()``, raw
    ``WHERE slug = 'ACME'`` and ``Brand(slug="acme").save()`` write row ``'Acme'``,
    but invalidated ``#acme`` only, and ``model_tag(Brand, "Acme")`` stayed stale."""
    Brand.objects.create(slug="Acme", name="v0")

    def cached() -> str:
        return cache.get_or_set(  # type: ignore[no-any-return]
            "brand",
            lambda: Brand.objects.get(pk="Acme").name,
            tags=[model_tag(Brand, "Acme")],
        )

    assert cached() == "v0"
    Brand.objects.filter(pk="acme").update(name="v1")
    assert cached() == "v1"
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE testapp_brand SET name = %s WHERE slug = %s", ["v2", "ACME"]
        )
    assert cached() == "v2"
    Brand(slug="acme", name="v3").save()
    assert Brand.objects.count() == 1
    assert cached() == "v3"
    Brand(slug="aCmE").delete()
    assert not Brand.objects.exists()
    with pytest.raises(Brand.DoesNotExist):
        cached()


def test_which_pks_are_found_only_by_their_own_text() -> None:
    """How ``row_tags`` decides, per vendor, from the field and its collation."""
    from django_smartcache.registry import _EXACT_COLLATIONS, _exact_pks

    assert _exact_pks(City, "default")  # SQLite's default BINARY
    assert not _exact_pks(Brand, "default")  # NOCASE
    assert _exact_pks(Price, None) and _exact_pks(Reading, None)  # not text
    sqlite, pg, mysql = (
        _EXACT_COLLATIONS[v] for v in ("sqlite", "postgresql", "mysql")
    )
    assert sqlite(None) and sqlite("binary") and not sqlite("rtrim")
    assert pg(None) and pg("c") and not pg("case_insensitive")
    # MySQL: the default is the table's, usually *_ci; a PAD SPACE *_bin folds spaces.
    assert not mysql(None) and not mysql("utf8mb4_0900_ai_ci")
    assert not mysql("utf8mb4_bin") and mysql("utf8mb4_0900_bin")
