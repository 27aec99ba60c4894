"""``@cached``: memoization, keys, expiry, stale serving, early refresh, single flight."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import operator
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from asgiref.sync import async_to_sync, iscoroutinefunction, sync_to_async
from django.contrib.auth.models import AnonymousUser, User
from django.core.cache import caches
from django.core.cache.backends.locmem import LocMemCache
from django.core.exceptions import ImproperlyConfigured
from django.utils.functional import SimpleLazyObject

import django_smartcache
from django_smartcache import decorators
from django_smartcache._memo_envelope import _lock_key, _void_key
from django_smartcache.core.singleflight import SingleFlightGetOrSetMixin
from django_smartcache.decorators import cached, supports_tags
from django_smartcache.signals import stampede_wait
from tests.fixtures import waiting
from tests.fixtures.tagged_caches import on_every_tagged_backend

ARRIVAL_TIMEOUT = 30.0


def wait_until(condition: Callable[[], object]) -> None:
    waiting.wait_until(condition, ARRIVAL_TIMEOUT, "the other callers never arrived")


class TaggingLocMemCache(LocMemCache):
    """A LocMemCache that keeps a tag -> keys index: a backend with the tags capability."""

    def __init__(self, name, params):
        super().__init__(name, params)
        self.tagged: dict[str, set[str]] = {}

    def set(self, key, value, timeout=None, version=None, tags=()):
        super().set(key, value, timeout=timeout, version=version)
        for tag in tags:
            self.tagged.setdefault(tag, set()).add(key)

    def invalidate_tags(self, *tags):
        for tag in tags:
            for key in self.tagged.pop(tag, ()):
                self.delete(key)


class SingleFlightLocMemCache(SingleFlightGetOrSetMixin, LocMemCache):
    """LocMemCache with single-flight get_or_set, as our backends mix it in."""


def locmem(name: str, backend: str = "django.core.cache.backends.locmem.LocMemCache"):
    return {"BACKEND": backend, "LOCATION": name}


@pytest.fixture(autouse=True)
def memo_caches(settings, request):
    settings.CACHES = {
        "default": locmem(f"memo-default-{request.node.name}"),
        "tagging": locmem(
            f"memo-tagging-{request.node.name}", f"{__name__}.TaggingLocMemCache"
        ),
        "flight": locmem(
            f"memo-flight-{request.node.name}", f"{__name__}.SingleFlightLocMemCache"
        ),
        "flight2": locmem(
            f"memo-flight2-{request.node.name}", f"{__name__}.SingleFlightLocMemCache"
        ),
        "smart": {"BACKEND": "django_smartcache.backends.SmartCache"},
    }
    yield
    for alias in settings.CACHES:
        caches[alias].clear()


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# -- memoization and keys ------------------------------------------------------------------


@pytest.mark.parametrize("alias", ["default", "smart"])
def test_computes_once_and_caches_none(alias) -> None:
    runs = Counter()

    @cached(name="test_computes_once_and_caches_none.lookup", using=alias)
    def lookup(name, missing=False):
        runs[name] += 1
        return None if missing else name.upper()

    assert lookup("a") == "A"
    assert lookup("a") == "A"
    assert lookup("gone", missing=True) is None
    assert lookup("gone", missing=True) is None
    assert runs == {"a": 1, "gone": 1}


def test_equal_calls_share_one_key_whatever_their_spelling() -> None:
    @cached(name=f"{__name__}.area")
    def area(width, height=2, *, unit="m"):
        return width * height

    key = area.key(3)
    assert area.key(3, 2) == key
    assert area.key(width=3) == key
    assert area.key(height=2, width=3, unit="m") == key
    assert area.key(3, 3) != key
    assert area.key(3, unit="cm") != key
    assert key.startswith(f"smartcache.memo:{__name__}.")
    with pytest.raises(TypeError):
        area.key(1, 2, 3)


def test_positional_fast_path_and_bound_path_agree() -> None:
    @cached(name="test_positional_fast_path_and_bound_path_agree.plain")
    def plain(a, b=2):
        return a + b

    # Positional-only calls skip Signature.bind(); keyword calls go through it.
    assert plain.key(1) == plain.key(1, 2) == plain.key(a=1) == plain.key(b=2, a=1)
    assert plain.key(1, 3) == plain.key(1, b=3) != plain.key(1)
    with pytest.raises(TypeError):
        plain.key()
    with pytest.raises(TypeError):
        plain.key(1, 2, 3)


def test_key_names_the_stored_entry_and_foreign_values_are_misses() -> None:
    runs = []

    @cached(name="test_key_names_the_stored_entry_and_foreign_values_are_misses.double")
    def double(x):
        runs.append(x)
        return 2 * x

    caches["default"].set(double.key(4), "not an envelope")
    assert double(4) == 8
    assert caches["default"].get(double.key(4))[1] == 8
    assert double(4) == 8
    assert runs == [4]


def test_invalidate_and_refresh() -> None:
    value = {"n": 1}

    @cached(name="test_invalidate_and_refresh.read")
    def read(key):
        return value["n"]

    assert read("k") == 1
    value["n"] = 2
    assert read("k") == 1
    assert read.invalidate("k") is True
    assert read.invalidate("k") is False
    assert read("k") == 2
    value["n"] = 3
    assert read.refresh("k") == 3
    assert read("k") == 3


def test_unsupported_arguments_raise_and_key_function_is_the_way_out() -> None:
    class Opaque:
        pass

    @cached(
        name="test_unsupported_arguments_raise_and_key_function_is_the_way_out.strict"
    )
    def strict(obj):
        return 1

    with pytest.raises(TypeError, match="__cache_key__"):
        strict(Opaque())

    calls = []

    @cached(
        name="test_unsupported_arguments_raise_and_key_function_is_the_way_out.lenient",
        key=lambda obj, n: n,
    )
    def lenient(obj, n):
        calls.append(n)
        return n

    assert lenient(Opaque(), 1) == lenient(Opaque(), 1) == 1
    assert calls == [1]


def test_model_instances_are_keyed_by_label_and_pk() -> None:
    @cached(name="test_model_instances_are_keyed_by_label_and_pk.name_of")
    def name_of(user):
        return user.username

    assert name_of.key(User(pk=1, username="a")) == name_of.key(
        User(pk=1, username="b")
    )
    assert name_of.key(User(pk=1)) != name_of.key(User(pk=2))
    with pytest.raises(TypeError, match=r"unsaved auth\.User"):
        name_of.key(User(username="new"))


def test_request_user_anonymous_or_logged_in_is_keyed() -> None:
    """``request.user`` is a ``SimpleLazyObject``: around a saved user it was keyed
    as the user, around ``AnonymousUser`` it raised TypeError naming
    ``SimpleLazyObject`` for every visitor not logged in (probe k10). Anonymous
    users are all equal in Django (``AnonymousUser.__eq__``): one key."""
    runs = []

    @cached(name="test_request_user_is_keyed.menu_for")
    def menu_for(user):
        runs.append(user.is_authenticated)
        return ["home", "account" if user.is_authenticated else "login"]

    anonymous = [SimpleLazyObject(AnonymousUser) for _ in range(2)]
    assert menu_for(anonymous[0]) == menu_for(anonymous[1]) == ["home", "login"]
    assert menu_for(AnonymousUser()) == ["home", "login"]
    assert runs == [False]
    saved = User(pk=7, username="alice")
    assert menu_for.key(SimpleLazyObject(lambda: saved)) == menu_for.key(saved)
    assert menu_for.key(saved) != menu_for.key(AnonymousUser())

    class Visitor(AnonymousUser):  # a project's own: not the same constant
        pass

    assert menu_for.key(Visitor()) != menu_for.key(AnonymousUser())

    class Tenant(AnonymousUser):  # state of its own, and an equality that says so
        def __init__(self, tenant: str) -> None:
            self.tenant = tenant

        def __eq__(self, other: object) -> bool:
            return isinstance(other, Tenant) and other.tenant == self.tenant

        __hash__ = AnonymousUser.__hash__

    with pytest.raises(TypeError, match="Tenant"):  # (a review: all keyed alike)
        menu_for.key(Tenant("a"))


def test_an_unkeyable_lazy_object_is_named_by_what_it_wraps() -> None:
    class Opaque:
        pass

    class Keyed:
        def __cache_key__(self):
            return "k"

    @cached(name="test_an_unkeyable_lazy_object_is_named_by_what_it_wraps.f")
    def f(x):
        return x

    with pytest.raises(TypeError) as raised:
        f.key(SimpleLazyObject(Opaque))
    assert "Opaque objects (behind a django.utils.functional.SimpleLazyObject)" in (
        str(raised.value)
    )
    assert f.key(SimpleLazyObject(Keyed)) == f.key(Keyed())


class Shelf:
    instances_computed = 0

    def __init__(self, ident: int) -> None:
        self.ident = ident
        self.runs = 0

    def __cache_key__(self) -> int:
        return self.ident

    @cached
    def count(self, colour):
        self.runs += 1
        return f"{self.ident}:{colour}"

    @cached
    @classmethod
    def kind(cls, name):
        Shelf.instances_computed += 1
        return f"{cls.__name__}:{name}"

    @cached
    @staticmethod
    def total(a, b):
        return a + b


def test_methods_include_their_instance_identity() -> None:
    one, other, same = Shelf(1), Shelf(2), Shelf(1)
    assert one.count("red") == "1:red"
    assert one.count("red") == "1:red"
    assert same.count("red") == "1:red"  # same identity: a hit
    assert other.count("red") == "2:red"
    assert (one.runs, same.runs, other.runs) == (1, 0, 1)
    assert one.count.key("red") == Shelf.count.key(one, "red")
    assert one.count.invalidate("red") is True
    assert same.count("red") == "1:red"
    assert same.runs == 1


def test_classmethods_and_staticmethods() -> None:
    Shelf.instances_computed = 0
    assert Shelf.kind("x") == "Shelf:x"
    assert Shelf(1).kind("x") == "Shelf:x"
    assert Shelf.instances_computed == 1
    assert Shelf.kind.invalidate("x") is True
    assert Shelf.total(1, 2) == Shelf(3).total(1, 2) == 3
    assert Shelf.total.key(1, 2) == Shelf(5).total.key(1, 2)


def test_package_exports_cached_lazily() -> None:
    assert django_smartcache.cached is cached
    with pytest.raises(AttributeError):
        django_smartcache.nonexistent  # noqa: B018


# -- options -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("timeout", -1),
        ("timeout", "60"),
        ("timeout", True),
        ("tags", "product"),
        ("tags", 5),
        ("tags", ["ok", 5]),
        ("key", "name"),
        ("using", 1),
        ("using", "nowhere"),
        ("lock", "yes"),
        ("lock_timeout", 0),
        ("early_refresh", 0),
        ("early_refresh", "1"),
        ("stale_if_error", -5),
        ("random", 0.5),
        ("clock", 1),
        ("prefix", "has space"),
        ("prefix", ""),
    ],
)
def test_wrong_options_name_themselves(option, value) -> None:
    with pytest.raises(ImproperlyConfigured, match=rf"cached\({option}=\.\.\.\)"):
        cached(**{option: value})


def test_tags_need_a_backend_that_can_store_them() -> None:
    assert not supports_tags(caches["default"])
    assert supports_tags(caches["tagging"])

    @cached(
        name="test_tags_need_a_backend_that_can_store_them.on_locmem", tags=["products"]
    )
    def on_locmem():
        return 1

    with pytest.raises(
        ImproperlyConfigured, match=r"cached\(tags=\.\.\.\).*'default'.*LocMemCache"
    ):
        on_locmem()


def test_tags_static_and_computed_reach_the_backend() -> None:
    runs = []

    @cached(
        name="test_tags_static_and_computed_reach_the_backend.product",
        using="tagging",
        tags=lambda pk: [f"product:{pk}", "products"],
    )
    def product(pk):
        runs.append(pk)
        return {"pk": pk}

    product(1), product(2), product(1)
    assert runs == [1, 2]
    caches["tagging"].invalidate_tags("product:1")
    product(1), product(2)
    assert runs == [1, 2, 1]
    caches["tagging"].invalidate_tags("products")
    product(1), product(2)
    assert runs == [1, 2, 1, 1, 2]

    @cached(
        name="test_tags_static_and_computed_reach_the_backend.bad",
        using="tagging",
        tags=lambda pk: "oops",
    )
    def bad(pk):
        return pk

    with pytest.raises(ImproperlyConfigured, match="returned the string"):
        bad(1)


def test_unknown_alias_after_settings_change_is_named(settings) -> None:
    @cached(name="test_unknown_alias_after_settings_change_is_named.f", using="smart")
    def f():
        return 1

    settings.CACHES = {"default": locmem("only")}
    with pytest.raises(ImproperlyConfigured, match=r"cached\(using=\.\.\.\).*'smart'"):
        f()


# -- expiry, stale values, early refresh ---------------------------------------------------


def test_logical_expiry_and_timeout_none() -> None:
    clock = Clock()
    runs = []

    @cached(name="test_logical_expiry_and_timeout_none.short", timeout=10, clock=clock)
    def short():
        runs.append("short")
        return len(runs)

    @cached(
        name="test_logical_expiry_and_timeout_none.forever", timeout=None, clock=clock
    )
    def forever():
        runs.append("forever")
        return len(runs)

    assert short() == 1 and forever() == 2
    clock.now += 9.9
    assert short() == 1
    clock.now += 0.2
    assert short() == 3
    clock.now += 10**9
    assert forever() == 2


def test_timeout_zero_always_recomputes() -> None:
    runs = []

    @cached(name="test_timeout_zero_always_recomputes.f", timeout=0)
    def f():
        runs.append(1)
        return len(runs)

    assert (f(), f()) == (1, 2)


def test_default_timeout_is_the_caches_timeout(settings) -> None:
    settings.CACHES = {"default": {**locmem("timeouts"), "TIMEOUT": 5}}
    clock = Clock()
    runs = []

    @cached(name="test_default_timeout_is_the_caches_timeout.f", clock=clock)
    def f():
        runs.append(1)
        return len(runs)

    assert f() == 1
    clock.now += 4
    assert f() == 1
    clock.now += 2
    assert f() == 2


def test_stale_value_is_served_when_recomputing_fails_within_grace() -> None:
    clock = Clock()
    state = {"fail": False, "n": 0}

    def compute():
        if state["fail"]:
            raise ConnectionError("upstream down")
        state["n"] += 1
        return state["n"]

    tolerant = cached(name="tolerant", timeout=10, stale_if_error=60, clock=clock)(
        lambda: compute()
    )
    strict = cached(name="strict", timeout=10, clock=clock)(lambda: compute())
    assert tolerant() == 1 and strict() == 2
    state["fail"] = True
    clock.now += 11
    assert tolerant() == 1  # stale, served
    with pytest.raises(ConnectionError):
        strict()
    clock.now += 60  # past the grace
    with pytest.raises(ConnectionError):
        tolerant()
    state["fail"] = False
    assert tolerant() == 3


def test_early_refresh_follows_xfetch_with_an_injected_random_source() -> None:
    clock = Clock()
    draws = [0.0]
    runs = []

    def slow():
        runs.append(clock.now)
        clock.now += 5  # the computation "costs" 5 seconds of the clock
        return len(runs)

    f = cached(
        name="slow",
        timeout=100,
        early_refresh=True,
        clock=clock,
        random=lambda: draws[0],
    )(slow)
    assert f() == 1  # stored at t0+5, expires at t0+105, cost 5
    clock.now += 90  # 10 s before expiry
    assert f() == 1  # draw 0: -ln(1) = 0, no head start
    draws[0] = 0.99  # head start -5 * ln(0.01) = 23 s > 10 s
    assert f() == 2
    assert len(runs) == 2
    draws[0] = 0.5  # head start 3.5 s, while the new entry has 100 s left
    assert f() == 2

    g = cached(
        name="g", timeout=100, early_refresh=0.1, clock=clock, random=lambda: 0.99
    )(slow)
    assert g() == 3
    clock.now += 90  # beta 0.1: head start 2.3 s < 10 s left
    assert g() == 3


def test_failed_early_refresh_keeps_the_fresh_value() -> None:
    clock = Clock()
    state = {"fail": False}

    def compute():
        if state["fail"]:
            raise RuntimeError("boom")
        clock.now += 1
        return "value"

    f = cached(
        name="compute",
        timeout=10,
        early_refresh=True,
        clock=clock,
        random=lambda: 0.999999,
    )(compute)
    assert f() == "value"
    state["fail"] = True
    assert f() == "value"


# -- stampede protection -------------------------------------------------------------------


@pytest.mark.parametrize("alias", ["default", "smart"])
def test_fifty_threads_on_a_cold_key_compute_once(alias) -> None:
    runs = []
    threads_count = 50
    waits = []

    def on_wait(sender, key, scope, seconds, **kwargs):
        waits.append(scope)

    @cached(name="test_fifty_threads_on_a_cold_key_compute_once.expensive", using=alias)
    def expensive(x):
        runs.append(x)
        flight_key = (alias, expensive.key(x))
        # Hold the computation until all the other threads wait for it.
        wait_until(lambda: decorators._FLIGHT.waiting(flight_key) == threads_count - 1)
        return {"x": x}

    results = []
    stampede_wait.connect(on_wait)
    try:
        threads = [
            threading.Thread(target=lambda: results.append(expensive(7)))
            for _ in range(threads_count)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        stampede_wait.disconnect(on_wait)
    assert runs == [7]
    assert results == [{"x": 7}] * threads_count
    assert waits == ["process"] * (threads_count - 1)


def test_get_or_set_of_a_mixin_backend_computes_once() -> None:
    runs = []
    threads_count = 20
    cache = caches["flight"]
    flight_key = (cache.singleflight_scope(), cache.make_key("k"))

    def compute():
        runs.append(1)
        wait_until(
            lambda: (
                SingleFlightGetOrSetMixin._singleflight.waiting(flight_key)
                == threads_count - 1
            )
        )
        return "v"

    results = []

    def call():
        results.append(caches["flight"].get_or_set("k", compute, timeout=60))

    threads = [threading.Thread(target=call) for _ in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert runs == [1]
    assert results == ["v"] * threads_count
    # Another LOCATION is another scope: no sharing of computations across stores.
    assert caches["flight2"].singleflight_scope() != cache.singleflight_scope()
    assert caches["flight2"].get_or_set("k", lambda: "w") == "w"
    assert cache.get_or_set("plain", 5) == 5


def test_lock_taken_by_a_crashed_holder_expires() -> None:
    runs = []

    @cached(
        name="test_lock_taken_by_a_crashed_holder_expires.guarded",
        lock=True,
        lock_timeout=1,
    )
    def guarded():
        runs.append(1)
        return "computed"

    # A holder that died: its lock stays until its timeout.
    assert caches["default"].add(_lock_key(guarded.key()), "dead-holder", timeout=1)
    assert guarded() == "computed"
    assert runs == [1]
    assert caches["default"].get(_lock_key(guarded.key())) is None  # released


def test_lock_waiter_takes_the_value_another_holder_stores() -> None:
    runs = []
    waits = []

    @cached(
        name="test_lock_waiter_takes_the_value_another_holder_stores.guarded",
        lock=True,
        lock_timeout=30,
    )
    def guarded():
        runs.append(1)
        return "mine"

    cache = caches["default"]
    lock_key = _lock_key(guarded.key())
    assert cache.add(lock_key, "other-process", timeout=30)

    def other_process_finishes():
        # Plays the holder in another process: it stores the envelope, then unlocks.
        wait_until(lambda: decorators._FLIGHT.in_flight(("default", guarded.key())))
        cache.set(
            guarded.key(), (decorators.ENVELOPE_MARK, "theirs", None, 0.0), timeout=None
        )
        cache.delete(lock_key)

    def on_wait(sender, key, scope, seconds, **kwargs):
        waits.append(scope)

    stampede_wait.connect(on_wait)
    holder = threading.Thread(target=other_process_finishes)
    holder.start()
    try:
        assert guarded() == "theirs"
    finally:
        holder.join()
        stampede_wait.disconnect(on_wait)
    assert runs == []
    assert waits == ["shared"]


def test_exception_reaches_every_waiter_and_nothing_is_cached() -> None:
    runs = []
    errors = []

    @cached(name="test_exception_reaches_every_waiter_and_nothing_is_cached.failing")
    def failing():
        runs.append(1)
        wait_until(lambda: decorators._FLIGHT.waiting(("default", failing.key())) == 4)
        raise ValueError("boom")

    def call():
        try:
            failing()
        except ValueError:
            errors.append(1)

    threads = [threading.Thread(target=call) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert (len(runs), len(errors)) == (1, 5)
    assert caches["default"].get(failing.key()) is None


# -- async ---------------------------------------------------------------------------------


def test_async_functions_are_memoized_once_per_cold_key() -> None:
    runs = []
    callers = 50

    @cached(name="test_async_functions_are_memoized_once_per_cold_key.fetch")
    async def fetch(x):
        runs.append(x)
        flight_key = ("default", fetch.key(x))
        while (
            len(runs) == 1
            and decorators._ASYNC_FLIGHT.waiting(flight_key) < callers - 1
        ):
            await asyncio.sleep(0)

    assert iscoroutinefunction(fetch)

    async def main():
        results = await asyncio.gather(*(fetch(3) for _ in range(callers)))
        assert results == [None] * callers
        assert await fetch(3) is None  # a cached None
        assert await fetch.invalidate(3) is True
        assert await fetch.refresh(3) is None
        assert await fetch(3) is None

    asyncio.run(main())
    assert runs == [3, 3]


def test_async_tags_stale_and_lock() -> None:
    clock = Clock()
    state = {"fail": False, "n": 0}

    @cached(
        name="test_async_tags_stale_and_lock.value",
        using="tagging",
        tags=["t"],
        timeout=10,
        stale_if_error=30,
        lock=True,
        clock=clock,
    )
    async def value():
        if state["fail"]:
            raise ConnectionError("down")
        state["n"] += 1
        return state["n"]

    async def main():
        assert await value() == 1
        assert await value() == 1
        caches["tagging"].invalidate_tags("t")
        assert await value() == 2
        state["fail"] = True
        clock.now += 11
        assert await value() == 2  # stale
        assert caches["tagging"].get(_lock_key(value.key())) is None

    asyncio.run(main())


def test_async_methods_bind_their_instance() -> None:
    class Service:
        def __init__(self, ident):
            self.ident = ident

        def __cache_key__(self):
            return self.ident

        @cached(name="test_async_methods_bind_their_instance.get")
        async def get(self, n):
            return (self.ident, n)

    async def main():
        service = Service(9)
        assert iscoroutinefunction(service.get)
        assert await service.get(1) == (9, 1)
        assert await service.get.invalidate(1) is True
        assert await service.get.refresh(2) == (9, 2)

    asyncio.run(main())


@on_every_tagged_backend
def test_tags_on_each_of_our_backends(tagged_cache) -> None:
    from django_smartcache import invalidate_tags

    runs = []

    @cached(
        name="test_tags_on_each_of_our_backends.product",
        using="tagged",
        tags=lambda pk: [f"product:{pk}", "products"],
    )
    def product(pk):
        runs.append(pk)
        return None if pk == 2 else {"pk": pk}  # a cached None is a hit too

    product(1), product(2), product(1), product(2)
    assert runs == [1, 2]
    tagged_cache.invalidate_tags("product:1")
    product(1), product(2)
    assert runs == [1, 2, 1]
    invalidate_tags("products", using="tagged")
    product(1), product(2)
    assert runs == [1, 2, 1, 1, 2]


@on_every_tagged_backend
def test_an_invalidation_during_the_computation_leaves_the_value_stale(
    tagged_cache,
) -> None:
    """Tag versions are read before computing, as get_or_set reads them: the value
    computed from data an invalidation then replaced is stored stale, never valid."""
    data = {"title": "old"}

    @cached(
        name="test_an_invalidation_during_the_computation_leaves_the_value_stale.title",
        using="tagged",
        tags=lambda pk: [f"book:{pk}"],
    )
    def title(pk):
        seen = data["title"]
        if seen == "old":  # a writer commits and invalidates while this runs
            data["title"] = "new"
            tagged_cache.invalidate_tags(f"book:{pk}")
        return seen

    assert title(1) == "old"  # this call's own (already outdated) result
    assert title(1) == "new"  # not the stale "old" served as valid


@on_every_tagged_backend
def test_async_an_invalidation_during_the_computation_leaves_the_value_stale(
    tagged_cache,
) -> None:
    data = {"title": "old"}

    @cached(
        name="test_async_an_invalidation_during_the_computation_leaves_the_value_stale.title",
        using="tagged",
        tags=lambda pk: [f"book:{pk}"],
    )
    async def title(pk):
        seen = data["title"]
        if seen == "old":
            data["title"] = "new"
            await tagged_cache.ainvalidate_tags(f"book:{pk}")
        return seen

    async def main():
        return await title(1), await title(1)

    assert asyncio.run(main()) == ("old", "new")


def test_supports_tags_sees_through_djangos_default_cache_proxy(settings) -> None:
    from django.core.cache import cache

    settings.CACHES = {**settings.CACHES, "default": settings.CACHES["smart"]}
    assert supports_tags(cache)
    settings.CACHES = {**settings.CACHES, "default": locmem("memo-proxy")}
    assert not supports_tags(cache)


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ((1,), {}),
        ((1, "x"), {}),
        ((1, "x", (2, "y")), {}),
        ((1,), {"c": (2, "y")}),
        ((), {"a": 1, "c": None}),
        ((1,), {"b": "x", "c": 3.5}),
        ((), {"c": b"z", "a": True, "b": "x"}),
    ],
)
def test_every_path_gives_the_keys_of_signature_bind(args, kwargs) -> None:
    import inspect

    from django_smartcache.core import keys

    def lookup(a, b="b", c=(0, "zero")):
        return a

    memo = cached(lookup)
    bound = inspect.signature(lookup).bind(*args, **kwargs)
    bound.apply_defaults()
    expected = keys.call_key(
        f"{__name__}.{lookup.__qualname__}", tuple(bound.arguments.items())
    )
    assert memo.key(*args, **kwargs) == expected
    memo(*args, **kwargs)  # the call stores under that very key
    assert caches["default"].get(expected)[1] == bound.arguments["a"]


def test_calls_bind_would_refuse_still_raise() -> None:
    @cached(name="test_calls_bind_would_refuse_still_raise.lookup")
    def lookup(a, b="b"):
        return a

    for args, kwargs in [((), {}), ((), {"b": 1}), ((1,), {"a": 1}), ((1,), {"z": 1})]:
        with pytest.raises(TypeError):
            lookup.key(*args, **kwargs)
        with pytest.raises(TypeError):
            lookup(*args, **kwargs)


# -- functions a name does not tell apart ------------------------------------------------


class Multiplier:
    def __init__(self, n):
        self.n = n

    def __call__(self, x):
        return self.n * x


def _multiplier(n, **options):
    @cached(**options)
    def times(x):
        return n * x

    return times


@pytest.mark.parametrize(
    ("make", "why"),
    [
        (lambda: cached(lambda x: x + 1), "is a lambda"),
        (lambda: cached(functools.partial(operator.mul, 2)), "is not a function"),
        (lambda: cached(Multiplier(2)), "is not a function"),
        (lambda: _multiplier(2), "is a closure over n"),
    ],
)
def test_functions_a_name_cannot_tell_apart_need_one(make, why) -> None:
    with pytest.raises(ImproperlyConfigured, match=rf"cached\(name=\.\.\.\).*{why}"):
        make()


def test_name_tells_apart_what_the_qualname_cannot() -> None:
    double, triple = _multiplier(2, name="times2"), _multiplier(3, name="times3")
    assert (double(10), triple(10)) == (20, 30)
    assert (double(10), triple(10)) == (20, 30)  # hits, each its own
    assert cached(name="mul2")(functools.partial(operator.mul, 2))(10) == 20
    assert cached(name="mul3")(functools.partial(operator.mul, 3))(10) == 30
    assert cached(name="m4")(Multiplier(4))(10) == 40
    with pytest.raises(ImproperlyConfigured, match=r"cached\(name=\.\.\.\)"):
        cached(name="two words")


def test_a_method_calling_super_in_a_local_class_needs_no_name() -> None:
    class Base:
        def area(self, side):
            return side * side

    class Square(Base):
        def __cache_key__(self):
            return "square"

        @cached
        def area(self, side):  # a closure over __class__ only
            return super().area(side)

    assert Square().area(3) == 9


@pytest.mark.redis
def test_sub_second_timeouts_reach_whole_second_backends(settings, redis_url) -> None:
    """Django's RedisCache keeps int() of a timeout: 0.9 s would store nothing."""
    settings.CACHES = {
        **settings.CACHES,
        "redis": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": redis_url,
        },
    }
    seen_lock = []

    @cached(name="short", using="redis", timeout=0.5, lock=True, lock_timeout=0.9)
    def short(x):
        seen_lock.append(caches["redis"].get(_lock_key(short.key(x))) is not None)
        return x

    try:
        assert short(1) == 1
        assert seen_lock == [True]  # the lock was held while computing
        assert short(1) == 1
        assert seen_lock == [True]  # and the 0.5 s entry was stored: a hit
    finally:
        caches["redis"].clear()


