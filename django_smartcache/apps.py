"""App configuration: the one place receivers and checks are connected."""

from __future__ import annotations

from django.apps import AppConfig


class SmartCacheConfig(AppConfig):
    name = "django_smartcache"
    verbose_name = "Smart cache"

    def ready(self) -> None:
        # Idempotent: every connection uses a dispatch_uid; install()/connect()
        # have symmetric uninstall()/disconnect() (used by tests and settings changes).
        from . import checks, invalidation, sqlwatch, warmers

        del checks  # imported for its @register side effect
        invalidation.connect()
        sqlwatch.install()
        warmers.autodiscover()  # each app's cache_warmers module, imported once
