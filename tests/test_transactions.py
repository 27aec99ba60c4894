"""Invalidation and real transactions (``transaction=True``): commit, rollback, savepoints, databases."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.cache import caches
from django.db import transaction

from django_smartcache import model_tag
from django_smartcache.signals import tags_invalidated
from django_smartcache.tagging import dirty_tags
from tests.fixtures.tagged_caches import on_every_tagged_backend
from tests.testapp.models import Author, Book
from tests.testapp.reads import cached, fresh

# Every scenario runs on every backend that takes tags.
pytestmark = [
    pytest.mark.django_db(transaction=True, databases=["default", "other"]),
    on_every_tagged_backend,
]


class Rollback(Exception):
    pass


@pytest.fixture(autouse=True)
def cache(tagged_cache: Any) -> Any:
    """The "tagged" alias (TaggedLocMemCache unless parametrized)."""
    return tagged_cache


@pytest.fixture
def book() -> Book:
    return Book.objects.create(title="old", author=Author.objects.create(name="A"))


@pytest.fixture
def signals() -> Iterator[list[tuple[tuple[str, ...], bool]]]:
    seen: list[tuple[tuple[str, ...], bool]] = []

    def receiver(tags: tuple[str, ...], on_commit: bool, **kwargs: Any) -> None:
        seen.append((tags, on_commit))

    tags_invalidated.connect(receiver)
    yield seen
    tags_invalidated.disconnect(receiver)


def _in_other_thread(func: Any) -> Any:
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(func()))
    thread.start()
    thread.join()
    return out[0]


def test_invalidated_now_and_again_at_commit(
    book: Book, cache: Any, signals: list[Any]
) -> None:
    row = model_tag(book)
    key = f"book_row:{book.pk}"
    with transaction.atomic():
        book.title = "new"
        book.save()
        assert any(row in tags and not on_commit for tags, on_commit in signals)
        assert not any(on_commit for _, on_commit in signals)
        # Another thread reads the committed (old) row and caches it after the
        # immediate invalidation, before the commit: valid for now...
        _in_other_thread(lambda: cache.set(key, {"title": "old"}, tags=[row]))
        assert _in_other_thread(lambda: cache.get(key)) == {"title": "old"}
    # ...and gone once the commit repeats the invalidation.
    assert any(row in tags and on_commit for tags, on_commit in signals)
    assert cache.get(key) is None
    assert cached("book_row", book.pk)["title"] == "new"


def test_reads_of_own_uncommitted_writes_are_not_cached(book: Book, cache: Any) -> None:
    cached("book_row", book.pk)
    with pytest.raises(Rollback), transaction.atomic():
        book.title = "uncommitted"
        book.save()
        assert model_tag(book) in dirty_tags()
        # This thread sees its own write; it must neither be served old data
        # from the cache nor store what it sees.
        assert cached("book_row", book.pk)["title"] == "uncommitted"
        assert cache.get(f"book_row:{book.pk}") is None
        cached("book_titles")
        raise Rollback
    assert dirty_tags() == set()
    assert cached("book_row", book.pk) == fresh("book_row", book.pk)
    assert cached("book_row", book.pk)["title"] == "old"
    assert cached("book_titles") == ["old"]


def test_rolled_back_savepoint_leaves_nothing_stale(book: Book) -> None:
    with transaction.atomic():
        try:
            with transaction.atomic():
                Book.objects.filter(pk=book.pk).update(title="in savepoint")
                assert cached("book_row", book.pk)["title"] == "in savepoint"
                raise Rollback
        except Rollback:
            pass
        assert cached("book_row", book.pk)["title"] == "old"
    assert cached("book_row", book.pk)["title"] == "old"
    assert cached("book_titles") == fresh("book_titles")


def test_committed_savepoint_is_repeated_at_outer_commit(
    book: Book, cache: Any, signals: list[Any]
) -> None:
    row = model_tag(book)
    key = f"book_row:{book.pk}"
    cached("book_row", book.pk)
    with transaction.atomic():
        with transaction.atomic():
            book.title = "new"
            book.save()
        # The savepoint is released, not committed: another thread still reads the
        # old row and may cache it...
        assert not any(on_commit for _, on_commit in signals)
        _in_other_thread(lambda: cache.set(key, {"title": "old"}, tags=[row]))
    # ...until the outer commit repeats the invalidation.
    assert any(row in tags and on_commit for tags, on_commit in signals)
    assert cache.get(key) is None
    assert cached("book_row", book.pk)["title"] == "new"


def test_each_database_has_its_own_transaction(
    book: Book, cache: Any, signals: list[Any]
) -> None:
    other = Book.objects.using("other").create(
        title="elsewhere", author=Author.objects.using("other").create(name="B")
    )
    cached("book_row", book.pk)
    signals.clear()
    with transaction.atomic(using="other"):
        other.title = "elsewhere v2"
        other.save(using="other")
        assert model_tag(other) in dirty_tags()
        # The default database has no open transaction: its writes are final,
        # invalidated at once, and its fresh rows cached again.
        book.title = "new"
        book.save()
        assert not any(on_commit for _, on_commit in signals)
        assert cached("book_row", book.pk)["title"] == "new"
        assert cache.get(f"book_row:{book.pk}") == fresh("book_row", book.pk)
    commits = [tags for tags, on_commit in signals if on_commit]
    assert commits and all(model_tag(book) not in tags for tags in commits)
    assert dirty_tags() == set()


def test_dirty_state_ends_with_a_rollback_without_hooks(book: Book) -> None:
    with pytest.raises(Rollback), transaction.atomic():
        book.save()
        raise Rollback
    assert dirty_tags() == set()
    assert cached("book_row", book.pk) is not None
    assert caches["tagged"].get(f"book_row:{book.pk}") is not None


def test_manual_transaction_rolled_back_leaves_nothing_stale(
    book: Book, cache: Any
) -> None:
    cached("book_row", book.pk)
    transaction.set_autocommit(False)
    try:
        Book.objects.filter(pk=book.pk).update(title="uncommitted")
        assert model_tag(book) in dirty_tags()
        assert cached("book_row", book.pk)["title"] == "uncommitted"  # not stored
        assert cache.get(f"book_row:{book.pk}") is None
        transaction.rollback()
        assert model_tag(book) in dirty_tags()  # still manual: until autocommit is on
    finally:
        transaction.set_autocommit(True)
    assert dirty_tags() == set()
    assert cached("book_row", book.pk)["title"] == "old"
    assert cached("book_row", book.pk) == fresh("book_row", book.pk)


def test_manual_transaction_commit_repeats_the_invalidation(
    book: Book, cache: Any, signals: list[Any]
) -> None:
    row = model_tag(book)
    key = f"book_row:{book.pk}"
    transaction.set_autocommit(False)
    try:
        book.title = "new"
        book.save()
        # Another thread caches the committed (old) row before the commit.
        _in_other_thread(lambda: cache.set(key, {"title": "old"}, tags=[row]))
        transaction.commit()
    finally:
        transaction.set_autocommit(True)  # Django runs the hooks of a committed one
    assert any(row in tags and on_commit for tags, on_commit in signals)
    assert cache.get(key) is None
    assert cached("book_row", book.pk)["title"] == "new"
