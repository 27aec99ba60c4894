"""``SMARTCACHE["MODELS"]`` naming a proxy model, or a multi-table-inheritance child
without its parents: what was named is tracked (an outside probe found both stale)."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import override_settings

from django_smartcache import model_tag, registry
from tests.testapp.models import Author, Book, FamousAuthor

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
