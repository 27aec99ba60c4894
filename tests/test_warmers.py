"""The warmer registry and ``warmers.run()`` on real backends."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.cache import caches
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from django_smartcache import warmers
from django_smartcache.warmers import Warmer, WarmerRegistry, run

LOCMEM = "django.core.cache.backends.locmem.LocMemCache"


@pytest.fixture
def smart(tmp_path: Path) -> Iterator[Any]:
    """``default`` is Django's LocMemCache, ``smart`` a SmartCache of this test's own."""
    config = {
        "default": {"BACKEND": LOCMEM, "LOCATION": f"warmers-{tmp_path.name}"},
        "smart": {
            "BACKEND": "django_smartcache.backends.SmartCache",
            "LOCATION": f"warmers-{tmp_path.name}",
        },
    }
    with override_settings(CACHES=config):
        yield caches["smart"]
        caches["smart"].clear()
        caches["default"].clear()


def noop(cache: Any) -> None:
    """Does nothing."""


def other(cache: Any) -> None:
    pass


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("", {}, "warmer name must be a non-empty string"),
        (" padded", {}, "warmer name must be a non-empty string"),
        (42, {}, "warmer name must be a non-empty string"),
        ("w", {"caches": []}, "caches must be None or cache aliases"),
        ("w", {"caches": ["default", ""]}, "caches must be None or cache aliases"),
        ("w", {"tags": ["bad tag"]}, "warmer 'w': tags:"),
        ("w", {"tags": [3]}, "warmer 'w': tags:"),
    ],
)
def test_register_rejects_bad_options(name: Any, kwargs: Any, message: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=message):
        WarmerRegistry().register(name, noop, **kwargs)


def test_register_rejects_a_non_callable() -> None:
    with pytest.raises(ImproperlyConfigured, match="is not callable"):
        WarmerRegistry().register("w", "not a function")  # type: ignore[arg-type]


def test_one_name_two_functions_is_an_error_the_same_function_again_is_not() -> None:
    reg = WarmerRegistry()
    reg.register("w", noop, caches="default")
    reg.register("w", noop, caches="default")  # e.g. a module imported twice
    assert len(reg) == 1
    with pytest.raises(ImproperlyConfigured, match="already registered by .*noop"):
        reg.register("w", other)


def test_same_name_lambdas_and_factory_functions_are_different_functions() -> None:
    """They share a qualified name (``<lambda>``, ``make.<locals>.warm``) without being
    the same function: the second one used to replace the first silently."""
    reg = WarmerRegistry()
    reg.register("w", lambda cache: None)
    with pytest.raises(ImproperlyConfigured, match="already registered by"):
        reg.register("w", lambda cache: None)

    def make() -> Any:
        def warm(cache: Any) -> None:
            pass

        return warm

    reg.register("f", make())
    with pytest.raises(ImproperlyConfigured, match="already registered by"):
        reg.register("f", make())


def test_the_same_function_with_other_options_is_an_error() -> None:
    reg = WarmerRegistry()
    reg.register("w", noop, caches="default", tags=["a"])
    with pytest.raises(ImproperlyConfigured, match=r"with caches=\('default',\)"):
        reg.register("w", noop, caches="other", tags=["a"])
    with pytest.raises(ImproperlyConfigured, match=r"tags=\('a',\)"):
        reg.register("w", noop, caches="default")
    assert reg.get("w").caches == ("default",)


def test_get_names_the_known_warmers() -> None:
    reg = WarmerRegistry()
    reg.register("b", noop)
    reg.register("a", other)
    assert reg.get("a").func is other
    with pytest.raises(LookupError, match="unknown warmer 'c'; known: a, b"):
        reg.get("c")
    with pytest.raises(LookupError, match="none registered"):
        WarmerRegistry().get("a")


def test_select_by_name_and_tag_in_name_order() -> None:
    reg = WarmerRegistry()
    reg.register("z", noop, tags=["t1"])
    reg.register("y", other, tags=["t1", "t2"])
    reg.register("x", lambda cache: None)
    assert [w.name for w in reg.select()] == ["x", "y", "z"]
    assert [w.name for w in reg.select(["z", "x", "z"])] == ["z", "x"]
    assert [w.name for w in reg.select(tags=["t2"])] == ["y"]
    assert [w.name for w in reg.select(["x", "z"], tags=["t1"])] == ["z"]
    assert "y" in reg
    reg.unregister("y")
    assert "y" not in reg


def test_aliases_default_and_chosen() -> None:
    anywhere = Warmer("a", noop, None, ())
    assert anywhere.aliases() == ("default",)
    assert anywhere.aliases(["x", "y"]) == ("x", "y")
    pinned = Warmer("p", noop, ("x", "y"), ())
    assert pinned.aliases() == ("x", "y")
    assert pinned.aliases(["y", "z"]) == ("y",)
    assert pinned.aliases(["z"]) == ()
    assert anywhere.doc == "Does nothing."
    assert Warmer("o", other, None, ()).doc == ""


def test_autodiscover_found_the_test_apps_module_and_is_idempotent() -> None:
    warmers.autodiscover()  # ready() already ran it: a second call must not re-register
    names = [w.name for w in warmers.registry]
    assert "testapp.authors" in names
    assert "testapp.book_count" in names
    authors = warmers.registry.get("testapp.authors")
    assert authors.caches == ("tagged",)
    assert authors.tags == ("model:testapp.author",)


def test_decorator_returns_the_function_and_registers_it() -> None:
    @warmers.warmer("test_warmers.decorated", caches=["smart"], tags="t")
    def decorated(cache: Any) -> None:
        pass

    try:
        entry = warmers.registry.get("test_warmers.decorated")
        assert entry.func is decorated
        assert entry.caches == ("smart",)
        assert entry.tags == ("t",)
    finally:
        warmers.registry.unregister("test_warmers.decorated")


def test_run_counts_every_kind_of_write(smart: Any) -> None:
    smart.set("present", 0)

    def fill(cache: Any) -> None:
        cache.set("a", 1)
        assert cache.add("b", 2) is True
        assert cache.add("a", 9) is False  # not written: not counted
        assert cache.set_many({"c": 3, "d": 4}) == []
        assert cache.get_or_set("e", 5) == 5
        assert cache.get_or_set("present", 7) == 0  # already there: not counted
        assert cache.get("a") == 1  # reads go to the real cache

    result = run(Warmer("fill", fill, None, ()), "smart")
    assert result.ok
    assert result.keys_set == 5
    assert result.seconds >= 0
    assert smart.get_many(["a", "b", "c", "d", "e"]) == {
        "a": 1,
        "b": 2,
        "c": 3,
        "d": 4,
        "e": 5,
    }


def test_run_adds_the_warmers_tags_to_each_write(smart: Any) -> None:
    def fill(cache: Any) -> None:
        cache.set("a", 1, tags=["own"])
        cache.set_many({"b": 2, "c": 3})

    smart.set("untagged", 0)
    assert run(Warmer("fill", fill, None, ("shared",)), "smart").keys_set == 3
    smart.invalidate_tags("own")
    assert smart.get_many(["a", "b", "c", "untagged"]) == {
        "b": 2,
        "c": 3,
        "untagged": 0,
    }
    smart.invalidate_tags("shared")
    assert smart.get_many(["a", "b", "c", "untagged"]) == {"untagged": 0}


def test_run_keeps_the_tag_versions_a_warmer_pinned(smart: Any) -> None:
    """``tags=cache.tag_versions([...])``, read before computing, stays pinned: an
    invalidation while the warmer computed makes its entry stale at once."""

    def fill(cache: Any) -> None:
        versions = cache.tag_versions(["news"])
        smart.invalidate_tags("news")  # the data changed while the warmer computed
        cache.set("page", "rendered-from-old-data", tags=versions)
        cache.set("fresh", "ok", tags=cache.tag_versions(["news"]))

    assert run(Warmer("fill", fill, None, ("shared",)), "smart").ok
    assert smart.get("page") is None
    assert smart.get("fresh") == "ok"
    smart.invalidate_tags("shared")  # the warmer's own tag still applies
    assert smart.get("fresh") is None


def test_run_returns_the_error_and_the_keys_set_before_it(smart: Any) -> None:
    def broken(cache: Any) -> None:
        cache.set("first", 1)
        raise RuntimeError("database is down")

    result = run(Warmer("broken", broken, None, ()), "smart")
    assert not result.ok
    assert isinstance(result.error, RuntimeError)
    assert result.keys_set == 1
    assert smart.get("first") == 1


def test_run_refuses_tags_on_a_backend_without_them(smart: Any) -> None:
    result = run(Warmer("t", noop, None, ("t",)), "default")
    assert isinstance(result.error, ImproperlyConfigured)
    assert "'default' (LocMemCache) does not support tags" in str(result.error)


def test_run_names_an_alias_missing_from_settings(smart: Any) -> None:
    result = run(Warmer("t", noop, ("nowhere",), ()), "nowhere")
    assert isinstance(result.error, ImproperlyConfigured)
    assert "cache alias 'nowhere' is not in settings.CACHES" in str(result.error)


def test_async_writes_are_counted_and_tagged(smart: Any) -> None:
    """aset/aadd/aset_many/aget_or_set carry the warmer's tags and count, as the sync ones."""
    from asgiref.sync import async_to_sync

    smart.set("present", 0)

    def fill(cache: Any) -> None:
        async def go() -> None:
            await cache.aset("a", 1)
            assert await cache.aadd("b", 2) is True
            assert await cache.aadd("a", 9) is False  # not written: not counted
            assert await cache.aset_many({"c": 3, "d": 4}) == []
            assert await cache.aget_or_set("e", 5, tags=["own"]) == 5
            assert await cache.aget_or_set("present", 7) == 0  # not counted
            assert await cache.aget("a") == 1  # reads go to the real cache

        async_to_sync(go)()

    result = run(Warmer("fill", fill, None, ("shared",)), "smart")
    assert result.ok, result.error
    assert result.keys_set == 5
    smart.invalidate_tags("own")
    assert sorted(smart.get_many(["a", "b", "c", "d", "e"])) == ["a", "b", "c", "d"]
    smart.invalidate_tags("shared")
    assert smart.get_many(["a", "b", "c", "d", "present"]) == {"present": 0}


