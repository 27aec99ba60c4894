"""Memoize keys are canonical: stable across processes, blind to order, typed."""

from __future__ import annotations

import datetime
import decimal
import enum
import os
import subprocess
import sys
import uuid
from collections import namedtuple
from pathlib import PurePosixPath
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, strategies as st

from django_smartcache.core import keys

SAMPLE = (
    "héllo",
    b"\x00bytes",
    42,
    -0.5,
    None,
    True,
    {"b": 2, "a": [1, 2, (3,)], "c": {"x", "y", "z"}},
    frozenset({"p", "q"}),
    decimal.Decimal("1.50"),
    uuid.UUID("12345678-1234-5678-1234-567812345678"),
    datetime.datetime(2024, 5, 1, 12, 30, tzinfo=datetime.UTC),
    datetime.date(2024, 5, 1),
    datetime.time(8, 15),
    datetime.timedelta(days=1, seconds=5),
)

CHILD = (
    "import json, sys\n"
    "from tests.core.test_keys import SAMPLE\n"
    "from django_smartcache.core import keys\n"
    "print(keys.digest(SAMPLE))\n"
)


def test_digest_is_equal_in_other_processes_with_other_hash_seeds() -> None:
    # Sets of str iterate in a different order under each hash seed.
    digests = set()
    for seed in ("0", "1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", CHILD],
            capture_output=True,
            text=True,
            check=True,
            env=env,
            cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
        )
        digests.add(out.stdout.strip())
    assert digests == {keys.digest(SAMPLE)}


def test_dict_and_set_order_do_not_matter() -> None:
    one = {"a": 1, "b": 2, 3: "c"}
    two = {3: "c", "b": 2, "a": 1}
    assert keys.encode(one) == keys.encode(two)
    assert keys.encode({3, 1, 2}) == keys.encode({2, 3, 1})


@pytest.mark.parametrize(
    ("left", "right"),
    [
        (1, 1.0),
        (1, True),
        (0, False),
        (1, "1"),
        ("1", b"1"),
        (b"1", bytearray(b"1")),
        ([1], (1,)),
        ({1}, frozenset({1})),
        ((), None),
        ("", None),
        (0.0, -0.0),
        (("ab", "c"), ("a", "bc")),
        (datetime.date(2024, 1, 1), datetime.datetime(2024, 1, 1)),
    ],
)
def test_distinct_types_and_values_give_distinct_keys(left, right) -> None:
    assert keys.encode(left) != keys.encode(right)


def test_equal_decimals_share_a_key() -> None:
    assert keys.encode(decimal.Decimal("1.0")) == keys.encode(decimal.Decimal("1.00"))
    assert keys.encode(decimal.Decimal("1.0")) != keys.encode(decimal.Decimal("1.01"))
    assert keys.encode(decimal.Decimal("NaN")) != keys.encode(
        decimal.Decimal("Infinity")
    )


def test_time_zones_are_part_of_a_datetime_key() -> None:
    paris = datetime.datetime(2024, 1, 1, 12, tzinfo=ZoneInfo("Europe/Paris"))
    lagos = datetime.datetime(2024, 1, 1, 12, tzinfo=ZoneInfo("Africa/Lagos"))
    naive = datetime.datetime(2024, 1, 1, 12)
    # Same offset (+01:00) on that day, but not the same zone.
    assert paris.utcoffset() == lagos.utcoffset()
    assert len({keys.encode(paris), keys.encode(lagos), keys.encode(naive)}) == 3


class Colour(enum.Enum):
    RED = 1


class Level(enum.IntEnum):
    ONE = 1


def test_enums_namedtuples_paths_and_classes() -> None:
    assert keys.encode(Colour.RED) != keys.encode(1)
    assert keys.encode(Level.ONE) != keys.encode(1)
    assert keys.encode(Level.ONE) != keys.encode(Colour.RED)
    point = namedtuple("Point", "x y")
    assert keys.encode(point(1, 2)) != keys.encode((1, 2))
    assert keys.encode(PurePosixPath("/a/b")) != keys.encode("/a/b")
    assert keys.encode(Colour) == keys.encode(Colour)
    assert keys.encode(Colour) != keys.encode(Level)


