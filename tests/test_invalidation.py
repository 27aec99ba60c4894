"""Model writes through signals: after each kind of write no cached read is stale."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.db.models.signals import post_save
from django.test import override_settings

from django_smartcache import invalidate_model, invalidation, model_tag, sqlwatch
from django_smartcache.signals import tags_invalidated
from tests.fixtures.tagged_caches import on_every_tagged_backend
from tests.testapp.models import (
    AuditLog,
    Author,
    Book,
    BookSummary,
    Club,
    FamousAuthor,
    Genre,
    Membership,
    Place,
    Restaurant,
)
from tests.testapp.reads import assert_fresh, cached

# Every test has the "tagged" alias (TaggedLocMemCache unless parametrized).
pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("tagged_cache"),
]


@pytest.fixture
def library() -> dict[str, Any]:
    ann = Author.objects.create(name="Ann")
    bob = Author.objects.create(name="Bob")
    poetry, prose = (
        Genre.objects.create(name="poetry"),
        Genre.objects.create(name="prose"),
    )
    b1 = Book.objects.create(title="B1", author=ann)
    b2 = Book.objects.create(title="B2", author=bob)
    b1.genres.add(poetry)
    b2.genres.add(prose)
    club = Club.objects.create(name="Readers")
    Membership.objects.create(club=club, author=ann, role="chair")
    return {
        "ann": ann,
        "bob": bob,
        "poetry": poetry,
        "prose": prose,
        "b1": b1,
        "b2": b2,
        "club": club,
    }


def _reads(lib: dict[str, Any]) -> list[tuple[str, Any]]:
    return [
        ("book_row", lib["b1"].pk),
        ("book_row", lib["b2"].pk),
        ("book_genres", lib["b1"].pk),
        ("book_genres", lib["b2"].pk),
        ("genre_books", lib["poetry"].pk),
        ("genre_books", lib["prose"].pk),
        ("book_titles", None),
        ("author_clubs", lib["ann"].pk),
        ("author_clubs", lib["bob"].pk),
        ("club_members", lib["club"].pk),
    ]


def _warm_then_check(lib: dict[str, Any], write: Any) -> None:
    reads = _reads(lib)
    for name, arg in reads:
        cached(name, arg)
    write()
    assert_fresh(*reads)


WRITES = {
    "save": lambda lib: Book(pk=lib["b1"].pk, title="B1 v2", author=lib["ann"]).save(),
    "save_moves_fk": lambda lib: Book(
        pk=lib["b2"].pk, title="B2", author=lib["ann"]
    ).save(),
    "create": lambda lib: Book.objects.create(title="B3", author=lib["bob"]),
    "delete_row_with_m2m": lambda lib: lib["b1"].delete(),
    "m2m_add_forward": lambda lib: lib["b2"].genres.add(lib["poetry"]),
    "m2m_add_reverse": lambda lib: lib["poetry"].books.add(lib["b2"]),
    "m2m_remove_forward": lambda lib: lib["b1"].genres.remove(lib["poetry"]),
    "m2m_remove_reverse": lambda lib: lib["prose"].books.remove(lib["b2"]),
    "m2m_clear_forward": lambda lib: lib["b1"].genres.clear(),
    "m2m_clear_reverse": lambda lib: lib["prose"].books.clear(),
    "m2m_set": lambda lib: lib["b1"].genres.set([lib["prose"]]),
    "through_add": lambda lib: lib["club"].members.add(
        lib["bob"], through_defaults={"role": "new"}
    ),
    "through_save": lambda lib: _save_membership(lib),
    "through_move_to_another_club": lambda lib: _move_membership(lib),
    "through_move_by_pk_only": lambda lib: Membership(
        pk=Membership.objects.get(author=lib["ann"]).pk,
        club=Club.objects.create(name="Elsewhere"),
        author=lib["bob"],
    ).save(),
    "through_delete_by_pk_only": lambda lib: Membership(
        pk=Membership.objects.get(author=lib["ann"]).pk
    ).delete(),
    "through_remove": lambda lib: lib["ann"].clubs.remove(lib["club"]),
    "through_delete_author": lambda lib: lib["ann"].delete(),
    "fk_cascade_delete": lambda lib: lib["bob"].delete(),
    "proxy_save": lambda lib: _proxy_rename(lib),
    "genre_delete": lambda lib: lib["prose"].delete(),
}


def _save_membership(lib: dict[str, Any]) -> None:
    m = Membership.objects.get(author=lib["ann"])
    m.role = "treasurer"
    m.save()


def _move_membership(lib: dict[str, Any]) -> None:
    """A custom through row moved to another club: the old club loses a member. With
    signals only, just the new club's row was invalidated, and the old club's stayed."""
    m = Membership.objects.get(author=lib["ann"])
    m.club = Club.objects.create(name="Elsewhere")
    m.save()


def _proxy_rename(lib: dict[str, Any]) -> None:
    fa = FamousAuthor.objects.get(pk=lib["ann"].pk)
    fa.name = "Ann (famous)"
    fa.save()
    Book.objects.create(title="B4", author=lib["ann"])


@pytest.fixture(params=["signals+sql", "signals only", "sql only"])
def mode(request: pytest.FixtureRequest) -> Iterator[str]:
    """Each mechanism alone must already be enough for these writes."""
    if request.param == "signals only":
        sqlwatch.uninstall()
    elif request.param == "sql only":
        invalidation.disconnect()
    try:
        yield request.param
    finally:
        sqlwatch.install()
        invalidation.connect()


@on_every_tagged_backend
@pytest.mark.parametrize("write", sorted(WRITES))
def test_no_stale_read_after_write(
    library: dict[str, Any], write: str, mode: str
) -> None:
    _warm_then_check(library, lambda: WRITES[write](library))


@on_every_tagged_backend
def test_unrelated_rows_stay_cached(library: dict[str, Any], tagged_cache: Any) -> None:
    b2 = library["b2"].pk
    cached("book_row", b2)
    library["b1"].title = "changed"
    library["b1"].save()
    # The row entry of another book survives (only its row tag and the model tag moved).
    assert tagged_cache.get(f"book_row:{b2}") == {
        "id": b2,
        "title": "B2",
        "author_id": library["bob"].pk,
    }


@on_every_tagged_backend
def test_multi_table_inheritance_both_ways() -> None:
    r = Restaurant.objects.create(name="Luigi", serves_pizza=True)
    p = Place.objects.create(name="Park")
    reads = [("place_row", r.pk), ("restaurant_row", r.pk), ("place_row", p.pk)]
    for name, arg in reads:
        cached(name, arg)
    r.name = "Luigi's"
    r.save()  # writes place and restaurant tables
    assert_fresh(*reads)
    parent = Place.objects.get(pk=r.pk)
    parent.name = "Luigi's Place"
    parent.save()  # the parent row alone: the restaurant's view changes too
    assert_fresh(*reads)
    r.delete()
    assert_fresh(*reads)


def test_model_tag_names() -> None:
    a = Author.objects.create(name="A")
    assert model_tag(Author) == "model:testapp.author"
    assert model_tag(a) == f"model:testapp.author#{a.pk}"
    assert model_tag(Author, str(a.pk)) == model_tag(a)
    assert model_tag(FamousAuthor.objects.get(pk=a.pk)) == model_tag(a)


def test_signal_carries_the_reason() -> None:
    seen: list[str] = []

    def receiver(reason: str, **kwargs: Any) -> None:
        seen.append(reason)

    tags_invalidated.connect(receiver)
    try:
        a = Author.objects.create(name="A")
    finally:
        tags_invalidated.disconnect(receiver)
    assert f"post_save testapp.author pk={a.pk} created" in seen


@on_every_tagged_backend
def test_invalidate_model_for_writes_outside_django(tagged_cache: Any) -> None:
    a = Author.objects.create(name="A")
    b = Book.objects.create(title="T", author=a)
    cached("book_row", b.pk)
    cached("book_titles")
    invalidate_model(Book)
    assert tagged_cache.get(f"book_row:{b.pk}") is None
    assert tagged_cache.get("book_titles:None") is None


def test_opted_out_model_sends_nothing(tagged_cache: Any) -> None:
    seen: list[Any] = []

    def receiver(tags: Any, **kwargs: Any) -> None:
        seen.append(tags)

    with override_settings(SMARTCACHE={"EXCLUDE_MODELS": ["testapp.auditlog"]}):
        assert not post_save.has_listeners(AuditLog)
        tags_invalidated.connect(receiver)
        try:
            log = AuditLog.objects.create(message="m")
            AuditLog.objects.filter(pk=log.pk).update(message="n")
        finally:
            tags_invalidated.disconnect(receiver)
        assert seen == []
    assert post_save.has_listeners(AuditLog)


def test_models_setting_limits_participation() -> None:
    with override_settings(SMARTCACHE={"MODELS": ["testapp.book"]}):
        assert post_save.has_listeners(Book)
        assert not post_save.has_listeners(Author)


def test_connect_is_idempotent_and_reversible() -> None:
    before = len(post_save.receivers)
    invalidation.connect()
    assert len(post_save.receivers) == before
    invalidation.disconnect()
    try:
        assert not post_save.has_listeners(Book)
    finally:
        invalidation.connect()
    assert len(post_save.receivers) == before


def test_override_settings_turns_the_sql_watcher_off_and_on(
    library: dict[str, Any],
) -> None:
    """``override_settings(SMARTCACHE={"WATCH_SQL": False})`` reconnected the signal
    receivers but left the SQL watcher on."""
    from django.db import connection

    b1 = library["b1"]
    with override_settings(SMARTCACHE={"WATCH_SQL": False}):
        assert sqlwatch._wrapper not in connection.execute_wrappers
        cached("book_row", b1.pk)
        Book.objects.filter(pk=b1.pk).update(title="unseen")  # no signal, no watcher
        assert cached("book_row", b1.pk)["title"] == "B1"
    assert connection.execute_wrappers.count(sqlwatch._wrapper) == 1
    Book.objects.filter(pk=b1.pk).update(title="seen")
    assert cached("book_row", b1.pk)["title"] == "seen"


@pytest.mark.parametrize("how", ["instance", "pk only"])
def test_a_through_row_moved_by_save_invalidates_the_side_it_left(
    library: dict[str, Any], tagged_cache: Any, how: str
) -> None:
    """With signals only (``WATCH_SQL`` off), ``m.club = c2; m.save()`` invalidated
    the new club's row, not the old one's: a read tagged ``model_tag(c1)`` still
    listed the member (the SQL watcher, invalidating every club, hid it)."""
    c1, c2 = library["club"], Club.objects.create(name="Elsewhere")
    ann = library["ann"]

    def members(club: Club) -> list[str]:
        return tagged_cache.get_or_set(  # type: ignore[no-any-return]
            f"members:{club.pk}",
            lambda: sorted(
                Author.objects.filter(clubs=club).values_list("name", flat=True)
            ),
            tags=[model_tag(club)],
        )

    assert (members(c1), members(c2)) == (["Ann"], [])
    sqlwatch.uninstall()
    try:
        m = Membership.objects.get(author=ann)
        if how == "pk only":
            m = Membership(pk=m.pk, author=ann, role=m.role)
        m.club = c2
        m.save()
    finally:
        sqlwatch.install()
    assert (members(c1), members(c2)) == ([], ["Ann"])


# Models over database views: SMARTCACHE["VIEWS"] -----------------------------------

VIEWS = {"VIEWS": {"testapp.BookSummary": ["testapp.Book", "testapp.Author"]}}


@pytest.fixture
def summary_view() -> Iterator[None]:
    """The view BookSummary reads: Book's and Author's tables."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE VIEW testapp_book_summary AS SELECT b.id AS id, b.title AS title,"
            " a.name AS author_name FROM testapp_book b"
            " JOIN testapp_author a ON a.id = b.author_id"
        )
    yield
    with connection.cursor() as cursor:
        cursor.execute("DROP VIEW testapp_book_summary")


