"""FileBasedCache and DatabaseCache levels: their entries' TTL is read, not guessed.

``incr`` on them is Django's get-then-set, whose ``set`` took the level's own TIMEOUT
(300 s): a key that never expired got 300 s, one with 30 s left got 300 s. A promotion
from them into L1 lasted ``L1_MAX_TTL`` whatever the level had left.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.management import call_command

from django_smartcache.backends._level_ttl import _NO_EXPIRY, _remaining_ttls
from django_smartcache.backends.multilevel import MultiLevelCache
from tests.backends.test_multilevel import SMART, _unique

TABLE = "smartcache_test_level_ttl"


@pytest.fixture
def file_level(tmp_path: Any) -> dict[str, Any]:
    return {
        "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
        "LOCATION": str(tmp_path / "files"),
    }


@pytest.fixture
def database_level(transactional_db: Any) -> Iterator[dict[str, Any]]:
    call_command("createcachetable", TABLE, verbosity=0)
    yield {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": TABLE}


@pytest.fixture(params=["file", "database"])
def over(request: pytest.FixtureRequest) -> Iterator[MultiLevelCache]:
    level = request.getfixturevalue(f"{request.param}_level")
    cache = MultiLevelCache(
        "",
        {
            "TIMEOUT": None,
            "KEY_PREFIX": _unique(),
            "OPTIONS": {
                "LEVELS": [{"BACKEND": SMART, "LOCATION": _unique()}, level],
                "L1_MAX_TTL": 1000,
                "COHERENCE": "none",
            },
        },
    )
    yield cache
    for health in cache._health:
        health.stop()


def _left(cache: MultiLevelCache, key: str) -> Any:
    made = cache.make_key(key)
    return _remaining_ttls(cache.levels[1], [made]).get(made)


def test_incr_keeps_the_entrys_ttl(over: MultiLevelCache) -> None:
    over.set("forever", 1)  # TIMEOUT None
    over.set("short", 1, 30)
    assert _left(over, "forever") is _NO_EXPIRY
    assert 28 < _left(over, "short") <= 30
    assert over.incr("forever") == 2 and over.incr("short", 5) == 6
    assert over.decr("short") == 5
    assert _left(over, "forever") is _NO_EXPIRY
    assert 28 < _left(over, "short") <= 30  # not the level's 300 s
    with pytest.raises(ValueError):
        over.incr("absent")


def test_a_promotion_keeps_what_the_level_has_left(over: MultiLevelCache) -> None:
    over.set("k", "v", 3)
    over.levels[0].clear()  # only the lower level holds it now
    assert over.get("k") == "v"  # promoted with ~3 s left, not L1_MAX_TTL (1000 s)
    time.sleep(3.2)
    assert over.get("k") is None
