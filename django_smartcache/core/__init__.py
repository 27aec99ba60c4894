"""The pure algorithmic core: store, eviction policies, tag index, statistics.

Standard library only. Nothing here may import Django (``tests/core/test_no_django.py``
checks it), so the core can be tested and benchmarked on its own.
"""

from __future__ import annotations

from .policy import DEFAULT_POLICY, POLICIES, LRUPolicy, Policy, make_policy
from .s3fifo import S3FIFOPolicy
from .sketch import FrequencySketch
from .tinylfu import TinyLFUPolicy

__all__ = [
    "DEFAULT_POLICY",
    "POLICIES",
    "FrequencySketch",
    "LRUPolicy",
    "Policy",
    "S3FIFOPolicy",
    "TinyLFUPolicy",
    "make_policy",
]
