"""MultiLevelCache's options and levels: checked, then built, once per instance.

Every wrong option is an ``ImproperlyConfigured`` naming it, raised when the cache is
first used (as Django does for its own backends); defaults are in ``DEFAULTS`` and
documented in docs/multilevel.md. Also the levels as ``CACHES`` writes them, before
anything is built (:func:`multilevel_levels`), for the system checks, the
``smartcache_clear`` command and the tagging mixin's ``TAG_CACHES`` warning.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from django.conf import settings
from django.core.cache.backends.base import DEFAULT_TIMEOUT, BaseCache
from django.core.cache.backends.dummy import DummyCache
from django.core.cache.backends.locmem import LocMemCache
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from . import _coherence
from ._level_ttl import (
    _NO_EXPIRY,
    _redis_options,
    _redis_url,
    _remaining_ttls,
    raw_redis_client,
    refuses_client,
)
from ._sqlite_options import django_count
from .base import option_timeout, options_given as _options_given

logger = logging.getLogger("django_smartcache.multilevel")

_ABSENT = object()

DEFAULT_L1 = "django_smartcache.backends.SmartCache"
DEFAULT_L2 = "django_smartcache.backends.SQLiteCache"

#: Options of MultiLevelCache with their defaults (documented in docs/multilevel.md).
DEFAULTS: dict[str, Any] = {
    "LEVELS": None,  # None: SmartCache over SQLiteCache(LOCATION)
    "L1_MAX_TTL": 1.0,
    "COHERENCE": "auto",
    "COHERENCE_INTERVAL": 0.05,
    "CHANNEL": "django_smartcache:invalidate",
    "REDIS_URL": None,
    "RETRY_INTERVAL": 1.0,
    "ERROR_LOG_INTERVAL": 60.0,
    "RAISE_ERRORS": False,
    "MAX_SUSPECT_KEYS": 100_000,
}

#: Options held by the state that instances of one configuration share in a process
#: (coherence channel, level health): aliases differing in any of them share nothing.
_SHARED_OPTIONS = (
    "COHERENCE",
    "COHERENCE_INTERVAL",
    "CHANNEL",
    "REDIS_URL",
    "RETRY_INTERVAL",
    "ERROR_LOG_INTERVAL",
    "MAX_SUSPECT_KEYS",
)

#: Django's generic capacity options: with the default levels they size the SQLite L2
#: (the cache as a whole); with explicit LEVELS, set them on the level they are for.
_PASSED_TO_L2 = ("MAX_ENTRIES", "CULL_FREQUENCY")

#: Per-level options that would change the key a level stores; set them on the
#: MultiLevelCache entry instead.
_KEY_OPTIONS = ("KEY_PREFIX", "VERSION", "KEY_FUNCTION")

#: The keys of an inline level config (Django's CACHES keys but ``_KEY_OPTIONS``).
_LEVEL_KEYS = ("BACKEND", "LOCATION", "OPTIONS", "TIMEOUT")


@dataclass(frozen=True)
class LevelOptions:
    """MultiLevelCache's OPTIONS, checked; numbers as floats."""

    configs: list[dict[str, Any]]  # one backend config per level, fastest first
    #: Names the state shared by this configuration's instances in a process (the
    #: levels and the options of that state; not KEY_PREFIX/VERSION, see ``parse``).
    name: str
    l1_max_ttl: float
    interval: float
    retry: float
    log_interval: float
    max_suspects: int
    raise_errors: bool
    coherence: str
    #: The CHANNEL option as given; None: not given (the default, per database: see
    #: ``default_channel``).
    channel: str | None
    redis_url: Any
    #: Whether the levels are OPTIONS["LEVELS"] (False: the default levels).
    listed: bool = True


def location_text(location: Any) -> str:
    """``LOCATION`` as a string: a ``pathlib.Path`` (``BASE_DIR / "cache.sqlite3"``) as
    its path, ``None`` as not given (Django's own default is ``""``)."""
    if location is None:
        return ""
    if isinstance(location, os.PathLike):
        location = os.fspath(location)
    if not isinstance(location, str):
        raise ImproperlyConfigured(
            f"MultiLevelCache LOCATION must be the path of the SQLite file of its "
            f"default L2 level (a str or a pathlib.Path), got {location!r}"
        )
    return location


def _level_option_hint(unknown: list[Any]) -> str:
    """A hint when an unknown option is one of a level's (``MAX_MEMORY`` written for
    the default L1): the default levels are sized by listing them in ``LEVELS``."""
    from ._sqlite_options import DEFAULTS as SQLITE_DEFAULTS
    from .smart import OPTIONS as SMART_OPTIONS

    of_levels = [name for name in unknown if name in {*SMART_OPTIONS, *SQLITE_DEFAULTS}]
    if not of_levels:
        return ""
    return (
        f". {', '.join(map(str, of_levels))} "
        f"{'is an option' if len(of_levels) == 1 else 'are options'} of a level: "
        "to size the default "
        "levels, list them in OPTIONS['LEVELS'] with their own OPTIONS ([{'BACKEND': "
        "'django_smartcache.backends.SmartCache', 'OPTIONS': {'MAX_MEMORY': ...}}, "
        "{'BACKEND': 'django_smartcache.backends.SQLiteCache', 'LOCATION': ..., "
        "'OPTIONS': {'MAX_SIZE': ...}}]; docs/multilevel.md)"
    )


