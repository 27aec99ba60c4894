"""System checks: the ``SMARTCACHE`` setting (``smartcache.E010``) and the SQLite files
in ``CACHES`` (``smartcache.W040``, ``W041``)."""

from __future__ import annotations

import os
import pathlib
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.core.exceptions import ImproperlyConfigured

from . import conf, registry


@register(Tags.caches)
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """``SMARTCACHE`` must validate: report the bad option instead of failing later."""
    conf.get_config.cache_clear()
    try:
        conf.get_config()
        registry.check_labels()
    except ImproperlyConfigured as exc:
        # The panel's option is documented with the panel.
        hint = (
            "See docs/debug-toolbar.md."
            if "'TOOLBAR_" in str(exc)
            else "See docs/tagging.md for every option."
        )
        return [
            Error(
                str(exc),
                hint=hint,
                id="smartcache.E010",
            )
        ]
    return []


def _sqlite_locations() -> list[tuple[str, str]]:
    """(alias, LOCATION as written) of every SQLite file in ``CACHES``: SQLiteCache
    aliases, a MultiLevelCache's default level, and inline SQLiteCache levels (a level
    named by alias is checked as that alias). A malformed entry is skipped here: the
    backend itself names what is wrong when the alias is used."""
    found: list[tuple[str, Any]] = []
    for alias, config in settings.CACHES.items():
        if not isinstance(config, Mapping):
            continue
        backend = str(config.get("BACKEND", ""))
        if backend.endswith("SQLiteCache"):
            found.append((alias, config.get("LOCATION")))
        elif backend.endswith("MultiLevelCache"):
            options = config.get("OPTIONS") or {}
            levels = options.get("LEVELS") if isinstance(options, Mapping) else ()
            if levels is None:
                found.append((alias, config.get("LOCATION")))
                continue
            for level in levels if isinstance(levels, list | tuple) else ():
                if isinstance(level, Mapping) and str(
                    level.get("BACKEND", "")
                ).endswith("SQLiteCache"):
                    found.append((alias, level.get("LOCATION")))
    found = [
        (alias, os.fspath(location) if isinstance(location, os.PathLike) else location)
        for alias, location in found
    ]
    return [(alias, loc) for alias, loc in found if loc and isinstance(loc, str)]


@register(Tags.caches)
def check_sqlite_location_is_absolute(
    app_configs: Any = None, **kwargs: Any
) -> list[CheckMessage]:
    """As Django's ``caches.W003`` for FileBasedCache: a relative path is resolved in
    each process's working directory, so workers started elsewhere use another file."""
    return [
        Warning(
            f"The SQLite file of cache {alias!r} ({location!r}) is a relative path.",
            hint="Use an absolute path: each process resolves it against its own "
            "working directory.",
            id="smartcache.W040",
        )
        for alias, location in _sqlite_locations()
        if not pathlib.Path(location).is_absolute()
    ]


@register(Tags.caches, deploy=True)
def check_sqlite_location_not_exposed(
    app_configs: Any = None, **kwargs: Any
) -> list[CheckMessage]:
    """As Django's ``caches.W002`` for FileBasedCache: a cache file under a directory the
    web server serves can be downloaded (it holds pickles: sessions, pages)."""
    served: list[tuple[str, pathlib.Path]] = []
    for name in ("MEDIA_ROOT", "STATIC_ROOT", "STATICFILES_DIRS"):
        setting = getattr(settings, name, None)
        if not setting:
            continue
        entries = setting if name == "STATICFILES_DIRS" else [setting]
        for entry in entries:
            if isinstance(entry, list | tuple):
                entry = entry[1]
            served.append((name, pathlib.Path(entry).resolve()))
    messages: list[CheckMessage] = []
    for alias, location in _sqlite_locations():
        path = pathlib.Path(location).resolve()
        for name, directory in served:
            if directory in path.parents:
                messages.append(
                    Warning(
                        f"The SQLite file of cache {alias!r} is inside {name}: it "
                        "could be downloaded.",
                        hint="Put it outside every directory the web server serves.",
                        id="smartcache.W041",
                    )
                )
                break
    return messages
