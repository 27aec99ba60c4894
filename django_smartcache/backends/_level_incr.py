"""``incr`` on a level, atomic where the level's own is not.

Django's ``RedisCache.incr`` runs ``EXISTS`` then ``INCRBY``: a key that expires (or is
deleted) between the two comes back from ``INCRBY`` as ``delta`` with no expiry: a
rate-limit counter (``add(k, 0, window)``, then ``incr(k)`` per request) that never
expires. django-redis runs the two in one Lua script; so does a MultiLevelCache, on a
Django ``RedisCache`` level.
"""

from __future__ import annotations

import weakref
from typing import Any

from django.core.cache.backends.base import BaseCache

from ._level_ttl import raw_redis_client

#: ``INCRBY`` of an existing key only, in one step (nil: not found). The new value is
#: read back as the stored string: INCRBY's integer reply becomes a Lua number, a
#: double, exact only up to 2**53 (10**17 + 3 came back as 10**17, and 2**63 - 2 as
#: -2**63, while the stored value was right).
_INCR_EXISTING = """
if redis.call('EXISTS', KEYS[1]) == 1 then
    redis.call('INCRBY', KEYS[1], ARGV[1])
    return redis.call('GET', KEYS[1])
end
return false
"""

#: Levels whose server refused the script (an ACL without ``EVAL``, scripting
#: disabled): they get Django's two steps from then on, not a refused round trip first.
_NO_SCRIPTS: weakref.WeakSet[BaseCache] = weakref.WeakSet()


def level_incr(level: BaseCache, key: str, delta: int) -> Any:
    """``level.incr(key, delta)``, in one step on Django's ``RedisCache``."""
    from django.core.cache.backends.redis import RedisCache

    if type(level) is not RedisCache or level in _NO_SCRIPTS:
        return level.incr(key, delta)  # (a subclass may have its own incr)
    client = raw_redis_client(level, write=True)
    if client is None:
        return level.incr(key, delta)
    made = level.make_and_validate_key(key)
    from redis.exceptions import NoPermissionError, ResponseError

    try:
        value = client.eval(_INCR_EXISTING, 1, made, delta)
    except NoPermissionError as exc:
        # A server that refuses scripts (an ACL without EVAL): Django's own two steps,
        # which raise if the refusal was of the key, not of the command.
        if "'eval'" in str(exc).lower():
            _NO_SCRIPTS.add(level)
        return level.incr(key, delta)
    except ResponseError as exc:
        if "unknown command" not in str(exc).lower():  # (scripting disabled)
            raise
        _NO_SCRIPTS.add(level)
        return level.incr(key, delta)
    if value is None:
        raise ValueError(f"Key '{made}' not found.")
    return int(value)
