"""The ``smartcache_*`` management commands through ``call_command`` on real backends.

Aliases: ``default`` (Django's LocMemCache: no stats, no tags), ``smart``
(SmartCache), ``sqlite`` (SQLiteCache in ``tmp_path``) and ``tagged``
(MultiLevelCache: SmartCache over a SQLiteCache file in ``tmp_path``).
"""

from __future__ import annotations

import io
import json
import re
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.cache import caches
from django.core.management import CommandError, call_command
from django.test import override_settings

from django_smartcache.registry import model_tag
from django_smartcache.warmers import registry
from tests.testapp.models import Author, Book

LOCMEM = "django.core.cache.backends.locmem.LocMemCache"
ALIASES = ("default", "smart", "sqlite", "tagged")


@pytest.fixture
def cache_set(tmp_path: Path) -> Iterator[dict[str, Any]]:
    config = {
        "default": {"BACKEND": LOCMEM, "LOCATION": f"commands-{tmp_path.name}"},
        "smart": {
            "BACKEND": "django_smartcache.backends.SmartCache",
            "LOCATION": f"commands-{tmp_path.name}",
            "OPTIONS": {"MAX_MEMORY": "1MB"},
        },
        "sqlite": {
            "BACKEND": "django_smartcache.backends.SQLiteCache",
            "LOCATION": str(tmp_path / "sqlite.sqlite3"),
        },
        "tagged": {
            "BACKEND": "django_smartcache.backends.MultiLevelCache",
            "LOCATION": str(tmp_path / "multilevel.sqlite3"),
        },
    }
    with override_settings(CACHES=config):
        found = {alias: caches[alias] for alias in ALIASES}
        yield found
        for cache in found.values():
            cache.clear()
            cache.close()


def has_row(out: str, label: str, text: str, indent: str = "  ") -> bool:
    """Whether the table has the row ``label  text`` (labels are padded to one width)."""
    pattern = rf"^{indent}{re.escape(label)} +{re.escape(text)}$"
    return re.search(pattern, out, re.MULTILINE) is not None


def run(*args: str, **options: Any) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err, no_color=True, **options)
    return out.getvalue(), err.getvalue()


@pytest.fixture
def temporary_warmers() -> Iterator[Any]:
    """Register warmers for one test only."""
    added: list[str] = []

    def add(name: str, func: Any, **kwargs: Any) -> None:
        registry.register(name, func, **kwargs)
        added.append(name)

    yield add
    for name in added:
        registry.unregister(name)


@pytest.mark.parametrize(
    "command",
    [
        "smartcache_warm",
        "smartcache_expire",
        "smartcache_clear",
        "smartcache_invalidate",
        "smartcache_stats",
    ],
)
def test_cache_must_be_an_alias_of_settings(cache_set: Any, command: str) -> None:
    """Like every bad input, a CommandError naming the known aliases (argparse
    ``choices`` made it a usage error, exit status 2 from the command line)."""
    _fill(cache_set)
    with pytest.raises(CommandError) as info:
        extra: dict[str, Any] = {"interactive": False} if "clear" in command else {}
        labels = ["tag:t"] if "invalidate" in command else []
        run(command, *labels, "--cache", "smart", "--cache", "nope", **extra)
    assert str(info.value) == (
        "Unknown cache alias 'nope' for --cache; settings.CACHES has: "
        "'default', 'smart', 'sqlite', 'tagged'."
    )
    assert cache_set["smart"].get("k") == "v"  # nothing ran


# -- smartcache_warm ---------------------------------------------------------------


def test_warm_list(cache_set: Any) -> None:
    out, _ = run("smartcache_warm", "--list")
    assert (
        "testapp.authors  caches: tagged  tags: model:testapp.author  - Every author's "
        "name under author:<pk>" in out
    )
    assert (
        "testapp.book_count  caches: default or --cache  - The number of books" in out
    )
    assert caches["tagged"].get("author:1") is None  # listing runs nothing


