"""Settings for the test suite: small, explicit, one alias per backend under test."""

from __future__ import annotations

from typing import Any

SECRET_KEY = "django-smartcache-tests"
DEBUG = False
USE_TZ = True

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django_smartcache",
    "tests.django_conformance",
    "tests.testapp",
    "tests.migrated",  # with migrations: what migrate invalidates
]

DATABASES: dict[str, dict[str, Any]] = {
    "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"},
    # A second database for the multi-database invalidation tests.
    "other": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"},
}

CACHES: dict[str, dict[str, Any]] = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
}

DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

# tests/testapp/cache_warmers.py registers a warmer for the "tagged" alias, which the
# tagged_cache fixture adds: the base settings do not have it (smartcache.W048 would
# print on every subprocess's stderr that the command tests compare).
SILENCED_SYSTEM_CHECKS = ["smartcache.W048"]