class Account:
    def __init__(self, number: int) -> None:
        self.number = number

    def __cache_key__(self) -> int:
        return self.number


def test_cache_key_protocol_names_an_object() -> None:
    assert keys.encode(Account(7)) == keys.encode(Account(7))
    assert keys.encode(Account(7)) != keys.encode(Account(8))
    assert keys.encode(Account(7)) != keys.encode(7)


def test_unsupported_types_raise_type_error_with_a_way_out() -> None:
    with pytest.raises(TypeError, match=r"builtins\.object.*__cache_key__.*key="):
        keys.encode(object())
    with pytest.raises(TypeError, match="function"):
        keys.encode([lambda: None])


def test_cycles_raise_type_error_not_recursion_error() -> None:
    loop: list[object] = []
    loop.append(loop)
    with pytest.raises(TypeError, match="self-referencing list"):
        keys.encode(loop)

    class Selfish:
        def __cache_key__(self) -> object:
            return self

    with pytest.raises(TypeError, match="refers back to itself"):
        keys.encode(Selfish())


def test_repeated_members_are_not_cycles() -> None:
    shared = [1, 2]
    assert keys.encode([shared, shared]) == keys.encode([[1, 2], [1, 2]])


def test_extension_names_foreign_types_or_declines() -> None:
    class Row:
        def __init__(self, pk: int) -> None:
            self.pk = pk

    def extension(obj: object) -> object:
        return ("row", obj.pk) if isinstance(obj, Row) else NotImplemented

    assert keys.encode(Row(1), extension) == keys.encode(Row(1), extension)
    assert keys.encode(Row(1), extension) != keys.encode(Row(2), extension)
    with pytest.raises(TypeError):
        keys.encode(object(), extension)


def test_call_key_reads_well_and_bounds_its_length() -> None:
    key = keys.call_key("shop.views.price", ((1,), {}))
    assert key.startswith("smartcache.memo:shop.views.price:")
    assert len(key.rsplit(":", 1)[1]) == 2 * keys.DIGEST_SIZE
    long_a = keys.call_key("m." + "a" * 300 + "x", ())
    long_b = keys.call_key("m." + "a" * 300 + "y", ())
    assert long_a != long_b
    assert len(long_a) < 250  # memcached's limit
    assert " " not in keys.call_key("f <locals> g\n", ())
    assert keys.call_key("f", (1,)) != keys.call_key("g", (1,))
    assert keys.call_key("f", (1,), prefix="other").startswith("other:f:")


atoms = st.none() | st.integers() | st.text(max_size=5) | st.binary(max_size=5)
values = st.recursive(
    atoms,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=3), inner, max_size=3)
        | st.frozensets(st.integers(), max_size=3)
    ),
    max_leaves=10,
)


@given(values, values)
def test_encoding_is_equal_exactly_for_equal_values(left, right) -> None:
    assert (keys.encode(left) == keys.encode(right)) == (left == right)


def test_keys_are_those_of_earlier_releases() -> None:
    # Computed by the code before the fast paths: caches written then must stay valid.
    assert keys.digest(SAMPLE) == "e4bbdc398c0323591862360d258b6d95"
    rate = keys.call_key(
        "shop.rates.exchange_rate", (("base", "EUR"), ("quote", "USD"))
    )
    assert (
        rate
        == "smartcache.memo:shop.rates.exchange_rate:ab35fc19629be96d5773a64a50fff6a1"
    )
    pair = ("eur", -3, None, True, 1.5, b"x")
    arguments = (("n", 7), ("name", "héllo\ud800"), ("pair", pair))
    expected = "smartcache.memo:m.f:61e0d006b4fa7982cfb6bbfd8970b55b"
    assert keys.call_key("m.f", arguments) == expected
    assert (
        keys.CallKeys("m.f", ("n", "name", "pair")).of_values((7, "héllo\ud800", pair))
        == expected
    )


scalars = (
    atoms | st.booleans() | st.floats(allow_nan=False) | st.decimals(allow_nan=False)
)
anything = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.tuples(inner, inner) | st.tuples(inner)
    ),
    max_leaves=10,
)


