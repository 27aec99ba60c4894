"""Invalidation and real transactions (``transaction=True``): commit, rollback, savepoints, databases."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.cache import caches
from django.db import connection, transaction

from django_smartcache import _transactions, model_tag
from django_smartcache._transactions import dirty_tags
from django_smartcache.signals import tags_invalidated
from tests.fixtures.tagged_caches import on_every_tagged_backend
from tests.testapp.models import Author, Book, Place, PlaceArticle, Restaurant
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


# -- outside probe, session 6 -------------------------------------------------------


def test_manual_transaction_keeps_its_dirty_state_through_djangos_own_atomic(
    book: Book, cache: Any
) -> None:
    """``bulk_update()`` (like ``QuerySet.delete()``, ``get_or_create()``, a child
    model's ``save()``) runs inside Django's own ``atomic()``. In manual mode that
    block neither begins nor commits: the dirty state used to end with it, and the
    thread then cached its uncommitted write, left there by the rollback."""
    key = f"book_row:{book.pk}"
    cached("book_row", book.pk)
    transaction.set_autocommit(False)
    try:
        book.title = "uncommitted"
        Book.objects.bulk_update([book], ["title"])
        assert model_tag(book) in dirty_tags()
        with transaction.atomic():  # an explicit one ends the same way
            pass
        assert model_tag(book) in dirty_tags()
        assert cached("book_row", book.pk)["title"] == "uncommitted"  # not stored
        assert cache.get(key) is None
        transaction.rollback()
    finally:
        transaction.set_autocommit(True)
    assert cached("book_row", book.pk)["title"] == "old"
    assert cached("book_row", book.pk) == fresh("book_row", book.pk)


def test_the_repeat_at_commit_runs_before_a_failing_hook(
    book: Book, cache: Any
) -> None:
    """A non-robust ``on_commit`` hook that raises stops Django from running the hooks
    after it; the repeat of the invalidation is queued first, so it still runs."""
    row = model_tag(book)
    key = f"book_row:{book.pk}"

    def send_mail() -> None:
        raise RuntimeError("SMTP down")

    with pytest.raises(RuntimeError, match="SMTP down"), transaction.atomic():
        transaction.on_commit(send_mail)
        book.title = "new"
        book.save()
        # Another thread caches the committed (old) row before the commit.
        _in_other_thread(lambda: cache.set(key, {"title": "old"}, tags=[row]))
    assert cache.get(key) is None
    assert cached("book_row", book.pk)["title"] == "new"


def test_a_writer_in_a_transaction_shares_no_computation(
    book: Book, cache: Any
) -> None:
    """Single flight across threads ignored transactions: a reader joining the
    writer's computation got its uncommitted value (then rolled back), and a writer
    joining a reader's got the value from before its own write."""
    row = model_tag(book)
    key = f"flight_row:{book.pk}"
    entered, release = threading.Event(), threading.Event()

    def read_title() -> str:
        title = Book.objects.get(pk=book.pk).title
        entered.set()
        release.wait(10)
        return title

    # (a) The writer leads; a reader arriving meanwhile does not join it.
    got: dict[str, Any] = {}

    def reader_a() -> None:
        entered.wait(10)  # the writer's computation is under way
        got["reader"] = cache.get_or_set(key, lambda: "committed", 60, tags=[row])
        release.set()  # (joined, it would wait for the writer: 10 s, then fail)

    with pytest.raises(Rollback), transaction.atomic():
        book.title = "uncommitted"
        book.save()
        reader = threading.Thread(target=reader_a)
        reader.start()
        got["writer"] = cache.get_or_set(key, read_title, 60, tags=[row])
        reader.join(10)
        raise Rollback
    assert got == {"writer": "uncommitted", "reader": "committed"}
    # (b) A reader leads; the writer arriving meanwhile computes its own.
    entered.clear()
    release.clear()
    got.clear()
    reader = threading.Thread(
        target=lambda: got.update(
            reader=cache.get_or_set(f"{key}:b", read_title, 60, tags=[row])
        )
    )
    reader.start()
    assert entered.wait(10)
    with pytest.raises(Rollback), transaction.atomic():
        Book.objects.filter(pk=book.pk).update(title="mine")
        got["writer"] = cache.get_or_set(
            f"{key}:b", lambda: Book.objects.get(pk=book.pk).title, 60, tags=[row]
        )
        raise Rollback
    release.set()
    reader.join(10)
    assert got == {"writer": "mine", "reader": "old"}


def test_rows_inserted_without_pks_are_dirty_until_the_transaction_ends(
    book: Book, cache: Any
) -> None:
    """``bulk_create()`` without pks and a raw ``INSERT`` not naming the pk used to
    mark only the model tag dirty: a row-tagged read of the new row stored its
    uncommitted value, another thread got it before the commit, and it outlived
    the rollback (SQLite then gives the same pk to the next row)."""
    author = book.author
    with pytest.raises(Rollback), transaction.atomic():
        (ghost,) = Book.objects.bulk_create([Book(title="ghost", author=author)])
        assert ghost.pk is not None
        assert cached("book_row", ghost.pk)["title"] == "ghost"
        assert cache.get(f"book_row:{ghost.pk}") is None  # not stored
        assert _in_other_thread(lambda: cache.get(f"book_row:{ghost.pk}")) is None
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO testapp_book (title, author_id) VALUES (%s, %s)",
                ["raw ghost", author.pk],
            )
            raw_pk = cursor.lastrowid
        assert cached("book_row", raw_pk)["title"] == "raw ghost"
        assert cache.get(f"book_row:{raw_pk}") is None
        raise Rollback
    assert dirty_tags() == set()
    (real,) = Book.objects.bulk_create([Book(title="real", author=author)])
    assert real.pk == ghost.pk  # the rolled-back pk, given again
    assert cached("book_row", real.pk)["title"] == "real"


