"""Key patterns for ``delete_pattern()``: a glob or regex on the caller's key, matched on made keys.

Backends store *made* keys (``KEY_PREFIX:VERSION:key`` with Django's default
``KEY_FUNCTION``), while callers write patterns over their own keys. A
:class:`KeyPattern` holds the literal made-key head (prefix and version) plus the
caller's pattern, and offers every form a backend needs:

- :meth:`KeyPattern.matches` for a scan of made keys in Python (the in-process store);
- :attr:`KeyPattern.literal_prefix` to skip non-matching keys with ``startswith`` (or a
  range query: ``key >= prefix AND key < prefix_end(prefix)`` in SQL) before any regex;
- :meth:`KeyPattern.redis_match` for ``SCAN ... MATCH``: a superset of the matching keys
  (Redis's glob is not ours), so every key it returns is checked with :meth:`matches`;
- :meth:`KeyPattern.sql_like` for a ``LIKE ... ESCAPE '\\'`` pre-filter.

Glob syntax (our own, on characters; *not* Redis's, which works on bytes with other
bracket rules): ``*`` any run of characters (``:`` included), ``?`` one character,
``[abc]``/``[a-z]`` a class, ``[!abc]`` or ``[^abc]`` a negated class (a ``]`` right
after ``[``, ``[!`` or ``[^`` is a member; a ``-`` first or last is literal; ``\\x`` in a
class is ``x``, but the first ``]`` after the start still closes the class: ``[\\]]``
is the class ``[\\]`` then a literal ``]``; a reversed range such as ``[z-a]`` is a
``ValueError``), ``\\x`` the character ``x`` literally, and a ``[`` with no closing
``]`` is a literal ``[``. A regex (``regex=True``) is Python's
``re`` syntax applied with ``re.search`` to the caller's key (anchor it with
``^``/``$``/``\\Z`` for a whole-key match). Pure standard library: no Django here.
"""

from __future__ import annotations

import re

__all__ = [
    "InvalidRegex",
    "KeyPattern",
    "glob_escape",
    "glob_literal_prefix",
    "glob_to_regex",
    "prefix_end",
]

_GLOB_SPECIAL = frozenset("*?[\\")


def glob_escape(text: str) -> str:
    """``text`` as a glob matching itself: a backslash before each special character
    (this module's globs and Redis's ``MATCH`` both read it so)."""
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


def glob_literal_prefix(glob: str) -> str:
    """The literal characters a glob starts with (escapes resolved): ``"user:4\\*2*"`` -> ``"user:4*2"``."""
    out: list[str] = []
    i, n = 0, len(glob)
    while i < n:
        ch = glob[i]
        if ch == "\\" and i + 1 < n:
            out.append(glob[i + 1])
            i += 2
            continue
        if ch in _GLOB_SPECIAL:
            break
        out.append(ch)
        i += 1
    return "".join(out)


def _class_end(glob: str, start: int) -> int | None:
    """Index of the ``]`` closing the class whose ``[`` is just before ``start``, or None.

    A ``!``/``^`` negation, then a ``]`` first in the class, are members, not its end.
    """
    j, n = start, len(glob)
    if j < n and glob[j] in "!^":
        j += 1
    if j < n and glob[j] == "]":
        j += 1
    while j < n and glob[j] != "]":
        j += 1
    return j if j < n else None


def _glob_tokens(glob: str) -> list[str | None]:
    """The glob as a list of literal characters and ``None`` for each ``*``, ``?`` or class.

    The same reading as :func:`glob_to_regex` (escapes, where a class closes).
    """
    out: list[str | None] = []
    i, n = 0, len(glob)
    while i < n:
        ch = glob[i]
        i += 1
        if ch in "*?":
            out.append(None)
        elif ch == "\\":
            out.append(glob[i] if i < n else "\\")
            i += 1
        elif ch == "[":
            j = _class_end(glob, i)
            if j is None:  # no closing bracket: a literal "["
                out.append("[")
            else:
                out.append(None)
                i = j + 1
        else:
            out.append(ch)
    return out


