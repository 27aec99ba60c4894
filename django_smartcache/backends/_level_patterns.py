"""Delete the keys matching a :class:`KeyPattern` from one level of a MultiLevelCache.

A level stores MultiLevelCache's *final* keys (its key function is the identity), so the
pattern is matched on final keys: ``KeyPattern.head`` is MultiLevelCache's
``"prefix:version:"``. Each kind of level is asked in the cheapest way it offers:

- Django's ``RedisCache``: ``SCAN MATCH ... COUNT`` in batches (never ``KEYS``, which
  blocks the server) and one script per batch that UNLINKs each key and says which
  were there (a pipeline of one ``UNLINK`` per key where scripts are refused), so the
  keys actually removed are known (they are published to the other processes' L1).
- SmartCache: its store's ``delete_matching`` (prefix pre-filter, no unpickling).
- SQLiteCache: its ``_delete_key_pattern`` with MultiLevelCache's head (the caller's
  pattern on the rest of the key, as on its own keys), which returns the keys deleted.
- Another level with its own ``delete_pattern()``: the pattern rewritten over
  final keys; a glob always can be, a regex unless it looks behind the start of the
  caller's key (a lookbehind, MULTILINE; read by Python's regex parser): start anchors
  become "just after the head", leading global flags (``(?i)``) a scoped group that
  leaves the head out.
- Django's ``LocMemCache``: a scan of its keys under its lock.

Anything else raises ``NotImplementedError`` naming the level.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from typing import Any

from django.core.cache.backends.base import BaseCache
from django.core.cache.backends.locmem import LocMemCache

from ..core.patterns import KeyPattern, glob_escape
from ._level_ttl import raw_redis_client

__all__ = [
    "SCAN_COUNT",
    "check_matching",
    "delete_matching",
    "is_django_redis",
    "lists_keys",
]

#: Keys asked per ``SCAN`` call and deleted per pipelined ``UNLINK`` batch.
SCAN_COUNT = 500

#: Without Python's regex parser: a conservative text test for a lookbehind or MULTILINE
#: (it may refuse a regex that only mentions them, never misses one).
_LOOKS_BEHIND_TEXT = re.compile(r"\(\?<[=!]|\(\?[a-zA-Z]*m")

#: The global inline flags, comments and (in verbose mode) blanks a regex may start with.
_LEADING_FLAGS = re.compile(r"\(\?([aiLmsux]+)\)")
_LEADING_COMMENT = re.compile(r"\(\?#(?:\\.|[^\\)])*\)", re.DOTALL)
_VERBOSE_BLANK = re.compile(r"(?:\s+|#[^\n]*(?:\n|\Z))+")


def lists_keys(level: BaseCache) -> bool:
    """Whether :func:`delete_matching` can work on ``level``."""
    return _deleter(level) is not None


def check_matching(level: BaseCache, kp: KeyPattern, label: str) -> None:
    """Raise what :func:`delete_matching` would raise for ``kp`` on ``level`` before it
    deleted anything (``NotImplementedError``: the level cannot list its keys, or its
    own ``delete_pattern()`` cannot be given this regex); touches no key. It is the
    check :func:`delete_matching` makes, so a caller can refuse up front (before it
    changes other caches) exactly what the run would refuse."""
    _checked_deleter(level, kp, label)


def delete_matching(
    level: BaseCache, kp: KeyPattern, label: str, keep: str
) -> set[str] | int:
    """Remove ``kp``'s keys from ``level``; the removed keys, or only their number.

    Keys starting with ``keep`` (the tag version keys) are kept where the keys are
    listed here; SQLiteCache (as its own ``delete_pattern()`` does) and a level's own
    ``delete_pattern()`` delete those that match too: a tagged entry then reads as a
    miss, never as revived. Only a level's own ``delete_pattern()`` gives a number.
    What :func:`check_matching` refuses raises before anything is deleted.
    """
    return _checked_deleter(level, kp, label)(kp, label, keep)


def _checked_deleter(level: BaseCache, kp: KeyPattern, label: str) -> _Deleter:
    deleter = _deleter(level)
    if deleter is None:
        raise NotImplementedError(
            f"delete_pattern(): level {label} ({type(level).__module__}."
            f"{type(level).__qualname__}) cannot list its keys; use SmartCache, "
            f"SQLiteCache, Django's RedisCache or LocMemCache there"
        )
    if isinstance(deleter, _OwnDeletePattern | _RedisGlobDeletePattern):
        deleter.check(kp, label)
    return deleter


_Deleter = Callable[[KeyPattern, str, str], "set[str] | int"]


class _OwnDeletePattern:
    """A level's own ``delete_pattern(pattern, regex=False)``, given the pattern
    rewritten over final keys (a regex that looks before the caller's key cannot be)."""

    def __init__(self, native: Callable[..., Any]) -> None:
        self.native = native

    def check(self, kp: KeyPattern, label: str) -> None:
        if kp.regex:
            _regex_on_final_keys(kp, label)

    def __call__(self, kp: KeyPattern, label: str, keep: str) -> int:
        if kp.regex:
            return int(self.native(_regex_on_final_keys(kp, label), regex=True))
        return int(self.native(glob_escape(kp.head) + kp.pattern))


class _RedisGlobDeletePattern:
    """django-redis's own ``delete_pattern(pattern)`` (a level with no one redis-py
    client: its ``ShardClient``): Redis's glob, on bytes, and no regex. Given ours as
    it was, ``[!a]*`` deleted the keys starting with ``a``, ``??`` a two-byte ``é``:
    only a glob of literals and ``*`` (the same in both) is passed, rewritten
    exactly; anything else is refused before any key is deleted."""

    def __init__(self, native: Callable[..., Any]) -> None:
        self.native = native

    def check(self, kp: KeyPattern, label: str) -> str:
        exact = kp.redis_exact()
        if exact is None:
            raise NotImplementedError(
                f"delete_pattern(): level {label} (django-redis without one redis-py "
                f"client) matches with Redis's own glob, on bytes, and no regex: only "
                f"'*' and literal characters mean the same there; "
                f"{'a regex' if kp.regex else repr(kp.pattern)} cannot be passed"
            )
        return exact

    def __call__(self, kp: KeyPattern, label: str, keep: str) -> int:
        return int(self.native(self.check(kp, label)) or 0)


def _deleter(level: BaseCache) -> _Deleter | None:
    """How ``level`` deletes by pattern (the first kind that applies), or None."""
    client = _redis_client(level)
    if client is not None:
        return lambda kp, label, keep: _redis_delete(client, kp, keep)
    store = getattr(level, "_store", None)
    if store is not None and callable(getattr(store, "delete_matching", None)):
        return lambda kp, label, keep: _store_delete(store, kp, keep)
    exact = getattr(level, "_delete_key_pattern", None)
    if callable(exact):
        # SQLiteCache: the caller's pattern applied after the head, as on its own keys;
        # the keys that went come back, to be counted once across levels.
        return lambda kp, label, keep: set(exact(kp))
    native = getattr(level, "delete_pattern", None)
    if callable(native):
        if is_django_redis(level):
            return _RedisGlobDeletePattern(native)
        return _OwnDeletePattern(native)
    if isinstance(level, LocMemCache):
        return lambda kp, label, keep: _locmem_delete(level, kp, keep)
    return None


# -- Redis ------------------------------------------------------------------------------


def _redis_client(level: BaseCache) -> Any:
    """The level's redis-py client (Django's RedisCache, django-redis), else None: our
    glob and regex then apply, never Redis's glob or django-redis's own pattern API."""
    return raw_redis_client(level, write=True)


def _redis_delete(client: Any, kp: KeyPattern, keep: str) -> set[str]:
    removed: set[str] = set()
    match = kp.redis_match()
    cursor = 0
    scripted = [True]  # UNLINK by script (see _unlink_each) until refused
    while True:
        cursor, batch = client.scan(cursor=cursor, match=match, count=SCAN_COUNT)
        keys, raws = [], []
        for raw in batch:
            key = (
                raw.decode("utf-8", "surrogateescape")
                if isinstance(raw, bytes)
                else raw
            )
            if key not in removed and kp.matches(key) and not _kept(key, keep):
                keys.append(key)
                raws.append(raw)  # sent as SCAN gave it: not encoded again
        if keys:
            flags = _unlink_each(client, raws, scripted)
            removed.update(key for key, gone in zip(keys, flags, strict=True) if gone)
        if not cursor:
            return removed


#: UNLINK each of KEYS, in one round trip; one "1" (removed) or "0" per key, in order.
_UNLINK_EACH = (
    "local r = {} for i, k in ipairs(KEYS) do r[i] = redis.call('UNLINK', k) end "
    "return table.concat(r)"
)


def _unlink_each(
    client: Any, keys: list[str | bytes], scripted: list[bool]
) -> list[bool]:
    """UNLINK ``keys``; whether each was there (the keys removed are published to the
    other processes' L1, and counted).

    One script per batch: a pipeline of one UNLINK per key cost redis-py a command to
    pack and a reply to parse per key (100,000 keys: 1.14 s against 0.49 s), and one
    UNLINK of them all tells only how many went, not which (keys deleted or expired
    between SCAN and UNLINK). A server that refuses the script (an ACL user without
    ``@scripting``, a proxy without EVAL) gets the pipeline, for the rest of the call
    (``scripted``); the script declares its keys, so a refusal comes before it runs.
    """
    if scripted[0]:
        from redis.exceptions import ResponseError  # (a Redis level: redis-py is there)

        try:
            flags = client.eval(_UNLINK_EACH, len(keys), *keys)
        except ResponseError:
            scripted[0] = False
        else:
            text = flags.decode() if isinstance(flags, bytes) else str(flags)
            if len(text) == len(keys):
                return [flag == "1" for flag in text]
            scripted[0] = False  # (not our script's answer: never seen)
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.unlink(key)
    return [bool(gone) for gone in pipe.execute()]


# -- in-process levels --------------------------------------------------------------------


def _store_delete(store: Any, kp: KeyPattern, keep: str) -> set[str]:
    matched: list[str] = []

    def collect(key: str) -> bool:
        if kp.matches(key) and not _kept(key, keep):
            matched.append(key)
        return False  # only collect: deleting one by one tells which were live

    store.delete_matching(kp.literal_prefix, collect)
    return {key for key in matched if store.delete(key)}


def _locmem_delete(level: LocMemCache, kp: KeyPattern, keep: str) -> set[str]:
    """Expired entries not yet culled are deleted too but not counted: LocMemCache's
    ``delete()`` answers True for them, and the count said 3 where the other
    backends said 1 (two of the keys had expired)."""
    removed: set[str] = set()
    with level._lock:
        keys = [k for k in level._cache if kp.matches(k) and not _kept(k, keep)]
        live = {k for k in keys if not level._has_expired(k)}
    for key in keys:
        if level.delete(key) and key in live:
            removed.add(key)
    return removed


def is_django_redis(cache: BaseCache) -> bool:
    """Whether ``cache`` is django-redis's backend, or a subclass of it (by class, not
    by name)."""
    return any(c.__module__.startswith("django_redis.") for c in type(cache).__mro__)


def _kept(key: str, keep: str) -> bool:
    """Whether ``key`` is one of the keys kept (``keep``: their start; "" keeps none)."""
    return bool(keep) and key.startswith(keep)


# -- levels with their own delete_pattern() -------------------------------------------


def _regex_on_final_keys(kp: KeyPattern, label: str) -> str:
    """A regex that ``re.search`` finds in a final key iff ``kp`` matches it.

    ``\\A head (?s:.*?) (?flags:pattern)``: the pattern's leading global flags
    (``(?i)``, ``(?x)``...) become a scoped group around it, so they never apply to the
    head (a case-insensitive head would reach other prefixes' keys), and each start
    anchor of the pattern (``^``, ``\\A``) becomes "just after the head" (a
    fixed-width lookbehind). A pattern that looks before the caller's key (a
    lookbehind, MULTILINE, ``\\b``/``\\B`` after a head ending in a word character)
    cannot be rewritten: ``NotImplementedError``.
    """
    pattern = kp.pattern
    word_head = bool(re.search(r"\w\Z", kp.head))
    found = _looks_before_the_key(pattern, word_head)
    if found:
        raise NotImplementedError(
            f"delete_pattern(regex=True): level {label} matches final keys, and "
            f"'{pattern}' looks at what precedes the caller's key ({found}); "
            f"rewrite it"
        )
    flags, body = _split_global_flags(pattern)
    verbose = "x" in flags
    head = re.escape(kp.head)  # escapes blanks and "#" too: safe in verbose mode
    body = _replace_start_anchors(body, rf"(?<=\A{head})", verbose=verbose)
    # In verbose mode a trailing "# comment" would swallow the closing parenthesis.
    end = "\n)" if verbose else ")"
    return rf"\A{head}(?s:.*?)(?{flags}:{body}{end}"


def _split_global_flags(pattern: str) -> tuple[str, str]:
    """``(flags, rest)``: the global inline flags ``pattern`` starts with, and the rest.

    Python accepts global flags only before anything else (comments and, once verbose,
    blanks aside); those are dropped with them.
    """
    flags = ""
    i = 0
    while True:
        if "x" in flags:
            blank = _VERBOSE_BLANK.match(pattern, i)
            if blank and blank.end() > i:
                i = blank.end()
                continue
        match = _LEADING_FLAGS.match(pattern, i) or _LEADING_COMMENT.match(pattern, i)
        if match is None:
            return "".join(sorted(set(flags))), pattern[i:]
        if match.re is _LEADING_FLAGS:
            flags += match.group(1)
        i = match.end()


def _regex_parser() -> Any:
    try:
        return importlib.import_module("re._parser")
    except ImportError:  # pragma: no cover - every Python we support has it
        return None


def _looks_before_the_key(pattern: str, word_head: bool) -> str:
    """What in ``pattern`` looks at the characters before the caller's key ("" if nothing).

    Read by Python's own regex parser, so an escaped ``\\(?m`` or a ``(?<=`` in a class
    is not taken for a construct; without the parser, a conservative text test.
    """
    parser = _regex_parser()
    try:
        tree = parser.parse(pattern) if parser is not None else None
    except Exception:  # noqa: BLE001 - re.compile accepted it; fall back to the text test
        tree = None
    if tree is None:
        if _LOOKS_BEHIND_TEXT.search(pattern):
            return "a lookbehind or MULTILINE"
        if word_head and re.search(r"\\[bB]", pattern):
            return "\\b/\\B after a head ending in a word character"
        return ""
    if tree.state.flags & parser.SRE_FLAG_MULTILINE:
        return "MULTILINE"
    boundaries = (parser.AT_BOUNDARY, parser.AT_NON_BOUNDARY)
    stack: list[Any] = [tree]
    while stack:
        item = stack.pop()
        if isinstance(item, parser.SubPattern):
            for op, av in item.data:
                if op in (parser.ASSERT, parser.ASSERT_NOT) and av[0] < 0:
                    return "a lookbehind"
                if op is parser.SUBPATTERN and av[1] & parser.SRE_FLAG_MULTILINE:
                    return "MULTILINE"
                if op is parser.AT and av in boundaries and word_head:
                    return "\\b/\\B after a head ending in a word character"
                stack.append(av)
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return ""


def _replace_start_anchors(pattern: str, replacement: str, *, verbose: bool) -> str:
    """``pattern`` with every ``^`` anchor and ``\\A`` replaced.

    Skips what is not an anchor: escapes, classes (``[^...]``, ``[]^]``), comments
    (``(?#...)``, and ``# ...`` to the end of the line wherever verbose mode is on,
    globally or in a ``(?x:...)`` group).
    """
    out: list[str] = []
    scopes: list[bool] = []  # the verbose mode outside each open group
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "\\":
            pair = pattern[i : i + 2]
            out.append(replacement if pair == "\\A" else pair)
            i += 2
        elif ch == "[":
            j = i + 1
            for special in ("^", "]"):  # a negation, then a literal "]" first
                if pattern[j : j + 1] == special:
                    j += 1
            while j < n and pattern[j] != "]":
                j += 2 if pattern[j] == "\\" else 1
            out.append(pattern[i : j + 1])
            i = j + 1
        elif ch == "#" and verbose:
            j = pattern.find("\n", i)
            j = n if j < 0 else j + 1
            out.append(pattern[i:j])
            i = j
        elif ch == "(":
            j, inner = _group_start(pattern, i, verbose)
            out.append(pattern[i:j])
            if inner is not None:
                scopes.append(verbose)
                verbose = inner
            i = j
        elif ch == ")":
            if scopes:
                verbose = scopes.pop()
            out.append(ch)
            i += 1
        elif ch == "^":
            out.append(replacement)
            i += 1
        else:
            out.append(ch)
            i += 1
    return "".join(out)


_SCOPED_FLAGS = re.compile(r"\(\?([aiLmsux]*)(?:-([imsx]+))?:")


def _group_start(pattern: str, i: int, verbose: bool) -> tuple[int, bool | None]:
    """The end of the group opening at ``pattern[i]``, and its verbose mode.

    ``None`` as the mode for what opens no group: a ``(?#...)`` comment (all of it is
    returned) or a global flag group.
    """
    if pattern.startswith("(?#", i):
        j = i + 3
        while j < len(pattern) and pattern[j] != ")":
            j += 2 if pattern[j] == "\\" else 1
        return j + 1, None
    scoped = _SCOPED_FLAGS.match(pattern, i)
    if scoped:
        on, off = scoped.group(1), scoped.group(2) or ""
        return scoped.end(), (verbose or "x" in on) and "x" not in off
    flags = _LEADING_FLAGS.match(pattern, i)
    if flags:
        return flags.end(), None
    if pattern.startswith("(?(", i):  # a conditional: skip its "(name)" too
        close = pattern.find(")", i + 3)
        return (len(pattern) if close < 0 else close + 1), verbose
    return i + 1, verbose
