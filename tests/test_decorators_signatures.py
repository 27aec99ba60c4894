"""``@cached``: wrapper signatures, keys of unusual arguments and defaults, refused
function kinds."""

from __future__ import annotations

import asyncio
import functools
import gc
import threading
import time

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.utils.decorators import method_decorator

from django_smartcache.decorators import cached
from tests.test_decorators import memo_caches  # noqa: F401 (autouse fixture)

# -- wrappers made with functools.wraps -----------------------------------------------


class Rates:
    def __init__(self, source: str = "bank") -> None:
        self.source = source

    def __cache_key__(self):
        return self.source

    @method_decorator(cached)
    def latest(self, base, quote="USD"):
        return f"{self.source}:{base}/{quote}"


def _with_user(func):
    """A decorator adding a leading argument."""

    @functools.wraps(func)
    def wrapper(user, *args, **kwargs):
        return f"{user}: {func(*args, **kwargs)}"

    return wrapper


@cached
@_with_user
def _greeting(lang):
    return {"fr": "bonjour"}.get(lang, "hello")


def test_a_wrapper_is_called_with_its_own_signature() -> None:
    """inspect.signature() follows __wrapped__: method_decorator(cached) raised
    "missing a required argument: 'base'", a wrapper adding an argument "too many
    positional arguments"."""
    rates = Rates()
    assert rates.latest("EUR") == "bank:EUR/USD"
    assert rates.latest("EUR", quote="GBP") == "bank:EUR/GBP"
    assert Rates("ecb").latest("EUR") == "ecb:EUR/USD"  # the instance is keyed
    assert rates.latest("EUR") == "bank:EUR/USD"
    assert _greeting("alice", "fr") == "alice: bonjour"
    assert _greeting("bob", "fr") == "bob: bonjour"
    assert _greeting("alice", lang="en") == "alice: hello"


def _in_currency(rate):
    def decorate(func):
        @functools.wraps(func)
        def wrapper(amount):
            return round(func(amount) * rate, 2)

        return wrapper

    return decorate


def _net_price(amount):
    return amount * 1.2


def _logging(func):
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        return func(*args, **kwargs)

    return wrapper


def test_two_wrappers_of_one_function_do_not_share_entries() -> None:
    usd = cached(_in_currency(1.0)(_net_price))
    eur = cached(_in_currency(0.9)(_net_price))
    assert (usd(100), eur(100)) == (120.0, 108.0)
    assert usd.key(100) != eur.key(100)
    plain = cached(_net_price)
    logged = cached(_logging(_net_price))  # another wrapper's code
    assert len({plain.key(1), logged.key(1), usd.key(1)}) == 3
    # The same wrapper of the same function, with the same captures: the same key.
    assert cached(_in_currency(0.9)(_net_price)).key(5) == eur.key(5)


def test_a_wrapper_capturing_what_cannot_be_keyed_counts_it_by_type() -> None:
    # @transaction.atomic (an Atomic), a logging decorator (a Logger), a Lock: refusing
    # them refused everyday decorators. Such a value counts by its type.
    import threading as threads

    def holding(value):
        def decorate(func):
            @functools.wraps(func)
            def wrapper(amount):
                with value:
                    return func(amount)

            return wrapper

        return decorate

    first = cached(holding(threads.Lock())(_net_price))
    assert first(1) == 1.2
    assert first.key(1) == cached(holding(threads.Lock())(_net_price)).key(1)
    assert first.key(1) != cached(holding(threads.RLock())(_net_price)).key(1)


def test_a_wrapper_passing_everything_on_binds_as_the_function_it_wraps() -> None:
    # (*args, **kwargs): price("x"), price(item="x") and price("x", rate=1.0) are one
    # call, one entry; bound to the wrapper's own signature they were three, and
    # invalidate(item="x") left the others stale.
    calls = []

    def base_price(item, rate=1.0):
        calls.append(item)
        return 100 * rate

    def logged(func):
        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            return func(*args, **kwargs)

        return wrapper

    price = cached(using="smart", name="passing_on_price")(logged(base_price))
    for call in (
        lambda: price("x"),
        lambda: price("x", 1.0),
        lambda: price(item="x"),
        lambda: price("x", rate=1.0),
    ):
        assert call() == 100.0
    assert calls == ["x"]
    assert price.invalidate(item="x") is True
    assert price("x") == 100.0 and calls == ["x", "x"]