def _class_regex(glob: str, body: str) -> str:
    """The regex class for a glob class's ``body`` (between the brackets).

    A reversed range (``[z-a]``) is refused with ``ValueError``: ``re`` would raise a
    ``re.error`` about the translation, and Redis and SQLite read it differently.
    """
    negate = body[:1] in ("!", "^")
    if negate:
        body = body[1:]
    parts: list[str] = []
    last = ""  # the last member character
    ranged = (
        False  # whether ``last`` ended a range (a "-" after it is literal, as in re)
    )
    k = 0
    while k < len(body):
        c = body[k]
        if c == "\\" and k + 1 < len(body):
            k += 1
            c = body[k]
        elif c == "-" and 0 < k < len(body) - 1:
            parts.append("-")  # a range, as in [a-z]; re reads it the same way
            if not ranged:
                high = body[k + 1]
                if high == "\\" and k + 2 < len(body):
                    high = body[k + 2]
                if last > high:
                    raise ValueError(
                        f"invalid glob '{glob}': the range {last}-{high} is reversed"
                    )
                ranged = True
                # The next member ends the range; ``ranged`` stays set for it.
                k += 1
                if body[k] == "\\" and k + 1 < len(body):
                    k += 1
                parts.append(re.escape(body[k]))
                last = body[k]
                k += 1
                continue
        parts.append(re.escape(c))
        last, ranged = c, False
        k += 1
    return f"[{'^' if negate else ''}{''.join(parts)}]"


def glob_to_regex(glob: str) -> str:
    """Translate a glob (syntax in the module docstring) to an anchored Python regex.

    ``ValueError`` for a class with a reversed range. Every ``*`` but the last becomes
    an atomic lazy group, as :func:`fnmatch.translate` does: ``a*b*c`` is
    ``a(?>.*?b).*c``. What lies between two stars matches a fixed number of
    characters, so its leftmost match is always a right one and nothing is retried,
    where ``.*a.*a.*a...`` backtracks exponentially (minutes for ten stars on a
    long key).
    """
    segments: list[list[str]] = [[]]  # the regex pieces between the stars
    i, n = 0, len(glob)
    while i < n:
        ch = glob[i]
        i += 1
        if ch == "*":
            if segments[-1] or len(segments) == 1:
                segments.append([])  # "**" is one star
        elif ch == "?":
            segments[-1].append(".")
        elif ch == "\\":
            if i < n:
                segments[-1].append(re.escape(glob[i]))
                i += 1
            else:
                segments[-1].append(re.escape("\\"))
        elif ch == "[":
            j = _class_end(glob, i)
            if j is None:  # no closing bracket: a literal "["
                segments[-1].append(re.escape("["))
                continue
            segments[-1].append(_class_regex(glob, glob[i:j]))
            i = j + 1
        else:
            segments[-1].append(re.escape(ch))
    out = "".join(segments[0])
    if len(segments) > 1:
        out += "".join(f"(?>.*?{''.join(s)})" for s in segments[1:-1])
        out += ".*" + "".join(segments[-1])
    return "(?s:" + out + r")\Z"


def prefix_end(prefix: str) -> str | None:
    """The smallest string greater than every string starting with ``prefix`` (None if none).

    For a range scan in a sorted index: ``prefix <= key < prefix_end(prefix)``.
    """
    chars = list(prefix)
    while chars:
        last = ord(chars[-1])
        if last < 0x10FFFF:
            # Past U+D7FF come the surrogates, which no UTF-8 text (SQLite's) holds.
            chars[-1] = chr(0xE000 if 0xD7FF <= last < 0xE000 else last + 1)
            return "".join(chars)
        chars.pop()
    return None


#: More ``*`` groups than this in a ``SCAN MATCH`` pattern: send the literal prefix only
#: (Redis stops matching a pattern nested too deep, and would return nothing).
_REDIS_MAX_STARS = 32


