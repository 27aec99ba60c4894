"""``@cached`` on ``async def``: the process-wide flight shared by every event loop,
when sync threads (``async_to_sync``) wait for it and when a leader's loop goes away.

Each scenario runs in a fresh interpreter: a deadlock there blocks threads that
interpreter exit joins (asgiref's executors), so a hang fails the test by timeout and
leaves this process clean.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from django_smartcache import decorators
from django_smartcache.decorators import cached
from tests.test_decorators import memo_caches  # noqa: F401 (autouse fixture)

ROOT = Path(__file__).resolve().parents[1]
#: A scenario's own bound on every wait, and the interpreter's (a bug fails, never hangs).
SCENARIO_TIMEOUT = 5
PROCESS_TIMEOUT = 60

PRELUDE = """
import asyncio, json, os, threading, time
import django
from django.conf import settings
settings.configure(
    CACHES={"default": {"BACKEND": "django_smartcache.backends.SmartCache",
                        "LOCATION": "async-flight"}},
    INSTALLED_APPS=["django_smartcache"],
)
django.setup()
from asgiref.sync import ThreadSensitiveContext, async_to_sync, sync_to_async
from django_smartcache import cached

TIMEOUT = %(timeout)s
runs = []

def orm():  # stands for the async ORM: Django runs it in the request's sync thread
    return "row"

@cached(timeout=60)
async def card(pk):
    runs.append(pk)
    await asyncio.sleep(0.1)
    return f"card {pk}: " + await sync_to_async(orm)()

def report(**outcome):
    print(json.dumps(outcome), flush=True)
    os._exit(0)  # threads a deadlock left behind are not joined
"""


def run_scenario(body: str) -> dict:
    code = PRELUDE % {"timeout": SCENARIO_TIMEOUT} + body
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    try:
        out = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            check=False,
            text=True,
            timeout=PROCESS_TIMEOUT,
            env=env,
            cwd=ROOT,
        )
    except subprocess.TimeoutExpired:  # pragma: no cover (the scenario bounds itself)
        raise AssertionError("the scenario hung") from None
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_sync_helper_of_the_request_awaiting_its_computation_does_not_deadlock() -> (
    None
):
    # An async view awaits card(1); a sync helper of the same request (a template tag)
    # calls it through async_to_sync. Both used the request's one sync thread: the
    # helper blocked it waiting for the computation, whose sync_to_async needed it.
    # Another request for the key joined and hung as well.
    outcome = run_scenario("""
async def mixed_request():
    async with ThreadSensitiveContext():
        def sidebar():
            return async_to_sync(card)(1)
        return await asyncio.gather(card(1), sync_to_async(sidebar)())

async def other_request():
    async with ThreadSensitiveContext():
        return await card(1)

async def main():
    first = asyncio.create_task(mixed_request())
    await asyncio.sleep(0.05)
    second = asyncio.create_task(other_request())
    done, _ = await asyncio.wait({first, second}, timeout=TIMEOUT)
    report(
        first=first.result() if first in done else "hung",
        second=second.result() if second in done else "hung",
        runs=len(runs),
    )

asyncio.run(main())
""")
    assert outcome == {
        "first": ["card 1: row", "card 1: row"],
        "second": "card 1: row",
        "runs": 2,  # the helper computed on its own; the other request waited
    }


def test_a_sync_view_without_a_request_context_does_not_lose_the_sync_thread() -> None:
    # Without a ThreadSensitiveContext (a script, a command) asgiref has one sync
    # thread for the process: the sync caller blocked it for good.
    outcome = run_scenario("""
async def main():
    leader = asyncio.create_task(card(2))
    await asyncio.sleep(0.02)
    sync_view = asyncio.create_task(
        sync_to_async(lambda: async_to_sync(card)(2), thread_sensitive=True)()
    )
    done, _ = await asyncio.wait({leader, sync_view}, timeout=TIMEOUT)
    try:
        later = await asyncio.wait_for(sync_to_async(orm)(), TIMEOUT)
    except asyncio.TimeoutError:
        later = "hung"
    report(
        leader=leader.result() if leader in done else "hung",
        sync_view=sync_view.result() if sync_view in done else "hung",
        later=later,
        runs=len(runs),
    )

asyncio.run(main())
""")
    assert outcome == {
        "leader": "card 2: row",
        "sync_view": "card 2: row",
        "later": "row",
        "runs": 2,
    }


def test_sync_helpers_of_other_requests_still_wait_for_one_computation() -> None:
    # The deadlock check is precise: a sync thread that the leader does not need
    # (another request's) waits for it, as every other caller does.
    outcome = run_scenario("""
async def leading_request():
    async with ThreadSensitiveContext():
        return await card(3)

async def helper_request():
    async with ThreadSensitiveContext():
        return await sync_to_async(lambda: async_to_sync(card)(3))()

async def main():
    leader = asyncio.create_task(leading_request())
    await asyncio.sleep(0.02)
    helpers = [asyncio.create_task(helper_request()) for _ in range(8)]
    done, _ = await asyncio.wait({leader, *helpers}, timeout=TIMEOUT)
    report(
        results=sorted({t.result() if t in done else "hung" for t in [leader, *helpers]}),
        runs=len(runs),
    )

asyncio.run(main())
""")
    assert outcome == {"results": ["card 3: row"], "runs": 1}


# -- a computation whose loop is closed or left mid-way ----------------------------------


def _in_a_thread(call) -> list:
    """``call()``'s result, from a thread joined with a timeout (empty: it hung)."""
    results: list = []
    thread = threading.Thread(target=lambda: results.append(call()), daemon=True)
    thread.start()
    thread.join(SCENARIO_TIMEOUT)
    return results


