"""``manage.py smartcache_expire``: purge expired entries now, on every level holding them."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.cache import caches
from django.core.cache.backends.base import BaseCache
from django.core.management.base import BaseCommand

from .. import (
    add_cache_argument,
    backend_name,
    chosen_aliases,
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
    return None


class Command(BaseCommand):
    help = (
        "Remove expired entries now rather than on their next read or cull: "
        "SmartCache.clear_expired(), SQLiteCache.purge_expired(), and each level of "
        "a MultiLevelCache."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        add_cache_argument(parser, "Cache alias to purge (repeatable; default: all).")

    def handle(self, *args: Any, **options: Any) -> None:
        for alias in chosen_aliases(options):
            cache = caches[alias]
            parts = levels(cache)
            if parts:
                self.stdout.write(f"{alias}: {self._levels(parts)}")
                continue
            removed = purge(cache)
            if removed is None:
                self.stdout.write(
                    f"{alias}: {backend_name(cache)} has no purge of expired entries "
                    "(it drops them itself); skipped"
                )
                continue
            line = f"{alias}: {_entries(removed)} removed ({backend_name(cache)} {removed})"
            if in_process(cache):
                line += "; in-process levels: this process's store only"
            self.stdout.write(line)

    def _levels(self, parts: tuple[BaseCache, ...]) -> str:
        """A MultiLevelCache: the levels below L1 hold the entries, L1 only copies of
        them (which also expire at ``L1_MAX_TTL``): counted apart, never summed."""
        below = [(level_label(i, lv), purge(lv)) for i, lv in enumerate(parts) if i]
        done = [(label, n) for label, n in below if n is not None]
        if done:
            total = sum(n for _, n in done)
            detail = ", ".join(f"{label} {n}" for label, n in done)
            line = f"{_entries(total)} removed ({detail})"
        else:
            names = ", ".join(label for label, _ in below)
            line = (
                f"no expired entries to remove ({names}: expired by the level itself)"
            )
        copies = purge(parts[0])
        if copies is not None:
            noun = "copy" if copies == 1 else "copies"
            line += f"; {level_label(0, parts[0])}: {copies} expired {noun} dropped"
        if in_process(parts[0]):
            line += "; in-process levels: this process's store only"
        return line


def _entries(n: int) -> str:
    return f"{n} expired {'entry' if n == 1 else 'entries'}"