def _module_level_square(x):
    return x * x


def _wrapping(func):
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        return func(*args, **kwargs)

    return wrapper


def test_wrappers_are_judged_by_the_function_they_wrap() -> None:
    lru = cached(functools.lru_cache(_module_level_square))
    assert lru(3) == 9 and lru.key(3).startswith(
        f"smartcache.memo:{__name__}._module_level_square:"
    )

    @cached
    @_wrapping
    def inner(x):  # captures nothing; its wrapper captures func
        return x + 1

    assert inner(1) == 2

    @cached
    def fib(n):  # a recursive function captures itself only
        return n if n < 2 else fib(n - 1) + fib(n - 2)

    assert fib(20) == 6765


def test_infinite_times() -> None:
    forever = cached(name="forever", timeout=float("inf"))(_module_level_square)
    assert forever(4) == 16 and forever(4) == 16
    for option in ("lock_timeout", "stale_if_error"):
        with pytest.raises(ImproperlyConfigured, match=rf"cached\({option}=\.\.\.\)"):
            cached(**{option: float("inf")})


# -- invalidate()/refresh() while a computation runs (outside probe, session 6) -------


def _slow_source():
    """A data source and a memoized reader that blocks until released."""
    data = {"v": "old"}
    entered, release = threading.Event(), threading.Event()

    @cached(name="slow_reader", timeout=300)
    def reader():
        value = data["v"]  # read before the change...
        entered.set()
        release.wait(ARRIVAL_TIMEOUT)
        return value  # ...returned after it

    return data, entered, release, reader


