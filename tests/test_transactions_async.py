"""SmartCache's async methods, called from a coroutine that ``async_to_sync`` runs for
a thread inside ``transaction.atomic()`` (an ``ATOMIC_REQUESTS`` view calling an async
helper): they honour that thread's dirty tags, as its sync methods do. An outside probe
found the rolled-back value stored and served."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.db import transaction

from django_smartcache import model_tag
from tests.testapp.models import Author

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def cache(tagged_cache: Any) -> Any:
    return tagged_cache


@pytest.mark.parametrize("tagged_cache", ["smart"], indirect=True)
def test_a_rolled_back_value_is_not_stored_from_a_coroutine(cache: Any) -> None:
    author = Author.objects.create(name="committed")
    tags = [model_tag(Author, author.pk)]

    async def name() -> str:
        found = await cache.aget("name")
        if found is None:
            found = (await Author.objects.aget(pk=author.pk)).name
            await cache.aset("name", found, tags=tags)
            await cache.aadd("added", found, tags=tags)
            await cache.aset_many({"many": found}, tags=tags)
            await cache.aget_or_set("got", lambda: found, tags=tags)
        return found  # type: ignore[no-any-return]

    with pytest.raises(RuntimeError), transaction.atomic():
        Author.objects.filter(pk=author.pk).update(name="rolled back")
        assert async_to_sync(name)() == "rolled back"
        raise RuntimeError
    for key in ("name", "added", "many", "got"):
        assert cache.get(key) is None, key
    assert async_to_sync(name)() == "committed"
    assert cache.get("name") == "committed"


@pytest.mark.parametrize("tagged_cache", ["smart"], indirect=True)
def test_a_coroutine_does_not_read_what_its_transaction_wrote(cache: Any) -> None:
    author = Author.objects.create(name="committed")
    tags = [model_tag(Author, author.pk)]
    with transaction.atomic():
        Author.objects.filter(pk=author.pk).update(name="mine")
        # Another thread caches the committed row after the write, before the commit.
        other = threading.Thread(
            target=cache.set, args=("k", "committed", 300, None, tags)
        )
        other.start()
        other.join()
        assert cache.get("k") is None  # this thread: hidden
        assert async_to_sync(cache.aget)("k") is None
        assert async_to_sync(cache.aget_many)(["k"]) == {}
        assert async_to_sync(cache.ahas_key)("k") is False
    assert cache.get("k") is None  # the commit invalidated it


@pytest.mark.parametrize("tagged_cache", ["smart"], indirect=True)
def test_without_a_dirty_caller_async_writes_stay_inline(cache: Any) -> None:
    seen: list[str] = []

    async def write() -> None:
        seen.append(threading.current_thread().name)
        await cache.aset("plain", 1)
        await cache.aset("tagged", 1, tags=["t"])

    loop_thread = threading.current_thread().name
    async_to_sync(write)()
    assert cache.get("plain") == 1 and cache.get("tagged") == 1
    assert seen and seen[0] != loop_thread  # ran on the loop's thread, no hop needed


@pytest.mark.parametrize(
    "tagged_cache", ["smart", "sqlite", "multilevel"], indirect=True
)
def test_ainvalidate_tags_from_a_coroutine_belongs_to_the_callers_transaction(
    cache: Any,
) -> None:
    # An outside probe: SmartCache.ainvalidate_tags() ran on the loop's thread, so a
    # coroutine run by async_to_sync inside atomic() neither marked the tag dirty for
    # the caller's thread nor repeated the invalidation at commit: a value another
    # thread cached between the write and the commit was served after it, and this
    # thread's uncommitted value after a rollback. The other backends hopped already.
    author = Author.objects.create(name="committed")

    async def invalidate() -> None:
        await cache.ainvalidate_tags("books")

    def cache_in_another_thread(value: str) -> None:
        other = threading.Thread(
            target=cache.set, args=("page", value, 300, None, ["books"])
        )
        other.start()
        other.join()

    cache.set("page", "old", tags=["books"])
    with transaction.atomic():
        Author.objects.filter(pk=author.pk).update(name="new")
        async_to_sync(invalidate)()
        cache_in_another_thread("old, cached before the commit")
        assert cache.get("page") is None  # dirty in this thread
    assert cache.get("page") is None  # repeated at commit

    with pytest.raises(RuntimeError), transaction.atomic():
        Author.objects.filter(pk=author.pk).update(name="rolled back")
        async_to_sync(invalidate)()
        cache.set("page", "rolled back", tags=["books"])  # not stored: dirty
        raise RuntimeError
    assert cache.get("page") is None


def test_has_sync_caller_tells_async_to_sync_from_a_plain_loop() -> None:
    # What SmartCache.ainvalidate_tags hops on: only a coroutine async_to_sync runs
    # for a thread (which may hold a transaction); a view under an ASGI server
    # (a plain loop) invalidates inline.
    import asyncio

    from django_smartcache import _transactions

    async def ask() -> bool:
        return _transactions.has_sync_caller()

    assert asyncio.run(ask()) is False
    assert async_to_sync(ask)() is True


def test_an_asgiref_without_the_private_tables_counts_any_dirty_thread(
    monkeypatch,
) -> None:
    # sync_caller_dirty() reads asgiref's AsyncToSync.loop_thread_executors and
    # .executors: without them (another asgiref) it raised AttributeError from every
    # SmartCache aget() while any thread had dirty tags. Now: assume the caller's.
    import asyncio
    import threading

    from asgiref.sync import AsyncToSync

    from django_smartcache import _transactions

    monkeypatch.delattr(AsyncToSync, "loop_thread_executors")
    monkeypatch.setitem(_transactions._dirty_threads, threading.Thread(), True)

    async def ask() -> bool:
        return _transactions.sync_caller_dirty()

    assert asyncio.run(ask()) is True


@pytest.mark.parametrize("tagged_cache", ["smart"], indirect=True)
def test_an_async_cached_function_in_a_dirty_thread_computes_alone(
    cache: Any,
) -> None:
    # An outside probe: the coroutine runs on the loop's thread, which has no dirty
    # tags of its own, so it joined the process's single flight. Another thread was
    # handed the writer's uncommitted value, and the writer another thread's value
    # made without its write. The sync @cached path computes alone there.
    import asyncio
    import contextvars

    from django_smartcache import cached

    author = Author.objects.create(name="committed")
    caller: contextvars.ContextVar[str] = contextvars.ContextVar("caller")
    release = threading.Event()
    seen: dict[str, str] = {}

    entered = threading.Event()
    other: threading.Thread | None = None

    @cached(
        name="test_an_async_cached_function_in_a_dirty_thread_computes_alone.of",
        using="tagged",
        tags=lambda pk: [model_tag(Author, pk)],
    )
    async def computed_for(pk: int) -> str:
        """Who computed it: async_to_sync carries the caller's context here."""
        if caller.get() == "writer" and other is not None and other.ident is None:
            other.start()  # asks while the writer computes; if it joins, it waits:
            await asyncio.to_thread(other.join, 2)
        if caller.get() == "other" and not release.is_set():
            entered.set()
            await asyncio.to_thread(release.wait, 5)  # leads, slowly
        return caller.get()

    def call_as(who: str) -> None:
        caller.set(who)
        seen[who] = async_to_sync(computed_for)(author.pk)

    # The writer leads; the other thread asks while the writer computes.
    other = threading.Thread(target=call_as, args=("other",))
    release.set()
    with pytest.raises(RuntimeError), transaction.atomic():
        Author.objects.filter(pk=author.pk).update(name="rolled back")
        call_as("writer")
        raise RuntimeError
    other.join()
    assert seen == {"writer": "writer", "other": "other"}

    # The other thread leads; the writer asks while it computes.
    cache.clear()
    seen.clear()
    release.clear()
    leader = threading.Thread(target=call_as, args=("other",))
    leader.start()
    assert entered.wait(5)
    with pytest.raises(RuntimeError), transaction.atomic():
        Author.objects.filter(pk=author.pk).update(name="mine")
        threading.Timer(2, release.set).start()  # a joined writer waits this long
        call_as("writer")
        release.set()
        raise RuntimeError
    leader.join()
    assert seen == {"writer": "writer", "other": "other"}


