"""The tag-version mechanism on Django's LocMemCache and RedisCache (real redis-server)."""

from __future__ import annotations

import asyncio
import pickle
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.cache import caches
from django.test import override_settings

from django_smartcache import invalidate_tags
from django_smartcache.core.tags import InvalidTag, Tagged, TagIndex, new_version
from django_smartcache.signals import tags_invalidated
from django_smartcache.tagging import (
    _MISSING,
    TaggingMixin,
    VersionKeys,
    expand_tags,
)
from tests.fixtures.tagged_caches import tagged_config

LOCMEM = "tests.testapp.backends.TaggedLocMemCache"
REDIS = "tests.testapp.backends.TaggedRedisCache"


def _caches(backend: str, location: str, **options: Any) -> dict[str, Any]:
    return {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "tagged": {"BACKEND": backend, "LOCATION": location, **options},
    }


SMART = "django_smartcache.backends.SmartCache"


@pytest.fixture(
    params=[
        "locmem",
        "smart",
        "sqlite",
        "multilevel",
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("multilevel-redis", marks=pytest.mark.redis),
    ]
)
def cache(request: pytest.FixtureRequest) -> Iterator[Any]:
    if request.param == "redis":
        config = _caches(REDIS, request.getfixturevalue("redis_url"))
    elif request.param == "smart":
        config = _caches(SMART, f"tagging-{request.node.name}")
    elif request.param == "locmem":
        config = _caches(LOCMEM, f"tagging-{request.node.name}")
    else:
        config = {
            "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
            "tagged": tagged_config(request, request.param),
        }
    with override_settings(CACHES=config):
        c = caches["tagged"]
        c.clear()
        yield c
        c.clear()
        del caches["tagged"]  # frees its SQLite connections (see tagged_caches.py)


def test_tagged_value_round_trips_and_untagged_is_untouched(cache: Any) -> None:
    cache.set("a", {"x": 1}, tags=["t1", "t2"])
    cache.set("plain", 5)
    assert cache.get("a") == {"x": 1}
    assert cache.get("plain") == 5
    assert cache.incr("plain") == 6  # untagged values are stored as they are
    assert cache.has_key("a")


def test_invalidating_a_tag_misses_only_its_entries(cache: Any) -> None:
    cache.set("a", 1, tags=["t1"])
    cache.set("b", 2, tags=["t2"])
    cache.set("ab", 3, tags=["t1", "t2"])
    cache.invalidate_tags("t1")
    assert cache.get("a") is None
    assert cache.get("ab", "gone") == "gone"
    assert cache.get("b") == 2
    assert not cache.has_key("a")
    assert cache.get_many(["a", "b", "ab"]) == {"b": 2}


def test_add_set_many_get_or_set_take_tags(cache: Any) -> None:
    assert cache.add("k", "v1", tags=["t"])
    assert not cache.add("k", "v2", tags=["t"])
    cache.set_many({"m1": 1, "m2": 2}, tags=["t"])
    assert cache.get_or_set("g", lambda: "computed", tags=["t"]) == "computed"
    assert cache.get_or_set("g", lambda: "again", tags=["t"]) == "computed"
    cache.invalidate_tags("t")
    assert cache.get_many(["k", "m1", "m2", "g"]) == {}
    # A stale entry does not block add(), and get_or_set() computes again.
    assert cache.add("k", "v3", tags=["t"])
    assert cache.get("k") == "v3"
    assert cache.get_or_set("g", lambda: "again", tags=["t"]) == "again"


def test_stale_entries_are_deleted_when_read(cache: Any) -> None:
    cache.set("a", "x" * 1000, tags=["t"])
    cache.invalidate_tags("t")
    assert cache.get("a") is None
    assert cache._raw_get("a") is _MISSING  # its bytes are freed, not just hidden


def test_an_add_over_a_stale_occupant_keeps_a_value_written_since(cache: Any) -> None:
    """``add`` deletes a stale occupant to take the key: only that envelope."""
    cache.set("k", "old", tags=["t"])
    occupant = cache._raw_get("k")
    cache.invalidate_tags("t")
    assert cache.add("k", "added", tags=["t"])  # over the stale occupant: it wins
    assert cache.get("k") == "added"
    cache.invalidate_tags("t")
    cache.set("k", "fresh", tags=["t"])  # another writer, between read and delete
    cache._clear_stale_occupant("k", occupant, None)
    assert cache.get("k") == "fresh"


