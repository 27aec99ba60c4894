"""App configuration: the one place receivers and checks are connected."""

from __future__ import annotations

from django.apps import AppConfig


class SmartCacheConfig(AppConfig):
    name = "django_smartcache"
    verbose_name = "Smart cache"
