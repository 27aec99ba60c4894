"""Helpers shared by the ``smartcache_*`` management commands."""

from __future__ import annotations

import io
import os
import select
import sys
from argparse import ArgumentParser
from typing import Any

from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.base import BaseCache
from django.core.cache.backends.dummy import DummyCache
from django.core.cache.backends.locmem import LocMemCache
from django.core.management.base import BaseCommand, CommandError


class PipedCommand(BaseCommand):
    """A command whose output may be piped into a reader that stops early
    (``smartcache_stats | head -1``): it then exits with status 1 and no
    ``BrokenPipeError`` traceback, as Python's documentation of SIGPIPE recommends."""

    def execute(self, *args: Any, **options: Any) -> str | None:
        try:
            return super().execute(*args, **options)
        except BrokenPipeError:
            if options.get("stdout") is not None or not _stdout_is_broken():
                raise  # call_command's stream, or a pipe of its own (a socket): not ours
            # Python flushes stdout again at exit, which would raise once more.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            sys.exit(1)


def _stdout_is_broken() -> bool:
    """Whether the process's stdout has lost its reader. A failed write leaves nothing
    to flush, so ask the descriptor: a pipe whose reader is gone polls as an error."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return False  # not a file (a test's capture): not a pipe that broke
    if not hasattr(select, "poll"):
        return True  # no way to tell (Windows): take the quiet exit
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(
        events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0)
    )


class QuietCommand(PipedCommand):
    """A command that prints nothing at ``-v 0`` but its errors (on stderr), like
    Django's own ``migrate`` or ``flush``; ``reports()`` names the runs whose output
    is what was asked for (a listing), printed at any verbosity as ``dumpdata`` does."""

    def reports(self, options: dict[str, Any]) -> bool:
        return False

    def execute(self, *args: Any, **options: Any) -> str | None:
        if options.get("verbosity") == 0 and not self.reports(options):
            options["stdout"] = io.StringIO()
        return super().execute(*args, **options)


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


def listed(value: Any) -> list[str]:
    """An ``append`` option's values as a list, duplicates dropped.

    ``call_command("smartcache_invalidate", pattern="user:*")`` passes the string
    itself, which would otherwise be read one character at a time (and ``"*"`` is one).
    """
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return list(dict.fromkeys(value))


def check_aliases(options: dict[str, Any]) -> None:
    """``CommandError`` naming the known aliases if a ``--cache`` alias is unknown.

    Also reads ``options["caches"]`` as a list (``listed()``), None when empty.
    """
    options["caches"] = listed(options.get("caches")) or None
    unknown = [a for a in options["caches"] or () if a not in settings.CACHES]
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


def configured_backend(alias: str) -> str:
    """The class name ``settings.CACHES[alias]["BACKEND"]`` gives, for an alias whose
    backend could not be built (so there is no instance to ask)."""
    return str(settings.CACHES[alias].get("BACKEND", "?")).rpartition(".")[2]


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


def quoted(text: str) -> str:
    r"""A glob or regex as the user typed it, in quotes (``'\d+'``): ``!r`` doubles
    each backslash (``'\\d+'``), which reads as another pattern."""
    return f"'{text}'"


def delete_pattern(cache: BaseCache, pattern: str, *, regex: bool = False) -> int:
    """``cache.delete_pattern(pattern, regex=regex)``, our glob or regex; a django-redis
    alias's own takes Redis's glob and no ``regex`` (every run of the command failed on
    such an alias with a TypeError): ours is applied there through its redis-py
    client, as on a MultiLevelCache level (``_level_patterns``)."""
    from ..backends._level_patterns import delete_matching, is_django_redis

    if not is_django_redis(cache):
        return int(cache.delete_pattern(pattern, regex=regex))  # type: ignore[attr-defined]

    removed = delete_matching(
        cache, _django_redis_pattern(cache, pattern, regex), "", ""
    )
    return removed if isinstance(removed, int) else len(removed)


def check_pattern(cache: BaseCache, pattern: str, *, regex: bool = False) -> None:
    """Raise what :func:`delete_pattern` would raise for ``pattern`` on ``cache``
    before it deleted anything (``ValueError``, ``NotImplementedError``)."""
    from ..backends._level_patterns import check_matching, is_django_redis

    check = getattr(cache, "check_pattern", None)
    if callable(check):
        check(pattern, regex=regex)
    elif is_django_redis(cache):
        check_matching(cache, _django_redis_pattern(cache, pattern, regex), "")
    elif callable(key_pattern := getattr(cache, "key_pattern", None)):
        key_pattern(pattern, regex=regex)  # an unencodable or invalid one raises


def _django_redis_pattern(cache: BaseCache, pattern: str, regex: bool) -> Any:
    """``pattern`` over a django-redis alias's made keys, its head found as
    ``key_pattern`` finds ours (:func:`~django_smartcache.backends.base.made_key_head`)."""
    from ..backends.base import made_key_head
    from ..core.patterns import KeyPattern

    head = made_key_head(cache.make_key, cache.version)
    return KeyPattern(pattern, regex=regex, head=head)


def pattern_problem(cache: BaseCache) -> str | None:
    """Why ``delete_pattern()`` cannot work on ``cache`` whatever the pattern; None if it can."""
    if not callable(getattr(cache, "delete_pattern", None)):
        return "has no delete_pattern()"
    key_pattern = getattr(cache, "key_pattern", None)
    if callable(key_pattern):
        try:
            key_pattern("probe")
        except ValueError as exc:  # a KEY_FUNCTION that cannot be inverted
            return f"cannot match patterns: {exc}"
    from ..backends._level_patterns import lists_keys

    for index, level in enumerate(levels(cache)):
        if not lists_keys(level):
            return (
                f"has a level ({level_label(index, level)}) that cannot list its keys"
            )
    return None


def unreached(cache: BaseCache) -> list[tuple[str, str]]:
    """(label, last error) of each shared level of a MultiLevelCache that missed a
    change made by this process.

    They were down when it was made and still hold what it replaced. The process
    repairs them once they are back, but only while it runs: a command exits first.
    """
    if not levels(cache):
        return []
    return [
        (level["level"], level["last_error"] or "down")
        for level in cache.stats()["levels"][1:]  # type: ignore[attr-defined]
        if level["pending_repairs"]
    ]


def unreached_levels(alias: str, cache: BaseCache) -> list[str]:
    """``unreached()``, each level named with ``alias`` (for :func:`fail_if_unreached`)."""
    return [f"{alias!r} {label} ({error})" for label, error in unreached(cache)]


def but_not(cache: BaseCache, *, parenthesized: bool = False) -> str:
    """`` but not its L2 RedisCache`` for the success line of a change that did not
    reach those levels (``unreached()``; the command's error then names them), else
    ``""``. ``parenthesized``: `` (but not its L2 RedisCache)``, for a line that names
    other aliases after this one."""
    missed = [label for label, _ in unreached(cache)]
    if not missed:
        return ""
    text = f"but not its {', '.join(missed)}"
    return f" ({text})" if parenthesized else f" {text}"


def failure(exc: BaseException) -> str:
    """How a failed alias or level is named in a command's error: ``Class: message``."""
    return f"{type(exc).__name__}: {exc}"


def note_failure(failed: list[str], alias: str, exc: BaseException) -> None:
    """Add ``'alias' (failure())`` to ``failed``, for :func:`fail_if_unreached`."""
    failed.append(f"{alias!r} ({failure(exc)})")


def open_cache(alias: str, failed: list[str]) -> BaseCache | None:
    """``caches[alias]``, or None once ``failed`` names the alias.

    A backend that cannot be built (a bad ``OPTIONS`` value: ``ImproperlyConfigured``)
    then fails its alias only, as a clear or a warmer that raises does: the command
    still does the other aliases and names this one in its error at the end."""
    try:
        return caches[alias]
    except Exception as exc:  # noqa: BLE001 - named in the error; the others still run
        note_failure(failed, alias, exc)
        return None


def fail_if_unreached(
    missed: list[str], what: str, failed: list[str] | None = None
) -> None:
    """``CommandError`` (status 1) naming the aliases that ``failed`` (each
    ``'alias' (failure())``) and the levels ``unreached_levels()`` found."""
    problems = []
    if failed:  # an alias that cannot be built fails every step that opens it
        problems.append(f"{what} failed on {'; '.join(dict.fromkeys(failed))}.")
    problem = unreached_problem(missed, what)
    if problem:
        problems.append(problem)
    if problems:
        raise CommandError(" ".join(problems))


def unreached_problem(missed: list[str], what: str) -> str | None:
    """The sentence of :func:`fail_if_unreached` naming the levels ``missed`` (each
    once, as a command that changes an alias twice finds it twice); None if none."""
    if not missed:
        return None
    return (
        f"{what} did not reach {'; '.join(dict.fromkeys(missed))}: that level was "
        "down and still serves what was there before. Run the command again once it "
        "is back."
    )
