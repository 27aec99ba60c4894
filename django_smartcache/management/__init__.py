"""Helpers shared by the ``smartcache_*`` management commands."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.conf import settings
from django.core.cache.backends.base import BaseCache
from django.core.cache.backends.dummy import DummyCache
from django.core.cache.backends.locmem import LocMemCache
from django.core.management.base import CommandError


def add_cache_argument(parser: ArgumentParser, text: str) -> None:
    """``--cache ALIAS`` (repeatable); ``check_aliases()`` checks it against
    ``settings.CACHES`` (not argparse ``choices``: a usage error would exit with
    status 2, where every other bad input is a ``CommandError``, status 1)."""
    parser.add_argument(
        "--cache",
        action="append",
        dest="caches",
        metavar="ALIAS",
        help=f"{text} Known aliases: {', '.join(settings.CACHES)}.",
    )


def check_aliases(options: dict[str, Any]) -> None:
    """``CommandError`` naming the known aliases if a ``--cache`` alias is unknown."""
    unknown = [a for a in options.get("caches") or () if a not in settings.CACHES]
    if unknown:
        names = ", ".join(repr(a) for a in dict.fromkeys(unknown))
        known = ", ".join(repr(a) for a in settings.CACHES) or "none"
        raise CommandError(
            f"Unknown cache alias {names} for --cache; settings.CACHES has: {known}."
        )


def chosen_aliases(options: dict[str, Any]) -> list[str]:
    """The ``--cache`` aliases in the order given (duplicates dropped), else every alias."""
    check_aliases(options)
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