@pytest.mark.django_db
def test_warm_runs_every_warmer_and_reports_keys(cache_set: Any) -> None:
    ann, bob = Author.objects.create(name="Ann"), Author.objects.create(name="Bob")
    Book.objects.create(title="B1", author=ann)
    out, err = run("smartcache_warm")
    assert "Warmed testapp.authors on 'tagged': 2 keys set in " in out
    assert "Warmed testapp.book_count on 'default': 1 key set in " in out
    assert err == ""
    tagged = cache_set["tagged"]
    assert tagged.get_many([f"author:{ann.pk}", f"author:{bob.pk}"]) == {
        f"author:{ann.pk}": "Ann",
        f"author:{bob.pk}": "Bob",
    }
    assert cache_set["default"].get("books:count") == 1
    # The warmer's tag went with its entries: a write to any author drops them.
    bob.name = "Robert"
    bob.save()
    assert tagged.get(f"author:{ann.pk}") is None
    out, _ = run("smartcache_warm", "--tag", model_tag(Author))
    assert "testapp.book_count" not in out
    assert tagged.get(f"author:{bob.pk}") == "Robert"


@pytest.mark.django_db
def test_warm_named_on_a_chosen_alias(cache_set: Any) -> None:
    Book.objects.create(title="B1", author=Author.objects.create(name="Ann"))
    out, _ = run("smartcache_warm", "testapp.book_count", "--cache", "smart")
    assert out.startswith("Warmed testapp.book_count on 'smart': 1 key set")
    assert cache_set["smart"].get("books:count") == 1
    assert cache_set["default"].get("books:count") is None


def test_warm_a_named_warmer_the_filters_exclude_is_an_error(cache_set: Any) -> None:
    """testapp.authors fills only "tagged": ``--cache smart`` printed "No warmers to
    run." with exit status 0, so a deploy script warmed nothing silently."""
    with pytest.raises(CommandError) as info:
        run("smartcache_warm", "testapp.authors", "testapp.book_count", cache="smart")
    assert str(info.value) == (
        "A named warmer would not run: warmer 'testapp.authors' is registered for "
        "'tagged' only, not for --cache 'smart'."
    )
    assert cache_set["smart"].get("books:count") is None  # nothing ran
    with pytest.raises(CommandError) as info:
        run("smartcache_warm", "testapp.book_count", "--tag", "t", "--dry-run")
    assert str(info.value) == (
        "A named warmer would not run: warmer 'testapp.book_count' has none of the "
        "tags t (its tags: none)."
    )


def test_warm_list_takes_the_names_tags_and_aliases_as_filters(cache_set: Any) -> None:
    """``--list`` ignored them and listed every warmer."""
    out, _ = run("smartcache_warm", "--list", "testapp.book_count")
    assert out.startswith("testapp.book_count  caches: default or --cache")
    assert out.count("\n") == 1
    out, _ = run("smartcache_warm", "--list", "--tag", model_tag(Author))
    assert out.startswith("testapp.authors  caches: tagged  tags: ")
    assert out.count("\n") == 1
    out, _ = run("smartcache_warm", "--list", "--cache", "tagged", "--tag", "t")
    assert out == "No registered warmer matches.\n"
    with pytest.raises(CommandError, match="'testapp.authors' is registered for"):
        run("smartcache_warm", "--list", "testapp.authors", "--cache", "smart")


def test_warm_dry_run_writes_nothing(cache_set: Any) -> None:
    out, _ = run("smartcache_warm", "--dry-run")
    assert "Would warm testapp.authors on 'tagged'" in out
    assert "Would warm testapp.book_count on 'default'" in out
    assert cache_set["default"].get("books:count") is None


def test_warm_unknown_name_lists_the_known_ones(cache_set: Any) -> None:
    with pytest.raises(CommandError) as info:
        run("smartcache_warm", "testapp.book_count", "nope")
    assert "unknown warmer 'nope'; known: " in str(info.value)
    assert "testapp.authors, testapp.book_count" in str(info.value)
    assert cache_set["default"].get("books:count") is None  # nothing ran


@pytest.mark.django_db
def test_a_failing_warmer_is_reported_after_the_others_ran(
    cache_set: Any, temporary_warmers: Any
) -> None:
    def broken(cache: Any) -> None:
        cache.set("half", 1)
        raise RuntimeError("upstream timed out")

    temporary_warmers("a.broken", broken, caches=["smart", "sqlite"])
    temporary_warmers("z.tagged_on_locmem", lambda c: None, caches="default", tags="t")
    err = io.StringIO()
    with pytest.raises(CommandError) as info:
        call_command("smartcache_warm", stdout=io.StringIO(), stderr=err)
    assert str(info.value) == (
        "3 of 5 warmer runs failed: a.broken on 'smart', a.broken on 'sqlite', "
        "z.tagged_on_locmem on 'default'"
    )
    text = err.getvalue()
    assert "Warmer a.broken on 'smart' failed after " in text
    assert "(1 key set): RuntimeError: upstream timed out" in text
    assert "(LocMemCache) does not support tags" in text
    # Those after the failure still ran.
    assert cache_set["default"].get("books:count") == 0
    assert cache_set["sqlite"].get("half") == 1


