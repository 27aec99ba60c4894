"""An ``invalidate()`` racing a computation in flight: the stale result is never left
stored after the ``invalidate()`` returned.

Two holes an outside probe found: on a MultiLevelCache the ``:void`` tokens were read
through L1, whose copy of an earlier token hid the newer one another process had just
written (the coherence poll comes at most every ``COHERENCE_INTERVAL``); and on every
backend an ``invalidate()`` landing between the last token check and the store lost
its delete to the store.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from django.core.cache import caches
from django.test import override_settings

from django_smartcache import cached
from django_smartcache.backends import SmartCache

NAME = "tests.test_decorators_void_races.report"


def _multilevel(path: Path) -> dict[str, Any]:
    # Coherence slower than the test: only a read of the shared level sees the token.
    return {
        "BACKEND": "django_smartcache.backends.MultiLevelCache",
        "LOCATION": str(path),
        "OPTIONS": {"COHERENCE_INTERVAL": 60, "L1_MAX_TTL": 60},
    }


def _invalidate_in_another_process(config: dict[str, Any]) -> None:
    """``report.invalidate(1)`` in a fresh interpreter sharing the cache file."""
    code = textwrap.dedent(
        f"""
        import django
        from django.conf import settings
        settings.configure(
            CACHES={{"default": {config!r}}}, INSTALLED_APPS=["django_smartcache"]
        )
        django.setup()
        from django_smartcache import cached

        @cached(name={NAME!r}, timeout=300)
        def report(n):
            raise AssertionError("not computed here")

        report.invalidate(1)
        """
    )
    subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
        timeout=60,
    )


def test_a_multilevel_l1_copy_of_an_old_token_does_not_hide_a_new_one(
    tmp_path: Path,
) -> None:
    config = _multilevel(tmp_path / "cache.sqlite3")
    source = {"value": "old"}

    with override_settings(CACHES={"default": config}):

        @cached(name=NAME, timeout=300)
        def report(n: int) -> str:
            seen = source["value"]
            # Another process changes the data and invalidates while this computes.
            source["value"] = "new"
            _invalidate_in_another_process(config)
            return seen

        report.invalidate(1)  # an earlier invalidation: its token is alive (30 s)
        assert report(1) == "old"  # read its token before (into L1), then computed
        assert report(1) == "new", "the stale result was stored"
        caches["default"].clear()


class InvalidatedWhileStoring(SmartCache):
    """Runs ``before_store`` when the memoized entry is about to be written: an
    ``invalidate()`` landing after the last token check, before the store."""

    before_store: Any = None

    def set(self, key: Any, value: Any, *args: Any, **kwargs: Any) -> None:
        hook = type(self).before_store
        if hook is not None and not str(key).endswith(":void"):
            type(self).before_store = None
            hook()
        super().set(key, value, *args, **kwargs)


@pytest.mark.parametrize("is_async", [False, True])
def test_an_invalidation_during_the_store_is_not_lost(is_async: bool) -> None:
    config = {
        "BACKEND": f"{__name__}.InvalidatedWhileStoring",
        "LOCATION": f"void-races-{is_async}",
    }
    source = {"value": "old"}
    with override_settings(CACHES={"default": config}):
        if is_async:
            import asyncio

            @cached(name=f"{NAME}.async", timeout=300)
            async def areport(n: int) -> str:
                return source["value"]

            def achange() -> None:
                source["value"] = "new"
                # ainvalidate(1), made synchronously: the hook runs inside aset.
                areport._drop(areport.key(1))

            InvalidatedWhileStoring.before_store = achange
            assert asyncio.run(areport(1)) == "old"
            assert asyncio.run(areport(1)) == "new", "the stale result was kept"
        else:

            @cached(name=NAME, timeout=300)
            def report(n: int) -> str:
                return source["value"]

            def change() -> None:
                source["value"] = "new"
                report.invalidate(1)

            InvalidatedWhileStoring.before_store = change
            assert report(1) == "old"
            assert report(1) == "new", "the stale result was kept"
        caches["default"].clear()


@pytest.mark.parametrize("is_async", [False, True])
def test_an_invalidation_whose_token_was_evicted_still_voids(is_async: bool) -> None:
    # An outside probe's suspicion, confirmed: a full SmartCache evicts a key nobody
    # read (POLICY tinylfu: after ~1% of its entries are rewritten), the :void token
    # among them; a computation that found no token before and none after stored the
    # result the invalidate() had voided. This process's computations are voided
    # directly now (_memo_running), whatever the cache kept.
    import threading

    from django_smartcache._memo_envelope import _void_key

    config = {
        "BACKEND": "django_smartcache.backends.SmartCache",
        "LOCATION": f"void-races-evicted-{is_async}",
    }
    source = {"value": "old"}
    with override_settings(CACHES={"default": config}):
        cache = caches["default"]

        def change_and_churn(func: Any) -> None:
            source["value"] = "new"
            done = threading.Thread(target=lambda: func._drop(func.key(1)))
            done.start()
            done.join()
            # The token evicted, as other requests' writes do on a full cache (by
            # chance of the policy's hashing: deleted here, so the test is certain).
            assert cache.delete(_void_key(func.key(1)))

        if is_async:
            import asyncio

            @cached(name=f"{NAME}.evicted.async", timeout=300)
            async def areport(n: int) -> str:
                seen = source["value"]
                if seen == "old":
                    change_and_churn(areport)
                return seen

            assert asyncio.run(areport(1)) == "old"
            assert asyncio.run(areport(1)) == "new", "the stale result was stored"
        else:

            @cached(name=f"{NAME}.evicted", timeout=300)
            def report(n: int) -> str:
                seen = source["value"]
                if seen == "old":
                    change_and_churn(report)
                return seen

            assert report(1) == "old"
            assert report(1) == "new", "the stale result was stored"
        cache.clear()


def test_running_computations_are_forgotten_when_they_end() -> None:
    from django_smartcache._memo_running import RUNNING

    with override_settings(
        CACHES={
            "default": {
                "BACKEND": "django_smartcache.backends.SmartCache",
                "LOCATION": "void-races-running",
            }
        }
    ):

        @cached(name=f"{NAME}.running", timeout=300)
        def square(n: int) -> int:
            assert len(RUNNING) >= 1
            if n < 0:
                raise ValueError(n)
            return n * n

        assert [square(n) for n in range(5)] == [0, 1, 4, 9, 16]
        with pytest.raises(ValueError):
            square(-1)
        assert len(RUNNING) == 0
        caches["default"].clear()
