"""Model writes -> tag invalidation: signal receivers and the helpers ``sqlwatch`` uses.

``connect()``/``disconnect()`` are symmetric and idempotent (``dispatch_uid``);
``AppConfig.ready()`` calls ``connect()`` and a change of ``SMARTCACHE`` reconnects.
``post_save``/``post_delete`` are connected per tracked model, so models opted out
keep Django's fast deletes; ``pre_save``/``post_save`` also per model whose save may
insert into a watched table without naming the pk (``sqlwatch.save_started``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.apps import apps
from django.core.signals import setting_changed
from django.db.models import Model
from django.db.models.signals import (
    m2m_changed,
    post_delete,
    post_migrate,
    post_save,
    pre_save,
)
from django.dispatch import receiver

from . import conf, registry, sqlwatch
from ._tag_caches import invalidate_after_schema_change, invalidate_tags
from .registry import (
    db_deletion_tags,
    family,
    holds_pks,
    is_tracked,
    m2m_relations,
    model_tag,
    row_tags,
    rows_tag,
    through_sides,
)

__all__ = ["connect", "disconnect", "invalidate_model", "invalidate_rows"]


def _model_tags(model: type[Model]) -> list[str]:
    return [model_tag(m) for m in family(model)]


def _all_rows(model: type[Model]) -> list[str]:
    """Model tags, then all-rows tags, of ``model``'s family (the order signals show)."""
    return _model_tags(model) + [rows_tag(m) for m in family(model)]


def invalidate_rows(
    model: type[Model], pks: Iterable[Any], *, reason: str, db: str | None = None
) -> None:
    """Rows ``pks`` of ``model`` changed: their row tags and the model tags, family-wide."""
    rows = row_tags(model, pks, using=db)
    invalidate_tags(*_model_tags(model), *rows, reason=reason, db=db)


def invalidate_model(
    model: type[Model], *, reason: str | None = None, db: str | None = None
) -> None:
    """Any rows of ``model`` may have changed: for writes Django cannot see.

    Invalidates the model tag and, through ``model:<label>#*``, every row tag of
    ``model`` and of the models it shares rows with (multi-table inheritance).
    """
    tags = _all_rows(model)
    reason = reason or f"invalidate_model {model._meta.label_lower}"
    invalidate_tags(*tags, reason=reason, db=db)


def _sides(
    instance: Model, using: str, moved: frozenset[str] | None = frozenset()
) -> list[str]:
    """Row tags of both sides of a through-model row (a custom through model's save).

    ``moved``: the fields an update wrote (``None``: all of them). A link among them
    may have moved from another row, which is not known without a query (the row was
    read, if at all, before the save): that side's rows are all invalidated.
    """
    by_column = {f.column.lower(): f for f in instance._meta.concrete_fields}
    tags: list[str] = []
    for column, side in through_sides(type(instance)):
        if not is_tracked(side):
            continue
        field = None if column is None else by_column[column]
        value = None if field is None else getattr(instance, field.attname, None)
        if (
            field is None  # a to_field link: not the side's pk
            or value is None  # not known (an instance built with its pk only)
            or moved is None
            or field.name in moved
            or field.attname in moved
        ):
            tags += _all_rows(side)
        else:
            tags += _model_tags(side) + row_tags(side, [value], using=using)
    return tags


def _on_save(sender: type[Model], instance: Model, using: str, **kwargs: Any) -> None:
    verb = "created" if kwargs.get("created") else "saved"
    reason = f"post_save {sender._meta.label_lower} pk={instance.pk} {verb}"
    # An update may move the row's links: from which rows is not known.
    fields = kwargs.get("update_fields")
    moved: frozenset[str] | None = frozenset()
    if not kwargs.get("created"):
        moved = None if fields is None else frozenset(fields)
    invalidate_tags(
        *_model_tags(sender),
        *row_tags(sender, [instance.pk], using=using),
        *_sides(instance, using, moved),
        reason=reason,
        db=using,
    )


def _on_delete(sender: type[Model], instance: Model, using: str, **kwargs: Any) -> None:
    reason = f"post_delete {sender._meta.label_lower} pk={instance.pk}"
    invalidate_tags(
        *_model_tags(sender),
        *row_tags(sender, [instance.pk], using=using),
        *_sides(instance, using),
        # Rows the database deletes or rewrites itself (Django 6.1's DB_CASCADE,
        # DB_SET_NULL, DB_SET_DEFAULT): no SQL of Django's, no signal; not known.
        *db_deletion_tags(sender),
        reason=reason,
        db=using,
    )
    # Its many-to-many links went with it; which rows they pointed to is no longer
    # known, so every row of the other side is invalidated.
    for other in m2m_relations(sender):
        if is_tracked(other):
            invalidate_model(other, reason=reason, db=using)


def _on_db_deletion(
    sender: type[Model], instance: Model, using: str, **kwargs: Any
) -> None:
    """``post_delete`` of a model that is not tracked itself, whose deletions the
    database carries on to rows of tracked models (``DB_CASCADE``, ``DB_SET_NULL``,
    ``DB_SET_DEFAULT``): every row of those models."""
    reason = (
        f"post_delete {sender._meta.label_lower} pk={instance.pk} (database on_delete)"
    )
    invalidate_tags(*db_deletion_tags(sender), reason=reason, db=using)


