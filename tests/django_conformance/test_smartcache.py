"""Django's ``BaseCacheTests`` against ``SmartCache``, with the documented exceptions."""

from __future__ import annotations

from django.test import TestCase, override_settings

from .suite import BaseCacheTests, conformance_caches


@override_settings(
    CACHES=conformance_caches(
        "django_smartcache.backends.SmartCache", location="conformance"
    )
)
class SmartCacheConformanceTests(BaseCacheTests, TestCase):
    # Exceptions, listed in docs/conformance.md. Upstream asserts LocMemCache's cull
    # arithmetic: when full, LocMem drops len // CULL_FREQUENCY keys at once (29 of 49
    # survive), or everything with CULL_FREQUENCY=0 (19 survive). SmartCache evicts
    # one victim at a time, so exactly MAX_ENTRIES keys survive in both cases.
    def test_cull(self):
        self._perform_cull_test("cull", 50, 30)

    def test_zero_cull(self):
        self._perform_cull_test("zero_cull", 50, 30)