@pytest.mark.django_db
def test_warm_traceback_option_prints_the_traceback(
    cache_set: Any, temporary_warmers: Any
) -> None:
    def broken(cache: Any) -> None:
        raise KeyError("missing")

    temporary_warmers("broken", broken)
    err = io.StringIO()
    with pytest.raises(CommandError):
        call_command(
            "smartcache_warm",
            "broken",
            traceback=True,
            stdout=io.StringIO(),
            stderr=err,
        )
    assert "Traceback (most recent call last)" in err.getvalue()
    assert 'raise KeyError("missing")' in err.getvalue()


# -- smartcache_expire -------------------------------------------------------------


def _expiring(cache: Any, n: int) -> None:
    for i in range(n):
        cache.set(f"short:{i}", i, timeout=0.05)
    cache.set("long", "kept", timeout=3600)


def test_expire_purges_every_level(cache_set: Any) -> None:
    for alias in ("smart", "sqlite", "tagged"):
        _expiring(cache_set[alias], 3)
    time.sleep(0.1)  # only needs the 50 ms lifetimes to have passed
    out, _ = run("smartcache_expire")
    lines = out.splitlines()
    assert lines == [
        (
            "default: LocMemCache has no purge of expired entries (it drops one when "
            "its key is read); skipped"
        ),
        (
            "smart: 3 expired entries removed (SmartCache 3); in-process levels: this "
            "process's store only"
        ),
        "sqlite: 3 expired entries removed (SQLiteCache 3)",
        (
            "tagged: 3 expired entries removed (L2 SQLiteCache 3); L1 SmartCache: 3 "
            "expired copies dropped; in-process levels: this process's store only"
        ),
    ]
    for alias in ("smart", "sqlite", "tagged"):
        assert cache_set[alias].get("long") == "kept"
    assert cache_set["sqlite"].stats()["entries"] == 1
    # Nothing left to purge.
    out, _ = run("smartcache_expire", "--cache", "sqlite")
    assert out == "sqlite: 0 expired entries removed (SQLiteCache 0)\n"


@pytest.mark.redis
def test_expire_and_stats_on_multilevel_over_redis(redis_url: str) -> None:
    levels = [
        {"BACKEND": "django_smartcache.backends.SmartCache"},
        {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": redis_url,
        },
    ]
    config = {
        "default": {"BACKEND": LOCMEM},
        "ml": {
            "BACKEND": "django_smartcache.backends.MultiLevelCache",
            "OPTIONS": {"LEVELS": levels},
        },
    }
    with override_settings(CACHES=config):
        ml = caches["ml"]
        # Subscribed first: a (re)subscription flushes L1, which would empty it of the
        # entries this test expects `smartcache_expire` to purge.
        deadline = time.monotonic() + 10
        while not ml._co.connected:
            assert time.monotonic() < deadline, "no subscription to the Redis channel"
            time.sleep(0.01)
        ml.clear()
        _expiring(ml, 2)
        time.sleep(0.1)
        out, _ = run("smartcache_expire", "--cache", "ml")
        # Redis expires keys itself: only the L1 has something to purge.
        assert out.startswith(
            "ml: no expired entries to remove (L2 RedisCache: expired by the level "
            "itself); L1 SmartCache: 2 expired copies dropped;"
        )
        assert ml.get("long") == "kept"
        out, _ = run("smartcache_stats", "--cache", "ml")
        assert "  L2 RedisCache (RedisCache)\n" in out
        assert "no statistics" not in out  # the level's own stats: none, counters: yes
        ml.clear()


# -- smartcache_clear --------------------------------------------------------------


def _fill(cache_set: Any) -> None:
    for cache in cache_set.values():
        cache.set("k", "v")


def test_clear_default_alias_without_prompt(cache_set: Any) -> None:
    _fill(cache_set)
    out, _ = run("smartcache_clear", "--noinput")
    assert (
        out
        == "Cleared 'default' (LocMemCache) (in-process: this process's store only).\n"
    )
    assert cache_set["default"].get("k") is None
    assert cache_set["smart"].get("k") == "v"