def _in_thread(fn, results, name):
    thread = threading.Thread(target=lambda: results.__setitem__(name, fn()))
    thread.start()
    return thread


def test_invalidate_while_computing_keeps_the_old_result_out_of_the_cache():
    data, entered, release, reader = _slow_source()
    results = {}
    first = _in_thread(reader, results, "first")
    assert entered.wait(ARRIVAL_TIMEOUT)
    data["v"] = "new"
    reader.invalidate()
    entered.clear()
    # A caller after the invalidation starts its own computation, not the old one's.
    second = _in_thread(reader, results, "second")
    assert entered.wait(ARRIVAL_TIMEOUT)
    release.set()
    first.join(ARRIVAL_TIMEOUT)
    second.join(ARRIVAL_TIMEOUT)
    assert results == {"first": "old", "second": "new"}
    assert reader() == "new"  # the stored value is the second computation's


def test_a_void_token_never_states_an_expiry_after_its_entrys(monkeypatch):
    """The token's stated expiry was rounded to the nearest ms: up to 0.5 ms after the
    entry's, so a computation that saw the token expire within that moment took it for
    an invalidation and stored nothing (the test below failed 1 run in a Django 6.1 /
    Python 3.13 matrix run). Rounded down now."""
    from django_smartcache import _memo_envelope as envelope

    now = [1_000_000.0006]
    monkeypatch.setattr(envelope.time, "time", lambda: now[0])
    token = envelope._void_token(1)  # stored with timeout=1: gone from 1_000_001.0006
    now[0] = 1_000_001.0007  # a reader finds it gone just after that
    assert not envelope._voided(token, None)
    now[0] = 1_000_000.5  # gone half-way through its life: deleted, an invalidation
    assert envelope._voided(token, None)


