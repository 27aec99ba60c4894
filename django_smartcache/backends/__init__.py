"""Django cache backends: ``CACHES = {"default": {"BACKEND": "django_smartcache.backends.SmartCache"}}``."""

from __future__ import annotations

from .multilevel import MultiLevelCache
from .smart import SmartCache
from .sqlite import SQLiteCache

__all__ = ["MultiLevelCache", "SQLiteCache", "SmartCache"]
