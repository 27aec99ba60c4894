"""The shop app of the example project."""

from __future__ import annotations

from django.apps import AppConfig


class ShopConfig(AppConfig):
    name = "shop"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Connect the receivers that feed the "recent events" list of the stats page.
        from . import events

        events.connect()
