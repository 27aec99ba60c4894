"""``migrate`` invalidates every model of each app whose migrations it applied or
unapplied: schema changes rewrite rows without a statement the SQL watcher could map
to the model (SQLite rebuilds the table through ``"new__<table>"``). The watcher also
reads ``ALTER TABLE`` (the ``RENAME TO`` that ends the rebuild) and ``DROP TABLE``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from django_smartcache import model_tag
from django_smartcache.signals import tags_invalidated
from tests.migrated.models import Note

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("tagged_cache"),
]


@pytest.fixture
def at_0001() -> Iterator[None]:
    """The ``migrated`` app migrated back to 0001 (``body`` nullable), and forward
    again afterwards whatever happens."""
    call_command("migrate", "migrated", "0001", verbosity=0)
    try:
        yield
    finally:
        call_command("migrate", "migrated", verbosity=0)


def _body(cache: Any, pk: int) -> Any:
    return cache.get_or_set(
        f"note:{pk}",
        lambda: Note.objects.filter(pk=pk).values_list("body", flat=True).first(),
        tags=[model_tag(Note, pk)],
    )


def test_a_migration_that_rewrites_rows_invalidates_the_apps_models(
    tagged_cache: Any, at_0001: None
) -> None:
    """0002 (``AlterField`` to ``NOT NULL`` with a default) fills the ``NULL`` on
    SQLite by rebuilding the table: the cached ``None`` was served after it."""
    note = Note.objects.create(body=None)
    assert _body(tagged_cache, note.pk) is None
    call_command("migrate", "migrated", verbosity=0)
    assert Note.objects.get(pk=note.pk).body == "filled"
    assert _body(tagged_cache, note.pk) == "filled"


def test_a_migrate_that_applies_nothing_invalidates_nothing(tagged_cache: Any) -> None:
    note = Note.objects.create(body="kept")
    assert _body(tagged_cache, note.pk) == "kept"
    heard: list[str] = []

    def receiver(reason: str, **kwargs: Any) -> None:
        heard.append(reason)

    tags_invalidated.connect(receiver)
    try:
        call_command("migrate", verbosity=0)
    finally:
        tags_invalidated.disconnect(receiver)
    assert heard == []
    assert tagged_cache.get(f"note:{note.pk}") == "kept"


def test_a_schema_change_outside_migrate_invalidates_the_table_it_rebuilds(
    tagged_cache: Any, at_0001: None
) -> None:
    """Migrations applied without the command (``MigrationExecutor``, or a schema
    editor) send no ``post_migrate``: the SQL watcher sees the statements that
    rebuild the table (SQLite: ``ALTER TABLE "new__migrated_note" RENAME TO
    "migrated_note"``) and invalidates its model."""
    note = Note.objects.create(body=None)
    assert _body(tagged_cache, note.pk) is None
    executor = MigrationExecutor(connection)
    executor.migrate([("migrated", "0002_body_not_null")])
    assert Note.objects.get(pk=note.pk).body == "filled"
    assert _body(tagged_cache, note.pk) == "filled"


def test_dropping_a_table_invalidates_its_model(tagged_cache: Any) -> None:
    note = Note.objects.create(body="a")
    assert _body(tagged_cache, note.pk) == "a"
    with connection.schema_editor() as editor:
        editor.delete_model(Note)
    try:
        assert tagged_cache.get(f"note:{note.pk}") is None
    finally:
        with connection.schema_editor() as editor:
            editor.create_model(Note)