def _summaries(cache: Any) -> Any:
    return cache.get_or_set(
        "summaries",
        lambda: sorted(BookSummary.objects.values_list("title", "author_name")),
        tags=[model_tag(BookSummary)],
    )


def _summary_row(cache: Any, pk: int) -> Any:
    return cache.get_or_set(
        f"summary:{pk}",
        lambda: BookSummary.objects.filter(pk=pk).values_list("author_name").first(),
        tags=[model_tag(BookSummary, pk)],
    )


@pytest.mark.usefixtures("summary_view")
@pytest.mark.parametrize(
    "write",
    ["update() of a book", "save() of its author", "raw SQL", "invalidate_model()"],
)
def test_a_view_model_follows_the_models_it_reads(
    tagged_cache: Any, write: str
) -> None:
    """A model over a view was never invalidated by writes to its base tables: its
    cached rows were served stale (outside probe). ``VIEWS`` names what it reads."""
    from django.db import connection

    ann = Author.objects.create(name="Ann")
    book = Book.objects.create(title="T0", author=ann)
    with override_settings(SMARTCACHE=VIEWS):
        assert _summaries(tagged_cache) == [("T0", "Ann")]
        assert _summary_row(tagged_cache, book.pk) == ("Ann",)
        if write == "update() of a book":
            Book.objects.filter(pk=book.pk).update(title="T1")
        elif write == "save() of its author":
            ann.name = "Bea"
            ann.save()
        elif write == "raw SQL":
            with connection.cursor() as cursor:
                cursor.execute("UPDATE testapp_author SET name = 'Bea'")
        else:
            sqlwatch.uninstall()  # a write made outside Django, then
            try:
                Author.objects.filter(pk=ann.pk).update(name="Bea")
                invalidate_model(Author)
            finally:
                sqlwatch.install()
        fresh = sorted(BookSummary.objects.values_list("title", "author_name"))
        assert _summaries(tagged_cache) == fresh
        assert _summary_row(tagged_cache, book.pk) == (fresh[0][1],)


