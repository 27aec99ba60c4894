"""``@cached`` at its edges: scripts' functions, pickling, a lock the cache refuses,
values that cannot be stored, arguments too deep to key."""

from __future__ import annotations

import asyncio
import copy
import logging
import pickle
import threading
import time
import warnings
from typing import ClassVar

import pytest
from django.core.cache import caches
from django.core.cache.backends.locmem import LocMemCache

from django_smartcache._memo_envelope import _lock_key
from django_smartcache.decorators import cached
from tests.test_decorators import memo_caches  # noqa: F401 (autouse fixture)

# -- functions without a module of their own ------------------------------------------

SCRIPT = """
@cached(timeout=60)
def lookup(item):
    return item
"""


@pytest.mark.parametrize(
    ("namespace", "says"),
    [
        ({"__name__": "__main__"}, "is defined in __main__"),  # python script.py
        ({}, "was compiled from a string"),  # manage.py shell, exec(): no module
        ({"__name__": "django.core.management.commands.shell"}, "from a string"),
    ],
)
def test_a_scripts_function_without_a_name_is_warned_about(namespace, says) -> None:
    # Two cron scripts each defining lookup() in __main__ read each other's entries.
    namespace["cached"] = cached
    with pytest.warns(RuntimeWarning, match=says) as caught:
        exec(compile(SCRIPT, "<string>", "exec"), namespace)  # noqa: S102
    message = str(caught[0].message)
    assert "lookup" in message and "name=" in message
    assert caught[0].filename == "<string>"  # points at the decorated line
    assert namespace["lookup"]("book") == "book"  # still works


def test_a_named_script_function_and_a_module_function_are_not_warned_about() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        exec(  # noqa: S102
            compile(
                SCRIPT.replace("timeout=60", 'name="cron.prices.lookup"'), "x", "exec"
            ),
            {"__name__": "__main__", "cached": cached},
        )

        @cached
        def module_level(item):
            return item

        assert module_level("x") == "x"


# -- pickling -------------------------------------------------------------------------


@cached(timeout=60)
def square(x):
    return x * x


class Shelf:
    def __init__(self, label: str) -> None:
        self.label = label

    def __cache_key__(self):
        return self.label

    @cached(timeout=60)
    def item(self, n):
        return f"{self.label}:{n}"

    @cached(timeout=60)
    @classmethod
    def kind(cls, n):
        return f"{cls.__name__}:{n}"

    @cached(timeout=60)
    @staticmethod
    def twice(n):
        return 2 * n


@pytest.mark.parametrize(
    "protocol", [2, pickle.DEFAULT_PROTOCOL, pickle.HIGHEST_PROTOCOL]
)
def test_memoized_functions_pickle_by_reference(protocol) -> None:
    # As functions and lru_cache wrappers do: multiprocessing with spawn and
    # ProcessPoolExecutor send the function by name.
    assert pickle.loads(pickle.dumps(square, protocol)) is square
    assert pickle.loads(pickle.dumps(Shelf.item, protocol)) is Shelf.item
    assert pickle.loads(pickle.dumps(Shelf.twice, protocol))(3) == 6
    assert pickle.loads(pickle.dumps(Shelf.kind, protocol))(1) == "Shelf:1"
    bound = pickle.loads(pickle.dumps(Shelf("top").item, protocol))
    assert bound(2) == "top:2"
    assert bound.__self__.label == "top"
    assert copy.copy(square) is square and copy.deepcopy(square) is square


# -- a lock the cache will not store --------------------------------------------------


class RefusingLockCache(LocMemCache):
    """Turns every lock away without storing it, as an admission policy of a full
    cache does (SmartCache under tinylfu): add() is False and nobody holds it."""

    def add(self, key, value, timeout=None, version=None):
        if key.endswith(":lock"):
            return False
        return super().add(key, value, timeout=timeout, version=version)


@pytest.fixture
def refusing(settings):
    settings.CACHES = {
        **settings.CACHES,
        "refusing": {
            "BACKEND": f"{__name__}.RefusingLockCache",
            "LOCATION": "refusing",
        },
    }
    return "refusing"


