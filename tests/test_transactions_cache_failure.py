"""A cache that fails the repeat of an invalidation at commit (real SQLite files)."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest
from django.core.cache import caches
from django.db import transaction
from django.test import override_settings

from django_smartcache import model_tag
from tests.testapp.models import Author, Book

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_repeat_at_commit_that_fails_names_the_alias_to_clear(
    tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A cache that failed the repeat at commit (its SQLite file locked by another
    process past BUSY_TIMEOUT) lost it with only Django's "Error calling
    _repeat_at_commit.<locals>.repeat_then_forget in on_commit()": nothing said which
    cache to clear, nor that values cached before the commit may be stale. Django's
    robust handling stays: the commit and the hooks after it go on."""
    path = tmp_path / "busy.sqlite3"
    locmem = "django.core.cache.backends.locmem.LocMemCache"
    busy = {"BUSY_TIMEOUT": 0.05}
    pages = "django_smartcache.backends.SQLiteCache"
    config = {
        "default": {"BACKEND": locmem},
        "pages": {"BACKEND": pages, "LOCATION": str(path), "OPTIONS": busy},
    }
    ann = Author.objects.create(name="Ann")
    ran: list[str] = []
    with override_settings(CACHES=config):
        caches["pages"].set("k", 1)  # the file exists
        locker = sqlite3.connect(path, isolation_level=None)
        try:
            with caplog.at_level("ERROR"), transaction.atomic():
                Book.objects.create(title="t", author=ann)  # invalidated at once
                transaction.on_commit(lambda: ran.append("after"))
                locker.execute("BEGIN EXCLUSIVE")  # ...and locked at commit
        finally:
            locker.close()
            caches["pages"].close()
    assert ran == ["after"]
    assert Book.objects.filter(title="t").exists()
    ours = [r.message for r in caplog.records if r.name == "django_smartcache"]
    assert ours  # one per invalidation of the write: post_save's, the SQL watcher's
    for message in ours:
        assert "repeat at commit" in message and model_tag(Book) in message
        assert "'pages'" in message
        assert "manage.py smartcache_clear --cache pages" in message
