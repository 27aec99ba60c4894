"""Warmers of the test app, found by ``warmers.autodiscover()`` like any app's."""

from __future__ import annotations

from typing import Any

from django_smartcache.registry import model_tag
from django_smartcache.warmers import warmer

from .models import Author, Book


@warmer("testapp.authors", caches="tagged", tags=model_tag(Author))
def authors(cache: Any) -> None:
    """Every author's name under author:<pk>, dropped when any author is written."""
    cache.set_many({f"author:{a.pk}": a.name for a in Author.objects.all()})


@warmer("testapp.book_count")
def book_count(cache: Any) -> None:
    """The number of books (default alias, or the one given with --cache)."""
    cache.set("books:count", Book.objects.count(), timeout=None)