def test_an_async_def_warmer_is_awaited_and_its_writes_counted(smart: Any) -> None:
    """It was called, never awaited, and reported as a success with 0 keys set."""

    async def fill(cache: Any) -> None:
        await cache.aset("async:1", 1)
        await cache.aset_many({"async:2": 2, "async:3": 3})

    result = run(Warmer("fill", fill, None, ("shared",)), "smart")
    assert result.ok, result.error
    assert result.keys_set == 3
    assert smart.get_many(["async:1", "async:2", "async:3"]) == {
        "async:1": 1,
        "async:2": 2,
        "async:3": 3,
    }
    smart.invalidate_tags("shared")
    assert smart.get_many(["async:1", "async:2", "async:3"]) == {}


def test_an_async_warmer_that_raises_is_a_failed_run(smart: Any) -> None:
    async def broken(cache: Any) -> None:
        await cache.aset("first", 1)
        raise RuntimeError("database is down")

    result = run(Warmer("broken", broken, None, ()), "smart")
    assert isinstance(result.error, RuntimeError)
    assert result.keys_set == 1


def _load_as(name: str, path: Path) -> Any:
    """Import the file at ``path`` as module ``name`` (a second import of one file)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_module_imported_under_two_names_registers_its_warmers_once(
    tmp_path: Path,
) -> None:
    """Django's double import (``proj.shop.cache_warmers`` and ``shop.cache_warmers``)
    raised "already registered"; a different function under the name still does."""
    source = tmp_path / "cache_warmers.py"
    source.write_text("def plain(cache):\n    pass\n\n\ndef other(cache):\n    pass\n")
    first = _load_as("shop.cache_warmers", source)
    second = _load_as("proj.shop.cache_warmers", source)
    reg = WarmerRegistry()
    reg.register("a.plain", first.plain)
    reg.register("a.plain", second.plain)
    assert len(reg) == 1
    with pytest.raises(ImproperlyConfigured, match="already registered by"):
        reg.register("a.plain", second.other)
    moved = tmp_path / "elsewhere.py"
    moved.write_text(source.read_text())
    with pytest.raises(ImproperlyConfigured, match="already registered by"):
        reg.register("a.plain", _load_as("elsewhere", moved).plain)


def test_callables_without_code_are_only_the_same_when_identical() -> None:
    import functools

    reg = WarmerRegistry()
    reg.register("p", functools.partial(noop))
    with pytest.raises(ImproperlyConfigured, match="already registered by"):
        reg.register("p", functools.partial(other))


def test_a_set_the_backend_refused_is_not_counted(tmp_path: Path) -> None:
    """Five 10 KB ``set()`` over MAX_ITEM_SIZE=4KB printed "5 keys set" (``set_many``'s
    refusals were already left out)."""
    config = {
        "default": {
            "BACKEND": "django_smartcache.backends.SmartCache",
            "LOCATION": f"refusing-{tmp_path.name}",
            "OPTIONS": {"MAX_ITEM_SIZE": "4KB"},
        }
    }
    big = "x" * 10_000

    def fill(cache: Any) -> None:
        for i in range(5):
            cache.set(f"set:{i}", big)
        cache.set("small", 1)

    async def afill(cache: Any) -> None:
        await cache.aset("aset:big", big)
        await cache.aset("aset:small", 1)

    with override_settings(CACHES=config):
        assert run(Warmer("fill", fill, None, ()), "default").keys_set == 1
        assert run(Warmer("afill", afill, None, ()), "default").keys_set == 1
        assert caches["default"].stats()["entries"] == 2
        caches["default"].clear()


def test_a_get_or_set_the_backend_refused_is_not_counted(tmp_path: Path) -> None:
    """A 10 KB ``get_or_set()`` over MAX_ITEM_SIZE=4KB was counted whenever the key was
    absent: "2 keys set" for 1 entry stored."""
    config = {
        "default": {
            "BACKEND": "django_smartcache.backends.SmartCache",
            "LOCATION": f"refusing-gos-{tmp_path.name}",
            "OPTIONS": {"MAX_ITEM_SIZE": "4KB"},
        }
    }
    big = "x" * 10_000

    def fill(cache: Any) -> None:
        assert cache.get_or_set("big", lambda: big) == big  # returned, not stored
        cache.get_or_set("small", 1)

    async def afill(cache: Any) -> None:
        assert await cache.aget_or_set("abig", lambda: big) == big
        await cache.aget_or_set("asmall", 1)

    with override_settings(CACHES=config):
        assert run(Warmer("fill", fill, None, ()), "default").keys_set == 1
        assert run(Warmer("afill", afill, None, ()), "default").keys_set == 1
        assert caches["default"].stats()["entries"] == 2
        caches["default"].clear()


def test_an_alias_given_twice_is_warmed_once(smart: Any) -> None:
    """``caches=["smart", "smart"]`` ran the warmer twice on it, as a repeated
    ``--cache`` does not: the aliases are kept once each, in order."""
    reg = WarmerRegistry()
    entry = reg.register("w", noop, caches=["smart", "default", "smart"])
    assert entry.caches == ("smart", "default")
    assert entry.aliases() == ("smart", "default")
    # The same registration, spelled without the repetition, is the same warmer.
    assert reg.register("w", noop, caches=["smart", "default"]) == entry


@pytest.mark.parametrize("alias", ["smart", "default"])
def test_writes_django_does_not_cache_are_not_counted(smart: Any, alias: str) -> None:
    """A timeout of 0 or less is Django's "do not cache" (the key is deleted, or stored
    already expired, and ``add`` returns True): four such writes printed "4 keys set"
    for nothing stored. None (forever) and the default timeout are stored."""

    def fill(cache: Any) -> None:
        cache.set("a", 1, timeout=0)
        cache.set_many({"b": 2, "c": 3}, timeout=-5)
        assert cache.add("d", 4, timeout=0)
        cache.get_or_set("e", 5, timeout=0)
        cache.set("kept", 1, timeout=None)
        cache.add("kept2", 2)

    async def afill(cache: Any) -> None:
        await cache.aset("aa", 1, timeout=0)
        await cache.aset_many({"ab": 2}, timeout=-1)
        await cache.aadd("ac", 3, timeout=0)
        await cache.aget_or_set("ad", 4, timeout=0)
        await cache.aset("akept", 1, timeout=60)

    assert run(Warmer("fill", fill, None, ()), alias).keys_set == 2
    assert run(Warmer("afill", afill, None, ()), alias).keys_set == 1
    stored = caches[alias].get_many(["a", "b", "c", "d", "e", "aa", "ab", "ac", "ad"])
    assert stored == {}
    assert caches[alias].get_many(["kept", "kept2", "akept"]) == {
        "kept": 1,
        "kept2": 2,
        "akept": 1,
    }


def test_a_cache_whose_default_timeout_is_0_stores_nothing_counted(
    tmp_path: Path,
) -> None:
    """``TIMEOUT: 0``: a write with the default timeout is not stored either."""
    config = {
        "default": {
            "BACKEND": "django_smartcache.backends.SmartCache",
            "LOCATION": f"timeout0-{tmp_path.name}",
            "TIMEOUT": 0,
        }
    }

    def fill(cache: Any) -> None:
        cache.set("a", 1)
        cache.set("b", 2, timeout=None)

    with override_settings(CACHES=config):
        assert run(Warmer("fill", fill, None, ()), "default").keys_set == 1
        assert caches["default"].get_many(["a", "b"]) == {"b": 2}
        caches["default"].clear()


def test_checks_name_a_warmer_whose_alias_is_missing_or_takes_no_tags(
    smart: Any,
) -> None:
    """A warmer for an alias not in CACHES, or with tags= for Django's LocMemCache,
    passed ``manage.py check`` and failed only when ``smartcache_warm`` ran at a
    deploy (ops probe)."""
    from django_smartcache.checks import check_warmers_reach_their_caches

    registered = {
        "test_warmers.check.missing": {"caches": ["nope"]},
        "test_warmers.check.untagged": {"caches": "default", "tags": ["t"]},
        "test_warmers.check.default": {"tags": ["t"]},  # the default alias: LocMem
        "test_warmers.check.fine": {"caches": ["smart"], "tags": ["t"]},
    }
    for name, options in registered.items():
        warmers.registry.register(name, noop, **options)
    try:
        found = {
            (m.obj, m.id)
            for m in check_warmers_reach_their_caches()
            if str(m.obj).startswith("test_warmers.check.")
        }
    finally:
        for name in registered:
            warmers.registry.unregister(name)
    assert found == {
        ("test_warmers.check.missing", "smartcache.W048"),
        ("test_warmers.check.untagged", "smartcache.W049"),
        ("test_warmers.check.default", "smartcache.W049"),
    }