def test_dropping_a_stale_read_keeps_a_value_written_since(cache: Any) -> None:
    """A reader judged the envelope it read stale; before it deleted the key, another
    writer stored a fresh value there. Deleting by key lost that write for everyone:
    only the envelope read (its write id) is deleted."""
    cache.set("k", "old", tags=["t"])
    read = cache._raw_get("k")
    cache.invalidate_tags("t")
    cache.set("k", "fresh", tags=["t"])  # the other writer, between read and drop
    cache._drop_stale({"k": read}, None)
    assert cache.get("k") == "fresh"
    # The envelope read is still there: dropped.
    cache.set("j", "old", tags=["t"])
    read = cache._raw_get("j")
    cache.invalidate_tags("t")
    cache._drop_stale({"j": read}, None)
    assert cache.get("j") is None


def test_invalidation_during_compute_never_stores_a_valid_stale_value(
    cache: Any,
) -> None:
    def compute() -> str:
        cache.invalidate_tags("t")  # a write lands while the value is computed
        return "computed from old data"

    assert cache.get_or_set("k", compute, tags=["t"]) == "computed from old data"
    assert cache.get("k") is None


def test_set_takes_the_versions_read_before_computing(cache: Any) -> None:
    before = cache.tag_versions(["t", "model:app.m#1"])
    assert set(before) == {"t", "model:app.m#1", "model:app.m#*"}  # expanded
    cache.set("k", "computed", tags=before)
    assert cache.get("k") == "computed"
    cache.invalidate_tags("model:app.m#*")
    assert cache.get("k") is None
    before = cache.tag_versions(["t"])
    cache.invalidate_tags("t")  # a write lands while the value is computed
    cache.set("k", "computed from old data", tags=before)
    assert cache.get("k") is None
    with pytest.raises(TypeError, match="tag_versions"):
        cache.set("k", 1, tags={"t": 1})
    with pytest.raises(InvalidTag):
        cache.set("k", 1, tags={"bad tag": "v"})


def test_lost_version_key_never_revalidates(cache: Any) -> None:
    cache.set("a", 1, tags=["t"])
    cache.delete(cache._version_key("t"))  # evicted, expired or flushed
    assert cache.get("a") is None
    cache.set("b", 2, tags=["t"])  # creates a new version for "t"
    assert cache.get("a") is None
    assert cache.get("b") == 2


def test_row_tag_depends_on_all_rows_tag(cache: Any) -> None:
    cache.set("r1", 1, tags=["model:x.y#1"])
    cache.set("r2", 2, tags=["model:x.y#2"])
    cache.set("list", [1, 2], tags=["model:x.y"])
    cache.invalidate_tags("model:x.y#1")
    assert cache.get_many(["r1", "r2", "list"]) == {"r2": 2, "list": [1, 2]}
    cache.invalidate_tags("model:x.y#*")
    assert cache.get_many(["r2", "list"]) == {"list": [1, 2]}
    assert expand_tags(["a#1", "b", "a#*"]) == ("a#1", "a#*", "b")


def test_a_get_checks_every_recorded_version(cache: Any) -> None:
    cache.set("r1", 1, tags=["model:x.y#1"])
    cache.set("r2", 2, tags=["model:x.y#2"])
    assert (cache.get("r1"), cache.get("r2")) == (1, 2)
    cache.delete(cache._version_key("model:x.y#*"))  # the implied tag's version lost
    assert cache.get("r1") is None
    cache.set("r3", 3, tags=["model:x.y#3"])
    assert cache.get("r3") == 3
    cache.invalidate_tags("model:x.y#*")  # present but newer
    assert cache.get("r3") is None
    assert cache.has_key("r2") is False


def test_a_hit_reads_versions_under_the_current_tag_key_prefix(cache: Any) -> None:
    cache.set("a", 1, tags=["t"])
    assert cache.get("a") == 1
    with override_settings(SMARTCACHE={"TAG_KEY_PREFIX": "other.tag:"}):
        assert cache.get("a") is None  # no version of "t" under that prefix


