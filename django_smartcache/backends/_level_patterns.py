"""Delete the keys matching a :class:`KeyPattern` from one level of a MultiLevelCache.

A level stores MultiLevelCache's *final* keys (its key function is the identity), so the
pattern is matched on final keys: ``KeyPattern.head`` is MultiLevelCache's
``"prefix:version:"``. Each kind of level is asked in the cheapest way it offers:

- Django's ``RedisCache``: ``SCAN MATCH ... COUNT`` in batches (never ``KEYS``, which
  blocks the server) and one pipelined ``UNLINK`` per batch, so the keys actually
  removed are known (they are published to the other processes' L1).
- SmartCache: its store's ``delete_matching`` (prefix pre-filter, no unpickling).
- A level with its own ``delete_pattern()`` (SQLiteCache): the pattern rewritten over
  final keys; a glob always can be, a regex unless it looks behind the start of the
  caller's key (a lookbehind, MULTILINE): start anchors become "just after the head".
- Django's ``LocMemCache``: a scan of its keys under its lock.

Anything else raises ``NotImplementedError`` naming the level.
"""

from __future__ import annotations

import re
from typing import Any

from django.core.cache.backends.base import BaseCache
from django.core.cache.backends.locmem import LocMemCache

from ..core.patterns import KeyPattern

__all__ = ["SCAN_COUNT", "delete_matching"]

#: Keys asked per ``SCAN`` call and deleted per pipelined ``UNLINK`` batch.
SCAN_COUNT = 500

#: Regex constructs that look at characters before the caller's key: such a regex
#: cannot be rewritten to run on final keys.
_LOOKS_BEHIND = re.compile(r"\(\?<[=!]|\(\?[a-zA-Z]*m")


def delete_matching(
    level: BaseCache, kp: KeyPattern, label: str, keep: str
) -> set[str] | int:
    """Remove ``kp``'s keys from ``level``; the removed keys, or only their number.

    Keys starting with ``keep`` (the tag version keys) are kept where the keys are
    listed here; a level's own ``delete_pattern()`` decides for itself.
    """
    client = _redis_client(level)
    if client is not None:
        return _redis_delete(client, kp, keep)
    store = getattr(level, "_store", None)
    if store is not None and callable(getattr(store, "delete_matching", None)):
        return _store_delete(store, kp, keep)
    native = getattr(level, "delete_pattern", None)
    if callable(native):
        if kp.regex:
            return int(native(_regex_on_final_keys(kp, label), regex=True))
        return int(native(_glob_escape(kp.head) + kp.pattern))
    if isinstance(level, LocMemCache):
        return _locmem_delete(level, kp, keep)
    raise NotImplementedError(
        f"delete_pattern(): level {label} ({type(level).__module__}."
        f"{type(level).__qualname__}) cannot list its keys; use SmartCache, "
        f"SQLiteCache, Django's RedisCache or LocMemCache there"
    )


# -- Redis ------------------------------------------------------------------------------


def _redis_client(level: BaseCache) -> Any:
    cache = getattr(level, "_cache", None)
    get_client = getattr(cache, "get_client", None)
    servers = getattr(level, "_servers", None)
    if get_client is None or not servers:
        return None
    if not str(servers[0]).startswith(("redis://", "rediss://", "unix://")):
        return None
    return get_client(None, write=True)


def _redis_delete(client: Any, kp: KeyPattern, keep: str) -> set[str]:
    removed: set[str] = set()
    match = kp.redis_match()
    cursor = 0
    while True:
        cursor, batch = client.scan(cursor=cursor, match=match, count=SCAN_COUNT)
        keys = []
        for raw in batch:
            key = (
                raw.decode("utf-8", "surrogateescape")
                if isinstance(raw, bytes)
                else raw
            )
            if key not in removed and kp.matches(key) and not key.startswith(keep):
                keys.append(key)
        if keys:
            pipe = client.pipeline(transaction=False)
            for key in keys:
                pipe.unlink(key)
            for key, gone in zip(keys, pipe.execute(), strict=True):
                if gone:
                    removed.add(key)
        if not cursor:
            return removed


# -- in-process levels --------------------------------------------------------------------


def _store_delete(store: Any, kp: KeyPattern, keep: str) -> set[str]:
    matched: list[str] = []

    def collect(key: str) -> bool:
        if kp.matches(key) and not key.startswith(keep):
            matched.append(key)
        return False  # only collect: deleting one by one tells which were live

    store.delete_matching(kp.literal_prefix, collect)
    return {key for key in matched if store.delete(key)}


def _locmem_delete(level: LocMemCache, kp: KeyPattern, keep: str) -> set[str]:
    removed: set[str] = set()
    with level._lock:
        keys = [k for k in level._cache if kp.matches(k) and not k.startswith(keep)]
    for key in keys:
        if level.delete(key):
            removed.add(key)
    return removed


# -- levels with their own delete_pattern() -------------------------------------------


def _glob_escape(text: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


def _regex_on_final_keys(kp: KeyPattern, label: str) -> str:
    """A regex that ``re.search`` finds in a final key iff ``kp`` matches it.

    ``\\A head (?s:.*?) (?:pattern)``, with each start anchor of the pattern (``^``,
    ``\\A``) turned into "just after the head" (a fixed-width lookbehind).
    """
    pattern = kp.pattern
    word_head = bool(re.search(r"\w\Z", kp.head))
    if _LOOKS_BEHIND.search(pattern) or (word_head and re.search(r"\\[bB]", pattern)):
        raise NotImplementedError(
            f"delete_pattern(regex=True): level {label} matches final keys, and "
            f"{pattern!r} looks at what precedes the caller's key (a lookbehind, "
            f"MULTILINE, or \\b/\\B after a head ending in a word character); "
            f"rewrite it"
        )
    head = re.escape(kp.head)
    body = _replace_start_anchors(pattern, rf"(?<=\A{head})")
    return rf"\A{head}(?s:.*?)(?:{body})"


def _replace_start_anchors(pattern: str, replacement: str) -> str:
    """``pattern`` with every ``^`` anchor (outside a class, not escaped) and ``\\A`` replaced."""
    out: list[str] = []
    i, in_class = 0, False
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            pair = pattern[i : i + 2]
            out.append(replacement if pair == "\\A" and not in_class else pair)
            i += 2
            continue
        if in_class:
            if ch == "]":
                in_class = False
        elif ch == "[":
            in_class = True
            out.append(ch)
            i += 1
            for special in ("^", "]"):  # a negation, then a literal "]" first
                if pattern[i : i + 1] == special:
                    out.append(special)
                    i += 1
            continue
        elif ch == "^":
            out.append(replacement)
            i += 1
            continue
        out.append(ch)
        i += 1
    return "".join(out)
