"""An app with migrations, for what ``migrate`` itself invalidates."""

from __future__ import annotations

from django.apps import AppConfig


class MigratedConfig(AppConfig):
    name = "tests.migrated"
    label = "migrated"
    default_auto_field = "django.db.models.AutoField"
