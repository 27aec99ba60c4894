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
from tests.testapp.models import Price, Reading

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
