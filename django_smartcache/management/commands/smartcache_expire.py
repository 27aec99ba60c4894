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
                counts = [(level_label(i, lv), purge(lv)) for i, lv in enumerate(parts)]
            else:
                counts = [(backend_name(cache), purge(cache))]
            done = [(label, n) for label, n in counts if n is not None]
            if not done:
                self.stdout.write(
                    f"{alias}: {backend_name(cache)} has no purge of expired entries "
                    "(it drops them itself); skipped"
                )
                continue
            total = sum(n for _, n in done)
            detail = ", ".join(f"{label} {n}" for label, n in counts if n is not None)
            noun = "entry" if total == 1 else "entries"
            line = f"{alias}: {total} expired {noun} removed ({detail})"
            if in_process(cache) or parts and in_process(parts[0]):
                line += "; in-process levels: this process's store only"
            self.stdout.write(line)
