"""django-debug-toolbar integration: add ``SmartCachePanel`` to ``DEBUG_TOOLBAR_PANELS``.

The only module of django-smartcache that imports ``debug_toolbar`` (see
``docs/debug-toolbar.md``).
"""

from __future__ import annotations

from .panel import SmartCachePanel

__all__ = ["SmartCachePanel"]