def _redis_escape(text: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\^" else ch for ch in text)


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class InvalidRegex(re.error, ValueError):
    """A regex ``re`` cannot compile: ``re.error`` as Python raises it, and a
    ``ValueError`` as every other bad pattern is (a reversed glob range, a key
    function that cannot be inverted), so one ``except ValueError`` takes them all."""


class KeyPattern:
    """A caller's glob or regex, bound to the made-key ``head`` (``"prefix:version:"``).

    ``head`` is the literal part of every made key the pattern may match; the
    pattern applies to the rest of the made key (the caller's key).
    """

    __slots__ = ("_compiled", "head", "literal_prefix", "pattern", "regex")

    def __init__(self, pattern: str, *, regex: bool = False, head: str = "") -> None:
        if not isinstance(pattern, str):
            raise TypeError(
                f"a key pattern must be a str, not {type(pattern).__name__}"
            )
        self.pattern = pattern
        self.regex = regex
        self.head = head
        if regex:
            try:
                self._compiled = re.compile(pattern)
            except re.error as exc:  # names the problem; a ValueError too
                raise InvalidRegex(exc.msg, exc.pattern, exc.pos) from None
            #: Every matching made key starts with this (no more is known for a regex).
            self.literal_prefix = head
        else:
            self._compiled = re.compile(glob_to_regex(pattern))
            self.literal_prefix = head + glob_literal_prefix(pattern)

    def __repr__(self) -> str:
        kind = "regex" if self.regex else "glob"
        return f"KeyPattern({self.pattern!r}, {kind}, head={self.head!r})"

    def matches_key(self, key: str) -> bool:
        """Whether the caller's ``key`` (without the head) matches."""
        if self.regex:
            return self._compiled.search(key) is not None
        return self._compiled.match(key) is not None

    def matches(self, made_key: object) -> bool:
        """Whether a made key matches: it starts with the literal prefix and the pattern fits."""
        if not isinstance(made_key, str) or not made_key.startswith(
            self.literal_prefix
        ):
            return False
        return self.matches_key(made_key[len(self.head) :])

    def redis_match(self) -> str:
        """A ``SCAN MATCH`` pattern whose matches are a superset of this pattern's.

        Redis's glob differs from ours (it matches bytes, so ``?`` is one byte of a
        UTF-8 character; an unclosed ``[`` is a class; ``[]a]``, ``[a-]`` and ``\\``
        in a class follow other rules), so nothing of ours is translated: the literal
        runs of the glob are kept, escaped, and each ``*``, ``?`` and class becomes
        ``*``. A regex gives ``head*``. Filter what ``SCAN`` returns with :meth:`matches`.
        """
        head = _redis_escape(self.head)
        if self.regex:
            return head + "*"
        out: list[str] = []
        stars = 0
        for token in _glob_tokens(self.pattern):
            if token is not None:
                out.append(_redis_escape(token))
            elif not out or out[-1] != "*":
                out.append("*")
                stars += 1
        if stars > _REDIS_MAX_STARS:
            # Redis gives up (no match) on deeply nested "*"s: the literal prefix only.
            return head + _redis_escape(glob_literal_prefix(self.pattern)) + "*"
        return head + "".join(out)

    def redis_exact(self) -> str | None:
        """The Redis glob matching exactly this pattern's keys, when there is one: a
        glob of literal characters and ``*`` only (Redis reads ``?`` as one byte and
        its classes by other rules: see :meth:`redis_match`); None otherwise, for a
        regex, and past the ``*``s Redis gives up on."""
        if self.regex:
            return None
        out = [_redis_escape(self.head)]
        glob, i, n, stars = self.pattern, 0, len(self.pattern), 0
        while i < n:
            ch = glob[i]
            i += 1
            if ch == "*":
                if out[-1] != "*":
                    out.append("*")
                    stars += 1
            elif ch == "?":
                return None
            elif ch == "\\":
                out.append(_redis_escape(glob[i] if i < n else "\\"))
                i += 1
            elif ch == "[" and _class_end(glob, i) is not None:
                return None
            else:
                out.append(_redis_escape(ch))
        return None if stars > _REDIS_MAX_STARS else "".join(out)

    def sql_like(self) -> str:
        """A ``LIKE ? ESCAPE '\\'`` pre-filter (a superset: check rows with :meth:`matches`)."""
        return _like_escape(self.literal_prefix) + "%"
