from __future__ import annotations

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = (("migrated", "0001_initial"),)

    operations = (
        migrations.AlterField(
            model_name="Note",
            name="body",
            field=models.CharField(default="filled", max_length=20),
        ),
    )
