"""The options of ``@cached``: their defaults, and their validation at decoration."""

from __future__ import annotations

import math
import random as _random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.cache.backends.base import DEFAULT_TIMEOUT
from django.core.exceptions import ImproperlyConfigured

#: Defaults of the options (documented in docs/memoize.md).
DEFAULT_LOCK_TIMEOUT = 30.0
DEFAULT_PREFIX = "smartcache.memo"


def _invalid(option: str, problem: str) -> ImproperlyConfigured:
    return ImproperlyConfigured(f"cached({option}=...): {problem}")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True)
class _Options:
    """The validated options of one ``@cached`` (see :func:`cached`)."""

    timeout: Any
    tags: Iterable[str] | Callable[..., Iterable[str]] | None
    key: Callable[..., Any] | None
    using: str
    lock: bool
    lock_timeout: float
    #: ``lock_timeout`` rounded up for the backend: Django's Redis and memcached
    #: backends keep whole seconds (``int()``), and 0.9 would store an expired lock.
    lock_seconds: int
    beta: float  # 0: no early refresh
    stale_if_error: float
    random: Callable[[], float]
    clock: Callable[[], float]
    prefix: str
    name: str | None

    @classmethod
    def validate(
        cls,
        *,
        timeout: Any,
        tags: Any,
        key: Any,
        using: Any,
        lock: Any,
        lock_timeout: Any,
        early_refresh: Any,
        stale_if_error: Any,
        random: Any,
        clock: Any,
        prefix: Any,
        name: Any = None,
    ) -> _Options:
        if (
            timeout is not DEFAULT_TIMEOUT
            and timeout is not None
            and not (_is_number(timeout) and timeout >= 0)
        ):
            raise _invalid("timeout", f"expected None or seconds >= 0, got {timeout!r}")
        if _is_number(timeout) and math.isinf(timeout):
            timeout = None  # forever, as Django's None
        if isinstance(tags, str | bytes):
            raise _invalid(
                "tags",
                f"expected a list of tags or a function returning one, got the string {tags!r}",
            )
        if tags is not None and not callable(tags):
            try:
                tags = tuple(tags)
            except TypeError:
                raise _invalid(
                    "tags",
                    f"expected a list of tags or a function returning one, got {tags!r}",
                ) from None
            _check_tags(tags)
        if key is not None and not callable(key):
            raise _invalid("key", f"expected a function of the arguments, got {key!r}")
        if not isinstance(using, str):
            raise _invalid("using", f"expected a cache alias (str), got {using!r}")
        if not isinstance(lock, bool):
            raise _invalid("lock", f"expected True or False, got {lock!r}")
        if not (
            _is_number(lock_timeout)
            and lock_timeout > 0
            and math.isfinite(lock_timeout)
        ):
            raise _invalid(
                "lock_timeout",
                f"expected a finite number of seconds > 0, got {lock_timeout!r}",
            )
        if early_refresh is True:
            beta = 1.0
        elif early_refresh is False:
            beta = 0.0
        elif _is_number(early_refresh) and early_refresh > 0:
            beta = float(early_refresh)
        else:
            raise _invalid(
                "early_refresh",
                f"expected True, False or a beta > 0, got {early_refresh!r}",
            )
        if not (
            _is_number(stale_if_error)
            and stale_if_error >= 0
            and math.isfinite(stale_if_error)
        ):
            raise _invalid(
                "stale_if_error",
                f"expected a finite number of seconds >= 0, got {stale_if_error!r}",
            )
        for option, value in (("random", random), ("clock", clock)):
            if value is not None and not callable(value):
                raise _invalid(
                    option, f"expected a function of no arguments, got {value!r}"
                )
        if (
            not isinstance(prefix, str)
            or not prefix
            or any(c.isspace() for c in prefix)
        ):
            raise _invalid(
                "prefix", f"expected a non-empty string without spaces, got {prefix!r}"
            )
        if name is not None and (
            not isinstance(name, str) or not name or any(c.isspace() for c in name)
        ):
            raise _invalid(
                "name", f"expected a non-empty string without spaces, got {name!r}"
            )
        return cls(
            timeout=timeout,
            tags=tags,
            key=key,
            using=using,
            lock=lock,
            lock_timeout=float(lock_timeout),
            lock_seconds=math.ceil(lock_timeout),
            beta=beta,
            stale_if_error=float(stale_if_error),
            random=random or _random.random,
            clock=clock or time.time,
            prefix=prefix,
            name=name,
        )


def _check_tags(tags: tuple[Any, ...]) -> tuple[str, ...]:
    for tag in tags:
        if not isinstance(tag, str):
            raise _invalid("tags", f"every tag must be a str, got {tag!r}")
    return tags


def _check_alias(using: str) -> None:
    """Refuse an unknown alias at decoration time when settings are ready already."""
    if settings.configured and using not in settings.CACHES:
        raise _invalid("using", f"no cache alias {using!r} in settings.CACHES")