def test_version_keys_are_made_once_and_stay_bounded() -> None:
    made: list[str] = []

    def make(key: str) -> str:
        made.append(key)
        return key.upper()

    keys = VersionKeys(make, limit=2)
    assert keys(("a", "b#1")) == ("SMARTCACHE.TAG:A", "SMARTCACHE.TAG:B#1")
    assert keys(("a", "b#1")) == ("SMARTCACHE.TAG:A", "SMARTCACHE.TAG:B#1")
    assert len(made) == 2
    for tag in "cde":
        keys((tag,))
    assert len(keys._made) <= 2


def test_key_dependencies_are_transitive(cache: Any) -> None:
    cache.set("base", 1, tags=["t"])
    cache.set("mid", 2, depends_on=["base"])
    cache.set("top", 3, depends_on=["mid"])
    cache.set("on_plain", 4, depends_on=["plain"])
    assert cache.get_many(["mid", "top", "on_plain"]) == {
        "mid": 2,
        "top": 3,
        "on_plain": 4,
    }
    cache.set("plain", "now exists")
    assert cache.get("on_plain") is None  # the dependency changed (appeared)
    cache.invalidate_tags("t")  # invalidates base, so mid and top
    assert cache.get_many(["base", "mid", "top"]) == {}
    cache.set("base", 10, tags=["t"])
    cache.set("mid", 20, depends_on=["base"])
    cache.set("top", 30, depends_on=["mid"])
    cache.set("base", 11, tags=["t"])  # overwriting a dependency invalidates dependants
    assert cache.get_many(["base", "mid", "top"]) == {"base": 11}


def test_module_level_invalidation_reaches_every_tagging_alias(redis_url: str) -> None:
    config = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "one": {"BACKEND": LOCMEM, "LOCATION": "one"},
        "two": {"BACKEND": REDIS, "LOCATION": redis_url},
    }
    with override_settings(CACHES=config):
        for alias in ("one", "two"):
            caches[alias].set("k", alias, tags=["shared"])
        caches["default"].set("k", "untouched")
        invalidate_tags("shared")
        assert caches["one"].get("k") is None
        assert caches["two"].get("k") is None
        assert caches["default"].get("k") == "untouched"
        caches["one"].set("k", "one", tags=["shared"])
        caches["two"].set("k", "two", tags=["shared"])
        invalidate_tags("shared", using="two")
        assert caches["one"].get("k") == "one"
        assert caches["two"].get("k") is None
        with pytest.raises(ValueError, match="does not support tags"):
            invalidate_tags("shared", using="default")


def test_signal_reports_tags_and_reason(cache: Any) -> None:
    seen: list[dict[str, Any]] = []

    def receiver(**kwargs: Any) -> None:
        seen.append(kwargs)

    tags_invalidated.connect(receiver)
    try:
        cache.invalidate_tags("a", "b", reason="because")
    finally:
        tags_invalidated.disconnect(receiver)
    assert [(s["tags"], s["reason"], s["on_commit"], s["cache"]) for s in seen] == [
        (("a", "b"), "because", False, cache)
    ]


@pytest.mark.parametrize("bad", ["", "has space", "x" * 201, 5, "tab\t"])
def test_bad_tag_names_are_refused(cache: Any, bad: Any) -> None:
    with pytest.raises(InvalidTag):
        cache.set("k", 1, tags=[bad])
    with pytest.raises(InvalidTag):
        cache.invalidate_tags(bad)


def test_async_api_takes_tags(cache: Any) -> None:
    async def scenario() -> list[Any]:
        await cache.aset("a", 1, tags=["t"])
        await cache.aadd("b", 2, tags=["t"])
        await cache.aset_many({"c": 3}, tags=["t"])
        got = [
            await cache.aget_or_set("d", 4, tags=["t"]),
            await cache.aget_many(["a", "b", "c", "d"]),
        ]
        await cache.ainvalidate_tags("t")
        got += [await cache.aget("a"), await cache.ahas_key("c")]
        return got

    assert asyncio.run(scenario()) == [4, {"a": 1, "b": 2, "c": 3, "d": 4}, None, False]


