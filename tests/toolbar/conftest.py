"""Settings for the toolbar tests: the toolbar installed, our panel after the defaults."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.test import override_settings

PANEL = "django_smartcache.contrib.debug_toolbar.SmartCachePanel"


def toolbar_settings(tmp_path: Path) -> dict[str, Any]:
    """Everything the toolbar needs, with one alias per backend under a fresh location."""
    from debug_toolbar.settings import PANELS_DEFAULTS

    unique = tmp_path.name
    return {
        "INSTALLED_APPS": [
            *django_settings.INSTALLED_APPS,
            "django.contrib.staticfiles",
            "debug_toolbar",
        ],
        "STATIC_URL": "/static/",
        "MIDDLEWARE": ["debug_toolbar.middleware.DebugToolbarMiddleware"],
        "ROOT_URLCONF": "tests.toolbar.urls",
        "TEMPLATES": [
            {
                "BACKEND": "django.template.backends.django.DjangoTemplates",
                "APP_DIRS": True,
                "OPTIONS": {
                    "context_processors": ["django.template.context_processors.request"]
                },
            }
        ],
        "INTERNAL_IPS": ["127.0.0.1"],
        "DEBUG_TOOLBAR_CONFIG": {"IS_RUNNING_TESTS": False},
        "DEBUG_TOOLBAR_PANELS": [*PANELS_DEFAULTS, PANEL],
        "CACHES": {
            "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
            "smart": {
                "BACKEND": "django_smartcache.backends.SmartCache",
                "LOCATION": f"toolbar-smart-{unique}",
            },
            "tiny": {
                "BACKEND": "django_smartcache.backends.SmartCache",
                "LOCATION": f"toolbar-tiny-{unique}",
                "OPTIONS": {"MAX_MEMORY": "4KB", "POLICY": "lru"},
            },
            "multi": {
                "BACKEND": "django_smartcache.backends.MultiLevelCache",
                "LOCATION": str(tmp_path / "l2.sqlite3"),
                # No change-log poll within a test: a poll more than the default
                # 50 ms after the view's set (a loaded machine) can drop this
                # process's own write from L1 (when another connection, such as the
                # test thread's, wrote too), and the panel would then show the
                # following get as served by L2.
                "OPTIONS": {"COHERENCE_INTERVAL": 3600},
            },
        },
    }


@pytest.fixture
def toolbar_settings_on(tmp_path: Path) -> Iterator[dict[str, Any]]:
    values = toolbar_settings(tmp_path)
    # In three steps: apps are re-populated before the other overrides of the same
    # override_settings apply, so the toolbar's ready() must already see STATIC_URL;
    # and changing DEBUG_TOOLBAR_* imports the toolbar's models, so its app must
    # already be installed.
    first = {k: v for k, v in values.items() if not k.startswith("DEBUG_TOOLBAR")}
    installed = first.pop("INSTALLED_APPS")
    toolbar = {k: v for k, v in values.items() if k.startswith("DEBUG_TOOLBAR")}
    with (
        override_settings(**first),
        override_settings(INSTALLED_APPS=installed),
        override_settings(**toolbar),
    ):
        yield values
    from django.core.cache import caches

    for cache in caches.all(initialized_only=True):
        cache.close()
