"""Which models take part in invalidation, their tags, and the tables they write.

Tags of a model: ``model:<app_label>.<model_name>`` changes on every write to any of
its rows (use it for lists, counts, anything spanning rows); a row's tag is
``model:<label>#<pk>`` and depends on ``model:<label>#*`` (see
``tagging.expand_tags``), which is bumped when rows were written that are not
known one by one (``QuerySet.update()``, raw SQL). Proxy models share their
concrete model's tags; models related by multi-table inheritance share rows, so a
write to one invalidates the same pk in every model of the family.
"""

from __future__ import annotations

import datetime
import decimal
import functools
import hashlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from django.apps import apps
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.db import connections
from django.db.backends.utils import format_number
from django.db.models import (
    DateTimeField,
    DecimalField,
    DurationField,
    Field,
    FloatField,
    ForeignKey,
    Model,
    TimeField,
    deletion,
)
from django.dispatch import receiver
from django.utils import timezone

from . import conf

__all__ = [
    "db_deletion_tables",
    "db_deletion_tags",
    "family",
    "is_tracked",
    "is_watched",
    "m2m_relations",
    "model_tag",
    "pk_fields",
    "row_tags",
    "rows_tag",
    "tables",
    "through_sides",
    "with_views",
]


def _concrete(model_or_instance: type[Model] | Model) -> type[Model]:
    model = (
        model_or_instance
        if isinstance(model_or_instance, type)
        else type(model_or_instance)
    )
    return model._meta.concrete_model or model


#: What a pk's text may not hold in a tag: what ``validate_tag`` refuses (whitespace,
#: control characters), ``#`` (it ends the ``model:<label>`` part: ``expand_tags``
#: splits there) and ``%`` (escapes start with it, so an escaped pk stays unique).
_NOT_IN_TAG = re.compile(r"[\s\x00-\x20\x7f#%]")

#: A pk's text longer than this is replaced by a digest, so that ``model:<label>#<pk>``
#: stays within ``MAX_TAG_LENGTH`` for any label under ~100 characters.
MAX_PK_TEXT = 64


def _escape(found: re.Match[str]) -> str:
    return "".join(f"%{byte:02X}" for byte in found.group().encode())


#: In a composite pk's text, each part is escaped as above and ``,`` too: ``,`` joins them.
_NOT_IN_PART = re.compile(r"[\s\x00-\x20\x7f#%,]")


def pk_fields(model: type[Model]) -> tuple[Field[Any, Any], ...]:
    """The fields of ``model``'s pk: one, or those of a ``CompositePrimaryKey``."""
    pk = _concrete(model)._meta.pk
    return tuple(getattr(pk, "fields", None) or (pk,))  # type: ignore[arg-type]


def _field_text(field: Field[Any, Any], value: Any, db_timezone: Any = None) -> str:
    """One canonical text per value of ``field``, however it was given: the instance's
    value, the one read back from the database, or an SQL parameter."""
    while isinstance(field, ForeignKey):  # a parent link, or a foreign key in a pk
        field = field.target_field
    if isinstance(field, DurationField) and isinstance(value, int):
        value = datetime.timedelta(microseconds=value)  # as SQLite and MySQL store it
    value = field.to_python(value)
    if value is None:
        return "None"
    if isinstance(field, DecimalField):
        # Rounded to the field's places as the database stores it: 1.5 is 1.50.
        try:
            text = format_number(value, field.max_digits, field.decimal_places)
        except decimal.InvalidOperation:
            text = f"{value:f}"
        return text[1:] if text.startswith("-") and not value else text
    if isinstance(field, DateTimeField):
        return _datetime_text(value, db_timezone)
    if isinstance(field, TimeField):
        return str(value.isoformat(timespec="microseconds"))
    if isinstance(field, FloatField):
        return repr(value + 0.0)  # -0.0 is 0.0
    return str(value)


def _datetime_text(value: datetime.datetime, db_timezone: Any) -> str:
    """UTC with ``USE_TZ`` (a naive value is in ``db_timezone``, the SQL parameters'
    zone, else in the default time zone, as Django saves it), else as given."""
    if not settings.USE_TZ:
        if timezone.is_aware(value):
            value = timezone.make_naive(value, timezone.get_default_timezone())
        return value.isoformat(timespec="microseconds")
    if timezone.is_naive(value):
        value = timezone.make_aware(
            value, db_timezone or timezone.get_default_timezone()
        )
    utc = value.astimezone(datetime.UTC).replace(tzinfo=None)
    return f"{utc.isoformat(timespec='microseconds')}Z"


