"""How long an entry has left in a level: what a promotion into the levels above keeps.

Each kind of backend says it its own way (SQLiteCache ``ttl_many``, django-redis ``ttl``,
Redis ``PTTL``, LocMemCache's expiry table); a level that cannot say gets ``L1_MAX_TTL``.
"""

from __future__ import annotations

import time
from typing import Any

from django.core.cache.backends.base import BaseCache

_MISSING = object()

_NO_EXPIRY = object()


def _redis_url(level: BaseCache) -> str | None:
    """The URL of a Redis-backed level (Django's RedisCache, django-redis), else None."""
    servers = getattr(level, "_servers", None)
    if isinstance(servers, list | tuple) and servers:
        first = servers[0]
        if isinstance(first, str) and first.startswith(
            ("redis://", "rediss://", "unix://")
        ):
            return first
    return None


def _redis_options(level: BaseCache) -> dict[str, Any]:
    options: dict[str, Any] = {"socket_connect_timeout": 2.0, "socket_timeout": 2.0}
    return options


def _remaining_ttls(level: BaseCache, keys: list[str]) -> dict[str, Any]:
    """Remaining TTL in seconds per key; ``_NO_EXPIRY`` for none; absent when unknown."""
    ttl_many = getattr(level, "ttl_many", None)  # SQLiteCache: one query for all
    if callable(ttl_many):
        found = ttl_many(keys)
        return {
            key: _NO_EXPIRY if (value := found.get(key, 0.0)) is None else float(value)
            for key in keys
        }
    ttl = getattr(level, "ttl", None)
    if callable(ttl):
        out: dict[str, Any] = {}
        for key in keys:
            value = ttl(key)
            out[key] = _NO_EXPIRY if value is None else float(value)
        return out
    cache = getattr(level, "_cache", None)
    get_client = getattr(cache, "get_client", None)
    if get_client is not None and _redis_url(level):
        client = get_client(keys[0])
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.pttl(key)
        out = {}
        for key, ms in zip(keys, pipe.execute(), strict=True):
            if ms == -1:
                out[key] = _NO_EXPIRY
            elif ms >= 0:
                out[key] = ms / 1000.0
            else:
                out[key] = 0.0  # gone meanwhile
        return out
    expire_info = getattr(level, "_expire_info", None)  # Django's LocMemCache
    if isinstance(expire_info, dict):
        now = time.time()
        out = {}
        for key in keys:
            exp = expire_info.get(key, _MISSING)
            if exp is _MISSING:
                continue
            out[key] = _NO_EXPIRY if exp is None else exp - now
        return out
    return {}
