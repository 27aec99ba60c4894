"""``@cached(lock=True)`` computes once across real processes sharing a real cache.

Each worker is a fresh interpreter (``spawn``) with its own settings; the shared
level is a real redis-server on loopback or a real SQLite file. A computation is
recorded as a file, so counting runs does not go through the cache under test.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import threading
import time
from pathlib import Path

import pytest
from django.core.cache.backends.base import DEFAULT_TIMEOUT
from django.core.cache.backends.redis import RedisCache

from django_smartcache._memo_envelope import _lock_key
from django_smartcache.backends import MultiLevelCache, SQLiteCache

PROCESSES = 4
THREADS = 5
#: Bounds waits so that a bug fails the test instead of hanging it; never asserted.
ARRIVAL_TIMEOUT = 60.0

pytestmark = pytest.mark.slow


class _ObserveLockWaits:
    """Leaves a marker when this process finds the lock taken: it is about to wait.

    The backends are the real ones; the marker only lets the lock holder's
    computation hold on until every other process waits for it.
    """

    def add(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        added = super().add(key, value, timeout, version)
        if not added and str(key).endswith(":lock"):
            (
                Path(os.environ["MEMO_TEST_WORKDIR"]) / "waiting" / str(os.getpid())
            ).touch()
        return added


class ObservedRedisCache(_ObserveLockWaits, RedisCache):
    pass


class ObservedSQLiteCache(_ObserveLockWaits, SQLiteCache):
    pass


class ObservedMultiLevelCache(_ObserveLockWaits, MultiLevelCache):
    pass


def _setup(cache_config: dict) -> None:
    import django
    from django.conf import settings

    settings.configure(
        CACHES={"default": cache_config},
        INSTALLED_APPS=["django_smartcache"],
        USE_TZ=True,
    )
    django.setup()


def _make(
    workdir: Path, *, lock: bool, lock_timeout: float, barrier=None, crash: bool = False
):
    from django_smartcache.decorators import cached

    @cached(name="_make.expensive", lock=lock, lock_timeout=lock_timeout, timeout=300)
    def expensive(n):
        (workdir / "runs" / f"{os.getpid()}-{threading.get_ident()}").touch()
        if crash:
            os._exit(3)  # dies holding the lock
        if barrier is not None:
            # Without the lock every process must compute: all four meet here.
            barrier.wait(ARRIVAL_TIMEOUT)
        else:
            # Hold the computation until every other process waits on the lock.
            deadline = time.monotonic() + ARRIVAL_TIMEOUT
            while len(list((workdir / "waiting").iterdir())) < PROCESSES - 1:
                if time.monotonic() > deadline:
                    raise AssertionError("the other processes never waited")
                time.sleep(0.005)
        return {"n": n, "answer": 42}

    return expensive


def _worker(cache_config, workdir, lock, lock_timeout, start, barrier, crash):
    workdir = Path(workdir)
    os.environ["MEMO_TEST_WORKDIR"] = str(workdir)
    _setup(cache_config)
    from django_smartcache.signals import stampede_wait

    expensive = _make(
        workdir, lock=lock, lock_timeout=lock_timeout, barrier=barrier, crash=crash
    )
    waits = []
    stampede_wait.connect(lambda sender, scope, **kw: waits.append(scope), weak=False)
    if start is not None:
        start.wait(ARRIVAL_TIMEOUT)
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(expensive(1)))
        for _ in range(THREADS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    (workdir / "results" / str(os.getpid())).write_text(
        json.dumps({"results": results, "waits": waits})
    )


def _run(
    cache_config,
    workdir: Path,
    *,
    processes: int,
    lock: bool,
    lock_timeout: float = 30,
    crash=False,
    contrast=False,
):
    for sub in ("runs", "waiting", "results"):
        (workdir / sub).mkdir(exist_ok=True)
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(processes) if processes > 1 else None
    barrier = ctx.Barrier(processes) if contrast else None
    workers = [
        ctx.Process(
            target=_worker,
            args=(
                cache_config,
                str(workdir),
                lock,
                lock_timeout,
                start,
                barrier,
                crash,
            ),
        )
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(ARRIVAL_TIMEOUT * 2)
    return [worker.exitcode for worker in workers]


def _results(workdir: Path):
    return [
        json.loads(path.read_text()) for path in sorted((workdir / "results").iterdir())
    ]


@pytest.fixture(params=["redis", "sqlite", "multilevel"])
def shared_cache(request, tmp_path):
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
        return {"BACKEND": f"{__name__}.ObservedRedisCache", "LOCATION": url}
    path = str(tmp_path / "shared.sqlite3")
    if request.param == "sqlite":
        return {"BACKEND": f"{__name__}.ObservedSQLiteCache", "LOCATION": path}
    return {"BACKEND": f"{__name__}.ObservedMultiLevelCache", "LOCATION": path}


def test_four_processes_with_the_lock_compute_once(shared_cache, tmp_path) -> None:
    exit_codes = _run(shared_cache, tmp_path, processes=PROCESSES, lock=True)
    assert exit_codes == [0] * PROCESSES
    assert len(list((tmp_path / "runs").iterdir())) == 1
    reports = _results(tmp_path)
    assert [r["results"] for r in reports] == [
        [{"n": 1, "answer": 42}] * THREADS
    ] * PROCESSES
    waits = [scope for r in reports for scope in r["waits"]]
    # Three processes waited on the lock. Whether a process's other threads waited
    # on its in-process flight or came late and hit depends on scheduling.
    assert waits.count("shared") == PROCESSES - 1
    assert set(waits) <= {"process", "shared"}


def test_without_the_lock_each_process_computes_once(shared_cache, tmp_path) -> None:
    # The contrast that shows the test above can fail: without the cross-process lock,
    # all four computations run at the same time (they meet at a barrier inside).
    exit_codes = _run(
        shared_cache, tmp_path, processes=PROCESSES, lock=False, contrast=True
    )
    assert exit_codes == [0] * PROCESSES
    assert len(list((tmp_path / "runs").iterdir())) == PROCESSES


@pytest.mark.parametrize("backend", ["redis", "sqlite"])
def test_a_crashed_lock_holder_does_not_wedge_the_key(
    backend, tmp_path, request
) -> None:
    if backend == "redis":
        location = request.getfixturevalue("redis_url")
        config = {"BACKEND": f"{__name__}.ObservedRedisCache", "LOCATION": location}
        shared = RedisCache(location, {})
    else:
        location = str(tmp_path / "c.sqlite3")
        config = {"BACKEND": f"{__name__}.ObservedSQLiteCache", "LOCATION": location}
        shared = SQLiteCache(location, {})
    lock_timeout = 2
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    exit_codes = _run(
        config, crashed, processes=1, lock=True, lock_timeout=lock_timeout, crash=True
    )
    assert exit_codes == [3]
    # The process died in the computation, holding the lock...
    lock_key = _lock_key(_make(tmp_path, lock=True, lock_timeout=lock_timeout).key(1))
    assert shared.get(lock_key) is not None
    assert len(list((crashed / "runs").iterdir())) == 1
    # ... which expires: the next process computes the value.
    survivor = tmp_path / "survivor"
    (survivor / "waiting").mkdir(parents=True)
    for i in range(PROCESSES - 1):  # the survivor's computation waits for nobody
        (survivor / "waiting" / f"absent-{i}").touch()
    assert _run(
        config, survivor, processes=1, lock=True, lock_timeout=lock_timeout
    ) == [0]
    assert len(list((survivor / "runs").iterdir())) == 1
    assert _results(survivor)[0]["results"] == [{"n": 1, "answer": 42}] * THREADS
    assert shared.get(lock_key) is None  # released
