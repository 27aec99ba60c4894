"""An expensive computation memoized with ``@cached`` and protected against stampedes."""

from __future__ import annotations

import contextvars
import threading
import time
from decimal import Decimal
from typing import Any

from django.db import connection
from django.db.models import Count, F, Sum

from django_smartcache import cached, model_tag

from .models import Category, Product

#: How long the "expensive" report takes to compute, in seconds.
REPORT_SECONDS = 0.4

_lock = threading.Lock()
_computations = 0


def computations() -> int:
    """How many times this process has really computed the report."""
    return _computations


@cached(
    timeout=600,
    lock=True,  # also once across processes, under a lock kept in the cache
    tags=[model_tag(Product), model_tag(Category)],
)
def catalogue_report() -> list[dict[str, Any]]:
    """Products, stock and stock value per category (slow on purpose)."""
    global _computations
    with _lock:
        _computations += 1
    time.sleep(REPORT_SECONDS)
    rows = (
        Category.objects.annotate(
            products_count=Count("products"),
            units=Sum("products__stock"),
            value=Sum(F("products__stock") * F("products__price")),
        )
        .order_by("name")
        .values("name", "products_count", "units", "value")
    )
    return [
        {**row, "units": row["units"] or 0, "value": row["value"] or Decimal(0)}
        for row in rows
    ]


def stampede(callers: int) -> dict[str, int]:
    """Drop the report, then ask for it from ``callers`` threads at the same instant.

    Returns how many computations that took and how many callers waited for another's
    computation (``stampede_wait`` signals) instead of computing it again.
    """
    from django_smartcache.signals import stampede_wait

    waits = 0
    count_lock = threading.Lock()

    def on_wait(sender: Any, **kwargs: Any) -> None:
        nonlocal waits
        if sender is catalogue_report:
            with count_lock:
                waits += 1

    catalogue_report.invalidate()
    before = computations()
    start = threading.Barrier(callers)

    def call() -> None:
        try:
            start.wait()
            catalogue_report()
        finally:
            connection.close()  # each thread opened its own database connection

    stampede_wait.connect(on_wait, weak=False)
    try:
        # Each thread runs in a copy of this request's context (contextvars), as
        # asgiref's sync_to_async does: what looks at the request's context, like the
        # debug-toolbar panel's recorder, then sees the threads' waits (their cache
        # calls go through the threads' own cache instances: not listed).
        threads = [
            threading.Thread(target=contextvars.copy_context().run, args=(call,))
            for _ in range(callers)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        stampede_wait.disconnect(on_wait)
    return {
        "callers": callers,
        "computations": computations() - before,
        "waited": waits,
    }
