"""Command defects an outside probe found: each test fails without its fix."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.cache import caches
from django.core.management import CommandError, call_command
from django.test import override_settings

SMART = "django_smartcache.backends.SmartCache"
FILES = "django.core.cache.backends.filebased.FileBasedCache"


def run(*args: str, **options: Any) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err, no_color=True, **options)
    return out.getvalue(), err.getvalue()


@pytest.fixture
def mlfile(tmp_path: Path) -> Iterator[Any]:
    """``mlfile``: a MultiLevelCache whose L2 (FileBasedCache) cannot list its keys."""
    config = {
        "default": {"BACKEND": SMART, "LOCATION": f"probe-{tmp_path.name}"},
        "mlfile": {
            "BACKEND": "django_smartcache.backends.MultiLevelCache",
            "OPTIONS": {
                "LEVELS": [
                    {"BACKEND": SMART},
                    {"BACKEND": FILES, "LOCATION": str(tmp_path / "files")},
                ]
            },
        },
    }
    with override_settings(CACHES=config):
        yield caches["mlfile"]
        for cache in caches.all():
            cache.clear()
            cache.close()


def test_a_pattern_alias_that_cannot_delete_patterns_fails_before_any_tag_goes(
    mlfile: Any,
) -> None:
    mlfile.set("k", "v", timeout=300, tags=["books"])
    with pytest.raises(CommandError, match="cannot list its keys"):
        run("smartcache_invalidate", "tag:books", pattern="x*", caches=["mlfile"])
    assert mlfile.get("k") == "v"
