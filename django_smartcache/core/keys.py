"""Stable keys for memoized calls: equal arguments give equal keys in every process.

Python's ``hash()`` of a ``str`` is salted per process and ``pickle`` of a ``dict``
follows insertion order, so neither can name a cache entry shared by processes.
Arguments are written instead to a canonical, type-tagged byte string (dicts and sets
sorted by the encoding of their members) and that string is hashed with BLAKE2b.

Types are kept apart on purpose: ``1``, ``1.0``, ``True`` and ``"1"`` give four keys,
because a function may answer differently for each. Unsupported types raise
``TypeError``; give the object a ``__cache_key__()`` method returning supported values,
or give the decorator a ``key=`` function.
"""

from __future__ import annotations

import collections
import datetime
import decimal
import enum
import functools
import hashlib
import pathlib
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

#: A hook for types the core cannot know (Django models): return the value that
#: stands for ``obj`` (it is encoded in turn), or ``NotImplemented`` to decline.
Extension = Callable[[Any], Any]

_blake2b = hashlib.blake2b

#: Length of the hex digest in keys (BLAKE2b with a 16-byte digest: 128 bits).
DIGEST_SIZE = 16
#: Characters of a digest in a key (hex).
DIGEST_HEX_LENGTH = 2 * DIGEST_SIZE

#: Longest readable function name kept in a key; the digest covers the full name.
MAX_NAME_LENGTH = 120


def _qualified_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


#: Builtin types whose exact instances have a plain encoding; an instance of a
#: subclass (``SafeString``, ``OrderedDict``, ``Counter``) is encoded with its type's
#: name, since code may treat it differently (``conditional_escape`` does not escape
#: a ``SafeString``; ``OrderedDict`` equality follows order). Tuples are tagged with
#: their type's name already (namedtuples).
_BUILTIN_BASES = (str, int, float, bytes, bytearray, list, dict, set, frozenset)


