"""Django cache backends: ``CACHES = {"default": {"BACKEND": "django_smartcache.backends.SmartCache"}}``."""

from __future__ import annotations

from .multilevel import MultiLevelCache
from .smart import SmartCache

__all__ = ["MultiLevelCache", "SmartCache"]