@pytest.mark.parametrize("alias", ["default", "smart"])
def test_a_computation_outliving_the_void_token_stores_its_result(alias):
    """The ``:void`` token of an ``invalidate()`` lives ``lock_timeout``. A computation
    that read it and ended after it expired saw it go (token -> None), took that for an
    invalidation and stored nothing, so the next call computed again (helper's
    void_token_expiry_drops_result.py: 2 computations). Its expiry is no invalidation;
    a token deleted before its time (a clear) still is."""
    runs = []

    @cached(using=alias, name=f"void_expiry_{alias}", timeout=60, lock_timeout=1)
    def report(x):
        runs.append(x)
        if len(runs) == 1:  # the first computation outlives the token
            token = _void_key(report.key(x))
            wait_until(lambda: caches[alias].get(token) is None)
        return x

    report.invalidate(1)
    assert report(1) == 1
    assert report(1) == 1
    assert len(runs) == 1

    @cached(using=alias, name=f"void_cleared_{alias}", timeout=60, lock_timeout=30)
    def cleared(x):
        runs.append(x)
        if len(runs) == 2:
            caches[alias].delete(_void_key(cleared.key(x)))  # gone before its time
        return x

    cleared.invalidate(2)
    assert cleared(2) == 2
    assert cleared(2) == 2
    assert len(runs) == 3  # the first result was not stored


