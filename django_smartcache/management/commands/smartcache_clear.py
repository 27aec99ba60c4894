"""``manage.py smartcache_clear``: clear cache aliases, after confirming like ``flush``."""

from __future__ import annotations

from argparse import ArgumentParser
from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.core.cache import DEFAULT_CACHE_ALIAS, caches
from django.core.management.base import CommandError

from .. import (
    QuietCommand,
    add_cache_argument,
    backend_name,
    but_not,
    check_aliases,
    fail_if_unreached,
    in_process,
    note_failure,
    unreached_levels,
)


class Command(QuietCommand):
    help = (
        "Remove every entry from a cache alias (the default one unless --cache or "
        "--all); every level of a MultiLevelCache, other processes' L1 included."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        add_cache_argument(parser, "Cache alias to clear (repeatable).")
        parser.add_argument(
            "--all", action="store_true", help="Clear every alias in settings.CACHES."
        )
        parser.add_argument(
            "--noinput",
            "--no-input",
            action="store_false",
            dest="interactive",
            help="Do not prompt for confirmation.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        check_aliases(options)
        if options["all"] and options["caches"]:
            raise CommandError("Pass --all or --cache, not both.")
        if options["all"]:
            aliases = list(settings.CACHES)
        else:
            aliases = list(dict.fromkeys(options["caches"] or [DEFAULT_CACHE_ALIAS]))
            if aliases[0] not in settings.CACHES:  # only the default can be missing
                raise CommandError(f"No cache alias {aliases[0]!r} in settings.CACHES.")
        files = _files_by_alias()
        if options["interactive"]:
            names = ", ".join(repr(a) for a in aliases)
            shared = "".join(
                f"{path} is also the file of {', '.join(others)}: their entries "
                "will be gone too.\n"
                for alias in aliases
                for path, others in _sharing(files, alias, aliases)
            )
            try:
                answer = input(
                    f"This will remove every entry from the cache alias(es) {names}.\n"
                    f"{shared}"
                    "Are you sure you want to do this?\n\n"
                    "    Type 'yes' to continue, or 'no' to cancel: "
                )
            except EOFError:  # stdin closed (cron, CI, `< /dev/null`): no answer
                raise CommandError(
                    "No answer to the confirmation (standard input is closed): "
                    "nothing cleared. Pass --noinput to clear without asking."
                ) from None
            if answer != "yes":
                self.stdout.write("Clear cancelled.")
                return
        missed: list[str] = []
        failed: list[str] = []
        for alias in aliases:
            try:
                cache = caches[alias]
                cache.clear()
            except Exception as exc:  # noqa: BLE001 - named in the error; the other aliases are still cleared
                note_failure(failed, alias, exc)
                continue
            note = (
                " (in-process: this process's store only)" if in_process(cache) else ""
            )
            self.stdout.write(
                f"Cleared {alias!r} ({backend_name(cache)}){but_not(cache)}{note}."
            )
            for path, others in _sharing(files, alias, aliases):
                self.stdout.write(
                    self.style.WARNING(
                        f"  {path} is also the file of {', '.join(others)}: their "
                        "entries are gone too (clear() empties the whole file, as "
                        "Django's DatabaseCache empties its table)."
                    )
                )
            for above in _multilevels_over(alias, aliases):
                # Their L1s (every process's) hold copies of what this level held,
                # and the level's own clear() told none of them (a FLUSHDB).
                try:
                    told = caches[above].drop_copies()
                except Exception as exc:  # noqa: BLE001 - named, the rest goes on
                    note_failure(failed, above, exc)
                    continue
                if told:
                    self.stdout.write(
                        f"  {above!r} has {alias!r} as a level: its L1 copies were "
                        "dropped in every process."
                    )
                else:
                    self.stdout.write(
                        self.style.WARNING(
                            f"  {above!r} has {alias!r} as a level, and no channel "
                            "reached its other processes (COHERENCE 'none', or the "
                            "Redis channel down): their L1 copies live out "
                            "L1_MAX_TTL."
                        )
                    )
            missed += unreached_levels(alias, cache)
        fail_if_unreached(missed, "The clear", failed)


def _multilevels_over(alias: str, cleared: Iterable[str]) -> list[str]:
    """The MultiLevelCache aliases (not in ``cleared``) whose ``LEVELS`` name
    ``alias``."""
    from ...backends._level_config import multilevel_levels

    skip = set(cleared)
    return [
        above
        for above, _config, lower in multilevel_levels()
        if above not in skip and alias in lower
    ]


def _sharing(
    files: dict[str, set[str]], alias: str, cleared: Iterable[str]
) -> list[tuple[str, list[str]]]:
    """(file, the other aliases on it) for each SQLite file ``alias`` clears
    (``files``: :func:`_files_by_alias`); aliases in ``cleared`` (this run clears them
    anyway) are not named."""
    skip = {alias, *cleared}
    return [
        (path, others)
        for path in sorted(files.get(alias, ()))
        if (
            others := sorted(
                repr(other)
                for other, paths in files.items()
                if other not in skip and path in paths
            )
        )
    ]


def _files_by_alias() -> dict[str, set[str]]:
    """Alias -> the SQLite files it stores in: its own, its inline levels', and those
    of the aliases a MultiLevelCache's ``LEVELS`` names."""
    from ...checks import _sqlite_files

    files: dict[str, set[str]] = {}
    for who, path, _ in _sqlite_files():
        for alias in settings.CACHES:
            if who == repr(alias) or who.startswith(f"{alias!r} (LEVELS["):
                files.setdefault(alias, set()).add(path)
    for alias, config in settings.CACHES.items():
        levels = (
            config.get("OPTIONS", {}).get("LEVELS")
            if isinstance(config, dict)
            else None
        )
        for level in levels if isinstance(levels, list | tuple) else ():
            if isinstance(level, str) and level in files:
                files.setdefault(alias, set()).update(files[level])
    return files
