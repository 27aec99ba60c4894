"""``manage.py smartcache_invalidate``: invalidate by tag, app, model, row or key pattern.

Labels take cacheops' ``invalidate`` shape: ``app``, ``app.Model``, ``app.Model.pk``,
plus ``tag:NAME``; ``--pattern``/``--regex`` delete keys through ``delete_pattern``.
"""

from __future__ import annotations

import re
from argparse import ArgumentParser
from functools import partial
from typing import Any

from django.apps import apps
from django.core.cache.backends.base import BaseCache
from django.core.exceptions import ValidationError
from django.core.management.base import CommandError
from django.db.models import Model

from ..._tag_caches import tagging_caches
from ...core.patterns import KeyPattern
from ...core.tags import InvalidTag, normalize_tags
from ...registry import family, model_tag, row_tags, rows_tag
from .. import (
    QuietCommand,
    add_cache_argument,
    backend_name,
    but_not,
    check_aliases,
    check_pattern,
    chosen_aliases,
    delete_pattern,
    fail_if_unreached,
    in_process,
    listed,
    note_failure,
    open_cache,
    pattern_problem,
    quoted,
    unreached_levels,
)

REASON = "manage.py smartcache_invalidate"


def _and(names: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return " and ".join(filter(None, [", ".join(names[:-1]), *names[-1:]]))


def _model(app_label: str, name: str) -> type[Model]:
    try:
        return apps.get_model(app_label, name)
    except LookupError as exc:
        raise CommandError(f"Unknown model {app_label}.{name}: {exc}") from exc


def _model_tags(model: type[Model]) -> list[str]:
    """What ``invalidation.invalidate_model`` bumps: the model tags and every row tag."""
    return [model_tag(m) for m in family(model)] + [rows_tag(m) for m in family(model)]


def tags_for(label: str) -> list[str]:
    """The tags a label stands for; ``CommandError`` for a bad label."""
    if label.startswith("tag:"):
        try:
            tags = list(normalize_tags([label[4:]]))
        except (InvalidTag, TypeError, ValueError) as exc:
            raise CommandError(f"Invalid tag in {label!r}: {exc}") from exc
        if not tags or not tags[0]:
            raise CommandError(f"Empty tag in {label!r}.")
        return tags
    parts = label.split(".", 2)
    if not all(parts):
        raise CommandError(
            f"Invalid label {label!r}: expected tag:NAME, app, app.Model or app.Model.pk."
        )
    if len(parts) == 1:
        try:
            config = apps.get_app_config(parts[0])
        except LookupError as exc:
            raise CommandError(f"Unknown app {parts[0]!r}: {exc}") from exc
        found: list[str] = []
        for model in config.get_models():
            found += _model_tags(model)
        if not found:
            raise CommandError(f"App {parts[0]!r} has no models.")
        return found
    model = _model(parts[0], parts[1])
    try:
        if len(parts) == 2:
            return _model_tags(model)
        return [model_tag(m) for m in family(model)] + row_tags(model, [parts[2]])
    except ValidationError as exc:
        raise CommandError(
            f"Invalid pk {parts[2]!r} for {model._meta.label}: {'; '.join(exc.messages)}"
        ) from exc
    except ValueError as exc:  # a swapped-out model, a composite pk given as one
        raise CommandError(f"Invalid label {label!r}: {exc}") from exc


class Command(QuietCommand):
    help = (
        "Invalidate cached entries by tag (tag:NAME), app (app), model (app.Model) or "
        "row (app.Model.pk), and/or delete the keys matching --pattern/--regex."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "labels",
            nargs="*",
            default=[],  # not "required": call_command(labels=...) works
            metavar="label",
            help="tag:NAME, app_label, app_label.Model or app_label.Model.pk",
        )
        parser.add_argument(
            "--pattern",
            action="append",
            default=[],
            metavar="GLOB",
            help="Delete the keys matching this glob (repeatable), e.g. 'user:42:*'.",
        )
        parser.add_argument(
            "--regex",
            action="append",
            default=[],
            metavar="RE",
            help="Delete the keys a regular expression finds (re.search; repeatable).",
        )
        add_cache_argument(
            parser,
            "Cache alias to act on (repeatable; default: SMARTCACHE['TAG_CACHES'] "
            "for labels, every alias with delete_pattern() for patterns).",
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Show the tags and patterns and where they apply; change nothing.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        check_aliases(options)
        labels = listed(options["labels"])
        patterns, regexes = listed(options["pattern"]), listed(options["regex"])
        if not (labels or patterns or regexes):
            raise CommandError("Give at least one label, --pattern or --regex.")
        tags = list(dict.fromkeys(t for label in labels for t in tags_for(label)))
        # Every input is checked before anything changes.
        for pattern, regex in [(p, False) for p in patterns] + [
            (r, True) for r in regexes
        ]:
            try:
                KeyPattern(pattern, regex=regex)
            except re.error as exc:
                raise CommandError(f"Invalid regex {quoted(pattern)}: {exc}") from exc
            except ValueError as exc:  # it names the glob already
                raise CommandError(f"{str(exc)[:1].upper()}{str(exc)[1:]}") from exc
        # The aliases too: a --pattern alias that cannot delete patterns fails here,
        # before any tag is invalidated.
        #: Aliases that raised (down, unusable, misconfigured): named in the error, the
        #: others still run.
        failed: list[str] = []
        deletes_on, skipped = (
            self._pattern_targets(options, failed) if patterns or regexes else ([], [])
        )
        self._check_patterns(deletes_on, patterns, regexes)
        dry = options["dry_run"]
        #: The aliases changed: the levels of theirs a change did not reach are named
        #: in the error at the end, each once (tags and patterns may both miss one).
        changed: dict[str, BaseCache] = {}
        if tags:
            try:
                targets = tagging_caches(
                    options["caches"], on_error=partial(note_failure, failed)
                )
            except ValueError as exc:
                raise CommandError(str(exc)) from exc
            if not targets and not failed:
                raise CommandError(
                    "No cache alias supports tags (SMARTCACHE['TAG_CACHES'])."
                )
            done = targets
            if not dry:
                done = []
                for alias, cache in targets:
                    try:
                        cache.invalidate_tags(*tags, reason=REASON)
                    except Exception as exc:  # noqa: BLE001 - named in the error
                        note_failure(failed, alias, exc)
                        continue
                    done.append((alias, cache))
                    changed[alias] = cache
            # A level an alias's change did not reach is named on this line too, in
            # parentheses after its alias: never read as the alias that follows.
            names = _and(
                [
                    alias
                    + ("" if dry else but_not(cache, parenthesized=True))
                    + (" (in-process: this process only)" if in_process(cache) else "")
                    for alias, cache in done
                ]
            )
            verb = "Would invalidate" if dry else "Invalidated"
            if done:
                self.stdout.write(f"{verb} {len(tags)} tag(s) on {names}.")
            if options["verbosity"] > 1 or dry:
                # Exactly the tags bumped, at any verbosity: not the all-rows tag a
                # row tag depends on (expand_tags), which a row label leaves alone.
                for tag in tags:
                    self.stdout.write(f"  {tag}")
        for line in skipped:
            self.stdout.write(line)
        if deletes_on:
            changed.update(self._patterns(deletes_on, patterns, regexes, dry, failed))
        missed = [
            line
            for alias, cache in changed.items()
            for line in unreached_levels(alias, cache)
        ]
        fail_if_unreached(missed, "The invalidation", failed)

    def _pattern_targets(
        self, options: dict[str, Any], failed: list[str]
    ) -> tuple[list[tuple[str, BaseCache]], list[str]]:
        """The aliases the pattern deletes run on, and a line for each one skipped;
        ``CommandError`` for a ``--cache`` alias that cannot, or when none can. An
        alias that cannot be built is added to ``failed`` (see ``handle``)."""
        explicit = bool(options["caches"])
        targets: list[tuple[str, BaseCache]] = []
        skipped: list[str] = []
        for alias in chosen_aliases(options):
            cache = open_cache(alias, failed)
            if cache is None:
                continue
            problem = pattern_problem(cache)
            if problem is None:
                targets.append((alias, cache))
            elif explicit:
                raise CommandError(
                    f"Cache alias {alias!r} ({backend_name(cache)}) {problem}."
                )
            elif callable(getattr(cache, "delete_pattern", None)):
                skipped.append(
                    f"Skipped {alias!r} ({backend_name(cache)}): it {problem}."
                )
        if not targets and not failed:
            raise CommandError("No cache alias has a delete_pattern() that can work.")
        return targets, skipped

    def _check_patterns(
        self,
        targets: list[tuple[str, BaseCache]],
        patterns: list[str],
        regexes: list[str],
    ) -> None:
        """``CommandError`` for a pattern an alias's ``delete_pattern()`` would refuse
        (a MultiLevelCache level that cannot take a lookbehind regex), asked through
        its ``check_pattern()`` as the delete itself asks: before anything changes."""
        for alias, cache in targets:
            for pattern, regex in [(p, False) for p in patterns] + [
                (r, True) for r in regexes
            ]:
                try:
                    check_pattern(cache, pattern, regex=regex)
                except (NotImplementedError, ValueError) as exc:
                    kind = "regex" if regex else "pattern"
                    raise CommandError(
                        f"{kind} {quoted(pattern)} on {alias!r}: {exc}"
                    ) from exc

    def _patterns(
        self,
        targets: list[tuple[str, BaseCache]],
        patterns: list[str],
        regexes: list[str],
        dry: bool,
        failed: list[str],
    ) -> dict[str, BaseCache]:
        """Run the pattern deletes; the aliases they were all done on (see ``handle``).

        An alias whose delete raises (down, unusable) is added to ``failed`` and its
        other patterns are not tried; the other aliases still are."""
        work = [(p, False) for p in patterns] + [(r, True) for r in regexes]
        done: dict[str, BaseCache] = {}
        for alias, cache in targets:
            note = " (in-process: this process only)" if in_process(cache) else ""
            for pattern, regex in work:
                kind = "regex" if regex else "pattern"
                if dry:
                    self.stdout.write(
                        f"Would delete {kind} {quoted(pattern)} on {alias!r}{note}."
                    )
                    continue
                try:
                    removed = delete_pattern(cache, pattern, regex=regex)
                except (NotImplementedError, ValueError) as exc:
                    # A regex a level cannot rewrite (a lookbehind over final keys).
                    raise CommandError(
                        f"{kind} {quoted(pattern)} on {alias!r}: {exc}"
                    ) from exc
                except Exception as exc:  # noqa: BLE001 - named in the error
                    note_failure(failed, alias, exc)
                    break
                self.stdout.write(
                    f"Deleted {removed} key(s) matching {kind} {quoted(pattern)} on "
                    f"{alias!r}{but_not(cache)}{note}."
                )
            else:
                if not dry:
                    done[alias] = cache
        return done
