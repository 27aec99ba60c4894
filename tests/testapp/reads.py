"""Read-through helpers shaped like application code, and the fresh-vs-cached check."""

from __future__ import annotations

from typing import Any

from django.core.cache import caches

from django_smartcache import model_tag

from .models import Author, Book, Club, Genre, Membership, Place, Restaurant


def _cache() -> Any:
    return caches["tagged"]


def book_row(pk: int) -> dict[str, Any] | None:
    return Book.objects.filter(pk=pk).values("id", "title", "author_id").first()


def book_genres(pk: int) -> list[int]:
    """Only the relation (pks), so the row tag of the book is the right tag."""
    return sorted(Genre.objects.filter(books__pk=pk).values_list("pk", flat=True))


def genre_books(pk: int) -> list[int]:
    return sorted(Book.objects.filter(genres__pk=pk).values_list("pk", flat=True))


def book_titles() -> list[str]:
    return sorted(Book.objects.values_list("title", flat=True))


def author_clubs(pk: int) -> list[tuple[str, str]]:
    return sorted(
        Membership.objects.filter(author_id=pk).values_list("club__name", "role")
    )


def club_members(pk: int) -> list[str]:
    return sorted(Author.objects.filter(clubs__pk=pk).values_list("name", flat=True))


def place_row(pk: int) -> dict[str, Any] | None:
    return Place.objects.filter(pk=pk).values("id", "name").first()


def restaurant_row(pk: int) -> dict[str, Any] | None:
    return Restaurant.objects.filter(pk=pk).values("id", "name", "serves_pizza").first()


#: name -> (function, tags for an argument): how an application would tag each read.
READS = {
    "book_row": (book_row, lambda pk: [model_tag(Book, pk)]),
    "book_genres": (book_genres, lambda pk: [model_tag(Book, pk)]),
    "genre_books": (genre_books, lambda pk: [model_tag(Genre, pk)]),
    "book_titles": (book_titles, lambda _: [model_tag(Book)]),
    "author_clubs": (author_clubs, lambda pk: [model_tag(Author, pk), model_tag(Club)]),
    "club_members": (club_members, lambda pk: [model_tag(Club, pk), model_tag(Author)]),
    "place_row": (place_row, lambda pk: [model_tag(Place, pk)]),
    "restaurant_row": (restaurant_row, lambda pk: [model_tag(Restaurant, pk)]),
}


def cached(name: str, arg: Any = None) -> Any:
    func, tags = READS[name]
    key = f"{name}:{arg}"
    return _cache().get_or_set(
        key, lambda: func(*([] if arg is None else [arg])), tags=tags(arg)
    )


def fresh(name: str, arg: Any = None) -> Any:
    func, _ = READS[name]
    return func(*([] if arg is None else [arg]))


def assert_fresh(*reads: tuple[str, Any]) -> None:
    """Every cached read equals a fresh database read."""
    for name, arg in reads:
        assert cached(name, arg) == fresh(name, arg), f"stale cached {name}({arg!r})"