def parse(location: Any, params: dict[str, Any], outer: type) -> LevelOptions:
    """Check ``LOCATION``, ``params["OPTIONS"]`` (and TIMEOUT); ``outer`` is refused as
    a level."""
    location = location_text(location)
    given = _options_given(params)
    if not isinstance(given, Mapping):
        raise ImproperlyConfigured(
            f"MultiLevelCache OPTIONS must be a dict, got {given!r}"
        )
    raw = dict(given)
    # key=repr: a key that is not a string ({1: 2}) is named, not a TypeError.
    unknown = sorted(set(raw) - set(DEFAULTS) - set(_PASSED_TO_L2), key=repr)
    if unknown:
        raise ImproperlyConfigured(
            f"unknown MultiLevelCache OPTIONS {unknown}; known: "
            f"{sorted([*DEFAULTS, *_PASSED_TO_L2])}{_level_option_hint(unknown)}"
        )
    options = {**DEFAULTS, **raw}
    option_timeout("MultiLevelCache", params)
    interval = number(options, "COHERENCE_INTERVAL")
    retry = number(options, "RETRY_INTERVAL")
    log_interval = number(options, "ERROR_LOG_INTERVAL", positive=False)
    max_suspects = options["MAX_SUSPECT_KEYS"]
    if (
        isinstance(max_suspects, bool)
        or not isinstance(max_suspects, int)
        or max_suspects < 0
    ):
        raise ImproperlyConfigured(
            f"MultiLevelCache OPTIONS['MAX_SUSPECT_KEYS'] must be an int >= 0, got {max_suspects!r}"
        )
    if not isinstance(options["RAISE_ERRORS"], bool):
        raise ImproperlyConfigured(
            f"MultiLevelCache OPTIONS['RAISE_ERRORS'] must be True or False, got {options['RAISE_ERRORS']!r}"
        )
    mode = options["COHERENCE"]
    if mode not in ("auto", "redis", "sqlite", "none"):
        raise ImproperlyConfigured(
            f"MultiLevelCache OPTIONS['COHERENCE'] must be 'auto', 'redis', 'sqlite' or 'none', got {mode!r}"
        )

    channel = options["CHANNEL"]
    if not isinstance(channel, str) or not channel:
        raise ImproperlyConfigured(
            f"MultiLevelCache OPTIONS['CHANNEL'] must be a non-empty string, got {channel!r}"
        )
    url = options["REDIS_URL"]
    if url is not None and (
        not isinstance(url, str)
        or not url.startswith(("redis://", "rediss://", "unix://"))
    ):
        raise ImproperlyConfigured(
            f"MultiLevelCache OPTIONS['REDIS_URL'] must be a redis:// URL or None, got {url!r}"
        )
    if options["LEVELS"] is None and "://" in location:
        raise ImproperlyConfigured(
            f"MultiLevelCache LOCATION is the path of the SQLite file of its default L2 "
            f"level, not a URL ({location!r}); for Redis, list it in OPTIONS['LEVELS'] "
            f"(docs/multilevel.md)"
        )
    if options["LEVELS"] is None and not location:
        raise ImproperlyConfigured(
            "MultiLevelCache LOCATION must be the path of the SQLite file of its "
            "default L2 level (or set OPTIONS['LEVELS'])"
        )
    configs = level_configs(location, options["LEVELS"], outer)
    l2_options = {k: raw[k] for k in _PASSED_TO_L2 if k in raw}
    if l2_options:
        if options["LEVELS"] is not None:
            name = next(iter(l2_options))
            raise ImproperlyConfigured(
                f"MultiLevelCache OPTIONS['{name}'] only sizes the default SQLite level; with "
                f"MultiLevelCache OPTIONS['LEVELS'], set it in the OPTIONS of the level it is for"
            )
        for name, value in l2_options.items():
            if value is None and name == "MAX_ENTRIES":
                continue  # its default: no entry limit
            # Checked here, so that the error names the option the user set.
            minimum = 1 if name == "MAX_ENTRIES" else 0
            try:
                django_count(name, value, minimum=minimum)
            except ImproperlyConfigured:
                raise ImproperlyConfigured(
                    f"MultiLevelCache OPTIONS['{name}'] must be an integer >= {minimum} "
                    f"(it sizes the default SQLite level), got {value!r}"
                ) from None
        configs[-1]["OPTIONS"] = l2_options
    # Not KEY_PREFIX/VERSION: final keys already contain them, so aliases over the
    # same levels share one L1 (a write through one is seen by the others at once).
    # But the options of that shared state are part of the name: else an alias with
    # another CHANNEL, COHERENCE, ... would get the first alias's coherence and
    # health objects (listening on the other channel) without a word.
    # Numbers as parsed (RETRY_INTERVAL 1 and 1.0 are one configuration).
    parsed = {
        "COHERENCE_INTERVAL": interval,
        "RETRY_INTERVAL": retry,
        "ERROR_LOG_INTERVAL": log_interval,
        # Not given: the default, which depends on the lowest level's database; one
        # given equal to the default's text is another channel (for db 1 and up).
        "CHANNEL": raw.get("CHANNEL"),
    }
    shared_options = tuple((k, parsed.get(k, options[k])) for k in _SHARED_OPTIONS)
    name = hashlib.sha1(repr((location, configs, shared_options)).encode()).hexdigest()
    return LevelOptions(
        configs=configs,
        name=name[:16],
        l1_max_ttl=number(options, "L1_MAX_TTL"),
        interval=interval,
        retry=retry,
        log_interval=log_interval,
        max_suspects=max_suspects,
        raise_errors=options["RAISE_ERRORS"],
        coherence=mode,
        channel=raw.get("CHANNEL"),
        redis_url=options["REDIS_URL"],
        listed=options["LEVELS"] is not None,
    )


