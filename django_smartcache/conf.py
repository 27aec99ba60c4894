"""The ``SMARTCACHE`` setting: documented defaults, validation, a cached accessor.

Read through :func:`get_config`, cached until ``setting_changed`` clears it (so
``override_settings`` works), the pattern django-debug-toolbar uses. A wrong value
raises ``ImproperlyConfigured`` naming the option, and so does an unknown option (a
typo would otherwise be ignored without a word).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver

ALL = "__all__"

#: Every option of the tagging and invalidation machinery and of the debug-toolbar
#: panel, with its default.
DEFAULTS: dict[str, Any] = {
    # Models whose writes invalidate their tags: "__all__" or a list of
    # "app_label" / "app_label.ModelName" labels.
    "MODELS": ALL,
    # Per-model (or per-app) opt-out, same label forms as MODELS.
    "EXCLUDE_MODELS": (),
    # Observe the SQL Django executes (connection.execute_wrappers) to catch
    # QuerySet.update()/delete(), bulk_create(), bulk_update() and raw SQL.
    "WATCH_SQL": True,
    # Cache aliases that module-level invalidation reaches: "__all__" (every alias
    # whose backend supports tags) or a list of aliases.
    "TAG_CACHES": ALL,
    # Lifetime in seconds of a tag's version key; None keeps it until the backend
    # evicts it. Losing a version key only turns its entries into misses.
    "TAG_VERSION_TIMEOUT": None,
    # Models whose rows come from other models' tables (an unmanaged model over a
    # database view): {"app_label.ViewModel": ["app_label.Model", ...]}. A write to
    # any of those models invalidates all rows of the view model.
    "VIEWS": {},
    # Prefix of the reserved keys holding tag versions (before KEY_PREFIX/VERSION).
    "TAG_KEY_PREFIX": "smartcache.tag:",
    # How many cache calls of a request the debug-toolbar panel lists (the first
    # ones); the totals count every call. None: no cap; 0: list none.
    "TOOLBAR_MAX_CALLS": 1000,
}


def _labels(name: str, value: Any, allow_all: bool) -> Any:
    if allow_all and value == ALL:
        return ALL
    if isinstance(value, str) or not isinstance(value, list | tuple | set | frozenset):
        raise ImproperlyConfigured(
            f"SMARTCACHE[{name!r}] must be "
            + ('"__all__" or ' if allow_all else "")
            + f"a list of labels, not {value!r}"
        )
    for label in value:
        if not isinstance(label, str) or not label or label.count(".") > 1:
            raise ImproperlyConfigured(
                f"SMARTCACHE[{name!r}] holds {label!r}: use 'app_label' or 'app_label.ModelName'"
            )
    return tuple(label.lower() for label in value)


def _views(name: str, value: Any) -> dict[str, tuple[str, ...]]:
    if not isinstance(value, dict):
        raise ImproperlyConfigured(
            f"SMARTCACHE[{name!r}] must be a dict of 'app_label.ModelName' labels, "
            f"each to a list of the labels of the models it reads, not {value!r}"
        )
    out = {}
    for view, models in value.items():
        if not isinstance(view, str) or view.count(".") != 1:
            raise ImproperlyConfigured(
                f"SMARTCACHE[{name!r}] holds {view!r}: use 'app_label.ModelName'"
            )
        if isinstance(models, str) or not isinstance(models, list | tuple):
            raise ImproperlyConfigured(
                f"SMARTCACHE[{name!r}][{view!r}] must be a list of 'app_label.ModelName' "
                f"labels, not {models!r}"
            )
        for label in models:
            if not isinstance(label, str) or label.count(".") != 1:
                raise ImproperlyConfigured(
                    f"SMARTCACHE[{name!r}][{view!r}] holds {label!r}: use "
                    "'app_label.ModelName'"
                )
        out[view.lower()] = tuple(label.lower() for label in models)
    return out


def _bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ImproperlyConfigured(
            f"SMARTCACHE[{name!r}] must be True or False, not {value!r}"
        )
    return value


def _aliases(name: str, value: Any) -> Any:
    if value == ALL:
        return ALL
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise ImproperlyConfigured(
            f'SMARTCACHE[{name!r}] must be "__all__" or a list of CACHES aliases, not {value!r}'
        )
    for alias in value:
        if not isinstance(
            alias, str
        ):  # a list in the list would be a TypeError below (unhashable)
            raise ImproperlyConfigured(
                f"SMARTCACHE[{name!r}] holds {alias!r}: each entry must be a CACHES alias (a str)"
            )
    unknown = [alias for alias in value if alias not in settings.CACHES]
    if unknown:
        raise ImproperlyConfigured(
            f"SMARTCACHE[{name!r}] names unknown CACHES aliases {unknown!r}"
        )
    untagged = [alias for alias in value if not _takes_tags(alias)]
    if untagged:
        # Left in, such an alias would be skipped without a word: invalidate_tags()
        # and model writes would invalidate nothing (invalidate_tags(using=it) raises).
        raise ImproperlyConfigured(
            f"SMARTCACHE[{name!r}] names CACHES aliases whose backend does not support "
            f"tags: {untagged!r} (use SmartCache, SQLiteCache or MultiLevelCache)"
        )
    return tuple(value)


def _takes_tags(alias: str) -> bool:
    """Whether the BACKEND of ``alias`` takes tags (one that cannot be imported is
    left for Django to report when the alias is used)."""
    from django.utils.module_loading import import_string

    from .tagging import TaggingMixin

    config = settings.CACHES[alias]
    backend = config.get("BACKEND") if isinstance(config, dict) else None
    if not isinstance(backend, str):
        return True
    try:
        cls = import_string(backend)
    except ImportError:
        return True
    return not isinstance(cls, type) or issubclass(cls, TaggingMixin)


def _timeout(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ImproperlyConfigured(
            f"SMARTCACHE[{name!r}] must be a positive whole number of seconds (an int) or None, not {value!r}"
        )
    return value


def _prefix(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value or any(ch.isspace() for ch in value):
        raise ImproperlyConfigured(
            f"SMARTCACHE[{name!r}] must be a non-empty str without spaces"
        )
    return value


def _count(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ImproperlyConfigured(
            f"SMARTCACHE[{name!r}] must be a whole number (an int, 0 or more) or None, not {value!r}"
        )
    return value


VALIDATORS: dict[str, Callable[[str, Any], Any]] = {
    "MODELS": lambda n, v: _labels(n, v, allow_all=True),
    "EXCLUDE_MODELS": lambda n, v: _labels(n, v, allow_all=False),
    "WATCH_SQL": _bool,
    "TAG_CACHES": _aliases,
    "VIEWS": _views,
    "TAG_VERSION_TIMEOUT": _timeout,
    "TAG_KEY_PREFIX": _prefix,
    "TOOLBAR_MAX_CALLS": _count,
}


@functools.cache
def get_config() -> dict[str, Any]:
    """The validated ``SMARTCACHE`` options merged over :data:`DEFAULTS`."""
    user = getattr(settings, "SMARTCACHE", {})
    if not isinstance(user, dict):
        raise ImproperlyConfigured(
            f"SMARTCACHE must be a dict, not {type(user).__name__}"
        )
    unknown = sorted(set(user) - set(DEFAULTS), key=str)
    if unknown:
        raise ImproperlyConfigured(
            f"SMARTCACHE has unknown options {unknown!r}; known: {sorted(DEFAULTS)}"
        )
    config = {**DEFAULTS, **user}
    for name, validate in VALIDATORS.items():
        config[name] = validate(name, config[name])
    return config


def get(name: str) -> Any:
    """One option's value (validated)."""
    return get_config()[name]


@receiver(setting_changed, dispatch_uid="django_smartcache.conf.reset")
def _reset(*, setting: str, **kwargs: Any) -> None:
    if setting in ("SMARTCACHE", "CACHES"):
        get_config.cache_clear()