def test_a_lock_refused_with_no_holder_computes_at_once(refusing, caplog) -> None:
    calls = []

    @cached(using=refusing, timeout=60, lock=True, lock_timeout=2, name="t.lookup")
    def lookup(x):
        calls.append(x)
        return x

    started = time.monotonic()
    with caplog.at_level(logging.DEBUG, "django_smartcache.decorators"):
        assert [lookup(1), lookup(2), lookup(1)] == [1, 2, 1]
    # It waited 2 x lock_timeout (4 s) per call for a holder that did not exist.
    assert time.monotonic() - started < 1.0
    assert calls == [1, 2]  # stored: the third call is a hit
    assert lookup.locks_refused == 2
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "did not store the lock" in warned[0].getMessage()


def test_an_async_lock_refused_with_no_holder_computes_at_once(refusing) -> None:
    @cached(using=refusing, timeout=60, lock=True, lock_timeout=2)
    async def lookup(x):
        return x

    started = time.monotonic()
    assert asyncio.run(lookup(1)) == 1
    assert time.monotonic() - started < 1.0
    assert lookup.locks_refused == 1


class HolderLeftCache(LocMemCache):
    """The first add() of each lock fails as if a holder had it, and that holder
    lets go without storing (its function raised) before the caller reads the lock."""

    refused: ClassVar[set[str]] = set()

    def add(self, key, value, timeout=None, version=None):
        if key.endswith(":lock") and key not in self.refused:
            self.refused.add(key)
            return False
        return super().add(key, value, timeout=timeout, version=version)


@pytest.fixture
def holder_left(settings):
    HolderLeftCache.refused = set()
    settings.CACHES = {
        **settings.CACHES,
        "holder_left": {
            "BACKEND": f"{__name__}.HolderLeftCache",
            "LOCATION": "holder_left",
        },
    }
    return "holder_left"


def test_a_holder_letting_go_without_storing_is_not_an_admission_refusal(
    holder_left, caplog
) -> None:
    # Every waiter in that window logged the admission-policy WARNING, counted a
    # refused lock and computed without the lock. Now it takes the lock on a second
    # add(); only a second refusal with nobody holding it is a refusal.
    held: list[bool] = []

    @cached(using=holder_left, timeout=60, lock=True, name="t.left")
    def lookup(x):
        held.append(caches[holder_left].get(_lock_key(lookup.key(x))) is not None)
        return x

    @cached(using=holder_left, timeout=60, lock=True, name="t.aleft")
    async def alookup(x):
        lock = await caches[holder_left].aget(_lock_key(alookup.key(x)))
        held.append(lock is not None)
        return x

    with caplog.at_level(logging.DEBUG, "django_smartcache.decorators"):
        assert lookup(1) == 1
        assert asyncio.run(alookup(1)) == 1
    assert held == [True, True]  # computed under the lock
    assert lookup.locks_refused == 0 and alookup.locks_refused == 0
    assert not [r for r in caplog.records if "did not store the lock" in r.getMessage()]


# -- a value that cannot be stored ----------------------------------------------------


@pytest.fixture(params=["locmem", "smart", "redis", "ml_redis"])
def any_backend(request, settings):
    kind = request.param
    caches_setting = dict(settings.CACHES)
    if kind in ("redis", "ml_redis"):
        caches_setting["redis"] = {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": request.getfixturevalue("redis_url"),
        }
        caches_setting["ml_redis"] = {
            "BACKEND": "django_smartcache.backends.MultiLevelCache",
            "OPTIONS": {
                "LEVELS": [
                    {
                        "BACKEND": "django_smartcache.backends.SmartCache",
                        "LOCATION": "l1",
                    },
                    "redis",
                ]
            },
        }
    settings.CACHES = caches_setting
    return {"locmem": "default"}.get(kind, kind)


def test_a_value_that_cannot_be_pickled_raises_one_error_naming_the_function(
    any_backend,
) -> None:
    from django_smartcache.backends.base import UnpicklableValueError

    calls = []

    @cached(using=any_backend, timeout=60, name="shop.open_lock")
    def open_lock(x):
        calls.append(x)
        return threading.Lock()

    for _ in range(2):  # nothing stored: each call computes and raises
        with pytest.raises(
            UnpicklableValueError, match=r"shop\.open_lock returned"
        ) as e:
            open_lock(1)
        assert isinstance(e.value, TypeError)
        assert "_thread.lock" in str(e.value) and open_lock.key(1) in str(e.value)
    assert calls == [1, 1]

    @cached(using=any_backend, timeout=60, name="shop.aopen_lock")
    async def aopen_lock(x):
        return threading.Lock()

    with pytest.raises(UnpicklableValueError, match=r"shop\.aopen_lock returned"):
        asyncio.run(aopen_lock(1))