def test_clear_chosen_and_all(cache_set: Any) -> None:
    _fill(cache_set)
    out, _ = run(
        "smartcache_clear", "--cache", "sqlite", "--cache", "tagged", "--no-input"
    )
    assert out.splitlines() == [
        "Cleared 'sqlite' (SQLiteCache).",
        "Cleared 'tagged' (MultiLevelCache).",
    ]
    assert [cache_set[a].get("k") for a in ALIASES] == ["v", "v", None, None]
    run("smartcache_clear", "--all", "--noinput")
    assert [cache_set[a].get("k") for a in ALIASES] == [None] * 4


@pytest.mark.parametrize(
    ("answer", "cleared"), [("yes", True), ("no", False), ("y", False)]
)
def test_clear_asks_first(
    cache_set: Any, monkeypatch: pytest.MonkeyPatch, answer: str, cleared: bool
) -> None:
    _fill(cache_set)
    monkeypatch.setattr(sys, "stdin", io.StringIO(answer + "\n"))
    out, _ = run("smartcache_clear", "--cache", "smart")
    assert (cache_set["smart"].get("k") is None) is cleared
    assert ("Clear cancelled." in out) is not cleared


def test_clear_all_and_cache_together_is_an_error(cache_set: Any) -> None:
    with pytest.raises(CommandError, match="Pass --all or --cache, not both"):
        run("smartcache_clear", "--all", "--cache", "smart", "--noinput")


def test_clear_without_a_default_alias(tmp_path: Path) -> None:
    with (
        override_settings(CACHES={"other": {"BACKEND": LOCMEM}}),
        pytest.raises(CommandError, match="No cache alias 'default'"),
    ):
        run("smartcache_clear", "--noinput")


# -- smartcache_invalidate ---------------------------------------------------------


TAGGING = ("smart", "sqlite", "tagged")


def test_invalidate_tag_on_every_tagging_alias(cache_set: Any) -> None:
    for alias in TAGGING:
        cache_set[alias].set("a", 1, tags=["news"])
        cache_set[alias].set("b", 2, tags=["sport"])
    out, _ = run("smartcache_invalidate", "tag:news")
    assert (
        out
        == "Invalidated 1 tag(s) on smart (in-process: this process only), sqlite and "
        "tagged.\n"
    )
    for alias in TAGGING:
        assert cache_set[alias].get_many(["a", "b"]) == {"b": 2}


def test_invalidate_tag_on_a_chosen_alias(cache_set: Any) -> None:
    for alias in TAGGING:
        cache_set[alias].set("a", 1, tags=["news"])
    run("smartcache_invalidate", "tag:news", "--cache", "sqlite")
    assert [cache_set[a].get("a") for a in TAGGING] == [1, None, 1]


@pytest.mark.parametrize(
    ("label", "gone"),
    [
        ("testapp.Author.1", {"row1", "model"}),
        ("testapp.author.1", {"row1", "model"}),
        ("testapp.Author", {"row1", "row2", "model"}),
        ("testapp", {"row1", "row2", "model", "book"}),
        ("testapp.Book", {"book"}),
    ],
)
def test_invalidate_models_and_rows(cache_set: Any, label: str, gone: set[str]) -> None:
    cache = cache_set["tagged"]
    entries = {
        "row1": model_tag(Author, 1),
        "row2": model_tag(Author, 2),
        "model": model_tag(Author),
        "book": model_tag(Book),
    }
    for key, tag in entries.items():
        cache.set(key, key, tags=[tag])
    out, _ = run("smartcache_invalidate", label, "--cache", "tagged", verbosity=2)
    assert out.startswith("Invalidated ")
    assert set(cache.get_many(list(entries))) == set(entries) - gone


@pytest.mark.parametrize("verbosity", [2, 3])
@pytest.mark.parametrize("dry_run", [False, True])
def test_invalidate_verbosity_lists_the_tags(
    cache_set: Any, verbosity: int, dry_run: bool
) -> None:
    """At -v 3 the list had "model:testapp.author#*" too (the all-rows tag the row
    tag depends on), under "Invalidated 2 tag(s)", though no other row was dropped."""
    cache_set["smart"].set("row8", 8, tags=["model:testapp.author#8"])
    out, _ = run(
        "smartcache_invalidate",
        "testapp.Author.7",
        verbosity=verbosity,
        dry_run=dry_run,
    )
    assert out.splitlines()[0].startswith(
        f"{'Would invalidate' if dry_run else 'Invalidated'} 2 tag(s) on "
    )
    assert out.splitlines()[1:] == [
        "  model:testapp.author",
        "  model:testapp.author#7",
    ]
    assert cache_set["smart"].get("row8") == 8


