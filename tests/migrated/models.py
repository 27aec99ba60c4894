"""Its migrations: 0001 creates ``Note`` with a nullable ``body``; 0002 makes it
``NOT NULL`` with a default, which fills the ``NULL``s (on SQLite by rebuilding the
table: ``INSERT INTO "new__migrated_note" SELECT ... coalesce(...)``)."""

from __future__ import annotations

from django.db import models


class Note(models.Model):
    body = models.CharField(max_length=20, default="filled")

    def __str__(self) -> str:
        return self.body