class _Encoder:
    """Write one value as canonical bytes; one instance per call tracks cycles."""

    def __init__(self, extension: Extension | None) -> None:
        self.extension = extension
        self.active: set[int] = set()

    def encode(self, obj: Any) -> bytes:
        # Fast path for the exact types most arguments are; same bytes as below.
        kind = type(obj)
        if kind is str:
            return self._atom(b"s", obj.encode("utf-8", "surrogatepass"))
        if kind is int:
            return self._atom(b"i", b"%d" % obj)
        if kind is tuple:
            return self._atom(b"(", b"".join([self.encode(item) for item in obj]))
        # Order matters: bool and IntEnum are ints, datetime is a date.
        if obj is None:
            return b"N"
        if isinstance(obj, bool):
            return b"T" if obj else b"F"
        if isinstance(obj, enum.Enum):
            return self._tagged(b"E", _qualified_name(type(obj)), obj.value)
        if kind not in _BUILTIN_BASES and isinstance(obj, _BUILTIN_BASES):
            return self._subclass(obj)
        if isinstance(obj, int):
            return self._atom(b"i", str(int(obj)).encode())
        if isinstance(obj, float):
            return self._atom(b"f", float(obj).hex().encode())
        if isinstance(obj, str):
            return self._atom(b"s", str(obj).encode("utf-8", "surrogatepass"))
        if isinstance(obj, bytes | bytearray | memoryview):
            tag = b"y" if isinstance(obj, bytearray) else b"b"
            return self._atom(tag, bytes(obj))
        if isinstance(obj, decimal.Decimal):
            return self._atom(b"d", _decimal_text(obj).encode())
        if isinstance(obj, uuid.UUID):
            return self._atom(b"u", obj.bytes)
        if isinstance(obj, datetime.datetime):
            return self._atom(b"D", _datetime_text(obj).encode())
        if isinstance(obj, datetime.date):
            return self._atom(b"a", obj.isoformat().encode())
        if isinstance(obj, datetime.time):
            return self._atom(b"t", obj.isoformat().encode())
        if isinstance(obj, datetime.timedelta):
            parts = (obj.days, obj.seconds, obj.microseconds)
            return self._atom(b"R", ",".join(map(str, parts)).encode())
        if isinstance(obj, pathlib.PurePath):
            return self._tagged(b"P", _qualified_name(type(obj)), obj.as_posix())
        if isinstance(obj, type):
            return self._atom(b"C", _qualified_name(obj).encode())
        if isinstance(obj, tuple | list | dict | set | frozenset):
            return self._container(obj)
        return self._custom(obj)

    def _atom(self, tag: bytes, payload: bytes) -> bytes:
        # Length-prefixed, so no payload can forge the boundary of the next one.
        return b"%b%d:%b" % (tag, len(payload), payload)

    def _tagged(self, tag: bytes, name: str, value: Any) -> bytes:
        return self._sequence(tag, (name, value))

    def _sequence(self, tag: bytes, items: Iterable[Any]) -> bytes:
        return self._atom(tag, b"".join(self.encode(item) for item in items))

    def _container(
        self,
        obj: tuple[Any, ...]
        | list[Any]
        | Mapping[Any, Any]
        | set[Any]
        | frozenset[Any],
    ) -> bytes:
        ident = self._enter(obj)
        try:
            if isinstance(obj, tuple):
                if type(obj) is tuple:
                    return self._sequence(b"(", obj)
                # A namedtuple's type is part of its meaning.
                return self._tagged(b"n", _qualified_name(type(obj)), tuple(obj))
            if isinstance(obj, list):
                return self._sequence(b"[", obj)
            if isinstance(obj, dict):
                pairs = sorted((self.encode(k), self.encode(v)) for k, v in obj.items())
                return self._atom(b"{", b"".join(k + v for k, v in pairs))
            tag = b"S" if isinstance(obj, frozenset) else b"<"
            return self._atom(tag, b"".join(sorted(self.encode(item) for item in obj)))
        finally:
            self.active.discard(ident)

    def _enter(self, obj: Any) -> int:
        """Mark ``obj`` as being encoded (its ``id``, for the caller's ``finally`` to
        discard); a container met again inside itself has no finite key."""
        ident = id(obj)
        if ident in self.active:
            raise TypeError(
                f"cannot build a cache key from a self-referencing {type(obj).__name__}"
            )
        self.active.add(ident)
        return ident

    def _subclass(self, obj: Any) -> bytes:
        """An instance of a subclass of a builtin: its type's name, then its value as
        the builtin's (an ``OrderedDict``'s items in their order)."""
        value: Any
        if isinstance(obj, str):
            value = str.encode(obj, "utf-8", "surrogatepass").decode(
                "utf-8", "surrogatepass"
            )  # an exact str: str() of a SafeString is the SafeString itself
        elif isinstance(obj, int):
            value = int.__int__(obj)
        elif isinstance(obj, float):
            value = float.__float__(obj)
        elif isinstance(obj, bytes | bytearray):
            value = (bytearray if isinstance(obj, bytearray) else bytes)(
                memoryview(obj)
            )
        elif isinstance(obj, collections.OrderedDict):
            value = [(k, v) for k, v in obj.items()]  # equality follows order
        else:
            value = next(b for b in _BUILTIN_BASES if isinstance(obj, b))(obj)
        ident = self._enter(obj)
        try:
            name = self.encode(_qualified_name(type(obj)))
            return self._atom(b"z", name + self.encode(value))
        finally:
            self.active.discard(ident)

    def _custom(self, obj: Any) -> bytes:
        # The class an object says it has: a lazy object (Django's SimpleLazyObject,
        # request.user) answers its wrapped object's, as isinstance() does.
        cls = obj.__class__
        method = getattr(cls, "__cache_key__", None)
        if method is not None:
            name = self.encode(_qualified_name(cls))
            return self._atom(b"K", name + self._nested(obj, method))
        if self.extension is not None:
            stand_in = self.extension(obj)
            if stand_in is not NotImplemented:
                return self._atom(b"X", self._nested(obj, lambda _: stand_in))
        behind = (
            f" (behind a {_qualified_name(type(obj))})" if cls is not type(obj) else ""
        )
        raise TypeError(
            f"cannot build a stable cache key from {_qualified_name(cls)} objects"
            f"{behind}: give the class a __cache_key__() method returning supported "
            "values (str, int, tuple, ...), or pass key= to the decorator"
        )

    def _nested(self, obj: Any, method: Callable[[Any], Any]) -> bytes:
        ident = id(obj)
        if ident in self.active:
            raise TypeError(
                f"__cache_key__ of {_qualified_name(type(obj))} refers back to itself"
            )
        self.active.add(ident)
        try:
            return self.encode(method(obj))
        finally:
            self.active.discard(ident)


