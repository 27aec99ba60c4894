"""``aincr``/``adecr`` are as atomic as ``incr``/``decr`` and keep the entry's expiry."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from tests.fixtures.tagged_caches import TAGGED_BACKENDS

#: Our backends (the test-only TaggedLocMemCache keeps Django's aincr).
OURS = [kind for kind in TAGGED_BACKENDS if kind != "locmem"]

pytestmark = pytest.mark.parametrize("tagged_cache", OURS, indirect=True)


def test_concurrent_aincr_loses_no_increment(tagged_cache: Any) -> None:
    tagged_cache.set("hits", 0)

    async def main() -> None:
        await asyncio.gather(*(tagged_cache.aincr("hits") for _ in range(20)))
        await asyncio.gather(*(tagged_cache.adecr("hits", 2) for _ in range(5)))

    asyncio.run(main())
    assert tagged_cache.get("hits") == 10


def test_aincr_keeps_the_expiry(tagged_cache: Any) -> None:
    tagged_cache.set("forever", 1, timeout=None)
    tagged_cache.set("brief", 1, timeout=1)

    async def main() -> tuple[int, int]:
        return await tagged_cache.aincr("forever"), await tagged_cache.aincr("brief")

    assert asyncio.run(main()) == (2, 2)
    time.sleep(1.2)
    assert tagged_cache.get("forever") == 2
    assert tagged_cache.get("brief") is None  # not given the default 300 s again


def test_aincr_of_a_missing_key_raises(tagged_cache: Any) -> None:
    with pytest.raises(ValueError):
        asyncio.run(tagged_cache.aincr("absent"))
