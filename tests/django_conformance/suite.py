"""Run Django's cache contract against any backend: settings helper and class factory.

Usage (see ``docs/conformance.md``)::

    SQLiteCacheConformanceTests = make_conformance_tests(
        "SQLiteCacheConformanceTests",
        "django_smartcache.backends.SQLiteCache",
        location="/tmp/x.sqlite3",
        options={"MAX_MEMORY": "8MB"},
    )
"""

from __future__ import annotations

from typing import Any

from django.test import TestCase, override_settings

from .upstream_cache_tests import BaseCacheTests, caches_setting_for_tests

__all__ = ["BaseCacheTests", "conformance_caches", "make_conformance_tests"]


def conformance_caches(
    backend: str,
    location: str = "",
    options: dict[str, Any] | None = None,
    **params: Any,
) -> dict[str, dict[str, Any]]:
    """The ``CACHES`` setting Django's suite expects, for ``backend``.

    Unlike ``caches_setting_for_tests(BACKEND=..., OPTIONS=...)``, ``options`` are merged
    under each alias's own (so the ``cull`` aliases keep their ``MAX_ENTRIES``).
    """
    setting = caches_setting_for_tests(BACKEND=backend, LOCATION=location, **params)
    for alias_params in setting.values():
        alias_params["OPTIONS"] = {**(options or {}), **alias_params.get("OPTIONS", {})}
    return setting


def make_conformance_tests(
    name: str,
    backend: str,
    location: str = "",
    options: dict[str, Any] | None = None,
    *,
    overrides: dict[str, Any] | None = None,
    **params: Any,
) -> type[TestCase]:
    """A ``TestCase`` running every ``BaseCacheTests`` test against ``backend``.

    ``overrides`` replaces upstream tests by name (for documented exceptions only).
    Assign the result to a module-level name starting with ``Test``/ending in ``Tests``
    in a ``test_*.py`` module so pytest collects it.
    """
    namespace: dict[str, Any] = {"__module__": __name__, **(overrides or {})}
    cls = type(name, (BaseCacheTests, TestCase), namespace)
    return override_settings(
        CACHES=conformance_caches(backend, location, options, **params)
    )(cls)
