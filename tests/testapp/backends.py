"""Test-only tag-aware subclasses of Django's own backends (the mixin on foreign code)."""

from __future__ import annotations

from django.core.cache.backends.locmem import LocMemCache
from django.core.cache.backends.redis import RedisCache

from django_smartcache.tagging import TaggingMixin


class TaggedLocMemCache(TaggingMixin, LocMemCache):
    pass


class TaggedRedisCache(TaggingMixin, RedisCache):
    pass
