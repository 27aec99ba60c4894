"""A MultiLevelCache level whose own delete_pattern() reads Redis's glob (django-redis's
ShardClient, which has no one redis-py client to SCAN with). Real redis-server."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.mark.redis
def test_a_django_redis_shard_level_takes_only_what_its_glob_reads_the_same(
    redis_url: str, make_cache: Any
) -> None:
    """django-redis's ShardClient has no one redis-py client, so its own
    delete_pattern() was given our glob, which it reads as Redis's (on bytes, "^"
    negating): "[!a]*" deleted the 7 keys starting with "a" and left the intended
    ones; a regex raised a TypeError (pattern probe). Literals and "*" are passed
    exactly now; anything else is refused before any key is deleted."""
    level = {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": [redis_url],
        "OPTIONS": {"CLIENT_CLASS": "django_redis.client.ShardClient"},
    }
    cache = make_cache(level)
    cache.set_many({"ab": 1, "ba": 2, "a*b": 3, "é": 4})
    for refused, regex in (("[!a]*", False), ("??", False), ("^a", True)):
        with pytest.raises(NotImplementedError, match="Redis's own glob"):
            cache.delete_pattern(refused, regex=regex)
    assert cache.get_many(["ab", "ba", "a*b", "é"]) == {
        "ab": 1,
        "ba": 2,
        "a*b": 3,
        "é": 4,
    }
    assert cache.delete_pattern("a\\**") == 1  # the literal "a*" then anything
    cache.levels[0].clear()
    assert cache.get_many(["ab", "ba", "a*b"]) == {"ab": 1, "ba": 2}


def test_a_locmem_level_counts_only_live_keys(make_cache: Any) -> None:
    """LocMemCache's delete() answers True for an entry expired but not yet culled:
    two expired keys and one live one counted 3 (the other backends said 1)."""
    import time

    cache = make_cache({"BACKEND": "django.core.cache.backends.locmem.LocMemCache"})
    cache.set("e:1", 1, 0.05)
    cache.set("e:2", 2, 0.05)
    cache.set("e:3", 3)
    time.sleep(0.1)
    assert cache.delete_pattern("e:*") == 1