@pytest.mark.parametrize(
    ("label", "message"),
    [
        ("nope", "Unknown app 'nope'"),
        ("testapp.Nope", "Unknown model testapp.Nope"),
        ("testapp.Author.abc", "Invalid pk 'abc' for testapp.Author"),
        ("tag:", "Invalid tag in 'tag:'"),
        ("testapp..1", "Invalid label 'testapp..1'"),
        ("tag:two words", "Invalid tag in 'tag:two words'"),
        ("testapp.Seat.A", "Invalid label 'testapp.Seat.A': the pk of testapp.Seat"),
    ],
)
def test_invalidate_bad_labels(cache_set: Any, label: str, message: str) -> None:
    cache_set["smart"].set("a", 1, tags=["news"])
    with pytest.raises(CommandError, match=message):
        run("smartcache_invalidate", "tag:news", label)
    assert cache_set["smart"].get("a") == 1  # labels are all checked before any change


def test_invalidate_a_swapped_out_model_names_the_one_in_use(cache_set: Any) -> None:
    """``model_tag()`` refuses a swapped-out model: the command says so, no traceback."""
    from django.test import override_settings

    with (
        override_settings(AUTH_USER_MODEL="testapp.Author"),
        pytest.raises(CommandError, match="swapped for 'testapp.Author'"),
    ):
        run("smartcache_invalidate", "auth.User")


def test_invalidate_needs_something_to_do(cache_set: Any) -> None:
    with pytest.raises(CommandError, match="at least one label, --pattern or --regex"):
        run("smartcache_invalidate")


def test_invalidate_tags_on_a_backend_without_them(cache_set: Any) -> None:
    with pytest.raises(
        CommandError, match=r"'default' \(LocMemCache\) does not support tags"
    ):
        run("smartcache_invalidate", "tag:news", "--cache", "default")


def test_invalidate_patterns_on_every_alias_that_has_them(cache_set: Any) -> None:
    for alias in TAGGING:
        cache_set[alias].set_many(
            {"user:1:name": 1, "user:1:mail": 2, "user:2:name": 3}
        )
    out, _ = run(
        "smartcache_invalidate", "--pattern", "user:1:*", "--regex", r"^user:\d:mail$"
    )
    note = {"smart": " (in-process: this process only)"}
    assert out.splitlines() == [
        f"Deleted {n} key(s) matching {kind} on '{alias}'{note.get(alias, '')}."
        for alias in TAGGING
        for n, kind in ((2, "pattern 'user:1:*'"), (0, r"regex '^user:\d:mail$'"))
    ]
    for alias in TAGGING:
        assert cache_set[alias].get_many(
            ["user:1:name", "user:1:mail", "user:2:name"]
        ) == {"user:2:name": 3}


def test_invalidate_pattern_errors(cache_set: Any) -> None:
    with pytest.raises(
        CommandError, match=r"'default' \(LocMemCache\) has no delete_pattern"
    ):
        run("smartcache_invalidate", "--pattern", "*", "--cache", "default")
    with pytest.raises(CommandError, match="Invalid regex '\\('"):
        run("smartcache_invalidate", "--regex", "(", "--cache", "smart")
    # Shown as typed: repr() doubled the backslash, another regex to read.
    with pytest.raises(CommandError) as info:
        run("smartcache_invalidate", "--regex", r"\d(", "--cache", "smart")
    assert str(info.value).startswith("Invalid regex '\\d(': ")
    out, _ = run(
        "smartcache_invalidate", "--regex", r"\d", "--cache", "smart", dry_run=True
    )
    assert (
        out == "Would delete regex '\\d' on 'smart' (in-process: this process only).\n"
    )


def test_invalidate_dry_run_changes_nothing(cache_set: Any) -> None:
    cache_set["smart"].set("a", 1, tags=[model_tag(Author)])
    out, _ = run(
        "smartcache_invalidate",
        "testapp.Author",
        "--pattern",
        "a",
        "--cache",
        "smart",
        "--dry-run",
    )
    assert out.splitlines() == [
        "Would invalidate 2 tag(s) on smart (in-process: this process only).",
        "  model:testapp.author",
        "  model:testapp.author#*",
        "Would delete pattern 'a' on 'smart' (in-process: this process only).",
    ]
    assert cache_set["smart"].get("a") == 1


# -- smartcache_stats --------------------------------------------------------------