def test_invalidation_cost_does_not_depend_on_tagged_keys(cache: Any) -> None:
    """O(1): the calls invalidation makes on the backend are the same for 1 and 2,000 keys."""
    calls: list[str] = []

    mro = type(cache).__mro__
    raw = mro[mro.index(TaggingMixin) + 1]  # the class below the mixin

    def count(method: str) -> Any:
        original = getattr(raw, method)  # the backend's own

        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            calls.append(method)
            return original(self, *args, **kwargs)

        return wrapper

    cache.set("one", 1, tags=["small"])
    cache.set_many({f"k{i}": i for i in range(2000)}, tags=["big"])
    store = getattr(cache, "_store", None)  # SmartCache writes versions to its store
    costs = []
    for tag in ("small", "big"):
        calls.clear()
        with pytest.MonkeyPatch.context() as mp:
            for method in (
                "set",
                "set_many",
                "delete",
                "delete_many",
                "get",
                "get_many",
                "add",
            ):
                mp.setattr(raw, method, count(method))
            if store is not None:
                for method in ("set_many", "add", "invalidate_tags"):
                    original = getattr(store, method)
                    mp.setattr(
                        store,
                        method,
                        lambda *a, _m=method, _o=original, **k: (
                            calls.append(f"store.{_m}"),
                            _o(*a, **k),
                        )[1],
                    )
            cache.invalidate_tags(tag)
        costs.append(sorted(calls))
    assert costs[0] == costs[1] and costs[0]
    assert cache.get("k1999") is None


def test_tag_bookkeeping_is_bounded_by_the_backend_budget() -> None:
    """Churning 20,000 distinct tags through a 500-entry LocMem keeps it at 500 entries,
    and eviction of version keys never turns a stale entry valid."""
    config = _caches(LOCMEM, "churn", OPTIONS={"MAX_ENTRIES": 500, "CULL_FREQUENCY": 4})
    with override_settings(CACHES=config):
        cache = caches["tagged"]
        cache.clear()
        for i in range(20_000):
            cache.set(f"k{i % 300}", i, tags=[f"row#{i}"])
            if i % 7 == 0:
                cache.invalidate_tags(f"row#{i}")
                assert cache.get(f"k{i % 300}") is None
        assert len(cache._cache) <= 500
        for i in range(19_700, 20_000):
            value = cache.get(f"k{i % 300}")
            assert value in (None, i) and (value is None or i % 7)


@pytest.mark.redis
def test_tag_bookkeeping_is_bounded_in_redis_with_maxmemory(private_redis: Any) -> None:
    """With maxmemory + allkeys-lru, 5,000 churning tags keep Redis at its limit."""
    import redis

    client = redis.Redis.from_url(private_redis.url)
    limit = int(client.info("memory")["used_memory"]) + 256 * 1024
    client.config_set("maxmemory", str(limit))
    client.config_set("maxmemory-policy", "allkeys-lru")
    with override_settings(CACHES=_caches(REDIS, private_redis.url)):
        cache = caches["tagged"]
        for i in range(5_000):
            cache.set(f"k{i % 100}", "v" * 100, tags=[f"user#{i}", "all"])
        # Redis evicts once over the limit, so it may sit a few bytes above it.
        assert int(client.info("memory")["used_memory"]) <= limit * 1.05
        assert int(client.info("stats")["evicted_keys"]) > 0
        assert client.dbsize() < 5_000
        cache.invalidate_tags("all")
        assert cache.get_many([f"k{i}" for i in range(100)]) == {}


def test_envelope_pickles_and_compares() -> None:
    env = Tagged("v", {"a": "1"}, {"d": "w"})
    back = pickle.loads(pickle.dumps(env))
    assert (back.value, back.versions, back.deps, back.wid) == (
        "v",
        {"a": "1"},
        {"d": "w"},
        env.wid,
    )
    assert (
        back.is_current({"a": "1"})
        and not back.is_current({"a": "2"})
        and not back.is_current({})
    )
    assert len({new_version() for _ in range(1000)}) == 1000