def _give_up_once_started(loop, call, started) -> None:
    """Run ``call()`` in ``loop`` until its computation has started, then cancel the
    caller, as ``wait_for`` does when its timeout expires; the computation's task
    stays in the loop. (A fixed ``wait_for(call(), 0.05)`` could expire on a loaded
    machine before the computation started: the next call was then the first.)"""

    async def caller_with_a_timeout() -> None:
        caller = asyncio.ensure_future(call())
        deadline = time.monotonic() + SCENARIO_TIMEOUT
        while not started() and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        caller.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await caller

    loop.run_until_complete(caller_with_a_timeout())
    assert started()


def _abandoned_price(name: str):
    runs: list[str] = []
    release = threading.Event()  # the first computation ends only once it is set

    @cached(timeout=60, name=name)
    async def price(item: str) -> int:
        runs.append(item)
        first = len(runs) == 1
        while first and not release.is_set():
            # Not a timed sleep: on a loaded machine a 0.2 s sleep could end within
            # the caller's 0.05 s timeout, and the first computation then finished.
            await asyncio.sleep(0.01)
        return len(runs)

    loop = asyncio.new_event_loop()
    _give_up_once_started(loop, lambda: price("book"), lambda: bool(runs))
    assert decorators._ASYNC_FLIGHT.in_flight(("default", price.key("book")))
    price.release = release  # type: ignore[attr-defined]
    return price, runs, loop


def test_a_computation_left_in_a_closed_loop_is_taken_over() -> None:
    # Every later call of the key, from any loop or thread, waited forever.
    price, runs, loop = _abandoned_price("left_in_a_closed_loop")
    loop.close()  # without running it again: its task never finishes
    assert _in_a_thread(lambda: asyncio.run(price("book"))) == [2]
    assert asyncio.run(price("book")) == 2  # stored
    assert runs == ["book", "book"]


def test_a_computation_left_in_a_loop_no_longer_run_is_taken_over() -> None:
    price, runs, loop = _abandoned_price("left_in_a_loop_no_longer_run")
    assert _in_a_thread(lambda: asyncio.run(price("book"))) == [2]
    # The old loop runs again: its computation ends without disturbing the new one's.
    price.release.set()
    left = asyncio.all_tasks(loop)
    loop.run_until_complete(asyncio.wait(left, timeout=SCENARIO_TIMEOUT * 6))
    assert all(task.done() for task in left)
    loop.close()
    assert runs == ["book", "book"]
    assert not decorators._ASYNC_FLIGHT.in_flight(("default", price.key("book")))
    assert asyncio.run(price("book")) in (1, 2)  # whichever stored last


def test_waiters_of_an_abandoned_computation_elect_one_new_leader() -> None:
    # The waiter that found the loop left woke the others, then computed on its own
    # (its own wake was still on its way), as did any whose check fired with it:
    # 8 threads computed 3 to 5 times. Now one leads anew and the others join it.
    flight = decorators._ProcessAsyncFlight()
    waiters = 8
    runs: list[int] = []

    async def compute() -> int:
        runs.append(threading.get_ident())
        if len(runs) == 1:
            await asyncio.sleep(60)  # left with its loop
        # The new leader holds on until every other caller waits for it (a caller
        # that computed on its own would never come: bounded).
        deadline = time.monotonic() + SCENARIO_TIMEOUT
        while flight.waiting("k") < waiters - 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return len(runs)

    left = asyncio.new_event_loop()
    _give_up_once_started(left, lambda: flight.do("k", compute), lambda: bool(runs))
    results: list[tuple[int, bool]] = []
    threads = [
        threading.Thread(
            target=lambda: results.append(asyncio.run(flight.do("k", compute)))
        )
        for _ in range(waiters)
    ]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(PROCESS_TIMEOUT)
    finally:
        tasks = asyncio.all_tasks(left)
        for task in tasks:
            task.cancel()
        left.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        left.close()
    assert len(runs) == 2  # the abandoned one, and one after it
    assert sorted(results) == [(2, False)] + [(2, True)] * (waiters - 1)


def test_computations_left_in_closed_loops_are_reaped_by_later_calls() -> None:
    # A call whose loop was closed under it was detached only when its own key was
    # asked for again: 2,000 keys timed out and closed kept 2,000 calls, their loops
    # and tasks (+21 MB, outside soak). Each new call now examines a few old ones.
    runs: list[str] = []

    @cached(timeout=60, name="reaped_closed_loops")
    async def slow(item: str) -> str:
        runs.append(item)
        if item.startswith("left"):
            await asyncio.sleep(3600)
        return item

    def in_flight() -> int:
        with decorators._ASYNC_FLIGHT._lock:
            return sum(
                1 for key in decorators._ASYNC_FLIGHT._calls if "reaped" in str(key)
            )

    for i in range(20):
        loop = asyncio.new_event_loop()
        _give_up_once_started(loop, lambda i=i: slow(f"left{i}"), lambda: bool(runs))
        runs.clear()
        loop.close()
    assert in_flight() >= 1  # (each of them reaped those before it)
    for i in range(20):
        assert asyncio.run(slow(f"fresh{i}")) == f"fresh{i}"
    assert in_flight() == 0


def test_finished_computations_are_not_kept_for_the_reaper() -> None:
    # The reaper's queue kept every call until two newer ones had looked at it: a
    # burst of concurrent calls left their results held (100 of 1 MB: 100 MB).
    @cached(timeout=60, name="reaper_keeps_nothing")
    async def value(i: int) -> bytes:
        await asyncio.sleep(0.01)
        return bytes(1000)

    async def burst() -> None:
        await asyncio.gather(*(value(i) for i in range(50)))

    asyncio.run(burst())
    with decorators._ASYNC_FLIGHT._lock:
        assert not decorators._ASYNC_FLIGHT._started