def test_stats_table(cache_set: Any) -> None:
    smart = cache_set["smart"]
    smart.set("hot", "x" * 100)
    for _ in range(3):
        smart.get("hot")
    smart.get("cold")
    out, _ = run("smartcache_stats", "--cache", "smart", "--cache", "default")
    used = smart.stats()["bytes_used"]
    assert out.startswith("smart (SmartCache, in-process: this process only)\n")
    assert has_row(out, "hit rate", "75.0%")
    assert has_row(out, "hits", "3")
    assert has_row(out, "misses", "1")
    assert has_row(out, "evictions", "0 (capacity 0, expired 0, invalidated 0)")
    assert has_row(
        out, "memory", f"{used / 1024:.1f} KiB of 1.0 MiB ({used / 2**20:.1%})"
    )
    assert has_row(out, "top keys", ":1:hot (3)")
    assert out.endswith(
        "default (LocMemCache, in-process: this process only)\n"
        "  no statistics (the backend has no stats())\n"
    )


def test_stats_multilevel_per_level(cache_set: Any) -> None:
    tagged = cache_set["tagged"]
    tagged.set("a", 1)
    tagged.get("a")
    tagged.get("missing")
    out, _ = run("smartcache_stats", "--cache", "tagged")
    assert out.startswith("tagged (MultiLevelCache)\n")
    assert has_row(out, "hit rate", "50.0%")
    assert re.search(r"^  coherence +channel sqlite, ", out, re.MULTILINE)
    assert "\n  L1 SmartCache (SmartCache, in-process: this process only)\n" in out
    assert "\n  L2 SQLiteCache (SQLiteCache)\n" in out
    l1, l2 = out.split("L1 SmartCache (SmartCache, in-process: this process only)\n")[
        1
    ].split("L2 SQLiteCache (SQLiteCache)\n")
    assert has_row(l1, "hits served", "1", indent="    ")
    assert has_row(l1, "entries", "1", indent="    ")
    assert has_row(l2, "entries", "1", indent="    ")
    assert has_row(l2, "location", tagged.levels[1].path, indent="    ")
    assert has_row(l2, "hits served", "0", indent="    ")


def test_stats_json_is_each_backends_stats(cache_set: Any) -> None:
    cache_set["sqlite"].set("a", 1)
    cache_set["tagged"].get("a")
    out, _ = run("smartcache_stats", "--json")
    report = json.loads(out)
    assert list(report) == list(ALIASES)
    assert report["default"] == {
        "backend": "LocMemCache",
        "in_process": True,
        "stats": None,
    }
    assert report["sqlite"]["stats"] == cache_set["sqlite"].stats()
    tagged = report["tagged"]
    assert tagged["stats"]["misses"] == 1
    assert [level["level"] for level in tagged["levels"]] == [
        "L1 SmartCache",
        "L2 SQLiteCache",
    ]
    assert (
        tagged["levels"][1]["stats"]["location"] == cache_set["tagged"].levels[1].path
    )


# -- command-line behaviour, in a subprocess -------------------------------------------


def _manage(*args: str) -> Any:
    import os
    import subprocess

    root = Path(__file__).resolve().parent.parent
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "PYTHONPATH": str(root),
    }
    return subprocess.run(
        [sys.executable, "-m", "django", *args],
        check=False,
        cwd=root,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_unknown_alias_from_the_command_line_is_a_command_error() -> None:
    done = _manage("smartcache_stats", "--cache", "nope")
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "CommandError: Unknown cache alias 'nope' for --cache; settings.CACHES has: "
        "'default'."
    )
    assert "usage:" not in done.stderr