def test_a_committed_insert_without_pks_leaves_other_rows_cached(
    book: Book, cache: Any, signals: list[Any]
) -> None:
    """The new rows' tags are held dirty, not invalidated: an entry of another row
    cached before stays valid, and after the commit the new row is cached."""
    cached("book_row", book.pk)
    with transaction.atomic():
        (new,) = Book.objects.bulk_create([Book(title="new", author=book.author)])
        assert cached("book_row", new.pk)["title"] == "new"
        assert cache.get(f"book_row:{new.pk}") is None
    assert not any(model_tag(Book, new.pk) in tags for tags, _ in signals)
    assert cache.get(f"book_row:{book.pk}") == fresh("book_row", book.pk)
    assert cached("book_row", new.pk)["title"] == "new"
    assert cache.get(f"book_row:{new.pk}") == fresh("book_row", new.pk)
    assert cached("book_titles") == ["new", "old"]


def _held(model: Any) -> bool:
    """Whether ``model``'s all-rows tag is dirty for this thread."""
    return f"model:{model._meta.label_lower}#*" in dirty_tags()


def test_a_created_row_leaves_the_other_rows_cached(book: Book, cache: Any) -> None:
    """``create()``'s ``INSERT`` does not name the pk either, but its ``post_save``
    does (and makes that row dirty): it used to hold every row of the model too, so
    that until the commit no row-tagged entry of it was read or stored."""
    cached("book_row", book.pk)
    with transaction.atomic():
        new = Book.objects.create(title="new", author=book.author)
        assert cache.get(f"book_row:{book.pk}") == fresh("book_row", book.pk)
        assert not _held(Book)
        assert model_tag(Book, new.pk) in dirty_tags()
        other = Book.objects.create(title="other", author=book.author)
        assert cached("book_row", other.pk)["title"] == "other"
        assert cache.get(f"book_row:{other.pk}") is None  # its own row: dirty
        Book.objects.get_or_create(title="got", author=book.author)
        Book.objects.update_or_create(title="upd", defaults={"author": book.author})
        assert not _held(Book)
        assert cache.get(f"book_row:{book.pk}") == fresh("book_row", book.pk)
    assert cache.get(f"book_row:{book.pk}") == fresh("book_row", book.pk)


def test_a_child_model_save_leaves_the_parents_rows_cached(cache: Any) -> None:
    """A multi-table child's ``save()`` inserts its parent's row without the pk
    (only the child's ``post_save`` is sent), then its own naming it."""
    place = Place.objects.create(name="P")
    cached("place_row", place.pk)
    with transaction.atomic():
        Restaurant.objects.create(name="R")
        assert not _held(Place) and not _held(Restaurant)
        PlaceArticle.objects.create(name="PA", headline="H")  # two such parents
        assert not _held(Place) and not _held(Restaurant)
        # Its post_save invalidates every Article row (it links two models, as a
        # through model does), which is dirty then; but nothing is held.
        assert not any(holds for _, _, holds in _transactions._pending.by_db.values())
        assert cache.get(f"place_row:{place.pk}") == fresh("place_row", place.pk)


def test_inserts_without_pks_around_a_save_keep_their_hold(book: Book) -> None:
    """A ``bulk_create()`` (no ``post_save``) before or after a ``save()``, or a raw
    ``INSERT``, keeps the model's rows dirty: a ``save()`` releases only its own
    hold, and one that names its pk releases none."""
    author = book.author
    for before in (True, False):
        with pytest.raises(Rollback), transaction.atomic():
            if before:
                Book.objects.bulk_create([Book(title="bulk", author=author)])
            Book.objects.create(title="saved", author=author)
            assert _held(Book) is before
            if not before:
                Book.objects.bulk_create([Book(title="bulk", author=author)])
            Book.objects.create(pk=1000, title="named", author=author)
            Book.objects.create(title="saved again", author=author)
            assert _held(Book)
            raise Rollback
    with pytest.raises(Rollback), transaction.atomic():
        Book.objects.create(title="saved", author=author)
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO testapp_book (title, author_id) VALUES (%s, %s)",
                ["raw", author.pk],
            )
        Book.objects.create(title="saved again", author=author)
        assert _held(Book)
        raise Rollback
    with pytest.raises(Rollback), transaction.atomic():
        Place.objects.bulk_create([Place(name="bulk")])
        Restaurant.objects.create(name="R")
        assert _held(Place) and _held(Restaurant)
        raise Rollback
    assert dirty_tags() == set()