# -- generators and coroutines ----------------------------------------------------------


def _rows(n):
    yield from range(n)


async def _arows(n):
    yield n


async def _fetch(n):
    return n


def test_generator_functions_are_refused_at_decoration() -> None:
    """They were accepted, then every call failed with UnpicklableValueError naming
    'its value of type tuple' (the envelope) on SmartCache."""
    for function in (_rows, _arows):
        with pytest.raises(TypeError, match="generator function"):
            cached(using="smart")(function)


def test_a_sync_wrapper_returning_a_coroutine_is_named(recwarn) -> None:
    wrapped = cached(using="smart", name="sync_wrapper")(_logging(_fetch))
    with pytest.raises(TypeError, match="sync_wrapper returned a coroutine"):
        wrapped(3)
    gen = cached(name="sync_gen")(_logging(_rows))
    with pytest.raises(TypeError, match="sync_gen returned a generator"):
        gen(3)

    gc.collect()
    assert not [w for w in recwarn if "never awaited" in str(w.message)]


# -- defaults without an encoding --------------------------------------------------------

_MISSING = object()


def test_sentinel_and_function_defaults_are_keyed_by_their_parameter() -> None:
    """Every call relying on them raised "cannot build a stable cache key from
    builtins.object objects", not naming the parameter."""
    runs = []

    @cached(name="probe.setting")
    def setting(name, default=_MISSING):
        runs.append(name)
        return {"SITE": "example"}.get(
            name, "fallback" if default is _MISSING else default
        )

    @cached
    def slug(text, normalize=str.lower):
        return normalize(text)

    assert setting("SITE") == "example"
    assert setting("OTHER") == "fallback"
    assert setting("OTHER", "x") == "x"
    # Passing the default itself is the same call as leaving it out.
    assert setting.key("SITE", _MISSING) == setting.key("SITE")
    assert setting.key("SITE", default=_MISSING) == setting.key("SITE")
    assert setting("SITE", _MISSING) == "example"
    assert runs == ["SITE", "OTHER", "OTHER"]
    assert slug("Ab") == "ab"
    assert slug("Ab", str.lower) == "ab"
    with pytest.raises(TypeError, match="builtins.object"):
        setting("SITE", object())  # another object still has no encoding
    with pytest.raises(TypeError):
        slug("Ab", str.upper)


# -- early refresh ------------------------------------------------------------------------


