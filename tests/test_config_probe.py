"""Wrong settings found by an outside probe: each one an ``ImproperlyConfigured`` naming
the option, never a ``TypeError`` from deep inside (which named nothing)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from django.core.cache.backends.base import BaseCache
from django.core.exceptions import ImproperlyConfigured

from django_smartcache.backends import MultiLevelCache, SmartCache, SQLiteCache

SMART = "django_smartcache.backends.SmartCache"


def test_a_level_that_is_no_cache_backend_is_refused_by_name() -> None:
    # LEVELS[0] was refused (not in-process); LEVELS[1] was built: TypeError
    # "expected at most 1 arguments, got 2" from OrderedDict(location, params).
    levels = [{"BACKEND": SMART}, {"BACKEND": "collections.OrderedDict"}]
    with pytest.raises(
        ImproperlyConfigured,
        match=re.escape("OPTIONS['LEVELS'][1]: BACKEND 'collections.OrderedDict'"),
    ):
        MultiLevelCache("", {"OPTIONS": {"LEVELS": levels}})
    # Not a class at all (a function): refused the same way, not a TypeError from
    # issubclass().
    levels[1] = {"BACKEND": "os.path.join"}
    with pytest.raises(ImproperlyConfigured, match="is not a cache backend"):
        MultiLevelCache("", {"OPTIONS": {"LEVELS": levels}})


def _sqlite(location: str, params: dict[str, Any]) -> BaseCache:
    return SQLiteCache(location, params)


def _multi(location: str, params: dict[str, Any]) -> BaseCache:
    return MultiLevelCache(location, params)


def _smart(location: str, params: dict[str, Any]) -> BaseCache:
    return SmartCache(location, params)


@pytest.mark.parametrize("build", [_sqlite, _multi, _smart])
@pytest.mark.parametrize("options", [{1: 2}, {1: 2, "A": 3}])
def test_an_options_key_that_is_no_string_is_named(
    build: Any, options: dict[Any, Any], tmp_path: Path
) -> None:
    # SQLiteCache: "sequence item 0: expected str instance, int found"; mixed keys,
    # all three: "'<' not supported between instances of 'str' and 'int'".
    with pytest.raises(ImproperlyConfigured, match="unknown") as info:
        build(str(tmp_path / "c.sqlite3"), {"OPTIONS": options})
    assert "1" in str(info.value)
    if "A" in options:
        assert "A" in str(info.value)
