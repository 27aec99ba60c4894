"""``SMARTCACHE["MODELS"]`` naming a proxy model, or a multi-table-inheritance child
without its parents: what was named is tracked (an outside probe found both stale)."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import override_settings

from django_smartcache import model_tag, registry
from tests.testapp.models import Article, Author, Book, FamousAuthor, Place, Restaurant

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def cache(tagged_cache: Any) -> Any:
    return tagged_cache


def test_a_proxy_named_in_models_tracks_its_concrete_model(cache: Any) -> None:
    with override_settings(SMARTCACHE={"MODELS": ["testapp.FamousAuthor"]}):
        assert registry.is_tracked(FamousAuthor) and registry.is_tracked(Author)
        assert not registry.is_tracked(Book)
        famous = FamousAuthor.objects.create(name="old")

        def name() -> str:
            return Author.objects.get(pk=famous.pk).name

        def cached() -> str:
            return cache.get_or_set("a", name, tags=[model_tag(famous)])  # type: ignore[no-any-return]

        assert cached() == "old"
        famous.name = "saved"
        famous.save()  # post_save of the proxy
        assert cached() == "saved"
        Author.objects.filter(pk=famous.pk).update(name="updated")  # its table
        assert cached() == "updated"


def test_a_proxy_named_in_exclude_models_excludes_its_concrete_model() -> None:
    with override_settings(SMARTCACHE={"EXCLUDE_MODELS": ["testapp.famousauthor"]}):
        assert not registry.is_tracked(Author)
        assert registry.is_tracked(Book)


def test_a_tracked_child_watches_its_parents_table(cache: Any) -> None:
    with override_settings(SMARTCACHE={"MODELS": ["testapp.Restaurant"]}):
        assert not registry.is_tracked(Place) and registry.is_watched(Place)
        assert not registry.is_watched(Article)  # not a parent of Restaurant
        place = Place.objects.create(name="a plain place")
        shop = Restaurant.objects.create(name="old")

        def name() -> str:
            return Restaurant.objects.get(pk=shop.pk).name

        def cached() -> str:
            return cache.get_or_set("r", name, tags=[model_tag(Restaurant, shop.pk)])  # type: ignore[no-any-return]

        assert cached() == "old"
        Restaurant.objects.filter(pk=shop.pk).update(name="updated")  # place table
        assert cached() == "updated"
        Restaurant.objects.bulk_update([Restaurant(pk=shop.pk, name="bulk")], ["name"])
        assert cached() == "bulk"
        Place.objects.filter(pk=place.pk).update(name="x")  # another row: kept
        assert cache.get("r") == "bulk"
        Place.objects.filter(name="bulk").update(name="any")  # rows unknown: all
        assert cached() == "any"