def normalize_pk(model: type[Model], pk: Any, *, db_timezone: Any = None) -> str:
    """The pk in one text per value, for its field's type: ``5`` and ``"5"``,
    ``Decimal("1.5")`` and ``Decimal("1.50")`` in a ``DecimalField(decimal_places=2)``,
    an aware datetime and its naive UTC text from an SQL parameter each give one tag.

    ``db_timezone``: the zone of naive datetimes (the SQL parameters of a connection
    are in its ``timezone``); by default they are in the default time zone.

    Any pk makes a valid tag: characters a tag may not hold are %-escaped
    (``"New York"`` gives ``New%20York``), and text over :data:`MAX_PK_TEXT`
    characters becomes ``%~`` and a digest (no escape starts with ``%~``).
    A ``CompositePrimaryKey`` takes the tuple of its fields' values (what
    ``instance.pk`` holds): their texts, each escaped (``,`` too), joined by ``,``.
    """
    fields = pk_fields(model)
    if len(fields) == 1:
        text = _field_text(fields[0], pk, db_timezone)
        if _NOT_IN_TAG.search(text):
            text = _NOT_IN_TAG.sub(_escape, text)
    else:
        if not isinstance(pk, list | tuple) or len(pk) != len(fields):
            raise ValueError(
                f"the pk of {model._meta.label} is composite: give a tuple of "
                f"{len(fields)} values, not {pk!r}"
            )
        text = ",".join(
            _NOT_IN_PART.sub(_escape, _field_text(field, value, db_timezone))
            for field, value in zip(fields, pk, strict=True)
        )
    if len(text) > MAX_PK_TEXT:
        digest = hashlib.blake2b(text.encode(), digest_size=16).hexdigest()
        text = f"%~{digest}"
    return text


def _untaggable(meta: Any) -> ValueError:
    """The error for an abstract model or a swapped-out one (``auth.User`` under a
    custom ``AUTH_USER_MODEL``): it stores no rows, so no write would ever invalidate
    its tags. Django refuses to query them too."""
    if meta.abstract:
        return ValueError(
            f"{meta.label} is abstract: no write invalidates its tag; tag the concrete "
            "models that inherit from it"
        )
    return ValueError(
        f"{meta.label} has been swapped for {meta.swapped!r} "
        f"(settings.{meta.swappable}): no write invalidates its tag; tag "
        f"{meta.swapped!r} (get_user_model() for the user model)"
    )


def model_tag(model_or_instance: type[Model] | Model, pk: Any = None) -> str:
    """The tag of a model, or of one row (an instance, or a model and ``pk``).

    ``ValueError`` for an abstract or a swapped-out model (no row is written there).
    """
    model = _concrete(model_or_instance)
    meta = model._meta
    if meta.abstract or (meta.swappable and meta.swapped):
        raise _untaggable(meta)
    if pk is None and not isinstance(model_or_instance, type):
        pk = model_or_instance.pk
    base = f"model:{meta.label_lower}"
    return base if pk is None else f"{base}#{normalize_pk(model, pk)}"


def rows_tag(model: type[Model]) -> str:
    """The tag every row tag of ``model`` depends on."""
    return f"{model_tag(model)}#*"


@functools.cache
def family(model: type[Model]) -> tuple[type[Model], ...]:
    """``model`` and its multi-table-inheritance parents and descendants (concrete)."""
    model = _concrete(model)
    members: dict[type[Model], None] = {model: None}
    for parent in model._meta.get_parent_list():
        members[_concrete(parent)] = None
    roots = [m for m in members if not m._meta.parents]
    for other in apps.get_models():
        if other._meta.proxy:
            continue
        if any(issubclass(other, root) for root in roots):
            members[other] = None
    return tuple(members)


@functools.cache
def _pk_root(model: type[Model]) -> type[Model]:
    """The ancestor whose pk values ``model``'s pks are: up the chain of parent links
    that are the pk (a child's pk is the link to its first parent; the links to any
    other parents are columns of their own, holding those parents' pks)."""
    model = _concrete(model)
    while True:
        pk = model._meta.pk
        remote = pk.remote_field
        if remote is None or not getattr(remote, "parent_link", False):
            return model
        model = _concrete(remote.model)