def number(options: dict[str, Any], name: str, *, positive: bool = True) -> float:
    value = options[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ImproperlyConfigured(
            f"MultiLevelCache OPTIONS['{name}'] must be a number of seconds, got {value!r}"
        )
    if not math.isfinite(value) or (value <= 0 if positive else value < 0):
        bound = "> 0" if positive else ">= 0"
        raise ImproperlyConfigured(
            f"MultiLevelCache OPTIONS['{name}'] must be a finite number of seconds {bound}, got {value!r}"
        )
    if value > threading.TIMEOUT_MAX:
        # A wait (the repair's threading.Timer, the channel's back-off) longer than
        # that raises OverflowError in the thread, which dies: no repair ever again.
        raise ImproperlyConfigured(
            f"MultiLevelCache OPTIONS['{name}'] must be at most threading.TIMEOUT_MAX "
            f"({threading.TIMEOUT_MAX:.10g} s, the longest wait this platform's threads "
            f"take), got {value!r}"
        )
    return float(value)


def level_configs(location: str, levels: Any, outer: type) -> list[Any]:
    if levels is None:  # ``parse`` has required a LOCATION for the SQLite file
        return [{"BACKEND": DEFAULT_L1}, {"BACKEND": DEFAULT_L2, "LOCATION": location}]
    if not isinstance(levels, list | tuple) or not levels:
        raise ImproperlyConfigured(
            f"MultiLevelCache OPTIONS['LEVELS'] must be a non-empty list of cache aliases or "
            f"backend configs, fastest first; got {levels!r}"
        )
    configs: list[Any] = []
    classes: list[type] = []
    for i, level in enumerate(levels):
        if isinstance(level, str):
            if level not in settings.CACHES:
                raise ImproperlyConfigured(
                    f"MultiLevelCache OPTIONS['LEVELS'][{i}]: {level!r} is not an alias in CACHES"
                )
            config = dict(settings.CACHES[level])
        elif isinstance(level, dict):
            config = dict(level)
        else:
            raise ImproperlyConfigured(
                f"MultiLevelCache OPTIONS['LEVELS'][{i}] must be a CACHES alias or a dict with a "
                f"BACKEND, got {level!r}"
            )
        backend = config.get("BACKEND")
        if not isinstance(backend, str):
            raise ImproperlyConfigured(
                f"MultiLevelCache OPTIONS['LEVELS'][{i}] has no 'BACKEND'"
            )
        for option in _KEY_OPTIONS:
            if option in config:
                raise ImproperlyConfigured(
                    f"MultiLevelCache OPTIONS['LEVELS'][{i}] sets {option}: levels store "
                    f"MultiLevelCache's final key unchanged, so set {option} on "
                    f"the MultiLevelCache entry instead"
                )
        # An inline config only (an alias's entry is Django's, used on its own too):
        # a typo ("OPTION") was ignored, and the level built with its defaults.
        unknown = (
            sorted(set(config) - set(_LEVEL_KEYS), key=repr)
            if isinstance(level, dict)
            else []
        )
        if unknown:
            raise ImproperlyConfigured(
                f"MultiLevelCache OPTIONS['LEVELS'][{i}] has unknown key(s) "
                f"{', '.join(map(repr, unknown))}; a level accepts "
                f"{', '.join(_LEVEL_KEYS)} (set {', '.join(_KEY_OPTIONS)} on the "
                f"MultiLevelCache entry)"
            )
        try:
            cls = import_string(backend)
        except ImportError as exc:
            raise ImproperlyConfigured(
                f"MultiLevelCache OPTIONS['LEVELS'][{i}]: cannot import BACKEND {backend!r}: {exc}"
            ) from exc
        if not isinstance(cls, type) or not issubclass(cls, BaseCache):
            # Checked before the L1 rule below, which names only an in-process cache;
            # an L2 such as collections.OrderedDict failed at its construction with a
            # TypeError that named no option.
            raise ImproperlyConfigured(
                f"MultiLevelCache OPTIONS['LEVELS'][{i}]: BACKEND {backend!r} is not a "
                f"cache backend (a subclass of django.core.cache.backends.base.BaseCache)"
            )
        if issubclass(cls, outer):
            raise ImproperlyConfigured(
                f"MultiLevelCache OPTIONS['LEVELS'][{i}] is itself a MultiLevelCache; list its levels instead"
            )
        if issubclass(cls, DummyCache):
            raise ImproperlyConfigured(
                f"MultiLevelCache OPTIONS['LEVELS'][{i}] is a DummyCache, which keeps "
                f"nothing: add() would always succeed and values live only in L1"
            )
        if i == 0 and not _in_process(cls):
            # L1 is cleared whenever this process may have missed an invalidation
            # (at start-up, on every reconnection of the channel): a shared L1 (a
            # Redis alias) lost everything in it, other users' keys included.
            raise ImproperlyConfigured(
                f"MultiLevelCache OPTIONS['LEVELS'][0] must be an in-process cache "
                f"(SmartCache or LocMemCache), not {backend}: L1 is this process's own "
                f"copy, cleared whenever it may have missed an invalidation"
            )
        if i > 0:
            same = [
                j
                for j, other in enumerate(configs[1:], 1)
                if _same_store(other, classes[j], config, cls)
            ]
            if same:
                other = configs[same[0]]
                raise ImproperlyConfigured(
                    f"MultiLevelCache OPTIONS['LEVELS'][{i}] is the same store as "
                    f"LEVELS[{same[0]}] ({backend}, LOCATION "
                    f"{config.get('LOCATION')!r}; LEVELS[{same[0]}]: "
                    f"{other.get('LOCATION')!r}): each write would overwrite the "
                    f"other's copy with its own timeout"
                )
        configs.append(config)
        classes.append(cls)
    return configs


def _same_store(a: dict[str, Any], a_cls: type, b: dict[str, Any], b_cls: type) -> bool:
    """Whether two levels are one store, however their LOCATIONs are spelled.

    Compared as written, ``/d/cache.sqlite3`` and ``/d/./cache.sqlite3`` (or
    ``redis://127.0.0.1:6379/7`` and ``redis://localhost:6379/7``) would be two
    levels: each write would overwrite the other's copy with L1_MAX_TTL, and values
    expire after a second. A location that cannot be understood is compared as written.
    """
    la, lb = a.get("LOCATION"), b.get("LOCATION")
    if a.get("BACKEND") == b.get("BACKEND") and la == lb:
        return True
    fa, fb = _file_path(a_cls, la), _file_path(b_cls, lb)
    if fa is not None and fb is not None:
        return fa == fb
    ra, rb = _redis_server(la), _redis_server(lb)
    if ra is None or rb is None or ra[0] != rb[0] or ra[2:] != rb[2:]:
        return False
    # Same port and database: the same server if the hosts share an address.
    return ra[1] == rb[1] or (
        ra[0] == "tcp" and bool(_addresses(ra[1]) & _addresses(rb[1]))
    )


def _file_path(cls: type, location: Any) -> str | None:
    """The real path of a file-backed level's store (SQLiteCache's file,
    FileBasedCache's directory); None for other backends."""
    from django.core.cache.backends.filebased import FileBasedCache

    from .sqlite import BaseSQLiteCache

    if isinstance(location, os.PathLike):
        location = os.fspath(location)
    if not isinstance(location, str) or not location or location == ":memory:":
        return None
    if not issubclass(cls, BaseSQLiteCache | FileBasedCache):
        return None
    return os.path.realpath(location)


#: URL schemes of Redis servers (Django's RedisCache, django-redis, django-valkey).
_REDIS_SCHEMES = ("redis", "rediss", "valkey", "valkeys")


def _redis_server(location: Any) -> tuple[str, str, int, str] | None:
    """(``"tcp"``/``"unix"``, host or socket path, port, database) of the server a Redis
    level writes to (the first of several, as Django's RedisCache does); None when
    ``location`` is no Redis URL."""
    if isinstance(location, list | tuple):
        location = location[0] if location else None
    if not isinstance(location, str):
        return None
    url = urlsplit(location.split(",")[0].strip())
    query = parse_qs(url.query)
    try:
        if url.scheme == "unix":
            path = os.path.realpath(url.path) if url.path else ""
            return ("unix", path, 0, _db(query.get("db", ["0"])[0]))
        if url.scheme in _REDIS_SCHEMES and url.hostname:
            db = url.path.strip("/") or query.get("db", ["0"])[0]
            return ("tcp", url.hostname, url.port or 6379, _db(db))
    except ValueError:  # a port that is no number: compared as written
        return None
    return None


def _db(text: str) -> str:
    """A database number as its digits (``"07"`` is ``"7"``); other text as it is."""
    return str(int(text)) if text.isdigit() else text


def _addresses(host: str) -> set[str]:
    """The addresses ``host`` resolves to; ``{host}`` itself when it resolves to none."""
    try:
        return {info[4][0] for info in socket.getaddrinfo(host, None)}
    except (OSError, UnicodeError):
        return {host}


def _in_process(cls: type) -> bool:
    from .smart import SmartCache

    return issubclass(cls, SmartCache | LocMemCache)


def alias_of(params: dict[str, Any]) -> str | None:
    """The ``CACHES`` alias whose entry ``params`` were copied from (Django's cache
    handler passes a shallow copy: the ``OPTIONS`` dict is the entry's own); None
    when there is none (a cache built directly)."""
    options = params.get("OPTIONS")
    if not isinstance(options, Mapping):
        return None
    for alias, config in settings.CACHES.items():
        if isinstance(config, Mapping) and config.get("OPTIONS") is options:
            return str(alias)
    return None


# -- CACHES as written (the system checks, the commands, tagging's reach) ------


def backend_class(backend: Any) -> type | None:
    """The class a ``BACKEND`` path names, or None when it is no path or cannot be
    imported (the backend names its own error when the alias is used)."""
    if not isinstance(backend, str):
        return None
    try:
        cls = import_string(backend)
    except Exception:  # noqa: BLE001 - a broken BACKEND is the backend's to report
        return None
    return cls if isinstance(cls, type) else None


def backend_is(backend: Any, name: str) -> bool:
    """Whether a ``BACKEND`` path is our backend ``name`` (``"SQLiteCache"``,
    ``"MultiLevelCache"``) or a subclass of it, by importing it; a path that cannot be
    imported is judged by how it ends."""
    from .. import backends  # (built by now: they import this module)

    cls = backend_class(backend)
    if cls is None:
        return isinstance(backend, str) and backend.endswith(name)
    return issubclass(cls, getattr(backends, name))


def levels_option(config: Mapping[str, Any]) -> Any:
    """A MultiLevelCache config's ``OPTIONS["LEVELS"]`` as written: None when not
    given (the default levels), ``()`` when ``OPTIONS`` is no dict (left to the
    backend to name)."""
    options = config.get("OPTIONS") or {}
    return options.get("LEVELS") if isinstance(options, Mapping) else ()


def multilevel_levels() -> list[tuple[str, Mapping[str, Any], list[Any]]]:
    """(alias, config, LEVELS) of every MultiLevelCache that lists its levels (a
    list); a malformed entry is skipped here: the backend itself names what is wrong."""
    found = []
    for alias, config in settings.CACHES.items():
        if not isinstance(config, Mapping) or not backend_is(
            config.get("BACKEND"), "MultiLevelCache"
        ):
            continue
        levels = levels_option(config)
        if isinstance(levels, list | tuple) and levels:
            found.append((alias, config, list(levels)))
    return found


def _refuse_lossy_redis(cls: type, options: Any) -> None:
    """A Redis level whose values would not come back as they went in, or whose
    failures MultiLevelCache could not see: refused.

    A serializer other than pickle (django-redis' ``SERIALIZER``, Django's
    ``serializer``) turns a tuple into a list and a Decimal into a str once the L1
    copy has gone (the writer sees the right types for a second, then the wrong ones;
    ``mark_safe`` text flips to escaped). django-redis' ``IGNORE_EXCEPTIONS`` (or
    ``DJANGO_REDIS_IGNORE_EXCEPTIONS``) answers a failure as a miss: the level is
    never marked down, and a write made during an outage is lost, never repaired.
    """
    options = options if isinstance(options, Mapping) else {}
    module = cls.__module__
    if module.startswith("django_redis"):
        _refuse_serializer(
            options,
            "SERIALIZER",
            "django_redis.serializers.pickle.PickleSerializer",
            "django-redis' PickleSerializer",
        )
        # As django-redis reads it: the level's own option wins over the setting (a
        # level that turns it off under a global True is fine).
        given = "IGNORE_EXCEPTIONS" in options
        if given:
            ignore = options["IGNORE_EXCEPTIONS"]
        else:
            ignore = getattr(settings, "DJANGO_REDIS_IGNORE_EXCEPTIONS", False)
        if ignore:
            which = (
                "OPTIONS['IGNORE_EXCEPTIONS']"
                if given
                else "settings.DJANGO_REDIS_IGNORE_EXCEPTIONS (set "
                "OPTIONS['IGNORE_EXCEPTIONS'] False on the level)"
            )
            raise ImproperlyConfigured(
                f"{which} is on: a MultiLevelCache handles a level's failures itself "
                "(skips the level, repairs it when it returns, or raises with "
                "RAISE_ERRORS), and django-redis answering them as misses hides them: "
                "writes made during an outage would be lost. Turn it off for this "
                "level (docs/multilevel.md)"
            )
    elif module == "django.core.cache.backends.redis":
        _refuse_serializer(
            options,
            "serializer",
            "django.core.cache.backends.redis.RedisSerializer",
            "Django's RedisSerializer",
        )


def _refuse_serializer(
    options: Mapping[str, Any], option: str, pickling: str, named: str
) -> None:
    """``OPTIONS[option]``, when given, must be the ``pickling`` serializer (a dotted
    path; ``named`` in the message) or a subclass of it."""
    serializer = options.get(option)
    if serializer is not None and not _subclass_of(serializer, pickling):
        raise ImproperlyConfigured(
            f"OPTIONS['{option}'] {serializer!r}: a MultiLevelCache level keeps "
            "values as pickles (another serializer gives other types back: a "
            f"tuple as a list, a Decimal as a str); use {named} (the default) or a "
            "subclass of it"
        )


def _subclass_of(given: Any, base_path: str) -> bool:
    """Whether ``given`` (a class, its dotted path, or an instance) is, or is an
    instance of, the class at ``base_path`` or a subclass. A path that cannot be
    imported is left to the backend to name; a factory that is not a class (Django's
    client calls a callable serializer) cannot be told: accepted."""
    try:
        cls = import_string(given) if isinstance(given, str) else given
        base = import_string(base_path)
    except ImportError:
        return True
    if isinstance(cls, type):
        return issubclass(cls, base)
    return isinstance(cls, base) or callable(cls)


def build_level(
    index: int,
    config: dict[str, Any],
    name: str,
    retry: float = 1.0,
    alias: str | None = None,
    listed: bool = True,
) -> BaseCache:
    """Level ``index`` of the configuration named ``name`` (see ``LevelOptions``);
    ``retry`` is its ``RETRY_INTERVAL``. A level's ``ImproperlyConfigured`` names its
    place: ``LEVELS[index]``, or L<n> of the default levels (``listed`` False), and
    the MultiLevelCache's ``alias`` when known."""
    params = dict(config)
    cls = import_string(params.pop("BACKEND"))
    location = params.pop("LOCATION", "")
    if _is_pymemcache(cls):
        params["OPTIONS"] = _loud_pymemcache(params.get("OPTIONS"), retry)
    if index == 0:
        # The L1 store is shared by this configuration's threads, and only by them:
        # an alias's LOCATION is kept in the name but never names the alias's own
        # store (in-process stores are shared by LOCATION), which L1 would clear.
        location = f"django_smartcache.multilevel:{name}" + (
            f":{location}" if location else ""
        )
    params["KEY_FUNCTION"] = _identity_key
    try:
        if index:
            _refuse_lossy_redis(cls, params.get("OPTIONS"))
        level: BaseCache = cls(location, params)
    except ImproperlyConfigured as exc:
        # The level's own message ("SQLiteCache MAX_SIZE: ...") named neither the
        # level nor the cache: with several levels of one backend, which one?
        owner = f"MultiLevelCache {alias!r}" if alias else "MultiLevelCache"
        place = (
            f"OPTIONS['LEVELS'][{index}] ({cls.__name__})"
            if listed
            else f"default level L{index + 1} ({cls.__name__} of LOCATION)"
        )
        raise ImproperlyConfigured(f"{owner} {place}: {exc}") from exc
    if type(level).validate_key is BaseCache.validate_key:
        # MultiLevelCache already emitted Django's warnings for this key.
        level.validate_key = _no_validation  # type: ignore[method-assign]
    _round_up_fractions(level)
    _keep_ttl_on_incr(level)
    # Its I/O on an event loop's thread is the MultiLevelCache's to report (once).
    level._loop_io_reported_above = True  # type: ignore[attr-defined]
    return level


def _keep_ttl_on_incr(level: BaseCache) -> None:
    """Give a level whose ``incr`` is ``BaseCache``'s one that keeps the entry's TTL.

    ``BaseCache.incr`` (FileBasedCache, DatabaseCache) is a get, then a ``set`` with the
    backend's own default timeout: an entry that never expired got 300 s, one with 30 s
    left got 300 s. This one sets the remaining TTL, read as promotions read it
    (``_level_ttl``); still a get then a set, no more atomic than before.
    """
    if type(level).incr is not BaseCache.incr:
        return

    def incr(key: Any, delta: int = 1, version: Any = None) -> Any:
        value = level.get(key, _ABSENT, version=version)
        if value is _ABSENT:
            raise ValueError(f"Key '{key}' not found.")
        new_value = value + delta
        made = level.make_key(key, version=version)
        remaining = _remaining_ttls(level, [made]).get(made, _ABSENT)
        if remaining is _ABSENT:
            timeout: Any = DEFAULT_TIMEOUT  # unknown: the level's own default
        elif remaining is _NO_EXPIRY:
            timeout = None
        else:
            timeout = remaining
        level.set(key, new_value, timeout, version=version)
        return new_value

    level.incr = incr  # type: ignore[method-assign]


def _is_pymemcache(cls: type) -> bool:
    try:
        from django.core.cache.backends.memcached import PyMemcacheCache
    except ImportError:  # pragma: no cover - Django always has it
        return False
    return issubclass(cls, PyMemcacheCache)


def _loud_pymemcache(options: Any, retry: float) -> Any:
    """pymemcache's client options for a level: failures raised, not hidden.

    By default pymemcache's ``HashClient`` answers quietly for a second after a
    connection error (a read misses, a write does nothing, no error), then drops the
    server for 60 s. A write in that second left memcached holding the value it
    replaced, undetected, so never repaired. A server marked dead at its first failure
    (``retry_attempts=0``) raises instead, and is tried again after ``RETRY_INTERVAL``
    (``dead_timeout``), as the level is. Options set in the level's config win.
    """
    if options is None:
        options = {}
    if not isinstance(options, dict):
        return options  # not ours to fix: the backend reports it
    return {"retry_attempts": 0, "dead_timeout": retry, **options}


def _round_up_fractions(level: BaseCache) -> None:
    """Make a level that truncates timeouts to whole seconds round them up instead.

    Django's RedisCache keeps ``int(0.5)`` = 0, which deletes the key, and memcached
    makes it -1: a sub-second ``set`` reached only the writer's L1 while every other
    process missed. Rounded up, the lower level keeps it (at most a second longer).
    Backends that keep fractions (ours, the database and file caches, django-redis,
    which works in milliseconds) are left alone.
    """
    try:
        probe = level.get_backend_timeout(0.5)
    except Exception:  # noqa: BLE001 - an unusual backend: leave it as it is
        return
    if not isinstance(probe, int) or probe > 0:
        return
    truncating = level.get_backend_timeout

    def get_backend_timeout(timeout: Any = DEFAULT_TIMEOUT) -> Any:
        if (
            type(timeout) is float
            and 0 < timeout < math.inf
            and not timeout.is_integer()
        ):
            timeout = math.ceil(timeout)
        return truncating(timeout)

    level.get_backend_timeout = get_backend_timeout  # type: ignore[method-assign]


def label(index: int, config: dict[str, Any]) -> str:
    backend = config["BACKEND"].rsplit(".", 1)[-1]
    return f"L{index + 1} {backend}"


def make_coherence(
    options: LevelOptions, levels: list[BaseCache]
) -> _coherence.Coherence:
    """The channel that keeps L1 of ``levels`` coherent across processes."""
    mode = options.coherence
    l1, lowest = levels[0], levels[-1]
    if len(levels) == 1 or mode == "none":
        _refuse_inert(
            options,
            "COHERENCE is 'none'"
            if mode == "none"
            else "with a single level there is no channel",
        )
        return _coherence.NoCoherence(l1)
    has_log = callable(getattr(lowest, "changes_since", None)) and callable(
        getattr(lowest, "change_cursor", None)
    )
    url = options.redis_url or _redis_url(lowest)
    if mode == "sqlite" or (mode == "auto" and has_log):
        if not has_log:
            raise ImproperlyConfigured(
                "MultiLevelCache OPTIONS['COHERENCE'] is 'sqlite' but the lowest level has no "
                "change_cursor()/changes_since() (use SQLiteCache)"
            )
        _refuse_inert(
            options,
            f"the channel is the SQLite level's change log (COHERENCE {mode!r})",
        )
        return _coherence.SQLiteChangeLog(l1, lowest, options.interval)
    if mode == "redis" or (mode == "auto" and url):
        if not url:
            raise ImproperlyConfigured(
                "MultiLevelCache OPTIONS['COHERENCE'] is 'redis' but no Redis URL is known for the "
                "lowest level: set OPTIONS['REDIS_URL']"
            )
        _require_redis_py(options)
        if not options.redis_url and refuses_client(lowest):
            # The channel uses the level's connection settings, and a sharded client
            # has none to give: its listener would raise NotImplementedError, die and
            # be restarted every 0.5 s, and every write raise it from the publish.
            logger.error(
                "MultiLevelCache: the coherence channel cannot be used with the "
                "lowest level's client (%s.%s: no single Redis connection); the L1 "
                "copies of this cache are kept coherent by L1_MAX_TTL only (%s s). "
                "Set OPTIONS['REDIS_URL'] to a Redis server for the channel",
                type(lowest.client).__module__,  # type: ignore[attr-defined]
                type(lowest.client).__qualname__,  # type: ignore[attr-defined]
                options.l1_max_ttl,
            )
            return _coherence.NoCoherence(l1)
        return _coherence.RedisPubSub(
            l1,
            url,
            options.channel or default_channel(lowest, options.redis_url),
            _redis_options(lowest),
            options.log_interval,
            # The level's own connection settings, unless REDIS_URL names the server.
            level=None if options.redis_url else lowest,
            on_level_server=_names_level_server(options.redis_url, lowest),
        )
    # A lower level with no channel: L1_MAX_TTL alone bounds staleness.
    _refuse_inert(options, "the lowest level has neither a change log nor a Redis URL")
    return _coherence.NoCoherence(l1)


def _names_level_server(url: str | None, lowest: BaseCache) -> bool:
    """Whether REDIS_URL ``url`` names the server of the lowest level (a Redis)."""
    if not url:
        return False
    server = _level_server(lowest)
    return server is not None and _serves(url, server)


def _refuse_inert(options: LevelOptions, why: str) -> None:
    """REDIS_URL and CHANNEL configure the channel over Redis only: given when the
    channel is another, they were accepted and silently ignored."""
    given = [
        name
        for name, value in (
            ("REDIS_URL", options.redis_url),
            ("CHANNEL", options.channel),
        )
        if value is not None
    ]
    if given:
        raise ImproperlyConfigured(
            f"MultiLevelCache OPTIONS['{given[0]}'] has no effect: it configures the "
            f"coherence channel over Redis, and {why}; remove it (or set "
            f"OPTIONS['COHERENCE'] to 'redis' to use Redis pub/sub)"
        )


def _require_redis_py(options: LevelOptions) -> None:
    """The channel over Redis needs redis-py: without it the listener thread dies with
    ModuleNotFoundError and every write raises it after the lower level is written."""
    try:
        import redis  # noqa: F401
    except ImportError as exc:
        if options.redis_url:
            why = "OPTIONS['REDIS_URL'] is set"
        elif options.coherence == "redis":
            why = "OPTIONS['COHERENCE'] is 'redis'"
        else:
            why = "OPTIONS['COHERENCE'] is 'auto' and the lowest level is Redis"
        raise ImproperlyConfigured(
            f"MultiLevelCache {why}: its coherence channel over Redis needs redis-py, "
            f'which cannot be imported ({exc}); pip install "django-smartcache[redis]" '
            f"(or set OPTIONS['COHERENCE'] to 'none')"
        ) from exc


def default_channel(lowest: BaseCache, redis_url: str | None = None) -> str:
    """The channel when CHANNEL is not given: ``DEFAULTS["CHANNEL"]`` for database 0,
    with ``:db<n>`` appended for database ``n`` of the lowest level.

    Redis pub/sub is server-wide, not per database: two sites on databases 0 and 1 of
    one server, both on the one default channel, took each other's messages for
    changes of their own level (a write of a same-named key, or a clear, spared a
    pending repair: the other site's database kept an outage write's old value with no
    time bound), and every clear() of one flushed every L1 of the other. Database 0
    keeps the old name, so the common deployment hears processes of older releases
    during a rolling upgrade. The database is read from the level's own client (its
    connection pool's ``db``: the URL's path or ``?db=``, or a ``db`` in its OPTIONS),
    else from its URL, else from ``REDIS_URL``; unknown: database 0's name.
    """
    base: str = DEFAULTS["CHANNEL"]
    db = _level_db(lowest)
    if db is None and redis_url:
        server = _redis_server(redis_url)
        db = server[3] if server else None
    level = _level_server(lowest)
    if redis_url and level is not None and not _serves(redis_url, level):
        # The channel is on another server (REDIS_URL), which sites whose levels are
        # on different servers may share: the level's server is in the name too,
        # or they would share "...:invalidate" there and hear each other.
        kind, where, port = level
        address = f"unix:{where}" if kind == "unix" else f"{where}:{port}"
        return f"{base}:{address}:db{db or 0}"
    if db is None or db in ("", "0"):
        return base
    return f"{base}:db{db}"


def _pool_kwargs(level: BaseCache) -> dict[str, Any] | None:
    """The connection settings of a Redis level's writing client (redis-py's
    ``connection_pool.connection_kwargs``); None when it has none we can read."""
    try:
        client = raw_redis_client(level, write=True)
    except Exception:  # noqa: BLE001 - a level we cannot read: the caller's fallback
        return None
    kwargs = getattr(
        getattr(client, "connection_pool", None), "connection_kwargs", None
    )
    return kwargs if isinstance(kwargs, dict) else None


def _level_server(level: BaseCache) -> tuple[str, str, int] | None:
    """(``"tcp"``/``"unix"``, host or socket path, port) of the server a Redis level
    writes to: its client's connection settings, else its URL; None when unknown."""
    kwargs = _pool_kwargs(level)
    if kwargs is not None:
        if kwargs.get("path"):
            return ("unix", os.path.realpath(str(kwargs["path"])), 0)
        if kwargs.get("host"):
            return ("tcp", str(kwargs["host"]).lower(), int(kwargs.get("port") or 6379))
    server = _redis_server(_redis_url(level))
    return (server[0], server[1].lower(), server[2]) if server else None


def _serves(url: str, level: tuple[str, str, int]) -> bool:
    """Whether the Redis server at ``url`` is the level's (hosts compared by address)."""
    server = _redis_server(url)
    if server is None or server[0] != level[0] or server[2] != level[2]:
        return False
    host = server[1].lower()
    return host == level[1] or (
        level[0] == "tcp" and bool(_addresses(host) & _addresses(level[1]))
    )


def _level_db(level: BaseCache) -> str | None:
    """The database number a Redis level (Django's RedisCache, django-redis) writes
    to, as text; None when unknown."""
    kwargs = _pool_kwargs(level)
    if kwargs is not None:
        return _db(str(kwargs.get("db", 0)))
    server = _redis_server(_redis_url(level))
    return server[3] if server else None


def _identity_key(key: str, key_prefix: str, version: Any) -> str:
    """Levels store MultiLevelCache's final key unchanged."""
    return key


def _no_validation(key: Any) -> None:
    return None
