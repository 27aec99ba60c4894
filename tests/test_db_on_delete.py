"""Django 6.1's ``on_delete=DB_CASCADE``/``DB_SET_NULL``: the database deletes or nulls
the referencing rows itself, and Django sends neither SQL nor a signal for them. A
deletion of the referenced rows invalidates every row of the models reached, along
further database cascades (their rows are not known)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.db import transaction
from django.test import override_settings

from django_smartcache import invalidation, model_tag, registry, sqlwatch
from tests.testapp import models as testapp

pytestmark = [
    pytest.mark.skipif(
        testapp.DB_CASCADE is None,
        reason="on_delete=DB_CASCADE/DB_SET_NULL are new in Django 6.1",
    ),
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("tagged_cache"),
]


@pytest.fixture(params=["signals+sql", "signals only", "sql only"])
def mode(request: pytest.FixtureRequest) -> Iterator[str]:
    """Each mechanism alone must already be enough."""
    if request.param == "signals only":
        sqlwatch.uninstall()
    elif request.param == "sql only":
        invalidation.disconnect()
    try:
        yield request.param
    finally:
        sqlwatch.install()
        invalidation.connect()


def _reads(cache: Any, shelf: Any, slot: Any, pin: Any, sticker: Any) -> Any:
    Slot, Pin, Sticker = testapp.Slot, testapp.Pin, testapp.Sticker
    return (
        cache.get_or_set(
            f"slot:{slot.pk}",
            lambda: Slot.objects.filter(pk=slot.pk).values_list("label").first(),
            tags=[model_tag(Slot, slot.pk)],
        ),
        cache.get_or_set("slots", lambda: Slot.objects.count(), tags=[model_tag(Slot)]),
        cache.get_or_set(
            f"pin:{pin.pk}",
            lambda: Pin.objects.filter(pk=pin.pk).exists(),
            tags=[model_tag(Pin, pin.pk)],
        ),
        cache.get_or_set(
            f"sticker:{sticker.pk}",
            lambda: Sticker.objects.values_list("shelf_id", flat=True).get(
                pk=sticker.pk
            ),
            tags=[model_tag(Sticker, sticker.pk)],
        ),
    )


def _shelf() -> tuple[Any, ...]:
    shelf = testapp.Shelf.objects.create(name="s")
    slot = testapp.Slot.objects.create(shelf=shelf, label="x")
    pin = testapp.Pin.objects.create(slot=slot)
    sticker = testapp.Sticker.objects.create(shelf=shelf)
    return shelf, slot, pin, sticker


DELETES = {
    "instance": lambda shelf: shelf.delete(),
    "queryset": lambda shelf: testapp.Shelf.objects.filter(pk=shelf.pk).delete(),
    "in atomic": lambda shelf: _in_atomic(shelf),
}


def _in_atomic(shelf: Any) -> None:
    with transaction.atomic():
        shelf.delete()


@pytest.mark.parametrize("how", sorted(DELETES))
def test_rows_the_database_deletes_or_nulls_are_invalidated(
    tagged_cache: Any, mode: str, how: str
) -> None:
    """``shelf.delete()`` left the cached slot, the slot count, the pin (a cascade
    further) and the sticker's ``shelf_id`` as they were, forever."""
    shelf, slot, pin, sticker = _shelf()
    assert _reads(tagged_cache, shelf, slot, pin, sticker) == (
        ("x",),
        1,
        True,
        shelf.pk,
    )
    DELETES[how](shelf)
    assert testapp.Sticker.objects.get(pk=sticker.pk).shelf_id is None  # the database
    assert _reads(tagged_cache, shelf, slot, pin, sticker) == (None, 0, False, None)


def test_an_untracked_parent_still_invalidates_what_its_deletion_reaches(
    tagged_cache: Any, mode: str
) -> None:
    with override_settings(SMARTCACHE={"EXCLUDE_MODELS": ["testapp.shelf"]}):
        shelf, slot, pin, sticker = _shelf()
        _reads(tagged_cache, shelf, slot, pin, sticker)
        shelf.delete()
        assert _reads(tagged_cache, shelf, slot, pin, sticker) == (
            None,
            0,
            False,
            None,
        )


def test_what_a_deletion_reaches_in_the_database() -> None:
    Shelf, Slot, Pin, Sticker = (
        testapp.Shelf,
        testapp.Slot,
        testapp.Pin,
        testapp.Sticker,
    )
    assert set(registry.db_deletion_tags(Shelf)) == {
        model_tag(m) + suffix for m in (Slot, Pin, Sticker) for suffix in ("", "#*")
    }
    assert set(registry.db_deletion_tags(Slot)) == {
        model_tag(Pin),
        model_tag(Pin) + "#*",
    }
    # Nulled, not deleted: nothing cascades from a sticker's deletion.
    assert registry.db_deletion_tags(Sticker) == ()
    assert registry.db_deletion_tags(Pin) == ()