#: Internal types whose values :func:`normalize_pk` gives one text per value the
#: database holds (numbers, dates, UUIDs: ``to_python`` folds their forms). Any other
#: pk is text, and the database compares text under a collation.
_NOT_TEXT = frozenset(
    {
        "AutoField",
        "BigAutoField",
        "SmallAutoField",
        "IntegerField",
        "BigIntegerField",
        "SmallIntegerField",
        "PositiveIntegerField",
        "PositiveBigIntegerField",
        "PositiveSmallIntegerField",
        "BooleanField",
        "DecimalField",
        "FloatField",
        "DateField",
        "DateTimeField",
        "TimeField",
        "DurationField",
        "UUIDField",
        "BinaryField",
    }
)

#: Collations, per vendor, under which two texts are equal only if they are the same
#: characters (no case or accent folding, no PAD SPACE): ``None`` is the column's
#: default. Anything else may fold: SQLite's ``NOCASE`` and ``RTRIM``, MySQL's
#: ``*_ci``/``*_ai_ci`` and its PAD SPACE ``*_bin``, a PostgreSQL collation created
#: ``deterministic = false``. MySQL's default collation (of the table, the database
#: or the server) is not known without a query and is ``_ci`` unless changed; a
#: vendor not listed (a third-party backend: SQL Server's defaults are ``_CI_``) is
#: not trusted either.
_EXACT_COLLATIONS: dict[str, Callable[[str | None], bool]] = {
    "sqlite": lambda c: c is None or c == "binary",
    "postgresql": lambda c: (
        c is None or c in ("c", "posix", "ucs_basic", "pg_c_utf8", "default")
    ),
    "oracle": lambda c: c is None or c == "binary",
    "mysql": lambda c: (
        c is not None and (c == "binary" or c.endswith("_0900_bin") or "nopad_bin" in c)
    ),
}


def _exact_text(field: Field[Any, Any], alias: str) -> bool:
    """Whether the database of ``alias`` finds a value of ``field`` only under the
    very text :func:`normalize_pk` gives it (``WHERE slug = 'acme'`` does not also
    find ``'Acme'``)."""
    while isinstance(field, ForeignKey):  # its column takes the target's collation
        field = field.target_field
    if field.get_internal_type() in _NOT_TEXT:
        return True
    connection = connections[alias]
    exact = _EXACT_COLLATIONS.get(connection.vendor)
    collation = getattr(field, "db_collation", None)
    if exact is None or not exact(collation.lower() if collation else None):
        return False
    if connection.vendor in ("sqlite", "postgresql"):  # types known without a query
        db_type = (field.db_type(connection) or "").lower()
        # PostgreSQL's citext compares lower(); a type may carry its own COLLATE.
        if db_type.startswith("citext") or "collate" in db_type:
            return False
    return True


@functools.cache
def _exact_pks(model: type[Model], alias: str | None) -> bool:
    """Whether ``model``'s rows are found only by their pk's own text on ``alias``
    (every database when ``None``); see :func:`row_tags`."""
    aliases = list(connections) if alias is None else [alias]
    return all(
        _exact_text(field, name) for name in aliases for field in pk_fields(model)
    )


def row_tags(
    model: type[Model],
    pks: Iterable[Any],
    *,
    db_timezone: Any = None,
    using: str | None = None,
) -> list[str]:
    """Row tags of ``pks`` in every model of ``model``'s family.

    A member whose pks are another ancestor's (multiple inheritance: the same row has
    another pk there) gets its all-rows tag instead: which of its rows it is, is not
    known without a query. ``db_timezone``: see :func:`normalize_pk`.

    ``using``: the database written (every database when ``None``). Where it compares
    a text pk under a collation that may fold (case, accents, trailing spaces:
    ``UPDATE ... WHERE slug = 'acme'`` writes row ``'Acme'``), the rows written are
    not known by their text, and every member gets its all-rows tag.
    """
    pks = [normalize_pk(model, pk, db_timezone=db_timezone) for pk in pks]
    if not pks:
        return []
    if not _exact_pks(_concrete(model), using):
        return [rows_tag(member) for member in family(model)]
    root = _pk_root(model)
    tags: list[str] = []
    for member in family(model):
        if _pk_root(member) is root:
            tags += [f"model:{member._meta.label_lower}#{pk}" for pk in pks]
        else:
            tags.append(rows_tag(member))
    return tags


def all_rows_tags(model: type[Model]) -> list[str]:
    """The model tag and the all-rows tag of ``model`` and of each model it shares
    rows with (multi-table inheritance): what a write of unknown rows invalidates."""
    return [tag for m in family(model) for tag in (model_tag(m), rows_tag(m))]


