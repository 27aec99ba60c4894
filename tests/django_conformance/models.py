"""The model used by Django's cache tests (vendored from Django 5.2 ``tests/cache/models.py``).

Copyright (c) Django Software Foundation and individual contributors; BSD licence,
see ``upstream_cache_tests.py``.
"""

from __future__ import annotations

from django.db import models
from django.utils import timezone


def expensive_calculation():
    expensive_calculation.num_runs += 1
    return timezone.now()


class Poll(models.Model):  # noqa: DJ008 (verbatim upstream model)
    question = models.CharField(max_length=200)
    answer = models.CharField(max_length=200)
    pub_date = models.DateTimeField("date published", default=expensive_calculation)