# -- arguments too deep to key --------------------------------------------------------


@cached(timeout=60)
def scale(x, factor=1):
    return x * factor


def test_an_argument_nested_too_deeply_is_the_documented_type_error() -> None:
    deep: list = []
    for _ in range(5000):
        deep = [deep]
    for call in (
        lambda: scale(deep),  # the positional path
        lambda: scale(x=deep, factor=2),  # the keyword path
        lambda: scale((deep,)),  # inside a tuple (the fast encoder)
        lambda: scale.key(deep),
        lambda: scale.invalidate(deep),
    ):
        with pytest.raises(TypeError, match="nested too deeply"):
            call()
    assert scale([[[1]]], 2) == [[[1]], [[1]]]  # a shallow one still works


# -- a computation asking for its own key from another thread -------------------------


def test_a_worker_thread_given_the_context_computes_the_nested_call() -> None:
    """docs/memoize.md's workaround: a computation that asks for its own key from a
    pool worker hangs (the nested call waits for it, it waits for the worker) unless
    the worker runs in its context, ``copy_context().run``: then the nested call is
    computed on its own, as a recursive call is."""
    import contextvars
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(1)
    depth = []

    @cached(using="smart", name="t.edges.nested_in_thread")
    def config(x):
        depth.append(x)
        if len(depth) == 1:
            ctx = contextvars.copy_context()
            return {"region": pool.submit(ctx.run, config, x).result()["region"]}
        return {"region": "eu"}

    out: list[dict[str, str]] = []
    caller = threading.Thread(target=lambda: out.append(config(1)), daemon=True)
    caller.start()
    caller.join(10)
    pool.shutdown(wait=False)
    assert out == [{"region": "eu"}]
    assert len(depth) == 2


# -- invalidate() with lock=True ---------------------------------------------------------


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_invalidate_lets_the_next_caller_start_at_once_despite_the_lock(kind) -> None:
    """docs/memoize.md: callers arriving after invalidate() start a new computation
    instead of waiting for the old one. With lock=True, a caller (of any process)
    waited for the voided computation's lock until that computation ended (probe i4:
    0.9 s of 1.0 s), here held by "another process" that never lets go."""
    runs = []

    @cached(using="smart", name=f"t.edges.inval_lock_{kind}", lock=True, lock_timeout=5)
    def report(x):
        runs.append(x)
        return x

    @cached(
        using="smart", name=f"t.edges.ainval_lock_{kind}", lock=True, lock_timeout=5
    )
    async def areport(x):
        runs.append(x)
        return x

    function = report if kind == "sync" else areport
    lock = _lock_key(function.key(1))
    assert caches["smart"].add(lock, "another-process", timeout=5)  # computing
    started = time.monotonic()
    if kind == "sync":
        report.invalidate(1)
        assert report(1) == 1
    else:

        async def scenario():
            await areport.invalidate(1)
            return await areport(1)

        assert asyncio.run(scenario()) == 1
    assert time.monotonic() - started < 2.0  # not the lock's 5 s
    assert runs == [1]
    assert caches["smart"].get(lock) is None  # its own lock, released


def test_the_key_function_gets_the_arguments_as_passed() -> None:
    """docs/memoize.md, Keys: key= is called as the function was, defaults not
    applied (probe k8); giving it the function's defaults makes f(1) and f(1, 2)
    one call."""
    seen = []

    @cached(
        using="smart",
        name="t.edges.key_as_passed",
        key=lambda *a, **k: seen.append((a, k)),
    )
    def f(a, b=2):
        return a + b

    f(1), f(1, b=2), f(a=1)
    assert seen == [((1,), {}), ((1,), {"b": 2}), ((), {"a": 1})]

    @cached(using="smart", name="t.edges.key_defaults", key=lambda a, b=2: (a, b))
    def g(a, b=2):
        seen.append(a)
        return a + b

    seen.clear()
    assert g(1) == g(1, 2) == g(a=1, b=2) == 3
    assert seen == [1]