@functools.cache
def _views_reading() -> dict[str, tuple[str, ...]]:
    """The model tag of each model ``SMARTCACHE["VIEWS"]`` says a view model reads
    -> the all-rows tags of the view models reading it, and of the views over those."""
    views = conf.get("VIEWS")
    if not views:
        return {}
    readers: dict[str, list[type[Model]]] = {}
    for view, reads in views.items():
        for label in reads:
            readers.setdefault(model_tag(apps.get_model(label)), []).append(
                apps.get_model(view)
            )
    out = {}
    for tag, direct in readers.items():
        found: dict[type[Model], None] = {}
        todo = list(direct)
        while todo:
            view = todo.pop()
            if view not in found:
                found[view] = None
                todo += readers.get(model_tag(view), ())
        out[tag] = tuple(dict.fromkeys(t for v in found for t in all_rows_tags(v)))
    return out


def with_views(tags: tuple[str, ...]) -> tuple[str, ...]:
    """``tags`` and, for each tag of a model that a view model reads (its model tag,
    its all-rows tag, one of its row tags), the all-rows tags of that view model
    (``SMARTCACHE["VIEWS"]``): which of the view's rows a write changes is not known."""
    readers = _views_reading()
    if not readers:
        return tags
    extra = [t for tag in tags for t in readers.get(tag.partition("#")[0], ())]
    return tuple(dict.fromkeys((*tags, *extra))) if extra else tags


def _matches(model: type[Model], labels: Iterable[str]) -> bool:
    meta = model._meta
    return any(label in (meta.app_label.lower(), meta.label_lower) for label in labels)


def _with_concrete(labels: Iterable[str]) -> list[str]:
    """``labels`` plus the concrete model of each proxy model named: a proxy shares
    its concrete model's rows and tags, so naming it names them."""
    out = list(labels)
    for label in labels:
        if "." in label:
            try:
                model = apps.get_model(label)
            except LookupError:
                continue
            out.append(_concrete(model)._meta.label_lower)
    return out


def check_labels() -> None:
    """Refuse a ``MODELS``/``EXCLUDE_MODELS`` label that names no installed app or model.

    A typo in ``MODELS`` would leave the intended model untracked: its writes would
    invalidate nothing and its cached values would be served stale, without a word.
    """
    known = {config.label.lower() for config in apps.get_app_configs()}
    known.update(
        model._meta.label_lower for model in apps.get_models(include_auto_created=True)
    )
    for name in ("MODELS", "EXCLUDE_MODELS"):
        labels = conf.get(name)
        if labels == conf.ALL:
            continue
        unknown = [label for label in labels if label not in known]
        if unknown:
            raise ImproperlyConfigured(
                f"SMARTCACHE[{name!r}] names {unknown!r}: no installed app or model has "
                f"that label ('app_label' or 'app_label.ModelName')"
            )
    views = conf.get("VIEWS")
    models = {m._meta.label_lower for m in apps.get_models(include_auto_created=True)}
    named = [label for view, reads in views.items() for label in (view, *reads)]
    unknown = [label for label in dict.fromkeys(named) if label not in models]
    if unknown:
        swapped = {
            m._meta.label_lower: m._meta.swapped
            for m in apps.get_models(include_swapped=True)
            if m._meta.swapped
        }
        why = "; ".join(
            f"{label!r} is swapped for {swapped[label]!r}"
            for label in unknown
            if label in swapped
        )
        raise ImproperlyConfigured(
            f"SMARTCACHE['VIEWS'] names {unknown!r}: no installed model has that "
            "label ('app_label.ModelName')" + (f" ({why})" if why else "")
        )


@functools.cache
def is_tracked(model: type[Model]) -> bool:
    """Whether writes to ``model`` invalidate its tags (``MODELS``/``EXCLUDE_MODELS``).

    A proxy model named there stands for its concrete model, and so for all of that
    model's proxies: they share its rows and its tags.
    """
    model = _concrete(model)
    chosen = conf.get("MODELS")
    if chosen != conf.ALL and not _matches(model, _with_concrete(chosen)):
        return False
    return not _matches(model, _with_concrete(conf.get("EXCLUDE_MODELS")))