@pytest.mark.usefixtures("summary_view")
def test_a_view_model_is_dirty_in_the_transaction_that_writes_what_it_reads(
    tagged_cache: Any,
) -> None:
    from django.db import transaction

    ann = Author.objects.create(name="Ann")
    Book.objects.create(title="T0", author=ann)
    with override_settings(SMARTCACHE=VIEWS):
        _summaries(tagged_cache)
        with transaction.atomic():
            Author.objects.filter(pk=ann.pk).update(name="Bea")
            assert _summaries(tagged_cache) == [("T0", "Bea")]
        assert _summaries(tagged_cache) == [("T0", "Bea")]


def test_views_reach_a_view_over_a_view_and_leave_other_tags_alone() -> None:
    from django_smartcache import registry

    chained = {
        "testapp.booksummary": ["testapp.book"],
        "testapp.genre": ["testapp.BookSummary"],
    }
    with override_settings(SMARTCACHE={"VIEWS": chained}):
        tags = registry.with_views((model_tag(Book, 3),))
        assert set(tags) == {
            model_tag(Book, 3),
            model_tag(BookSummary),
            f"{model_tag(BookSummary)}#*",
            model_tag(Genre),
            f"{model_tag(Genre)}#*",
        }
        assert registry.with_views(("books", model_tag(Author))) == (
            "books",
            model_tag(Author),
        )
