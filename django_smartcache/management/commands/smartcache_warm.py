"""``manage.py smartcache_warm``: run the registered cache warmers."""

from __future__ import annotations

import traceback
from argparse import ArgumentParser
from typing import Any

from django.core.cache import caches
from django.core.management.base import CommandError

from ... import warmers
from ...core.tags import InvalidTag, normalize_tags
from .. import (
    QuietCommand,
    add_cache_argument,
    but_not,
    check_aliases,
    fail_if_unreached,
    in_process,
    listed,
    unreached_levels,
    unreached_problem,
)


def _keys_set(n: int) -> str:
    return f"{n} key set" if n == 1 else f"{n} keys set"


def _excluded(
    entry: warmers.Warmer, tags: list[str], chosen: list[str] | None
) -> str | None:
    """Why ``--tag``/``--cache`` leave ``entry`` nothing to run; None if they do not."""
    if tags and not set(tags).intersection(entry.tags):
        have = ", ".join(entry.tags) or "none"
        return (
            f"warmer {entry.name!r} has none of the tags {', '.join(tags)} "
            f"(its tags: {have})"
        )
    if not entry.aliases(chosen):
        registered = ", ".join(repr(a) for a in entry.caches or ())
        given = ", ".join(repr(a) for a in chosen or ())
        return (
            f"warmer {entry.name!r} is registered for {registered} only, "
            f"not for --cache {given}"
        )
    return None


def _tag(value: str) -> str:
    """A ``--tag`` value, normalized; ``CommandError`` for an invalid or empty one (it
    matched no warmer: "No warmers to run.", exit status 0)."""
    try:
        return normalize_tags([value])[0]
    except (InvalidTag, TypeError, ValueError) as exc:
        raise CommandError(f"Invalid tag {value!r} for --tag: {exc}") from exc


class Command(QuietCommand):
    help = (
        "Fill caches by running the registered warmers (every one, or those named). "
        "Warmers are registered with @warmer in each app's cache_warmers module."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "names",
            nargs="*",
            default=[],  # not "required": call_command(names=...) works
            metavar="name",
            help="Warmers to run (default: all).",
        )
        add_cache_argument(
            parser,
            "Only warm this cache alias (repeatable). Warmers registered for other "
            "aliases are skipped; those registered without caches= fill it.",
        )
        parser.add_argument(
            "--tag",
            action="append",
            dest="tags",
            default=[],
            metavar="TAG",
            help="Only the warmers whose entries carry this tag (repeatable).",
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Say which warmers would run on which aliases, without running them.",
        )
        parser.add_argument(
            "--list",
            action="store_true",
            dest="list_only",
            help="List the registered warmers (those names, --tag and --cache select) and exit.",
        )

    def reports(self, options: dict[str, Any]) -> bool:
        return bool(options.get("list_only"))

    def handle(self, *args: Any, **options: Any) -> None:
        check_aliases(options)
        warmers.autodiscover()
        tags = [_tag(value) for value in listed(options["tags"])]
        names = listed(options["names"])
        try:
            candidates = warmers.registry.select(names)
        except LookupError as exc:
            raise CommandError(exc.args[0]) from exc
        why = {w.name: _excluded(w, tags, options["caches"]) for w in candidates}
        if names and any(why.values()):
            # A warmer named but filtered out would be skipped silently ("No warmers
            # to run.", status 0): a deploy script would then warm nothing.
            reasons = "; ".join(r for r in why.values() if r)
            raise CommandError(f"A named warmer would not run: {reasons}.")
        selected = [w for w in candidates if why[w.name] is None]
        if options["list_only"]:
            self._list(selected)
            return
        plan = [(w, alias) for w in selected for alias in w.aliases(options["caches"])]
        if not plan:
            self.stdout.write("No warmers to run.")
            return
        if options["dry_run"]:
            for entry, alias in plan:
                self.stdout.write(f"Would warm {entry.name} on {alias!r}")
            return
        failed = []
        #: Aliases whose backend could not be built (their runs failed saying why):
        #: not asked again which levels they reached.
        unbuilt: set[str] = set()
        for entry, alias in plan:
            result = warmers.run(entry, alias)
            ms = result.seconds * 1000
            if result.error is None:
                # A store of this process only: gone when the command exits.
                note = (
                    " (in-process: this process only, gone when the command exits)"
                    if in_process(caches[alias])
                    else ""
                )
                # A level it did not reach is named here and in the error at the end.
                partly = but_not(caches[alias])
                style = self.style.WARNING if partly else self.style.SUCCESS
                self.stdout.write(
                    style(f"Warmed {entry.name} on {alias!r}{partly}")
                    + f": {_keys_set(result.keys_set)} in {ms:.1f} ms{note}"
                )
                if result.invalidated:
                    shown = ", ".join(result.invalidated[:5]) + (
                        " ..." if len(result.invalidated) > 5 else ""
                    )
                    self.stdout.write(
                        self.style.WARNING(
                            f"  but its tag(s) {shown} were invalidated while it ran "
                            "(a write of the data): what it wrote reads as a miss. "
                            "Run it again to warm those keys."
                        )
                    )
                continue
            failed.append(f"{entry.name} on {alias!r}")
            error = result.error
            try:
                caches[alias]
            except Exception:  # noqa: BLE001 - the run's error says why
                unbuilt.add(alias)
            self.stderr.write(
                f"Warmer {entry.name} on {alias!r} failed after {ms:.1f} ms "
                f"({_keys_set(result.keys_set)}): {type(error).__name__}: {error}"
            )
            if options.get("traceback"):
                self.stderr.write("".join(traceback.format_exception(error)), ending="")
        missed = [
            line
            for alias in dict.fromkeys(alias for _, alias in plan)
            if alias not in unbuilt
            for line in unreached_levels(alias, caches[alias])
        ]
        if failed:
            # The levels the other runs did not reach are named too: a run failed
            # must not hide them (each needs the command run again).
            message = (
                f"{len(failed)} of {len(plan)} warmer runs failed: {', '.join(failed)}"
            )
            problem = unreached_problem(missed, "Warming")
            raise CommandError(f"{message}. {problem}" if problem else message)
        fail_if_unreached(missed, "Warming")

    def _list(self, selected: list[warmers.Warmer]) -> None:
        """The warmers that names, ``--tag`` and ``--cache`` select (all without them)."""
        if not len(warmers.registry):
            self.stdout.write("No warmers registered.")
            return
        if not selected:
            self.stdout.write("No registered warmer matches.")
            return
        for entry in selected:
            caches = ", ".join(entry.caches) if entry.caches else "default or --cache"
            line = f"{entry.name}  caches: {caches}"
            if entry.tags:
                line += f"  tags: {', '.join(entry.tags)}"
            if entry.doc:
                line += f"  - {entry.doc}"
            self.stdout.write(line)