@functools.cache
def is_watched(model: type[Model]) -> bool:
    """Whether writes to ``model``'s table invalidate: it is tracked, or it is a
    multi-table-inheritance parent of a tracked model (``Restaurant(Place)``: an
    ``update()`` of ``name`` writes only ``Place``'s table, rows of a ``Restaurant``)."""
    model = _concrete(model)
    return is_tracked(model) or any(
        member is not model and issubclass(member, model) and is_tracked(member)
        for member in family(model)
    )


@dataclass(frozen=True)
class Table:
    """What a write to one database table means for the models that use it."""

    model: type[Model]
    #: The pk's column; None for a ``CompositePrimaryKey`` (see ``pk_columns``).
    pk_column: str | None
    #: For a many-to-many through table: (column, model) of both sides.
    sides: tuple[tuple[str | None, type[Model]], ...] = ()
    #: The pk's columns: one, or those of a ``CompositePrimaryKey`` in its order.
    pk_columns: tuple[str, ...] = ()


@functools.cache
def tables() -> dict[str, tuple[Table, ...]]:
    """Lower-cased ``db_table`` -> the tracked uses of that table."""
    out: dict[str, list[Table]] = {}
    through = _through_sides()
    for model in apps.get_models(include_auto_created=True):
        meta = model._meta
        if meta.proxy:
            continue
        sides = tuple((col, m) for col, m in through.get(model, ()) if is_tracked(m))
        if not is_watched(model) and not sides:
            continue
        # Lower-cased, as ``sqlwatch`` reads column names: a legacy ``"ID"`` column.
        columns = tuple(f.column.lower() for f in pk_fields(model))
        out.setdefault(meta.db_table.lower(), []).append(
            Table(
                model=model,
                pk_column=columns[0] if len(columns) == 1 else None,
                sides=sides,
                pk_columns=columns,
            )
        )
    return {name: tuple(uses) for name, uses in out.items()}


def _side(
    through: type[Model], name: str, model: type[Model]
) -> tuple[str | None, type[Model]]:
    """(column, model) of one side of a through model; the column is None when it
    holds another field's values than the pk (a ``ForeignKey(to_field=...)``)."""
    field = through._meta.get_field(name)
    by_pk = field.target_field.primary_key  # type: ignore[union-attr]
    return (field.column.lower() if by_pk else None), _concrete(model)  # type: ignore[union-attr]


@functools.cache
def _through_sides() -> dict[type[Model], tuple[tuple[str | None, type[Model]], ...]]:
    """Through model -> its (column, model) sides: the source and the target side of
    every many-to-many field it serves, once each.

    Django lets two fields share one through model (``through_fields`` naming other
    links); keeping the last field's two sides only, the SQL watcher would read a
    write whose ``WHERE`` names those two columns as rows known, and never
    invalidate the rows of the other field's side (a member's clubs served stale
    after ``filter(club=c, sponsor=s).update(member=m2)``).
    """
    found: dict[type[Model], tuple[tuple[str | None, type[Model]], ...]] = {}
    # The through model's link fields already counted: a link is one side whatever
    # its (column, model) looks like (two ``to_field`` links of one model are both
    # ``(None, model)`` and still two sides).
    links: dict[type[Model], set[str]] = {}
    for model in apps.get_models():
        for field in model._meta.local_many_to_many:
            through = field.remote_field.through
            if isinstance(through, type):
                sides, seen = found.get(through, ()), links.setdefault(through, set())
                for name, side_model in (
                    (field.m2m_field_name(), model),
                    (field.m2m_reverse_field_name(), field.remote_field.model),
                ):
                    if name not in seen:
                        seen.add(name)
                        sides += (_side(through, name, side_model),)
                found[through] = sides
    return found


def through_sides(model: type[Model]) -> tuple[tuple[str | None, type[Model]], ...]:
    """For a many-to-many through model: (column, model) of its sides (two, or more
    when fields share it), else ``()``.

    A column is None when it does not hold the side's pks (``to_field``): the rows it
    names are not known without a query.
    """
    return _through_sides().get(_concrete(model), ())


def holds_pks(through: type[Model], model: type[Model]) -> bool:
    """Whether the through model's links to ``model`` hold its pks (what Django's
    ``m2m_changed`` sends as ``pk_set``: the linked field's values, not always pks)."""
    model = _concrete(model)
    return all(
        column is not None for column, side in through_sides(through) if side is model
    )