def test_refresh_while_computing_recomputes_and_wins():
    data, entered, release, reader = _slow_source()
    results = {}
    first = _in_thread(reader, results, "first")
    assert entered.wait(ARRIVAL_TIMEOUT)
    data["v"] = "new"
    refreshed = _in_thread(reader.refresh, results, "refresh")
    time.sleep(0.05)
    release.set()
    first.join(ARRIVAL_TIMEOUT)
    refreshed.join(ARRIVAL_TIMEOUT)
    assert results == {"first": "old", "refresh": "new"}
    assert reader() == "new"  # the older computation did not overwrite it


def test_async_invalidate_while_computing_keeps_the_old_result_out():
    data: dict[str, Any] = {"v": "old"}

    @cached(name="async_slow_reader", timeout=300)
    async def reader():
        value = data["v"]
        data["read"].set()
        await asyncio.sleep(0.1)
        return value

    async def scenario():
        data["read"] = asyncio.Event()
        first = asyncio.ensure_future(reader())
        await data["read"].wait()  # the first computation has read the old data
        data["read"] = asyncio.Event()
        data["v"] = "new"
        await reader.invalidate()
        second = await reader()
        return await first, second, await reader()

    assert asyncio.run(scenario()) == ("old", "new", "new")


# -- invalidate() and refresh() inside the writer's transaction ----------------------