def test_tag_index_forgets_keys_and_tags() -> None:
    index = TagIndex()
    index.add("k1", ["a", "b"])
    index.add("k2", ["a"])
    keys, _ = index.detach("a")
    assert keys == {"k1", "k2"}
    for key in keys:
        index.discard(key)
    assert len(index) == 0 and index.tag_count == 0
    index.add("k3", ["c"])
    index.discard("k3")
    assert len(index) == 0 and index.tag_count == 0


def test_an_add_over_an_occupied_bad_key_warns_once(cache: Any) -> None:
    """As Django's backends: one CacheKeyWarning per call (reading the occupant back
    used to warn a second time). Our backends only: the test-only mixins over
    Django's LocMem and Redis make keys with Django's own, unsilenced, path."""
    import warnings

    if type(cache).__module__.startswith("tests."):
        pytest.skip("a test-only mixin over a Django backend")

    from django.core.cache import CacheKeyWarning

    bad = "key with spaces"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cache.set(bad, 1, tags=["t"])
    for tags in (None, ["t"]):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert cache.add(bad, 2, tags=tags) is False
        # (Only key warnings: a ResourceWarning of a collected socket may land here.)
        keys = [w.category for w in caught if issubclass(w.category, CacheKeyWarning)]
        assert keys == [CacheKeyWarning]


