"""A ``get_or_set`` whose callable asks for its own key, as LocMemCache answers it.

Single flight must not make the computation wait for itself: the nested call computes
and stores its value, the outer ``add`` loses, and the stored value is returned.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.cache.backends.locmem import LocMemCache

from django_smartcache.backends import MultiLevelCache, SmartCache, SQLiteCache

BACKENDS = [LocMemCache, SmartCache, SQLiteCache, MultiLevelCache]


def make(backend, tmp_path):
    if backend is LocMemCache:
        return LocMemCache("nested-reference", {})
    return backend(str(tmp_path / "c.sqlite3"), {})


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.__name__)
def test_a_callable_asking_for_its_own_key(backend, tmp_path) -> None:
    cache = make(backend, tmp_path)
    cache.delete("menu")
    depth = 0

    def compute() -> str:
        nonlocal depth
        depth += 1
        if depth == 1:
            return "outer(" + cache.get_or_set("menu", compute) + ")"
        return "leaf"

    assert cache.get_or_set("menu", compute) == "leaf"
    assert cache.get("menu") == "leaf"


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.__name__)
def test_a_callable_asking_for_its_own_key_async(backend, tmp_path) -> None:
    cache = make(backend, tmp_path)
    depth = 0

    def compute() -> str:
        nonlocal depth
        depth += 1
        if depth == 1:
            return "outer(" + cache.get_or_set("menu", compute) + ")"
        return "leaf"

    async def scenario() -> object:
        await cache.adelete("menu")
        return await cache.aget_or_set("menu", compute)

    assert asyncio.run(scenario()) == "leaf"
    assert cache.get("menu") == "leaf"


# -- a sync helper of the request asking for the key its request awaits ------------------

ROOT = Path(__file__).resolve().parents[2]

SAME_REQUEST = """
import asyncio, json, os, sys, time
import django
from django.conf import settings
settings.configure(INSTALLED_APPS=["django_smartcache"])
django.setup()
from asgiref.sync import ThreadSensitiveContext, async_to_sync, sync_to_async
from django.utils.module_loading import import_string

cache = import_string(sys.argv[1])(sys.argv[2], {})
runs = []

def compute():
    runs.append(1)
    time.sleep(0.2)
    return "v"

async def request():
    async with ThreadSensitiveContext():
        def sidebar():  # a sync helper (template tag) of the same request
            return async_to_sync(cache.aget_or_set)("menu", compute)
        return await asyncio.gather(
            cache.aget_or_set("menu", compute), sync_to_async(sidebar)()
        )

async def main():
    await cache.adelete("menu")
    task = asyncio.create_task(request())
    done, _ = await asyncio.wait({task}, timeout=5)
    print(json.dumps({"results": task.result() if done else "hung",
                      "runs": len(runs)}), flush=True)
    os._exit(0)  # threads a deadlock left behind are not joined

asyncio.run(main())
"""


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.__name__)
def test_a_sync_helper_of_the_request_awaiting_its_aget_or_set(
    backend, tmp_path
) -> None:
    # SQLiteCache and MultiLevelCache run get_or_set in the request's sync thread: the
    # helper, blocking that thread while it waited for the request's aget_or_set,
    # deadlocked both. It computes on its own now. (In a fresh interpreter: a deadlock
    # leaves threads that interpreter exit would join.)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            SAME_REQUEST,
            f"{backend.__module__}.{backend.__qualname__}",
            str(tmp_path / "c.sqlite3"),
        ],
        capture_output=True,
        check=False,
        text=True,
        timeout=60,
        env=env,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    outcome = json.loads(out.stdout.strip().splitlines()[-1])
    assert outcome["results"] == ["v", "v"]
    assert 1 <= outcome["runs"] <= 2