def test_clear_with_stdin_closed_is_a_command_error_and_clears_nothing(
    cache_set: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fill(cache_set)
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # input() raises EOFError
    with pytest.raises(CommandError, match="standard input is closed"):
        run("smartcache_clear", "--cache", "smart")
    assert cache_set["smart"].get("k") == "v"
    done = _manage("smartcache_clear")  # stdin is /dev/null
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().startswith(
        "CommandError: No answer to the confirmation (standard input is closed): "
        "nothing cleared. Pass --noinput"
    )


@pytest.mark.django_db
def test_warm_says_when_the_store_is_this_process_only(
    cache_set: Any, temporary_warmers: Any
) -> None:
    temporary_warmers("t.one", lambda c: c.set("one", 1), caches=["smart", "tagged"])
    out, _ = run("smartcache_warm", "t.one")
    lines = out.splitlines()
    assert re.fullmatch(
        r"Warmed t\.one on 'smart': 1 key set in [\d.]+ ms "
        r"\(in-process: this process only, gone when the command exits\)",
        lines[0],
    )
    # A MultiLevelCache fills its shared level: no note.
    assert re.fullmatch(r"Warmed t\.one on 'tagged': 1 key set in [\d.]+ ms", lines[1])


def test_stats_sizes_have_their_unit(cache_set: Any) -> None:
    out, _ = run("smartcache_stats", "--cache", "smart")
    assert has_row(out, "entry overhead", "1.0 KiB")
    assert has_row(out, "max item size", "unlimited")


# -- review fixes (outside probe, session 6) ----------------------------------


def test_call_command_takes_one_pattern_or_alias_as_a_string(cache_set: Any) -> None:
    """``pattern="user:*"`` is one glob, not five (the last, ``*``, deleted everything)."""
    for alias in ("smart", "sqlite"):
        cache_set[alias].set_many({"user:1": 1, "user:2": 2, "home": 3})
    out, _ = run("smartcache_invalidate", pattern="user:*", cache="sqlite")
    assert out == "Deleted 2 key(s) matching pattern 'user:*' on 'sqlite'.\n"
    assert cache_set["sqlite"].get_many(["user:1", "user:2", "home"]) == {"home": 3}
    assert cache_set["smart"].get("home") == 3  # another alias: untouched
    out, _ = run("smartcache_invalidate", regex=r"^user:\d+$", cache=["smart"])
    assert "Deleted 2 key(s) matching regex" in out
    assert cache_set["smart"].get_many(["user:1", "home"]) == {"home": 3}


def test_a_bad_glob_changes_nothing(cache_set: Any) -> None:
    """Every pattern is checked before the tags or any pattern run."""
    cache = cache_set["tagged"]
    cache.set("page", "p", tags=["news"])
    cache.set("user:1", 1)
    with pytest.raises(
        CommandError, match=r"^Invalid glob '\[z-a\]': the range z-a is reversed$"
    ):
        run(
            "smartcache_invalidate",
            "tag:news",
            "--pattern",
            "user:*",
            "--pattern",
            "[z-a]",
        )
    assert cache.get_many(["page", "user:1"]) == {"page": "p", "user:1": 1}


def test_patterns_skip_an_alias_that_cannot_match_and_name_it_when_asked(
    cache_set: Any, tmp_path: Path
) -> None:
    config = {
        "smart": {
            "BACKEND": "django_smartcache.backends.SmartCache",
            "LOCATION": f"skip-{tmp_path.name}",
        },
        "mlfile": {
            "BACKEND": "django_smartcache.backends.MultiLevelCache",
            "OPTIONS": {
                "LEVELS": [
                    {"BACKEND": "django_smartcache.backends.SmartCache"},
                    {
                        "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
                        "LOCATION": str(tmp_path / "files"),
                    },
                ]
            },
        },
        "hashed": {
            "BACKEND": "django_smartcache.backends.SmartCache",
            "LOCATION": f"hashed-{tmp_path.name}",
            "KEY_FUNCTION": "tests.test_commands.hashed_key",
        },
    }
    with override_settings(CACHES=config):
        caches["smart"].set("user:1", 1)
        for args in ((), ("--dry-run",)):
            out, _ = run("smartcache_invalidate", "--pattern", "user:*", *args)
            lines = out.splitlines()
            assert (
                "Skipped 'mlfile' (MultiLevelCache): it has a level (L2 "
                "FileBasedCache) that cannot list its keys." in lines
            )
            assert any(
                line.startswith("Skipped 'hashed' (SmartCache): ") for line in lines
            )
            assert not any(
                "on 'mlfile'" in line or "on 'hashed'" in line for line in lines
            )
        assert caches["smart"].get("user:1") is None
        with pytest.raises(CommandError, match="'mlfile'.*cannot list its keys"):
            run("smartcache_invalidate", "--pattern", "user:*", "--cache", "mlfile")
        for cache in caches.all():
            cache.close()


def hashed_key(key: str, key_prefix: str, version: int) -> str:
    """A KEY_FUNCTION that cannot be inverted (the key is hashed)."""
    import hashlib

    return hashlib.sha256(f"{key_prefix}:{version}:{key}".encode()).hexdigest()


def test_warm_runs_each_alias_once(cache_set: Any, temporary_warmers: Any) -> None:
    calls: list[str] = []
    temporary_warmers("count_calls", lambda cache: calls.append("x"))
    run("smartcache_warm", "count_calls", "--cache", "sqlite", "--cache", "sqlite")
    assert calls == ["x"]


def test_invalidate_on_an_in_process_alias_says_so(cache_set: Any) -> None:
    out, _ = run("smartcache_invalidate", "tag:news", "--cache", "smart")
    assert out == "Invalidated 1 tag(s) on smart (in-process: this process only).\n"
    out, _ = run("smartcache_invalidate", "--pattern", "x*", "--cache", "smart")
    assert out == (
        "Deleted 0 key(s) matching pattern 'x*' on 'smart' (in-process: this process only).\n"
    )


@pytest.fixture
def broken_l2(tmp_path: Path) -> Iterator[Any]:
    """``ml``: a SmartCache L1 over a FileBasedCache whose directory became a file (down)."""
    blocker = tmp_path / "files"
    config = {
        "default": {"BACKEND": LOCMEM, "LOCATION": f"broken-{tmp_path.name}"},
        "ml": {
            "BACKEND": "django_smartcache.backends.MultiLevelCache",
            "OPTIONS": {
                "LEVELS": [
                    {"BACKEND": "django_smartcache.backends.SmartCache"},
                    {
                        "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
                        "LOCATION": str(blocker),
                    },
                ],
            },
        },
    }
    with override_settings(CACHES=config):
        caches["ml"]  # FileBasedCache makes its directory when built
        shutil.rmtree(blocker)
        blocker.write_text("")
        yield caches["ml"]
        for health in caches["ml"]._health:
            health.stop()
        caches["ml"].close()


def test_commands_fail_when_the_shared_level_missed_the_change(
    broken_l2: Any, temporary_warmers: Any
) -> None:
    """The process that missed a level repairs it on recovery, but a command exits
    first: the level would keep serving the old entries, so the command fails."""
    with pytest.raises(CommandError, match=r"The invalidation did not reach 'ml' L2"):
        run("smartcache_invalidate", "tag:news", "--cache", "ml")
    temporary_warmers("fill_ml", lambda cache: cache.set("k", 1), caches="ml")
    with pytest.raises(
        CommandError, match=r"Warming did not reach 'ml' L2 FileBasedCache"
    ):
        run("smartcache_warm", "fill_ml")
    # Down now (it failed): the clear skips it, to be cleared on its recovery.
    with pytest.raises(
        CommandError, match=r"The clear did not reach 'ml' L2 FileBasedCache"
    ):
        run("smartcache_clear", "--cache", "ml", "--noinput")


def test_success_lines_name_the_level_the_change_did_not_reach(
    broken_l2: Any, temporary_warmers: Any
) -> None:
    """The line before the error says the change was partial (it used to read as a
    full success: "Cleared 'ml' (MultiLevelCache).")."""
    temporary_warmers("fill_ml", lambda cache: cache.set("k", 1), caches="ml")
    out = io.StringIO()
    with pytest.raises(CommandError, match=r"Warming did not reach 'ml' L2"):
        call_command("smartcache_warm", "fill_ml", stdout=out, no_color=True)
    assert out.getvalue().startswith(
        "Warmed fill_ml on 'ml' but not its L2 FileBasedCache: 1 key set in "
    )
    out = io.StringIO()
    with pytest.raises(CommandError, match=r"The clear did not reach 'ml' L2"):
        call_command("smartcache_clear", "--cache", "ml", "--noinput", stdout=out)
    assert out.getvalue() == (
        "Cleared 'ml' (MultiLevelCache) but not its L2 FileBasedCache.\n"
    )


def test_stats_into_a_closed_pipe_exits_without_a_traceback() -> None:
    """``smartcache_stats | head -1``: the reader is gone before the output is written;
    exit status 1 and no BrokenPipeError traceback (there used to be one)."""
    import os
    import subprocess

    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"}
    env["PYTHONPATH"] = str(root)
    proc = subprocess.Popen(
        [sys.executable, "-m", "django", "smartcache_stats"],
        cwd=root,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # before Django has started: its first write finds no reader
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 1
    assert "Traceback" not in err
    assert "BrokenPipeError" not in err


def test_a_broken_pipe_that_is_not_stdout_is_raised() -> None:
    """Only a reader gone from stdout ends a command quietly: a BrokenPipeError from
    anything else (a socket the command uses) is an error like any other."""
    from django_smartcache.management import PipedCommand

    class Command(PipedCommand):
        def handle(self, *args: object, **options: object) -> None:
            raise BrokenPipeError("a socket, not stdout")

    with pytest.raises(BrokenPipeError, match="a socket"):
        Command().run_from_argv(["manage.py", "boom", "--skip-checks"])
