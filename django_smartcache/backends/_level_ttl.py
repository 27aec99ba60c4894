"""How long an entry has left in a level: what a promotion into the levels above keeps.

Each kind of backend says it its own way (SQLiteCache and SmartCache ``ttl_many``,
django-redis ``ttl``, Redis ``PTTL``, LocMemCache's expiry table); a level that cannot
say gets ``L1_MAX_TTL``.
"""

from __future__ import annotations

import datetime
import pickle
import time
from typing import Any

from django.core.cache.backends.base import BaseCache
from django.core.cache.backends.db import DatabaseCache
from django.core.cache.backends.filebased import FileBasedCache

_MISSING = object()

_NO_EXPIRY = object()


def _redis_url(level: BaseCache) -> str | None:
    """The URL of a Redis-backed level (Django's RedisCache, django-redis), else None."""
    servers = getattr(level, "_servers", None)  # Django's RedisCache: a list
    if servers is None:
        servers = getattr(level, "_server", None)  # django-redis: LOCATION as given
        if isinstance(servers, str):
            servers = servers.split(",")
    if isinstance(servers, list | tuple) and servers:
        first = servers[0]
        if isinstance(first, str) and first.startswith(
            ("redis://", "rediss://", "unix://")
        ):
            return first
    return None


def raw_redis_client(level: BaseCache, *, write: bool = False) -> Any:
    """A redis-py client of a Redis-backed level, or None.

    Django's RedisCache (``_cache.get_client``) and django-redis's default client
    (``client.get_client``); other client classes (sharded, ...) give None, and the
    level is then used through its own methods only.
    """
    if not _redis_url(level):
        return None
    cache = getattr(level, "_cache", None)
    get_client = getattr(cache, "get_client", None)
    if get_client is not None:
        return get_client(None, write=write)
    client = getattr(level, "client", None)
    get_client = getattr(client, "get_client", None)
    if get_client is None:
        return None
    try:
        return get_client(write=write)
    except TypeError:  # another signature: not the default client
        return None
    except NotImplementedError:  # django-redis' ShardClient: no one client
        return None


def refuses_client(level: BaseCache) -> bool:
    """Whether a Redis level's client has no one redis-py client to give
    (django-redis' ``ShardClient`` raises ``NotImplementedError``)."""
    get_client = getattr(getattr(level, "client", None), "get_client", None)
    if not _redis_url(level) or get_client is None:
        return False
    try:
        get_client(write=True)
    except NotImplementedError:
        return True
    except Exception:  # noqa: BLE001 - another client's trouble: not this question
        return False
    return False


def _redis_options(level: BaseCache) -> dict[str, Any]:
    options: dict[str, Any] = {"socket_connect_timeout": 2.0, "socket_timeout": 2.0}
    return options


def _remaining_ttls(level: BaseCache, keys: list[str]) -> dict[str, Any]:
    """Remaining TTL in seconds per key; ``_NO_EXPIRY`` for none; absent when unknown."""
    ttl_many = getattr(level, "ttl_many", None)  # SQLiteCache, SmartCache: one call
    if callable(ttl_many):
        found = ttl_many(keys)
        return {
            key: _NO_EXPIRY if (value := found.get(key, 0.0)) is None else float(value)
            for key in keys
        }
    # Redis (Django's RedisCache, django-redis) before ``ttl``: one pipelined PTTL for
    # all the keys, in milliseconds. django-redis's ``ttl()`` is two round trips per
    # key, and rounds to the nearest second: a promotion kept up to half a second
    # more than the level had left.
    client = raw_redis_client(level)
    if client is not None:
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.pttl(key)
        out: dict[str, Any] = {}
        for key, ms in zip(keys, pipe.execute(), strict=True):
            if ms == -1:
                out[key] = _NO_EXPIRY
            elif ms >= 0:
                out[key] = ms / 1000.0
            else:
                out[key] = 0.0  # gone meanwhile
        return out
    ttl = getattr(level, "ttl", None)
    if callable(ttl):
        out = {}
        for key in keys:
            value = ttl(key)
            out[key] = _NO_EXPIRY if value is None else float(value)
        return out
    if isinstance(level, FileBasedCache):
        return _file_ttls(level, keys)
    if isinstance(level, DatabaseCache):
        return _database_ttls(level, keys)
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


def _file_ttls(level: FileBasedCache, keys: list[str]) -> dict[str, Any]:
    """A FileBasedCache entry's expiry is the first pickle of its file (None: never)."""
    now = time.time()
    out: dict[str, Any] = {}
    for key in keys:
        try:
            with open(level._key_to_file(key), "rb") as f:
                expires = pickle.load(f)
        except FileNotFoundError:
            continue
        except (OSError, EOFError, pickle.UnpicklingError):
            continue  # unreadable: unknown, as Django's get would treat it
        out[key] = _NO_EXPIRY if expires is None else max(0.0, expires - now)
    return out


def _database_ttls(level: DatabaseCache, keys: list[str]) -> dict[str, Any]:
    """A DatabaseCache entry's ``expires`` column, read as Django's ``get_many`` reads
    it (the backend's converters; ``datetime.max`` for "never": ``timeout=None``)."""
    from django.db import connections, models, router

    db = router.db_for_read(level.cache_model_class)
    connection = connections[db]
    quote_name = connection.ops.quote_name
    table = quote_name(level._table)
    expression = models.Expression(output_field=models.DateTimeField())
    converters = connection.ops.get_db_converters(
        expression
    ) + expression.get_db_converters(connection)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {quote_name('cache_key')}, {quote_name('expires')} FROM {table}"
            f" WHERE {quote_name('cache_key')} IN ({', '.join(['%s'] * len(keys))})",
            keys,
        )
        rows = cursor.fetchall()
    now = time.time()
    out: dict[str, Any] = {}
    for key, expires in rows:
        for converter in converters:
            expires = converter(expires, expression, connection)
        if expires.year == datetime.MAXYEAR:
            out[key] = _NO_EXPIRY
        else:  # aware in UTC with USE_TZ; naive local time without: as Django wrote it
            out[key] = max(0.0, expires.timestamp() - now)
    return out
