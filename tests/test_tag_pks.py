"""Any primary key makes a valid row tag: text pks with spaces, ``#``, ``%`` or length."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import transaction

from django_smartcache import invalidate_model, model_tag
from django_smartcache.core.tags import MAX_TAG_LENGTH, validate_tag
from django_smartcache.tagging import expand_tags
from tests.fixtures.tagged_caches import on_every_tagged_backend
from tests.testapp.models import City

pytestmark = [pytest.mark.django_db(transaction=True)]

NAMES = ["New York", "C#", "50%", "tab\there", "x" * 200, "Zürich", "line\u2028sep"]


@pytest.mark.parametrize("name", NAMES)
def test_the_row_tag_of_any_pk_is_valid_and_depends_on_all_rows(name: str) -> None:
    tag = model_tag(City, name)
    assert validate_tag(tag) == tag and len(tag) <= MAX_TAG_LENGTH
    assert expand_tags([tag]) == (tag, "model:testapp.city#*")


def test_escaped_pks_stay_distinct() -> None:
    tags = {model_tag(City, n) for n in ["a b", "a%20b", "a#b", "a%23b", "ab"]}
    assert len(tags) == 5
    assert model_tag(City, "x" * 200) != model_tag(City, "x" * 201)
    assert model_tag(City, "Zürich") == "model:testapp.city#Zürich"  # only what must be


@on_every_tagged_backend
@pytest.mark.parametrize("name", NAMES)
def test_writes_to_rows_with_such_pks_save_and_invalidate(
    tagged_cache: Any, name: str
) -> None:
    def population() -> int:
        return City.objects.get(pk=name).population

    def cached() -> int:
        return tagged_cache.get_or_set("pop", population, tags=[model_tag(City, name)])

    with transaction.atomic():  # an InvalidTag from post_save would roll this back
        City.objects.create(name=name, population=1)
    assert cached() == 1
    city = City.objects.get(pk=name)
    city.population = 2
    city.save()  # post_save: the row tag
    assert cached() == 2
    City.objects.filter(population__gte=0).update(population=3)  # all rows
    assert cached() == 3
    City.objects.filter(pk=name).update(population=4)  # the row, by pk
    assert cached() == 4
    invalidate_model(City)
    City.objects.filter(pk=name).update(population=5)
    assert cached() == 5


def test_an_abstract_or_swapped_out_model_has_no_tag() -> None:
    """``model_tag()`` gave tags no write ever invalidates for an abstract model and
    for ``auth.User`` under a custom ``AUTH_USER_MODEL`` (a reusable app importing
    it): their cached values were served stale (outside probe). Django refuses to
    query either; so does ``model_tag()``, saying what to tag instead."""
    from django.contrib.auth.models import User
    from django.test import override_settings

    from django_smartcache.registry import rows_tag
    from tests.testapp.models import Plain

    for make in (model_tag, rows_tag, invalidate_model):
        with pytest.raises(ValueError, match="testapp.Plain is abstract"):
            make(Plain)
    assert model_tag(User, 1) == "model:auth.user#1"  # the user model in use
    with override_settings(AUTH_USER_MODEL="testapp.Author"):
        for call in (lambda: model_tag(User, 1), lambda: invalidate_model(User)):
            with pytest.raises(ValueError, match="swapped for 'testapp.Author'"):
                call()