@pytest.mark.parametrize("tagged_cache", ["smart"], indirect=True)
def test_ainvalidate_tags_from_a_task_outliving_its_async_to_sync(cache: Any) -> None:
    # A review: a task a coroutine of async_to_sync created (a sync view under ASGI)
    # invalidating after async_to_sync returned hopped to the executor that had quit:
    # "CurrentThreadExecutor already quit or is broken". No caller left: inline.
    import asyncio

    from asgiref.sync import sync_to_async

    results: list[str] = []

    async def main() -> None:
        done = asyncio.Event()

        async def background() -> None:
            await asyncio.sleep(0.05)  # async_to_sync has returned by now
            cache.set("page", 1, tags=["books"])
            await cache.ainvalidate_tags("books")
            results.append("ok")
            done.set()

        async def spawn() -> None:
            asyncio.get_running_loop().create_task(background())

        await sync_to_async(async_to_sync(spawn), thread_sensitive=True)()
        await asyncio.wait_for(done.wait(), 5)

    asyncio.run(main())
    assert results == ["ok"]
    assert cache.get("page") is None


@pytest.mark.parametrize("tagged_cache", ["smart"], indirect=True)
def test_ainvalidate_tags_in_asyncio_run_inside_the_callers_own_thread(
    cache: Any,
) -> None:
    # A review: an async view under WSGI calls a sync helper through sync_to_async
    # (the WSGI thread), which runs asyncio.run(): the caller found was that very
    # thread, and submitting to it raised. Inline there sees its own transaction.
    import asyncio

    from asgiref.sync import sync_to_async

    async def helper() -> None:
        await cache.ainvalidate_tags("books")

    def legacy() -> str:
        cache.set("page", 1, tags=["books"])
        asyncio.run(helper())
        return "ok"

    async def view() -> str:
        return await sync_to_async(legacy)()

    assert async_to_sync(view)() == "ok"
    assert cache.get("page") is None
