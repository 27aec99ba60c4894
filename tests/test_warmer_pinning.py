"""A warmer's ``tags=`` are pinned at their versions before the warmer is called.

As ``get_or_set``/``@cached`` read tag versions before computing: a book saved while
the warmer renders leaves its entry reading as a miss, never a stale hit (with
``timeout=None``, as in ``docs/commands.md``, it used to be served until the next book
write). The save is made inside the warmer, so the race is deterministic, on
SmartCache, SQLiteCache (file), MultiLevelCache (over a SQLite file) and the tag mixin
over LocMem.
"""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import sync_to_async

from django_smartcache import model_tag
from django_smartcache.warmers import Warmer, run
from tests.testapp.models import Author, Book

pytestmark = pytest.mark.django_db(transaction=True)

backends = pytest.mark.parametrize(
    "tagged_cache", ["locmem", "smart", "sqlite", "multilevel"], indirect=True
)


@pytest.fixture
def book() -> Book:
    return Book.objects.create(title="old", author=Author.objects.create(name="A"))


def _save(book: Book, title: str) -> None:
    """Another request's save (its post_save invalidates the model's tags)."""
    row = Book.objects.get(pk=book.pk)
    row.title = title
    row.save()


def _warm(cache: Any, func: Any, tags: tuple[str, ...] = (model_tag(Book),)) -> Any:
    result = run(Warmer("pinning", func, ("tagged",), tags), "tagged")
    assert result.error is None, result.error
    return result


@backends
@pytest.mark.parametrize("method", ["set", "set_many", "add", "get_or_set", "aset"])
def test_a_save_while_the_warmer_renders_leaves_its_entry_stale(
    tagged_cache: Any, book: Book, method: str
) -> None:
    """The warmer's tags are pinned before it runs: a book saved after it read the
    rows leaves an entry that reads as a miss (with ``timeout=None`` it used to be
    served until the next book write). ``get_or_set`` read them before computing
    already: it is the control."""

    def read_then_save() -> str:
        title = Book.objects.get(pk=book.pk).title
        _save(book, "NEW")
        return title

    def warm(cache: Any) -> Any:
        if method == "set":
            cache.set("w", read_then_save(), timeout=None)
        elif method == "set_many":
            cache.set_many({"w": read_then_save()}, timeout=None)
        elif method == "add":
            cache.add("w", read_then_save(), timeout=None)
        elif method == "get_or_set":
            cache.get_or_set("w", read_then_save, timeout=None)
        else:

            async def awarm() -> None:
                title = await sync_to_async(read_then_save)()
                await cache.aset("w", title, timeout=None)

            return awarm()
        return None

    _warm(tagged_cache, warm)
    assert Book.objects.get(pk=book.pk).title == "NEW"
    assert tagged_cache.get("w") is None


@backends
def test_a_warmed_entry_is_served_until_a_save(tagged_cache: Any, book: Book) -> None:
    """The control: no write during the run, the entry is served; a save drops it."""

    def warm(cache: Any) -> None:
        cache.set("w", Book.objects.get(pk=book.pk).title, timeout=None)

    _warm(tagged_cache, warm)
    assert tagged_cache.get("w") == "old"
    _save(book, "NEW")
    assert tagged_cache.get("w") is None


@backends
def test_a_warmer_may_pin_its_tags_again(tagged_cache: Any, book: Book) -> None:
    """A long warmer passes versions it read itself (``cache.tag_versions()``, before
    reading the rows of a batch): those are recorded, its own tags' included, so a
    save during an earlier batch does not make the later ones miss."""

    def warm(cache: Any) -> None:
        cache.set("first", Book.objects.get(pk=book.pk).title, timeout=None)
        _save(book, "NEW")  # lands after the first batch was read
        versions = cache.tag_versions([model_tag(Book)])
        cache.set("second", Book.objects.get(pk=book.pk).title, tags=versions)

    _warm(tagged_cache, warm)
    assert tagged_cache.get("first") is None  # invalidated by the save, as always
    assert tagged_cache.get("second") == "NEW"  # pinned after it: valid
    _save(book, "NEWER")
    assert tagged_cache.get("second") is None


