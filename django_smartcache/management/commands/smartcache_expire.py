"""``manage.py smartcache_expire``: purge expired entries now, on every level holding them."""

from __future__ import annotations

import logging
from argparse import ArgumentParser
from typing import Any

from django.core.cache.backends.base import BaseCache
from django.core.cache.backends.filebased import FileBasedCache
from django.core.cache.backends.memcached import BaseMemcachedCache
from django.core.cache.backends.redis import RedisCache
from django.core.management.base import CommandError

from ...backends._level_patterns import is_django_redis
from .. import (
    QuietCommand,
    add_cache_argument,
    backend_name,
    chosen_aliases,
    configured_backend,
    failure,
    in_process,
    level_label,
    levels,
    open_cache,
)

logger = logging.getLogger("django_smartcache.commands")


def purge(cache: BaseCache) -> int | None:
    """Expired entries removed from ``cache``; ``None`` if it has no purge operation."""
    func = getattr(cache, "clear_expired", None)  # SmartCache, SQLiteCache
    if callable(func):
        return int(func())
    if isinstance(cache, FileBasedCache):
        return purge_files(cache)
    return None


def purge_files(cache: FileBasedCache) -> int:
    """Delete a FileBasedCache's expired files, which Django removes only when their key
    is read (or culls at random once MAX_ENTRIES is reached): they pile up on disk.
    Each file starts with its expiry; Django's own ``_is_expired`` reads it and deletes
    the file when it is past, as a read of that key would (an empty file too: Django
    reads it as expired).

    A file whose expiry cannot be read (damaged: garbage, truncated, unreadable) is
    left as Django leaves it (its read of that key raises; a ``set`` of the key, a
    cull or ``clear()`` replaces or removes it) and logged as a warning naming it; the
    other files are still purged: one such file stopped every purge after it."""
    removed = 0
    for path in cache._list_cache_files():
        try:
            with open(path, "rb") as file:
                removed += cache._is_expired(file)
        except FileNotFoundError:  # removed meanwhile by another process
            continue
        except Exception as exc:  # noqa: BLE001 - any unpickling error: logged, skipped
            logger.warning(
                "smartcache_expire: skipped %s: its expiry cannot be read (%s: %s); "
                "left in place, as Django leaves it (a set() of its key replaces it)",
                path,
                type(exc).__name__,
                exc,
            )
    return removed


def expires_itself(cache: BaseCache) -> bool:
    """Whether the backend's server drops expired keys by itself (Django's RedisCache,
    django-redis, memcached), so there is nothing to purge. Decided by class, not by a
    name: any other backend without a purge keeps its expired entries until read."""
    if isinstance(cache, RedisCache | BaseMemcachedCache):
        return True
    return is_django_redis(cache)


#: Why a backend with neither a purge nor expiry of its own is skipped.
NO_PURGE = "has no purge of expired entries (it drops one when its key is read)"


def no_purge(cache: BaseCache) -> str:
    """Why a backend without a purge is skipped, truthfully."""
    return "expires entries itself" if expires_itself(cache) else NO_PURGE


class Command(QuietCommand):
    help = (
        "Remove expired entries now rather than on their next read or cull: "
        "clear_expired() of SmartCache and SQLiteCache, FileBasedCache's "
        "expired files, and each level of a MultiLevelCache."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        add_cache_argument(parser, "Cache alias to purge (repeatable; default: all).")

    def handle(self, *args: Any, **options: Any) -> None:
        failed: list[str] = []
        for alias in chosen_aliases(options):
            cache = open_cache(alias, failed)
            if cache is None:
                self.stdout.write(f"{alias}: {configured_backend(alias)} failed")
                continue
            parts = levels(cache)
            if parts:
                line, errors = self._levels(parts)
                self.stdout.write(f"{alias}: {line}")
                failed += [f"{alias!r} {label} ({error})" for label, error in errors]
                continue
            try:
                removed = purge(cache)
            except Exception as exc:  # noqa: BLE001 - reported; the other aliases still run
                self.stdout.write(f"{alias}: {backend_name(cache)} failed")
                failed.append(f"{alias!r} ({failure(exc)})")
                continue
            if removed is None:
                self.stdout.write(
                    f"{alias}: {backend_name(cache)} {no_purge(cache)}; skipped"
                )
                continue
            line = f"{alias}: {_entries(removed)} removed ({backend_name(cache)} {removed})"
            if in_process(cache):
                line += "; in-process levels: this process's store only"
            self.stdout.write(line)
        if failed:
            raise CommandError(
                f"The purge of expired entries failed on {'; '.join(failed)}."
            )

    def _levels(
        self, parts: tuple[BaseCache, ...]
    ) -> tuple[str, list[tuple[str, str]]]:
        """A MultiLevelCache's line, and each level whose purge failed (its label and error).

        The levels below L1 hold the entries, L1 only copies of them (which also
        expire at ``L1_MAX_TTL``): counted apart, never summed."""
        done: list[tuple[str, int]] = []
        itself: list[str] = []  # Redis, memcached: they expire their keys
        skipped: list[str] = []  # DatabaseCache, LocMemCache: no purge at all
        errors: list[tuple[str, str]] = []
        for index, level in enumerate(parts[1:], start=1):
            label = level_label(index, level)
            try:
                removed = purge(level)
            except Exception as exc:  # noqa: BLE001 - a level that is down: reported
                errors.append((label, failure(exc)))
                continue
            if removed is not None:
                done.append((label, removed))
            else:
                (itself if expires_itself(level) else skipped).append(label)
        by_itself = f"{', '.join(itself)}: expired by the level itself"
        if done:
            total = sum(n for _, n in done)
            detail = ", ".join(f"{label} {n}" for label, n in done)
            line = f"{_entries(total)} removed ({detail})"
            if itself:
                line += f"; {by_itself}"
        elif itself:
            line = f"no expired entries to remove ({by_itself})"
        else:
            line = "no expired entries removed"
        if skipped:
            line += f"; {', '.join(skipped)} {NO_PURGE}; skipped"
        if errors:
            line += f"; {', '.join(label for label, _ in errors)} failed"
        copies = purge(parts[0])
        if copies is not None:
            noun = "copy" if copies == 1 else "copies"
            line += f"; {level_label(0, parts[0])}: {copies} expired {noun} dropped"
        if in_process(parts[0]):
            line += "; in-process levels: this process's store only"
        return line, errors


def _entries(n: int) -> str:
    return f"{n} expired {'entry' if n == 1 else 'entries'}"