class _Rollback(Exception):
    pass


#: Set in the "other request" threads: SQLite's shared in-memory test database locks a
#: table a transaction writes, so they read the committed rows from ``_COMMITTED``.
_ANOTHER_REQUEST = contextvars.ContextVar("another_request", default=False)
_COMMITTED: dict[int, str] = {}


def _title(pk: int) -> str:
    from tests.testapp.models import Book

    if _ANOTHER_REQUEST.get():
        return _COMMITTED[pk]
    return Book.objects.get(pk=pk).title


@pytest.fixture
def on_book_save():
    """Connect ``receiver(book)`` to ``Book``'s ``post_save`` for the test."""
    from django.db.models.signals import post_save

    from tests.testapp.models import Book

    connected = []

    def connect(receiver):
        def on_save(sender, instance, **kwargs):
            receiver(instance)

        post_save.connect(on_save, sender=Book, weak=False)
        connected.append(on_save)

    yield connect
    for on_save in connected:
        post_save.disconnect(on_save, sender=Book)


def _book(title: str = "old") -> Any:
    from tests.testapp.models import Author, Book

    book = Book.objects.create(title=title, author=Author.objects.create(name="A"))
    _COMMITTED[book.pk] = title
    return book


def _another_request(func):
    out = []

    def run():
        _ANOTHER_REQUEST.set(True)
        out.append(func())

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(ARRIVAL_TIMEOUT)
    return out[0]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_refresh_in_a_transaction_stores_only_when_it_commits(on_book_save, kind):
    """``refresh()`` from a ``post_save`` receiver (as memoize.md suggests) ran inside
    the writer's transaction: it stored the uncommitted value, which other threads
    were served before the commit and which outlived a rollback."""
    from django.db import transaction

    calls = Counter()
    if kind == "sync":

        @cached(name=f"refresh_in_transaction_{kind}")
        def title(pk):
            calls[pk] += 1
            return _title(pk)

        read = title
    else:

        @cached(name=f"refresh_in_transaction_{kind}")
        async def atitle(pk):
            calls[pk] += 1
            return await sync_to_async(_title)(pk)

        title, read = atitle, async_to_sync(atitle)

    book = _book()
    seen: list[str] = []
    on_book_save(lambda instance: seen.append(title.refresh(instance.pk)))
    assert read(book.pk) == "old"
    with pytest.raises(_Rollback), transaction.atomic():
        book.title = "uncommitted"
        book.save()
        assert seen == ["uncommitted"]  # returned to the receiver...
        assert _another_request(lambda: read(book.pk)) == "old"  # ...not stored
        raise _Rollback
    assert _another_request(lambda: read(book.pk)) == "old"
    assert read(book.pk) == "old"
    with transaction.atomic():
        book.title = "new"
        book.save()
        assert _another_request(lambda: read(book.pk)) == "old"  # committed data
    # Refreshed at the commit: computed from the committed row and stored.
    before = calls[book.pk]
    assert _another_request(lambda: read(book.pk)) == "new"
    assert read(book.pk) == "new"
    assert calls[book.pk] == before


@pytest.mark.django_db(transaction=True)
def test_invalidate_in_a_transaction_is_repeated_at_commit(on_book_save):
    """``invalidate()`` from a ``post_save`` receiver acted before the commit only:
    another thread re-cached the committed, old row meanwhile, stale until timeout."""
    from django.db import transaction

    @cached(name="invalidate_in_transaction")
    def title(pk):
        return _title(pk)

    book = _book()
    on_book_save(lambda instance: title.invalidate(instance.pk))
    assert title(book.pk) == "old"
    with transaction.atomic():
        book.title = "new"
        book.save()
        assert _another_request(lambda: title(book.pk)) == "old"  # re-cached
    _COMMITTED[book.pk] = "new"
    assert _another_request(lambda: title(book.pk)) == "new"
    # Rolled back: the repeat is dropped, and the committed value stays cached.
    with pytest.raises(_Rollback), transaction.atomic():
        book.title = "uncommitted"
        book.save()
        assert _another_request(lambda: title(book.pk)) == "new"  # re-cached
        raise _Rollback
    assert title(book.pk) == "new"