def _decimal_text(value: decimal.Decimal) -> str:
    # Equal decimals ("1.0", "1.00") normalize alike; NaNs and infinities keep their text.
    return str(value.normalize()) if value.is_finite() else str(value)


def _datetime_text(value: datetime.datetime) -> str:
    # The offset is in isoformat(); a zone's name is kept too, because two zones with
    # today's offset can format or add days differently.
    zone = getattr(value.tzinfo, "key", None)
    return value.isoformat() if zone is None else f"{value.isoformat()}[{zone}]"


def encode(value: Any, extension: Extension | None = None) -> bytes:
    """The canonical bytes of ``value``; ``TypeError`` for unsupported types."""
    try:
        return _fast(value, extension)
    except RecursionError:
        raise _too_deep() from None


def _too_deep() -> TypeError:
    """The documented ``TypeError`` for a value nested deeper than Python recurses
    (a list in a list ... 5000 deep raised ``RecursionError``)."""
    return TypeError(
        "cannot build a cache key from a value nested too deeply (Python's "
        "recursion limit was reached encoding it): pass key= to the decorator"
    )


def _fast(obj: Any, extension: Extension | None) -> bytes:
    """:meth:`_Encoder.encode` for the exact types most arguments are, without the
    encoder object; anything else goes to it. The bytes are the same: an item's
    encoding depends only on the item (the encoder's state only detects cycles, and a
    cycle must pass through a mutable container, which the full encoder handles)."""
    kind = type(obj)
    if kind is str:
        data = obj.encode("utf-8", "surrogatepass")
        return b"s%d:%b" % (len(data), data)
    if kind is int:
        data = b"%d" % obj
        return b"i%d:%b" % (len(data), data)
    if kind is tuple:
        data = b"".join([_fast(item, extension) for item in obj])
        return b"(%d:%b" % (len(data), data)
    if obj is None:
        return b"N"
    if kind is bool:
        return b"T" if obj else b"F"
    if kind is float:
        data = obj.hex().encode()
        return b"f%d:%b" % (len(data), data)
    if kind is bytes:
        return b"b%d:%b" % (len(obj), obj)
    return _Encoder(extension).encode(obj)


def digest(value: Any, extension: Extension | None = None) -> str:
    """A hex BLAKE2b digest of :func:`encode`: stable across processes and runs."""
    return _blake2b(encode(value, extension), digest_size=DIGEST_SIZE).hexdigest()


def call_key(
    name: str,
    arguments: Any,
    *,
    prefix: str = "smartcache.memo",
    extension: Extension | None = None,
) -> str:
    """The cache key of calling ``name`` with ``arguments`` (any encodable value).

    The key reads ``<prefix>:<name>:<digest>``; ``name`` is cut to
    :data:`MAX_NAME_LENGTH` characters there, but the digest covers all of it.
    Characters a memcached key may not hold (spaces, control characters) are
    replaced in the readable part only.
    """
    return _head(prefix, name) + digest((name, arguments), extension)


@functools.lru_cache(maxsize=4096)
def _head(prefix: str, name: str) -> str:
    readable = "".join(c if c.isprintable() and not c.isspace() else "_" for c in name)
    return f"{prefix}:{readable[:MAX_NAME_LENGTH]}:"


