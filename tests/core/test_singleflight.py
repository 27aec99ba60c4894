"""Single flight: one computation per key however many callers miss at once."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import pytest

from django_smartcache.core.singleflight import AsyncSingleFlight, SingleFlight
from tests.fixtures import waiting

#: A bound on how long a test waits for other threads to arrive, so a bug fails
#: the test instead of hanging it. Nothing is asserted about durations.
ARRIVAL_TIMEOUT = 30.0


def wait_until(condition: Callable[[], object]) -> None:
    waiting.wait_until(condition, ARRIVAL_TIMEOUT, "the other callers never arrived")


def test_fifty_threads_one_computation() -> None:
    flight = SingleFlight()
    runs = []
    callers = 50

    def compute() -> list[int]:
        runs.append(threading.get_ident())
        # Hold the flight open until every other thread waits on it.
        wait_until(lambda: flight.waiting("k") == callers - 1)
        return [42]

    results: list[tuple[list[int], bool]] = []
    threads = [
        threading.Thread(target=lambda: results.append(flight.do("k", compute)))
        for _ in range(callers)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(runs) == 1
    assert len(results) == callers
    assert sum(shared for _, shared in results) == callers - 1
    # Waiters receive the very object the leader computed.
    assert len({id(value) for value, _ in results}) == 1
    assert not flight.in_flight("k")
    assert flight.waiting("k") == 0


def test_exception_reaches_every_waiter_and_is_not_remembered() -> None:
    flight = SingleFlight()
    errors: list[BaseException] = []

    def fail() -> None:
        wait_until(lambda: flight.waiting("k") == 3)
        raise ValueError("boom")

    def call() -> None:
        try:
            flight.do("k", fail)
        except ValueError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(errors) == 4
    assert flight.do("k", lambda: "fresh") == ("fresh", False)


def test_different_keys_do_not_wait_for_each_other() -> None:
    flight = SingleFlight()
    both_running = threading.Barrier(2, timeout=ARRIVAL_TIMEOUT)

    def compute(name: str) -> str:
        both_running.wait()  # raises BrokenBarrierError if the keys were serialized
        return name

    results: dict[str, str] = {}

    def run(name: str) -> None:
        results[name] = flight.do(name, lambda: compute(name))[0]

    threads = [threading.Thread(target=run, args=(name,)) for name in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == {"a": "a", "b": "b"}


def test_a_call_from_its_own_computation_computes_instead_of_deadlocking() -> None:
    # get_or_set(key, f) where f calls get_or_set(key, ...): LocMemCache computes both.
    flight = SingleFlight()
    assert flight.do("k", lambda: flight.do("k", lambda: 1)) == ((1, False), False)
    assert not flight.in_flight("k")

    def forever() -> object:
        return flight.do("r", forever)

    with pytest.raises(RecursionError):  # as without a flight
        flight.do("r", forever)
    assert not flight.in_flight("r")


def test_fifty_coroutines_one_computation() -> None:
    flight = AsyncSingleFlight()
    runs = 0
    callers = 50

    async def compute() -> str:
        nonlocal runs
        runs += 1
        while flight.waiting("k") < callers - 1:
            await asyncio.sleep(0)
        return "value"

    async def main() -> list[tuple[str, bool]]:
        return await asyncio.gather(*(flight.do("k", compute) for _ in range(callers)))

    results = asyncio.run(main())
    assert runs == 1
    assert [value for value, _ in results] == ["value"] * callers
    assert sum(shared for _, shared in results) == callers - 1


def test_cancelled_caller_cancels_neither_computation_nor_other_waiters() -> None:
    flight = AsyncSingleFlight()
    release = None

    async def compute() -> str:
        await release.wait()
        return "done"

    async def main() -> tuple[str, bool]:
        nonlocal release
        release = asyncio.Event()
        first = asyncio.ensure_future(flight.do("k", compute))
        await asyncio.sleep(0)
        second = asyncio.ensure_future(flight.do("k", compute))
        await asyncio.sleep(0)
        assert flight.waiting("k") == 1
        first.cancel()  # the leader's caller goes away
        await asyncio.sleep(0)
        assert flight.in_flight("k")
        release.set()
        result = await second
        assert first.cancelled()
        return result

    assert asyncio.run(main()) == ("done", True)


def test_async_exception_reaches_waiters_and_a_nested_call_computes() -> None:
    flight = AsyncSingleFlight()

    async def fail() -> None:
        while flight.waiting("k") < 2:
            await asyncio.sleep(0)
        raise ValueError("boom")

    async def leaf() -> str:
        return "leaf"

    async def nested() -> object:
        return await flight.do("r", leaf)

    async def main() -> None:
        results = await asyncio.gather(
            *(flight.do("k", fail) for _ in range(3)), return_exceptions=True
        )
        assert all(isinstance(r, ValueError) for r in results)
        assert not flight.in_flight("k")
        assert await flight.do("r", nested) == (("leaf", False), False)
        assert not flight.in_flight("r")

    asyncio.run(main())


def test_a_coroutine_waits_for_a_threads_call_without_blocking_its_loop() -> None:
    flight = SingleFlight()
    started, release = threading.Event(), threading.Event()
    calls: list[str] = []

    def slow() -> str:
        calls.append("thread")
        started.set()
        release.wait(5)
        return "from thread"

    leader = threading.Thread(target=lambda: flight.do("k", slow))
    leader.start()
    started.wait(5)

    async def main() -> tuple[tuple[str, bool], int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.005)

        ticking = asyncio.ensure_future(ticker())
        waiting = asyncio.ensure_future(flight.ado("k", lambda: "from loop"))
        # The loop runs while the coroutine waits: 5 ticks before the thread's call
        # ends (not a fixed 0.1 s, in which a loaded machine ran fewer than 5).
        deadline = time.monotonic() + ARRIVAL_TIMEOUT
        while ticks < 5 and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        assert not waiting.done()
        release.set()
        result = await waiting
        ticking.cancel()
        return result, ticks

    result, ticks = asyncio.run(main())
    leader.join(5)
    assert result == ("from thread", True)
    assert calls == ["thread"]
    assert ticks >= 5


def test_a_thread_waits_for_a_coroutines_call_and_gets_its_error() -> None:
    flight = SingleFlight()
    joined = threading.Event()
    outcome: list[object] = []

    def join() -> None:
        joined.set()
        try:
            outcome.append(flight.do("k", lambda: "thread computed"))
        except LookupError as exc:
            outcome.append(exc)

    def failing() -> str:
        # A thread joins while the coroutine leads (no await: it runs on the loop).
        # Waited for until it waits for this call: a fixed 0.1 s could end on a loaded
        # machine before the thread reached flight.do, which then computed on its own.
        threading.Thread(target=join).start()
        joined.wait(ARRIVAL_TIMEOUT)
        wait_until(lambda: flight.waiting("k") == 1)
        raise LookupError("from loop")

    async def main() -> None:
        with pytest.raises(LookupError):
            await flight.ado("k", failing)

    asyncio.run(main())
    deadline = time.monotonic() + 5
    while not outcome and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(outcome) == 1 and isinstance(outcome[0], LookupError)
    assert not flight.in_flight("k")


def test_a_cancelled_coroutine_leaves_the_threads_call_to_its_other_waiters() -> None:
    flight = SingleFlight()
    started, release = threading.Event(), threading.Event()

    def slow() -> str:
        started.set()
        release.wait(5)
        return "v"

    leader = threading.Thread(target=lambda: flight.do("k", slow))
    leader.start()
    started.wait(5)

    async def main() -> tuple[str, bool]:
        cancelled = asyncio.ensure_future(flight.ado("k", lambda: "x"))
        other = asyncio.ensure_future(flight.ado("k", lambda: "x"))
        await asyncio.sleep(0.02)
        cancelled.cancel()
        release.set()
        return await other

    assert asyncio.run(main()) == ("v", True)
    leader.join(5)
    assert not flight.in_flight("k")


def test_a_computation_asking_through_a_child_task_computes() -> None:
    # asyncio.gather wraps the nested call in a task of its own: not the leader's task,
    # but it inherits the leader's context, which marks the call as led there.
    flight = AsyncSingleFlight()

    async def leaf() -> str:
        return "leaf"

    async def outer() -> str:
        (inner,) = await asyncio.gather(flight.do("k", leaf))
        return f"outer({inner[0]})"

    async def main() -> tuple[str, bool]:
        return await asyncio.wait_for(flight.do("k", outer), 5)

    assert asyncio.run(main()) == ("outer(leaf)", False)


def test_a_computation_asking_from_a_thread_with_its_context_computes() -> None:
    # sync_to_async and copy_context().run carry the context into the worker thread.
    import contextvars
    from concurrent.futures import ThreadPoolExecutor

    flight = SingleFlight()
    with ThreadPoolExecutor(1) as pool:

        def outer() -> str:
            context = contextvars.copy_context()
            nested = pool.submit(context.run, flight.do, "k", lambda: "leaf")
            return f"outer({nested.result(timeout=5)[0]})"

        assert flight.do("k", outer) == ("outer(leaf)", False)
    assert not flight.in_flight("k")


def test_computations_left_in_closed_loops_are_reaped_by_later_ones() -> None:
    # SQLiteCache/MultiLevelCache aget_or_set (run_until_complete(wait_for(...)) timed
    # out, then loop.close()) kept each such computation's entry, its loop and its
    # pending task for the life of the process (500 keys: +6.7 MB). Each new
    # computation now examines a few old ones.
    flight = AsyncSingleFlight()

    async def forever() -> None:
        await asyncio.Event().wait()

    async def quick() -> str:
        return "v"

    async def give_up(key: str) -> None:
        caller = asyncio.ensure_future(flight.do(key, forever))
        while not flight.in_flight(key):
            await asyncio.sleep(0)
        await asyncio.sleep(0)  # the computation has started
        caller.cancel()  # as wait_for does at its timeout
        with pytest.raises(asyncio.CancelledError):
            await caller

    def of_closed_loops() -> int:
        slots = [*flight._calls, *flight._lanes, *flight._waiters]
        return sum(1 for loop, _ in slots if loop.is_closed())

    for i in range(20):
        loop = asyncio.new_event_loop()
        loop.run_until_complete(give_up(f"left{i}"))
        loop.close()
    assert of_closed_loops() >= 1  # (each new one reaped some of those before it)
    for i in range(20):
        assert asyncio.run(flight.do(f"fresh{i}", quick)) == ("v", False)
    assert of_closed_loops() == 0
    assert not flight._started  # the fresh ones left it as they ended