@backends
def test_tags_a_warmer_names_itself_keep_their_meaning(tagged_cache: Any) -> None:
    """Tags given by name to a ``set`` are read when it writes (a plain ``set``'s
    meaning), and recorded with the warmer's."""

    def warm(cache: Any) -> None:
        cache.invalidate_tags("extra")  # before the write: not a race
        cache.set("named", "x", timeout=None, tags=["extra"])

    _warm(tagged_cache, warm)
    assert tagged_cache.get("named") == "x"
    tagged_cache.invalidate_tags("extra")
    assert tagged_cache.get("named") is None


@backends
def test_the_warmers_tags_stay_pinned_when_named_again(
    tagged_cache: Any, book: Book
) -> None:
    def warm(cache: Any) -> None:
        title = Book.objects.get(pk=book.pk).title
        _save(book, "NEW")
        cache.set("again", title, timeout=None, tags=[model_tag(Book), "extra"])

    _warm(tagged_cache, warm)
    assert tagged_cache.get("again") is None


@backends
def test_a_warmer_without_tags_writes_plain_values(tagged_cache: Any) -> None:
    def warm(cache: Any) -> None:
        cache.set("plain", 1, timeout=None)

    _warm(tagged_cache, warm, tags=())
    assert tagged_cache.get("plain") == 1
    tagged_cache.incr("plain")  # untagged: stored as given
    assert tagged_cache.get("plain") == 2


# -- a warmer's own invalidation, and the report of a change during the run -----------


@backends
@pytest.mark.parametrize("how", ["sync", "async"])
def test_a_refresh_through_the_given_cache_pins_its_tags_again(
    tagged_cache: Any, book: Book, how: str
) -> None:
    """A warmer that drops its old entries (``cache.invalidate_tags`` on its own tag)
    before rewriting them wrote nothing valid: its writes kept the versions from
    before its own invalidation (review: 0 of 50 hits). Through the cache it is
    given, its own invalidation pins its tags again."""
    tag = model_tag(Book)

    def warm(cache: Any) -> Any:
        if how == "async":

            async def awarm() -> None:
                await cache.ainvalidate_tags(tag)
                await cache.aset_many({f"r{i}": i for i in range(5)}, timeout=None)

            return awarm()
        cache.invalidate_tags(tag)
        cache.set_many({f"r{i}": i for i in range(5)}, timeout=None)
        return None

    result = _warm(tagged_cache, warm)
    assert result.invalidated == ()
    assert tagged_cache.get_many([f"r{i}" for i in range(5)]) == {
        f"r{i}": i for i in range(5)
    }


@backends
def test_a_change_during_the_run_is_reported(tagged_cache: Any, book: Book) -> None:
    """Pinned tags make what a warmer writes after a change of the data a miss: the
    run says so (the command prints it) rather than report the keys as warmed."""

    def warm(cache: Any) -> None:
        cache.set("before", 1, timeout=None)
        _save(book, "NEW")  # a request's save while the warmer runs
        cache.set("after", 2, timeout=None)

    result = _warm(tagged_cache, warm)
    assert result.keys_set == 2
    assert result.invalidated == (model_tag(Book),)
    assert tagged_cache.get_many(["before", "after"]) == {}
    quiet = _warm(tagged_cache, lambda cache: cache.set("x", 1, timeout=None))
    assert quiet.invalidated == ()


def test_the_command_says_the_warmed_keys_read_as_misses(
    tagged_cache: Any, book: Book
) -> None:
    import io

    from django.core.management import call_command

    from django_smartcache.warmers import registry

    def warm(cache: Any) -> None:
        _save(book, "NEW")
        cache.set("after", 2, timeout=None)

    registry.register("pinning.report", warm, caches=["tagged"], tags=[model_tag(Book)])
    try:
        out = io.StringIO()
        call_command("smartcache_warm", "pinning.report", stdout=out, no_color=True)
    finally:
        registry.unregister("pinning.report")
    text = out.getvalue()
    assert "Warmed pinning.report on 'tagged': 1 key set" in text
    assert f"its tag(s) {model_tag(Book)} were invalidated while it ran" in text
    assert "Run it again" in text
