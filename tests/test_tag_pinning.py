"""``get_or_set(..., depends_on=)`` reads its dependencies' state before computing.

As it reads tag versions: a dependency deleted, rewritten, re-cached or first written
while the value is computed leaves an entry that reads as a miss, never a stale hit
(it used to record the state found after the computation). Each race is made
deterministic by doing the write inside the computation, on SmartCache, SQLiteCache
(file) and MultiLevelCache (over a SQLite file), and the tag mixin over LocMem.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from django_smartcache import model_tag
from tests.testapp.models import Author, Book

pytestmark = pytest.mark.django_db(transaction=True)

backends = pytest.mark.parametrize(
    "tagged_cache", ["locmem", "smart", "sqlite", "multilevel"], indirect=True
)


def _purge(cache: Any) -> None:
    """Free invalidated entries at once, as later writes would (SmartCache, and a
    MultiLevelCache's SmartCache L1): the dependency is then gone, not just stale."""
    for level in (cache, *getattr(cache, "levels", ())):
        store = getattr(level, "_store", None)
        if store is not None and hasattr(store, "purge_invalidated"):
            store.purge_invalidated()


@pytest.fixture
def book() -> Book:
    return Book.objects.create(title="old", author=Author.objects.create(name="A"))


def _save(book: Book, title: str) -> None:
    """Another request's save (its post_save invalidates the row's tags)."""
    row = Book.objects.get(pk=book.pk)
    row.title = title
    row.save()


def _cache_dep(cache: Any, book: Book) -> None:
    cache.get_or_set(
        "dep",
        lambda: Book.objects.get(pk=book.pk).title,
        300,
        tags=[model_tag(book)],
    )


# -- depends_on ------------------------------------------------------------------------


@backends
def test_depends_on_without_a_race_stores_a_valid_dependant(
    tagged_cache: Any, book: Book
) -> None:
    """The control: nothing written during the computation, the entry is served, and
    a save afterwards makes it a miss."""
    cache = tagged_cache
    _cache_dep(cache, book)
    got = cache.get_or_set("child", lambda: f"page for {cache.get('dep')}", 300, depends_on=["dep"])  # fmt: skip
    assert got == "page for old"
    assert cache.get("child") == "page for old"
    _save(book, "NEW")
    assert cache.get("child") is None


@backends
def test_a_save_during_the_computation_invalidates_the_dependant(
    tagged_cache: Any, book: Book
) -> None:
    """Case A: the dependency's tag is invalidated (and the dependency purged, on the
    backends that free invalidated entries) while the dependant is computed. Read
    after, the purged dependency was recorded as "absent, must stay absent"."""
    cache = tagged_cache
    _cache_dep(cache, book)

    def compute() -> str:
        seen = cache.get("dep")
        _save(book, "NEW")
        _purge(cache)
        return f"page for {seen}"

    assert cache.get_or_set("child", compute, 300, depends_on=["dep"]) == "page for old"
    assert cache.get("child") is None


@backends
def test_a_dependency_deleted_during_the_computation_invalidates_the_dependant(
    tagged_cache: Any,
) -> None:
    cache = tagged_cache
    cache.set("dep", "v1", 300)

    def compute() -> str:
        seen = cache.get("dep")
        cache.delete("dep")
        return f"derived from {seen}"

    assert cache.get_or_set("child", compute, 300, depends_on=["dep"]) == "derived from v1"  # fmt: skip
    assert cache.get("child") is None


@backends
def test_a_dependency_recached_during_the_computation_invalidates_the_dependant(
    tagged_cache: Any, book: Book
) -> None:
    """Case B: another request saves the row and caches the dependency again while
    the dependant is computed from the old one: the new write id must not be the one
    recorded."""
    cache = tagged_cache
    _cache_dep(cache, book)

    def compute() -> str:
        seen = cache.get("dep")
        _save(book, "NEW")
        _cache_dep(cache, book)
        return f"page for {seen}"

    assert cache.get_or_set("child", compute, 300, depends_on=["dep"]) == "page for old"
    assert cache.get("dep") == "NEW"
    assert cache.get("child") is None


@backends
def test_an_untagged_dependency_rewritten_during_the_computation(
    tagged_cache: Any,
) -> None:
    cache = tagged_cache
    cache.set("dep", "v1", 300)

    def compute() -> str:
        seen = cache.get("dep")
        cache.set("dep", "v2", 300)
        return f"derived from {seen}"

    cache.get_or_set("child", compute, 300, depends_on=["dep"])
    assert cache.get("child") is None


@backends
def test_a_dependency_that_appears_during_the_computation(tagged_cache: Any) -> None:
    cache = tagged_cache

    def compute() -> str:
        seen = cache.get("dep")
        cache.set("dep", "now here", 300)
        return f"derived from {seen!r}"

    assert cache.get_or_set("child", compute, 300, depends_on=["dep"]) == "derived from None"  # fmt: skip
    assert cache.get("child") is None


@backends
def test_aget_or_set_pins_the_dependencies_too(tagged_cache: Any, book: Book) -> None:
    cache = tagged_cache
    cache.set("dep", "v1", 300)

    def compute() -> str:
        seen = cache.get("dep")
        cache.set("dep", "v2", 300)
        return f"derived from {seen}"

    async def go() -> Any:
        return await cache.aget_or_set("child", compute, 300, depends_on=["dep"])

    assert asyncio.run(go()) == "derived from v1"
    assert cache.get("child") is None


# -- a dependency the computation writes itself -----------------------------------------


@backends
def test_a_dependency_the_computation_writes_is_recorded_as_written(
    tagged_cache: Any, book: Book
) -> None:
    """Pinned before the computation, a dependency the computation itself wrote (a
    tagged refresh of it for other readers) made every result stale at once: computed
    at every call, never cached (review). Its own tagged writes are now recorded in
    the state they wrote; another's change during the computation still is not."""
    cache = tagged_cache
    computed = []

    def page() -> str:
        computed.append(1)
        title = Book.objects.get(pk=book.pk).title
        cache.set("dep", title, 300, tags=[model_tag(book)])  # refreshed by it
        return f"page for {title}"

    for _ in range(4):
        assert cache.get_or_set("page", page, 300, depends_on=["dep"]) == "page for old"
    assert len(computed) == 1
    _save(book, "new")  # the dependency's tag: the page goes with it
    _purge(cache)
    assert cache.get_or_set("page", page, 300, depends_on=["dep"]) == "page for new"
    assert len(computed) == 2


@backends
def test_another_write_after_the_computations_own_still_makes_it_stale(
    tagged_cache: Any, book: Book
) -> None:
    cache = tagged_cache

    def theirs_elsewhere() -> str:
        # The second write from another context: not the computation's own.
        import contextvars

        return contextvars.Context().run(
            lambda: cache.set("dep", "theirs", 300, tags=[model_tag(book)])
        )

    def page_raced() -> str:
        cache.set("dep", "mine", 300, tags=[model_tag(book)])
        theirs_elsewhere()
        return "page for mine"

    cache.get_or_set("page", page_raced, 300, depends_on=["dep"])
    assert cache.get("page") is None  # stale at once: a miss, not "page for mine"
