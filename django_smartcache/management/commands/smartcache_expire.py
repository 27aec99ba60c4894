"""``manage.py smartcache_expire``: purge expired entries now, on every level holding them."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.cache import caches
from django.core.cache.backends.base import BaseCache
from django.core.cache.backends.filebased import FileBasedCache
from django.core.cache.backends.memcached import BaseMemcachedCache
from django.core.management.base import CommandError

from .. import (
    QuietCommand,
    add_cache_argument,
    backend_name,
    chosen_aliases,
    failure,
    in_process,
    level_label,
    levels,
)


def purge(cache: BaseCache) -> int | None:
    """Expired entries removed from ``cache``; ``None`` if it has no purge operation."""
    for method in ("clear_expired", "purge_expired"):  # SmartCache, SQLiteCache
        func = getattr(cache, method, None)
        if callable(func):
            return int(func())
    if isinstance(cache, FileBasedCache):
        return purge_files(cache)
    return None


def purge_files(cache: FileBasedCache) -> int:
    """Delete a FileBasedCache's expired files, which Django removes only when their key
    is read (or culls at random once MAX_ENTRIES is reached): they pile up on disk.
    Each file starts with its expiry; Django's own ``_is_expired`` reads it and deletes
    the file when it is past, as a read of that key would."""
    removed = 0
    for path in cache._list_cache_files():
        try:
            with open(path, "rb") as file:
                removed += cache._is_expired(file)
        except FileNotFoundError:  # removed meanwhile by another process
            continue
    return removed


def no_purge(cache: BaseCache) -> str:
    """Why a backend without a purge is skipped, truthfully."""
    if "redis" in type(cache).__module__ or isinstance(cache, BaseMemcachedCache):
        return "expires entries itself"
    return "has no purge of expired entries (it drops one when its key is read)"


class Command(QuietCommand):
    help = (
        "Remove expired entries now rather than on their next read or cull: "
        "SmartCache.clear_expired(), SQLiteCache.purge_expired(), FileBasedCache's "
        "expired files, and each level of a MultiLevelCache."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        add_cache_argument(parser, "Cache alias to purge (repeatable; default: all).")

    def handle(self, *args: Any, **options: Any) -> None:
        failed: list[str] = []
        for alias in chosen_aliases(options):
            cache = caches[alias]
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
        below: list[tuple[str, int | None]] = []
        errors: list[tuple[str, str]] = []
        for index, level in enumerate(parts[1:], start=1):
            label = level_label(index, level)
            try:
                below.append((label, purge(level)))
            except Exception as exc:  # noqa: BLE001 - a level that is down: reported
                errors.append((label, failure(exc)))
        done = [(label, n) for label, n in below if n is not None]
        if done:
            total = sum(n for _, n in done)
            detail = ", ".join(f"{label} {n}" for label, n in done)
            line = f"{_entries(total)} removed ({detail})"
        elif below:
            names = ", ".join(label for label, _ in below)
            line = (
                f"no expired entries to remove ({names}: expired by the level itself)"
            )
        else:
            line = "no expired entries removed"
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
