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


def test_an_asgiref_without_the_private_tables_counts_any_dirty_thread(
    monkeypatch,
) -> None:
    # sync_caller_dirty() reads asgiref's AsyncToSync.loop_thread_executors and
    # .executors: without them (another asgiref) it raised AttributeError from every
    # SmartCache aget() while any thread had dirty tags. Now: assume the caller's.
    import asyncio
    import threading

    from asgiref.sync import AsyncToSync

    from django_smartcache import tagging

    monkeypatch.delattr(AsyncToSync, "loop_thread_executors")
    monkeypatch.setitem(tagging._dirty_threads, threading.Thread(), True)

    async def ask() -> bool:
        return tagging.sync_caller_dirty()

    assert asyncio.run(ask()) is True