@given(anything)
def test_fast_paths_write_the_full_encoders_bytes(value) -> None:
    assert keys.encode(value) == keys._Encoder(None).encode(value)


@given(st.lists(anything, max_size=4), st.text(min_size=1, max_size=8))
def test_call_keys_of_one_function_are_call_key(values, name) -> None:
    parameters = [f"p{i}" for i in range(len(values))]
    builder = keys.CallKeys(name, parameters, prefix="pre")
    expected = keys.call_key(
        name, tuple(zip(parameters, values, strict=True)), prefix="pre"
    )
    assert builder.of_values(tuple(values)) == expected
    assert builder.of_values(tuple(values)) == expected  # remembered, or not
    assert builder.of(tuple(values)) == keys.call_key(name, tuple(values), prefix="pre")
    with pytest.raises(ValueError):
        builder.of_values((*values, 1))


def test_remembered_keys_keep_types_apart() -> None:
    # True == 1 == 1.0 and 0.0 == -0.0: a dict of recent keys must not mix them up.
    builder = keys.CallKeys("f", ("a", "b"))
    calls = [
        (1, ("x", 0)),
        (True, ("x", 0)),
        (1.0, ("x", 0)),
        (1, ("x", False)),
        (1, ("x", 0.0)),
        (1, ("x", -0.0)),
        ("1", ("x", 0)),
        (None, ("x", 0)),
    ]
    for _ in range(2):  # the second round reads what the first remembered
        got = [builder.of_values(c) for c in calls]
        assert got == [keys.call_key("f", (("a", a), ("b", b))) for a, b in calls]
        assert len(set(got)) == len(calls)


def test_remembered_keys_are_bounded() -> None:
    builder = keys.CallKeys("f", ("a",))
    for i in range(keys.MEMO_SIZE * 3):
        assert builder.of_values((i,)) == keys.call_key("f", (("a", i),))
    assert len(builder._memo) <= keys.MEMO_SIZE
    big = "x" * (keys.MEMO_LONGEST + 1)
    assert builder.of_values((big,)) == keys.call_key("f", (("a", big),))
    assert (big,) not in builder._memo


def test_call_keys_fall_back_to_the_extension_and_detect_cycles() -> None:
    class Foreign:
        pass

    builder = keys.CallKeys("f", ("a",), extension=lambda obj: "foreign")
    nested = (1, [Foreign()])
    assert builder.of_values((nested,)) == keys.call_key(
        "f", (("a", nested),), extension=lambda obj: "foreign"
    )
    loop: list = []
    loop.append((loop,))
    with pytest.raises(TypeError, match="self-referencing"):
        builder.of_values(((loop,),))


def test_subclasses_of_builtins_are_told_apart_from_their_base() -> None:
    from collections import Counter, OrderedDict, defaultdict

    from django.utils.safestring import mark_safe

    # conditional_escape() leaves a SafeString alone and escapes the same plain text:
    # one entry for both served a trusted call's unescaped HTML to untrusted input.
    assert keys.digest(mark_safe("<b>new</b>")) != keys.digest("<b>new</b>")
    # OrderedDicts with other orders are not equal, so their keys differ too.
    assert keys.digest(OrderedDict(x=1, y=2)) != keys.digest(OrderedDict(y=2, x=1))
    assert keys.digest(OrderedDict(x=1)) == keys.digest(OrderedDict(x=1))
    assert keys.digest(OrderedDict(x=1)) != keys.digest({"x": 1})
    assert keys.digest(Counter("ab")) != keys.digest({"a": 1, "b": 1})
    assert keys.digest(defaultdict(int, a=1)) == keys.digest(defaultdict(int, a=1))

    class Meters(float):
        pass

    class Tags(list):
        pass

    assert keys.digest(Meters(1.5)) != keys.digest(1.5)
    assert keys.digest(Tags([1])) != keys.digest([1])
    # Exact builtins keep their encoding (and so the keys of earlier releases).
    assert keys.encode("a") == b"s1:a"
    loop = OrderedDict()
    loop["self"] = loop
    with pytest.raises(TypeError, match="self-referencing"):
        keys.digest(loop)