#: Keys a :class:`CallKeys` remembers; it forgets them all when full.
MEMO_SIZE = 1024

#: Longest ``str`` (characters) and ``int`` (bits) a remembered key's values may hold:
#: the memo keeps its values alive.
MEMO_LONGEST = 256


def _memoizable(values: tuple[Any, ...], nested: bool = True) -> bool:
    """Whether equal ``values`` are exactly those with equal encodings, so a dict may
    map them to their key: short ``str``, ``int`` and ``None``, alone or in small flat
    tuples (``bool`` and ``float`` are not: ``True == 1 == 1.0`` and ``0.0 == -0.0``)."""
    for value in values:
        kind = type(value)
        if kind is str:
            if len(value) > MEMO_LONGEST:
                return False
        elif kind is int:
            if value.bit_length() > MEMO_LONGEST:
                return False
        elif kind is tuple:
            if not nested or len(value) > 8 or not _memoizable(value, False):
                return False
        elif value is not None:
            return False
    return True


class CallKeys:
    """:func:`call_key` for one function, with what never changes computed once.

    The encodings of the function's name and of its parameters' names are prepared at
    decoration, so a call only encodes its argument values. The keys are exactly those
    of :func:`call_key` with ``arguments`` the ``(parameter, value)`` pairs.
    """

    __slots__ = ("_extension", "_head", "_memo", "_name", "_parameters")

    def __init__(
        self,
        name: str,
        parameters: Sequence[str] = (),
        *,
        prefix: str = "smartcache.memo",
        extension: Extension | None = None,
    ) -> None:
        self._extension = extension
        self._head = _head(prefix, name)
        self._name = encode(name)
        self._parameters = tuple(encode(p) for p in parameters)
        # Recent keys by their values, for values whose equality is exactly the
        # equality of their encodings (see _memoizable()).
        self._memo: dict[tuple[Any, ...], str] = {}

    @property
    def head(self) -> str:
        """What every key of the function starts with: ``<prefix>:<name>:``, the name
        cut to :data:`MAX_NAME_LENGTH` characters."""
        return self._head

    def of(self, arguments: Any) -> str:
        """``call_key(name, arguments, ...)``."""
        return self._key(encode(arguments, self._extension))

    def of_values(self, values: tuple[Any, ...]) -> str:
        """``call_key(name, tuple(zip(parameters, values)), ...)``: one value for
        each parameter, in order."""
        if not _memoizable(values):
            return self._of_values(values)
        memo = self._memo
        key = memo.get(values)
        if key is None:
            key = self._of_values(values)
            if len(memo) >= MEMO_SIZE:
                memo.clear()
            memo[values] = key
        return key

    def _of_values(self, values: tuple[Any, ...]) -> str:
        extension = self._extension
        parts: list[bytes] = []
        append = parts.append
        for name, value in zip(self._parameters, values, strict=True):
            # _fast() inlined for the two commonest types.
            kind = type(value)
            if kind is str:
                raw = value.encode("utf-8", "surrogatepass")
                data = b"s%d:%b" % (len(raw), raw)
            elif kind is int:
                raw = b"%d" % value
                data = b"i%d:%b" % (len(raw), raw)
            else:
                try:
                    data = _fast(value, extension)
                except RecursionError:
                    raise _too_deep() from None
            append(b"(%d:%b%b" % (len(name) + len(data), name, data))
        data = b"".join(parts)
        data = b"(%d:%b" % (len(data), data)
        name = self._name
        whole = b"(%d:%b%b" % (len(name) + len(data), name, data)
        return self._head + _blake2b(whole, digest_size=DIGEST_SIZE).hexdigest()

    def _key(self, arguments: bytes) -> str:
        name = self._name
        whole = b"(%d:%b%b" % (len(name) + len(arguments), name, arguments)
        return self._head + _blake2b(whole, digest_size=DIGEST_SIZE).hexdigest()
