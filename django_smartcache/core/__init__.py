"""The pure algorithmic core: store, eviction policies, tag index, statistics.

Standard library only. Nothing here may import Django (``tests/core/test_no_django.py``
checks it), so the core can be tested and benchmarked on its own.
"""

from __future__ import annotations

from .policy import DEFAULT_POLICY, POLICIES, LRUPolicy, Policy, make_policy

__all__ = ["DEFAULT_POLICY", "POLICIES", "LRUPolicy", "Policy", "make_policy"]