def test_smartcache_drops_a_version_key_with_the_last_entry_of_its_tag(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One tag per entry (``user:<id>``) with a timeout: the version keys outlived
    their entries until the policy evicted them, 42% of a 16 MB budget in an outside
    soak. In SmartCache a version key now leaves with the last entry carrying its tag
    (a tag carried by any entry keeps it)."""
    from django_smartcache.core import store

    monkeypatch.setattr(store, "ORPHAN_GRACE", 0.0)  # (1 s: see the next test)
    with override_settings(CACHES=_caches(SMART, "tagging-orphans")):
        cache = caches["tagged"]
        try:
            for i in range(3):
                cache.set(f"page:{i}", "p", tags=[f"user:{i}", "site"])
            assert set(cache.current_tag_versions(["user:0", "user:1", "site"])) == {
                "user:0",
                "user:1",
                "site",
            }
            cache.delete_many(["page:0", "page:1"])
            cache.set("other", 1)  # writes do the work: this one starts the grace,
            cache.set("other", 2)  # this one ends it
            assert set(cache.current_tag_versions(["user:0", "user:1", "site"])) == {
                "site"  # page:2 still carries it
            }
            assert cache.get("page:2") == "p"
            cache.set("page:0", "again", tags=["user:0"])  # a new version: valid
            assert cache.get("page:0") == "again"
        finally:
            cache.clear()
            del caches["tagged"]


@pytest.mark.parametrize("how", ["delete", "expiry"])
def test_smartcache_keeps_the_version_a_writer_just_read(how: str) -> None:
    """Reviewer's reproducer: the version key of a tag whose last entry had just left
    was dropped by the next write, the very write that carried the tag again (it had
    read the version first): the value read back as a miss. A tag's key now leaves
    ORPHAN_GRACE after, or ORPHAN_HOLD after a version read since."""
    import time

    with override_settings(CACHES=_caches(SMART, f"tagging-grace-{how}")):
        cache = caches["tagged"]
        try:
            cache.set("a", 1, tags=["t"], timeout=0.05 if how == "expiry" else None)
            if how == "delete":
                cache.delete("a")
            else:
                time.sleep(0.1)
            assert cache.get_or_set("a", 2, tags=["t"]) == 2
            assert cache.get("a") == 2
            cache.delete("a")
            cache.set("a", 3, tags=["t"])
            assert cache.get("a") == 3
        finally:
            cache.clear()
            del caches["tagged"]


def test_a_tagged_write_to_an_alias_tag_caches_leaves_out_is_warned_about_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With ``TAG_CACHES = ["default"]``, tagged entries stored in another alias (by
    ``cache.set(..., tags=)`` or ``@cached(using=...)``) were accepted without a word
    and never invalidated by model writes (outside probe). Each such alias is named
    once, at its first tagged write; a listed alias, an untagged write, nothing."""
    from django_smartcache import cached, tagging

    config = {
        "default": {"BACKEND": SMART, "LOCATION": "reached"},
        "pages": {"BACKEND": SMART, "LOCATION": "unreached-pages"},
        "fragments": {"BACKEND": SMART, "LOCATION": "unreached-fragments"},
    }
    with override_settings(CACHES=config, SMARTCACHE={"TAG_CACHES": ["default"]}):

        @cached(using="fragments", tags=["books"], name="tests.unreached")
        def fragment() -> int:
            return 1

        warned = getattr(tagging, "_unreached_warned", set())  # (process-wide)
        warned.difference_update({"pages", "fragments"})
        with caplog.at_level("WARNING", logger="django_smartcache"):
            caches["default"].set("a", 1, tags=["books"])
            caches["pages"].set("plain", 1)
            # (This thread's: another test's listener thread may log meanwhile.)
            assert not [r for r in caplog.records if r.thread == threading.get_ident()]
            for key in ("b", "c"):
                caches["pages"].set(key, 1, tags=["books"])
            caches["pages"].set_many({"d": 1}, tags=caches["pages"].tag_versions(["x"]))
            fragment()
    named = [r.message for r in caplog.records if "TAG_CACHES" in r.message]
    assert len(named) == 2
    assert "cache 'pages' stores tagged entries" in named[0]
    assert "cache 'fragments' stores tagged entries" in named[1]
    assert "Add 'pages' to TAG_CACHES" in named[0]


def test_tagged_writes_without_the_app_installed_warn_once(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without ``"django_smartcache"`` in ``INSTALLED_APPS`` no receiver is connected:
    saves invalidate nothing and tagged entries are served until their timeout. That
    was silent (outside probe: a new user's trap); the first tagged write in the
    process now says so, once. Judged by the receivers (review): an override of
    INSTALLED_APPS in a test leaves them connected, and says nothing."""
    from django.conf import settings

    from django_smartcache import invalidation, tagging

    config = {"default": {"BACKEND": SMART, "LOCATION": "app-missing"}}
    others = [app for app in settings.INSTALLED_APPS if "smartcache" not in app]
    monkeypatch.setattr(tagging, "_app_checked", False)
    with (
        override_settings(CACHES=config, INSTALLED_APPS=others),
        caplog.at_level("WARNING", logger="django_smartcache"),
    ):
        caches["default"].set("a", 1, tags=["books"])  # receivers still connected
    assert not [r for r in caplog.records if "INSTALLED_APPS" in r.message]
    monkeypatch.setattr(tagging, "_app_checked", False)
    invalidation.disconnect()  # what a project without the app has
    try:
        with (
            override_settings(CACHES=config),
            caplog.at_level("WARNING", logger="django_smartcache"),
        ):
            caches["default"].set("b", 1, tags=["books"])
            caches["default"].set("c", 1, tags=["authors"])
    finally:
        invalidation.connect()
    named = [r.message for r in caplog.records if "INSTALLED_APPS" in r.message]
    assert len(named) == 1
    assert "no receiver is connected" in named[0]


def test_an_alias_a_listed_multilevel_cache_uses_as_a_level_is_not_warned_about(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """A tagged write straight to ``caches["l2"]``, the shared level of the listed
    MultiLevelCache ``ml``, was warned about as never invalidated, while invalidating
    ``ml`` bumps the same version keys in that level (review of 8b87550)."""
    from django_smartcache import tagging

    config = {
        "default": {"BACKEND": SMART, "LOCATION": "reached-default"},
        "l2": {
            "BACKEND": "django_smartcache.backends.SQLiteCache",
            "LOCATION": str(tmp_path / "l2.sqlite3"),
        },
        "ml": {
            "BACKEND": "django_smartcache.backends.MultiLevelCache",
            "OPTIONS": {"LEVELS": [{"BACKEND": SMART}, "l2"]},
        },
    }
    with override_settings(CACHES=config, SMARTCACHE={"TAG_CACHES": ["default", "ml"]}):
        tagging._unreached_warned.discard("l2")
        try:
            with caplog.at_level("WARNING", logger="django_smartcache"):
                caches["l2"].set("k", "v", tags=["books"])
            assert not [r for r in caplog.records if "TAG_CACHES" in r.message]
            invalidate_tags("books")
            assert caches["l2"].get("k") is None  # reached indeed
        finally:
            for alias in ("ml", "l2"):
                caches[alias].close()
