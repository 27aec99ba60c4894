"""django-smartcache: a smarter cache layer for Django."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "cached", "invalidate_model", "invalidate_tags", "model_tag"]

#: Public names loaded on first use (PEP 562): importing ``django_smartcache.core``
#: runs this file, and the core must not import Django.
_LAZY = {
    "cached": "django_smartcache.decorators",
    "invalidate_tags": "django_smartcache._tag_caches",
    "model_tag": "django_smartcache.registry",
    "invalidate_model": "django_smartcache.invalidation",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(module), name)
    globals()[name] = value
    return value
