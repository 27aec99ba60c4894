"""delete_pattern() on SmartCache: globs and regexes on callers' keys, prefixes and versions."""

from __future__ import annotations

from itertools import count

import pytest

from django_smartcache.backends import SmartCache

_names = count()


def make(**params) -> SmartCache:
    cache = SmartCache(f"patterns-{next(_names)}", params)
    cache.clear()
    return cache


def test_glob_deletes_matching_keys_and_returns_the_count():
    cache = make()
    cache.set_many({"user:42:name": 1, "user:42:mail": 2, "user:420:name": 3, "x": 4})
    assert cache.delete_pattern("user:42:*") == 2
    assert cache.get_many(["user:42:name", "user:42:mail", "user:420:name", "x"]) == {
        "user:420:name": 3,
        "x": 4,
    }
    assert cache.delete_pattern("user:42:*") == 0
    assert cache.stats()["deletes"] == 2


def test_regex_searches_the_callers_key():
    cache = make()
    cache.set_many({"order-1": 1, "order-22": 2, "order-x": 3, "reorder-5": 4})
    assert cache.delete_pattern(r"^order-\d+$", regex=True) == 2
    assert sorted(cache.get_many(["order-1", "order-22", "order-x", "reorder-5"])) == [
        "order-x",
        "reorder-5",
    ]


def test_key_prefix_and_versions_are_honoured():
    one = SmartCache("patterns-shared", {"KEY_PREFIX": "one"})
    two = SmartCache("patterns-shared", {"KEY_PREFIX": "two", "VERSION": 3})
    one.clear()
    one.set("k:1", 1)
    one.set("k:1", 1, version=2)
    two.set("k:1", 1)
    assert one.delete_pattern("k:*") == 1  # version 1, prefix "one" only
    assert one.get("k:1", version=2) == 1 and two.get("k:1") == 1
    assert one.delete_pattern("k:*", version=2) == 1
    assert two.delete_pattern("k:*", version=1) == 0
    assert two.delete_pattern("k:*") == 1


def test_expired_keys_are_not_counted_and_tag_versions_are_never_matched():
    cache = make()
    cache.set("gone", 1, timeout=-1)
    cache.set("a", 1, tags=["t"])
    assert cache.delete_pattern("*") == 1
    # The tag's version key survived, so the tag still works.
    cache.set("b", 2, tags=["t"])
    cache.invalidate_tags("t")
    assert cache.get("b") is None


def _suffix_key(key, key_prefix, version):
    return f"{key_prefix}|v{version}|{key}"


def _hashing_key(key, key_prefix, version):
    return f"{key_prefix}:{version}:{len(key)}:{key[::-1]}"


def test_custom_key_function_of_the_head_plus_key_form_works():
    cache = make(KEY_FUNCTION=_suffix_key, KEY_PREFIX="p")
    cache.set_many({"user:1": 1, "user:2": 2, "other": 3})
    assert cache.delete_pattern("user:*") == 2
    assert cache.get("other") == 3


def test_a_key_function_that_cannot_be_inverted_raises_clearly():
    cache = make(KEY_FUNCTION=_hashing_key)
    with pytest.raises(ValueError, match="KEY_FUNCTION"):
        cache.delete_pattern("user:*")