def m2m_relations(model: type[Model]) -> list[type[Model]]:
    """Models on the other side of ``model``'s many-to-many relations (both directions)."""
    model = _concrete(model)
    others = []
    for sides in _through_sides().values():
        linked = [side for _, side in sides]
        for i, side in enumerate(linked):
            if side is model:  # each other side of its through model (itself too)
                others += linked[:i] + linked[i + 1 :]
    return list(dict.fromkeys(others))


#: Django 6.1's ``on_delete=DB_CASCADE``/``DB_SET_NULL``/``DB_SET_DEFAULT``: the
#: database deletes or rewrites the referencing rows itself. ``None`` before 6.1.
_DATABASE_ON_DELETE: type | None = getattr(deletion, "DatabaseOnDelete", None)


@functools.cache
def _db_actions() -> dict[type[Model], tuple[tuple[type[Model], bool], ...]]:
    """Concrete model -> (model, whether its rows are deleted) for each foreign key
    to it whose ``on_delete`` the database carries out (``DatabaseOnDelete``): the
    referencing rows are deleted (``CASCADE``) or rewritten (``SET NULL``, ``SET
    DEFAULT``) by the database, with no SQL of Django's and no signal."""
    found: dict[type[Model], dict[tuple[type[Model], bool], None]] = {}
    if _DATABASE_ON_DELETE is None:
        return {}
    for model in apps.get_models(include_auto_created=True):
        if model._meta.proxy:
            continue
        for field in model._meta.local_fields:
            on_delete = getattr(field.remote_field, "on_delete", None)
            if not isinstance(on_delete, _DATABASE_ON_DELETE):
                continue
            operation = str(getattr(on_delete, "operation", "")).upper()
            # Only SET NULL / SET DEFAULT keep the row; anything else may delete it.
            deletes = not operation.startswith("SET ")
            target = _concrete(field.remote_field.model)  # type: ignore[union-attr]
            found.setdefault(target, {})[(_concrete(model), deletes)] = None
    return {target: tuple(uses) for target, uses in found.items()}


@functools.cache
def db_deletion_tags(model: type[Model]) -> tuple[str, ...]:
    """What the database itself deletes or rewrites when rows of ``model`` are
    deleted (Django 6.1's ``DB_CASCADE``, ``DB_SET_NULL``, ``DB_SET_DEFAULT``),
    followed along further database cascades: the model and all-rows tags of each
    model reached (its rows are not known), both sides of a many-to-many through
    model reached, and the other side of the many-to-many relations of a model whose
    rows go. Empty before Django 6.1, or without such foreign keys."""
    actions = _db_actions()
    if not actions:
        return ()
    reached: dict[type[Model], bool] = {}
    todo = list(family(model))
    done: set[type[Model]] = set()
    while todo:
        target = todo.pop()
        if target in done:
            continue
        done.add(target)
        for source, deletes in actions.get(target, ()):
            reached[source] = reached.get(source, False) or deletes
            if deletes:
                todo += family(source)
    tags: dict[str, None] = {}

    def everything(other: type[Model]) -> None:
        tags.update(dict.fromkeys(all_rows_tags(other)))

    for source, deleted in reached.items():
        if is_watched(source) or through_sides(source):
            everything(source)
        for _column, side in through_sides(source):
            if is_tracked(side):
                everything(side)
        if deleted:
            for other in m2m_relations(source):
                if is_tracked(other):
                    everything(other)
    return tuple(tags)


@functools.cache
def db_deletion_tables() -> dict[str, tuple[str, ...]]:
    """Lower-cased ``db_table`` -> :func:`db_deletion_tags` of the models using it
    (tracked or not: the database cascades from any table), where there are any."""
    out: dict[str, dict[str, None]] = {}
    if not _db_actions():
        return {}
    for model in apps.get_models(include_auto_created=True):
        if model._meta.proxy:
            continue
        tags = db_deletion_tags(model)
        if tags:
            out.setdefault(model._meta.db_table.lower(), {}).update(dict.fromkeys(tags))
    return {table: tuple(tags) for table, tags in out.items()}


def clear_caches() -> None:
    for cached in (
        family,
        is_tracked,
        is_watched,
        tables,
        _through_sides,
        _pk_root,
        _exact_pks,
        _db_actions,
        db_deletion_tags,
        db_deletion_tables,
        _views_reading,
    ):
        cached.cache_clear()


@receiver(setting_changed, dispatch_uid="django_smartcache.registry.reset")
def _reset(*, setting: str, **kwargs: Any) -> None:
    if setting in ("SMARTCACHE", "INSTALLED_APPS", "DATABASES"):
        clear_caches()