def test_callers_deciding_to_refresh_at_once_refresh_once(monkeypatch) -> None:
    """The check of the flight and joining it were two steps: callers deciding at once
    all waited for the whole computation (8 of 8 with the window widened)."""
    import uuid

    from django_smartcache import decorators

    class SlowUUID:  # a thread preempted between the check and the join
        def uuid4(self):
            time.sleep(0.05)
            return uuid.uuid4()

    runs, answered, answered_during_the_refresh = [], [], []

    @cached(
        name="probe.report", timeout=10, early_refresh=True, random=lambda: 0.999999999
    )
    def report(x):
        runs.append(x)
        if len(runs) == 1:
            time.sleep(0.5)  # the computation time that early refresh weighs
        else:
            # The refresh computes until the 7 other callers have their answer (not a
            # fixed 0.5 s against a 0.3 s threshold for the others' wait, which a
            # caller stalled on a loaded machine could pass): one that waited for it
            # would not answer before it returned (bounded).
            deadline = time.monotonic() + 30
            while len(answered) < 7 and time.monotonic() < deadline:
                time.sleep(0.005)
            answered_during_the_refresh.append(len(answered))
        return len(runs)

    assert report(1) == 1
    monkeypatch.setattr(decorators, "uuid", SlowUUID())
    barrier = threading.Barrier(8)

    def call():
        barrier.wait()
        answered.append(report(1))

    threads = [threading.Thread(target=call) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(runs) == 2  # one refresh
    assert answered_during_the_refresh == [7]  # nobody but the refresher waited for it
    assert sorted(answered) == [1] * 7 + [2]


# -- async functions invalidated from sync code ----------------------------------------


_PRICE_RUNS = [0]


@cached(timeout=300)
async def _price(pk):
    _PRICE_RUNS[0] += 1
    return _PRICE_RUNS[0]


def test_async_invalidate_and_refresh_work_from_sync_code() -> None:
    """invalidate() returned a never-awaited coroutine (truthy) and deleted nothing."""
    price = _price
    _PRICE_RUNS[0] = 0
    assert asyncio.run(price(1)) == 1
    assert price.invalidate(1) is True  # a post_save receiver: no loop here
    assert price.invalidate(1) is False
    assert asyncio.run(price(1)) == 2
    assert price.refresh(1) == 3
    assert asyncio.run(price(1)) == 3

    async def in_a_loop():
        assert await price.invalidate(1) is True  # still awaitable in async code
        assert await price.ainvalidate(1) is False
        assert await price.arefresh(1) == 4
        # A sync receiver run in a thread by sync_to_async: no loop in that thread.
        assert await sync_to_async(price.invalidate)(1) is True

    asyncio.run(in_a_loop())
    assert asyncio.run(price(1)) == 5


# -- async functions: one computation per process, not per event loop --------------------

_RATE_RUNS = []


@cached(timeout=300)
async def _rate(code):
    _RATE_RUNS.append(code)
    await asyncio.sleep(0.3)
    return 1.1


def test_async_misses_compute_once_across_event_loops() -> None:
    """8 threads calling through async_to_sync (8 loops) computed 8 times."""
    _RATE_RUNS.clear()
    barrier, results = threading.Barrier(8), []

    def call():
        barrier.wait()
        results.append(async_to_sync(_rate)("EUR"))

    threads = [threading.Thread(target=call) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [1.1] * 8
    assert _RATE_RUNS == ["EUR"]
    assert _rate.invalidate("EUR") is True  # from sync code, forgets the flight too


_SLOW_RUNS = []


@cached(timeout=300)
async def _slow(code):
    _SLOW_RUNS.append(code)
    # The first run (the leader's) is cancelled when its loop shuts down; it must not be
    # able to finish first however late the waiter's thread starts on a loaded machine.
    await asyncio.sleep(60 if len(_SLOW_RUNS) == 1 else 0)
    return len(_SLOW_RUNS)


def test_a_waiter_of_another_loop_computes_when_the_leaders_loop_goes_away() -> None:
    from django_smartcache import decorators

    _SLOW_RUNS.clear()
    flight_key = ("default", _slow.key("x"))

    async def leader():  # its loop shuts down mid-computation, cancelling it
        asyncio.get_running_loop().create_task(_slow("x"))
        while not decorators._ASYNC_FLIGHT.waiting(flight_key):
            await asyncio.sleep(0.005)

    results = []
    waiter = threading.Thread(target=lambda: results.append(asyncio.run(_slow("x"))))
    started = threading.Thread(target=lambda: asyncio.run(leader()))
    started.start()
    while not decorators._ASYNC_FLIGHT.in_flight(flight_key):
        time.sleep(0.005)
    waiter.start()
    started.join()
    waiter.join(10)
    assert results == [2]  # it led a new computation


def test_an_async_computation_asking_for_its_key_through_a_child_task_computes() -> (
    None
):
    # The process-wide async flight waited for itself when the computation asked for
    # its own key from asyncio.gather's child task (a call from its own task computed).
    depth = 0

    @cached(using="smart", name="nested_through_gather")
    async def report(n: int) -> str:
        nonlocal depth
        depth += 1
        if depth == 1:
            (inner,) = await asyncio.gather(report(n))
            return f"outer({inner})"
        return "leaf"

    async def main() -> str:
        return await asyncio.wait_for(report(1), 5)

    assert asyncio.run(main()) == "outer(leaf)"
