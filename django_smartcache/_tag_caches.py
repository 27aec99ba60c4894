"""Tags across cache aliases: which aliases take them, and invalidating in all of them.

``invalidate_tags()`` (public as ``django_smartcache.invalidate_tags``) reaches every
tag-aware alias (``SMARTCACHE["TAG_CACHES"]``) or those named; :func:`tagging_caches`
lists them, for the management commands too; :func:`invalidate_after_schema_change`
is the variant for a migration or DDL, which logs a failing cache instead of raising.

Its own module, above the backends: it builds caches (``caches[alias]``) and looks at
their SQLite files, while :mod:`django_smartcache.tagging` (the mixin one backend
uses) sits below them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from typing import Any

from django.core.cache import caches

from . import conf
from .core.tags import normalize_tags
from .tagging import TaggingMixin

logger = logging.getLogger("django_smartcache")

__all__ = ["invalidate_after_schema_change", "invalidate_tags", "tagging_caches"]


def tagging_caches(
    using: str | Iterable[str] | None = None,
    *,
    on_error: Callable[[str, Exception], None] | None = None,
    skip_unmade_files: bool = False,
) -> list[tuple[str, Any]]:
    """``(alias, cache)`` pairs of the aliases that take tags (``TAG_CACHES`` by default).

    An alias whose backend cannot be built (``ImproperlyConfigured``) raises, or is
    passed to ``on_error`` and left out: a command then still does the others.
    ``skip_unmade_files``: leave out the aliases whose SQLite file was never made and
    that hold nothing in memory either (:func:`_store_not_made`); building one makes
    no file."""
    from django.conf import settings

    if using is None:
        chosen = conf.get("TAG_CACHES")
        aliases: Iterable[str] = settings.CACHES if chosen == conf.ALL else chosen
        explicit = False
    else:
        aliases = [using] if isinstance(using, str) else list(using)
        explicit = True
    out = []
    for alias in aliases:
        try:
            cache = caches[alias]
        except Exception as exc:
            if on_error is None:
                raise
            on_error(alias, exc)
            continue
        if skip_unmade_files and _store_not_made(cache):
            continue  # nothing cached there, and using it would make the file
        if isinstance(cache, TaggingMixin):
            out.append((alias, cache))
        elif explicit:
            raise ValueError(
                f"cache alias {alias!r} ({type(cache).__name__}) does not support tags"
            )
    return out


def invalidate_tags(
    *tags: str,
    using: str | Iterable[str] | None = None,
    reason: str = "invalidate_tags()",
    db: str | None = None,
) -> None:
    """Invalidate ``tags`` in every tag-aware cache alias (or those in ``using``).

    An alias whose SQLite file was never made, holding nothing in memory, is left
    alone (``skip_unmade_files``): nothing is cached there, and using it made the
    file, owned by whoever wrote to the database first (``migrate`` as root inserting
    content types: the workers then could not write it).

    A cache that fails does not stop the others: every alias is invalidated, then the
    first error is raised (the others logged). The write that called this may have
    committed already (an autocommit ``save()``, the SQL watcher): a healthy cache
    left with the old versions would serve the old rows (one alias raising
    ``ConnectionError`` would leave the next one stale)."""
    tags = tuple(normalize_tags(tags))  # a bad tag is the caller's: raised once, here
    failed: list[tuple[str, Exception]] = []

    def unbuilt(alias: str, exc: Exception) -> None:
        failed.append((alias, exc))  # (an alias whose backend cannot be built)

    for alias, cache in tagging_caches(
        using, on_error=unbuilt, skip_unmade_files=using is None
    ):
        try:
            cache.invalidate_tags(*tags, reason=reason, db=db)
        except Exception as exc:  # noqa: BLE001 - raised below, after the others
            failed.append((alias, exc))
    if not failed:
        return
    for alias, exc in failed[1:]:
        logger.error(
            "django_smartcache: %s: cache %r failed too (%s: %s)",
            reason,
            alias,
            type(exc).__name__,
            exc,
        )
    raise failed[0][1]


def invalidate_after_schema_change(*tags: str, reason: str, db: str | None) -> None:
    """:func:`invalidate_tags` for a schema change (a migration, DDL the SQL watcher
    reads), which is made by the time this runs: a cache that fails is logged at
    ERROR, naming the alias to clear, not raised into the migration (failing it then
    would leave the change half-recorded, and one busy cache would stop a deploy).
    An alias whose SQLite file was never made, holding nothing in memory, is left
    alone: nothing is cached there, and using it would make the file (as root when
    ``migrate`` runs as root, leaving the workers a file they cannot write)."""

    def unusable(alias: str, exc: Exception) -> None:
        logger.error("django_smartcache: cache %r unusable: %s", alias, exc)

    for alias, cache in tagging_caches(on_error=unusable, skip_unmade_files=True):
        try:
            cache.invalidate_tags(*tags, reason=reason, db=db)
        except Exception:
            logger.exception(
                "django_smartcache: %s: the entries of cache %r could not be "
                "invalidated; clear it (manage.py smartcache_clear --cache %s) "
                "before serving from it",
                reason,
                alias,
                alias,
            )


def _store_not_made(cache: Any) -> bool:
    """Whether ``cache`` keeps its entries in a SQLite file that does not exist yet and
    holds nothing in memory either: a MultiLevelCache's L1 is shared by the process's
    threads, and what it got while that file could not be made must be invalidated.
    Judged from the built cache (building makes no file): its path is absolute, as
    the settings' relative LOCATION may not be after a chdir."""
    from .backends.sqlite import BaseSQLiteCache

    if isinstance(cache, BaseSQLiteCache):
        return not os.path.exists(cache._path)
    levels = getattr(cache, "levels", None)
    if not isinstance(levels, tuple) or len(levels) < 2:
        return False
    lowest, store = levels[-1], getattr(levels[0], "_store", None)
    return (  # (L1 first: it usually holds something, and then no stat is made)
        store is not None
        and len(store) == 0
        and isinstance(lowest, BaseSQLiteCache)
        and not os.path.exists(lowest._path)
    )
