"""Helpers shared by the ``smartcache_*`` management commands."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.conf import settings
from django.core.cache.backends.base import BaseCache
from django.core.cache.backends.dummy import DummyCache
from django.core.cache.backends.locmem import LocMemCache


def add_cache_argument(parser: ArgumentParser, text: str) -> None:
    """``--cache ALIAS`` (repeatable), validated against ``settings.CACHES``."""
    parser.add_argument(
        "--cache",
        action="append",
        dest="caches",
        metavar="ALIAS",
        choices=tuple(settings.CACHES),
        help=text,
    )


def chosen_aliases(options: dict[str, Any]) -> list[str]:
    """The ``--cache`` aliases in the order given (duplicates dropped), else every alias."""
    return list(dict.fromkeys(options.get("caches") or settings.CACHES))


def backend_name(cache: BaseCache) -> str:
    return type(cache).__name__


def in_process(cache: BaseCache) -> bool:
    """Whether the cache lives in this process's memory only (SmartCache, LocMemCache):
    a command run by ``manage.py`` then sees its own, separate, store."""
    from ..backends.smart import SmartCache

    return isinstance(cache, SmartCache | LocMemCache | DummyCache)


def levels(cache: BaseCache) -> tuple[BaseCache, ...]:
    """A MultiLevelCache's level backends, fastest first; ``()`` for other backends."""
    from ..backends.multilevel import MultiLevelCache

    return cache.levels if isinstance(cache, MultiLevelCache) else ()


def level_label(index: int, level: BaseCache) -> str:
    return f"L{index + 1} {backend_name(level)}"
