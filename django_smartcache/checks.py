"""System checks for the ``SMARTCACHE`` setting (ids ``smartcache.E0xx``)."""

from __future__ import annotations

from typing import Any

from django.core.checks import CheckMessage, Error, Tags, register
from django.core.exceptions import ImproperlyConfigured

from . import conf, registry


@register(Tags.caches)
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """``SMARTCACHE`` must validate: report the bad option instead of failing later."""
    conf.get_config.cache_clear()
    try:
        conf.get_config()
        registry.check_labels()
    except ImproperlyConfigured as exc:
        return [
            Error(
                str(exc),
                hint="See docs/tagging.md for every option.",
                id="smartcache.E010",
            )
        ]
    return []