def _on_m2m(
    sender: type[Model],
    instance: Model,
    action: str,
    model: type[Model],
    pk_set: set[Any] | None,
    using: str,
    **kwargs: Any,
) -> None:
    if not action.startswith("post_"):
        return
    reason = f"m2m_changed {action} {type(instance)._meta.label_lower} pk={instance.pk}"
    tags: list[str] = [model_tag(sender)]  # the through model (custom or auto-created)
    if is_tracked(type(instance)):
        tags += _model_tags(type(instance))
        tags += row_tags(type(instance), [instance.pk], using=using)
    if is_tracked(model):
        tags += _model_tags(model)
        # clear(): the other side's rows are not known; nor are they when the links
        # hold another field than the pk (``to_field``: ``pk_set`` holds its values).
        if pk_set is None or not holds_pks(sender, model):
            tags += [rows_tag(m) for m in family(model)]
        else:
            tags += row_tags(model, pk_set, using=using)
    sides = through_sides(sender)
    if len(sides) > 2:
        # A through model two fields share: the rows its other links name (another
        # field's side) are not in the signal; all of them.
        for _column, side in sides:
            if is_tracked(side):
                tags += _all_rows(side)
    invalidate_tags(*tags, reason=reason, db=using)


def _on_migrate(
    sender: Any, using: str, plan: list[tuple[Any, bool]] | None = None, **kwargs: Any
) -> None:
    """``post_migrate`` (sent per app by ``migrate``, once it has run): a migration
    of the app was applied or unapplied, so every model of the app is invalidated.

    Schema changes rewrite rows without a statement the SQL watcher maps to the
    model (SQLite rebuilds the table: ``INSERT INTO "new__<table>" SELECT ...``,
    then ``RENAME``; PostgreSQL's ``ALTER COLUMN ... TYPE ... USING``), and entries
    cached before the migration may hold fields it renamed, removed or changed. A
    ``migrate`` that applies nothing (an empty ``plan``) invalidates nothing.
    """
    if not plan or not any(m.app_label == sender.label for m, _ in plan):
        return
    tags: dict[str, None] = {}
    for model in sender.get_models(include_auto_created=True):
        related = [model] if registry.is_watched(model) else []
        related += [side for _, side in through_sides(model) if is_tracked(side)]
        for other in related:
            tags.update(dict.fromkeys(registry.all_rows_tags(other)))
    if tags:
        invalidate_after_schema_change(
            *tags, reason=f"post_migrate {sender.label}", db=using
        )


def _uid(kind: str, model: type[Model]) -> str:
    return f"django_smartcache.{kind}.{model._meta.label_lower}"


_connected: list[tuple[Any, type[Model], str]] = []
#: Whether :func:`connect` ran (the app's ``ready()``) and :func:`disconnect` did not
#: undo it: ``_connected`` alone is empty too when no model is tracked.
_listening = False


def receivers_connected() -> bool:
    """Whether saves, deletes and m2m changes invalidate tags in this process."""
    return _listening


def connect() -> None:
    """Connect the receivers (idempotent); ``SMARTCACHE["MODELS"]`` decides which models."""
    global _listening
    if _connected:
        return
    registry.check_labels()
    for model in apps.get_models():
        # proxies too: their signals name the proxy class
        receivers: list[tuple[Any, Any, str]] = []
        if is_tracked(model):
            receivers += [
                (post_save, _on_save, "post_save"),
                (post_delete, _on_delete, "post_delete"),
            ]
        elif db_deletion_tags(model) and not conf.get("WATCH_SQL"):
            # Without the SQL watcher, which reads the DELETE: a receiver costs such a
            # parent Django's fast delete (a SELECT, then one post_delete per row).
            receivers += [(post_delete, _on_db_deletion, "post_delete")]
        if sqlwatch.inserts_unnamed(model):
            # After _on_save: the new row is dirty before the save's holds go.
            receivers += [
                (pre_save, sqlwatch.save_started, "pre_save.holds"),
                (post_save, sqlwatch.save_ended, "post_save.holds"),
            ]
        for signal, func, kind in receivers:
            uid = _uid(kind, model)
            signal.connect(func, sender=model, weak=False, dispatch_uid=uid)
            _connected.append((signal, model, uid))
    m2m_changed.connect(
        _on_m2m, weak=False, dispatch_uid="django_smartcache.m2m_changed"
    )
    post_migrate.connect(
        _on_migrate, weak=False, dispatch_uid="django_smartcache.post_migrate"
    )
    _listening = True


def disconnect() -> None:
    """Undo :func:`connect`."""
    global _listening
    _listening = False
    while _connected:
        signal, model, uid = _connected.pop()
        signal.disconnect(sender=model, dispatch_uid=uid)
    m2m_changed.disconnect(dispatch_uid="django_smartcache.m2m_changed")
    post_migrate.disconnect(dispatch_uid="django_smartcache.post_migrate")


@receiver(setting_changed, dispatch_uid="django_smartcache.invalidation.reconnect")
def _reconnect(*, setting: str, **kwargs: Any) -> None:
    if setting == "SMARTCACHE" and apps.ready and _connected:
        registry.clear_caches()
        conf.get_config.cache_clear()
        # Refused before anything is disconnected: the receivers of the setting in
        # force stay, and leaving the override reconnects as usual.
        registry.check_labels()
        disconnect()
        connect()
