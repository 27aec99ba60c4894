"""System checks: the ``SMARTCACHE`` setting (``smartcache.E010``), the SQLite files
in ``CACHES`` (``smartcache.W040``, ``W041``), Redis replicas below an L1 (``W042``)
MultiLevelCache levels that share nothing between processes (``W043``, ``W044``),
aliases that give one SQLite file different budgets (``W045``), sessions kept in an
in-process L1 (``W046``) and, with ``--deploy``, in a SmartCache (``W047``), warmers
filling an alias that is missing (``W048``) or takes no tags while they have tags
(``W049``), with ``--deploy``, a SQLite file in a world-writable directory
(``W050``), and an inline ``DatabaseCache`` level, whose table nothing creates
(``W051``)."""

from __future__ import annotations

import os
import pathlib
import re
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.core.exceptions import ImproperlyConfigured

from . import conf, registry


@register(Tags.caches)
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """``SMARTCACHE`` must validate: report the bad option instead of failing later."""
    conf.get_config.cache_clear()
    try:
        conf.get_config()
        registry.check_labels()
    except ImproperlyConfigured as exc:
        # The panel's option is documented with the panel.
        hint = (
            "See docs/debug-toolbar.md."
            if "'TOOLBAR_" in str(exc)
            else "See docs/tagging.md for every option."
        )
        return [
            Error(
                str(exc),
                hint=hint,
                id="smartcache.E010",
            )
        ]
    return []


def _sqlite_locations() -> list[tuple[str, str]]:
    """(alias, LOCATION as written) of every SQLite file in ``CACHES``: SQLiteCache
    aliases, a MultiLevelCache's default level, and inline SQLiteCache levels (a level
    named by alias is checked as that alias). A malformed entry is skipped here: the
    backend itself names what is wrong when the alias is used."""
    from .backends._level_config import backend_is, levels_option

    found: list[tuple[str, Any]] = []
    for alias, config in settings.CACHES.items():
        if not isinstance(config, Mapping):
            continue
        backend = config.get("BACKEND")
        if backend_is(backend, "SQLiteCache"):
            found.append((alias, config.get("LOCATION")))
        elif backend_is(backend, "MultiLevelCache"):
            levels = levels_option(config)
            if levels is None:
                found.append((alias, config.get("LOCATION")))
                continue
            for level in levels if isinstance(levels, list | tuple) else ():
                if isinstance(level, Mapping) and backend_is(
                    level.get("BACKEND"), "SQLiteCache"
                ):
                    found.append((alias, level.get("LOCATION")))
    found = [
        (alias, os.fspath(location) if isinstance(location, os.PathLike) else location)
        for alias, location in found
    ]
    # ``~`` is expanded, as SQLiteCache does.
    return [
        (alias, os.path.expanduser(loc))
        for alias, loc in found
        if loc and isinstance(loc, str)
    ]


@register(Tags.caches)
def check_sqlite_location_is_absolute(
    app_configs: Any = None, **kwargs: Any
) -> list[CheckMessage]:
    """As Django's ``caches.W003`` for FileBasedCache: a relative path is resolved in
    each process's working directory, so workers started elsewhere use another file."""
    return [
        Warning(
            f"The SQLite file of cache {alias!r} ({location!r}) is a relative path.",
            hint="Use an absolute path: each process resolves it against its own "
            "working directory.",
            id="smartcache.W040",
        )
        for alias, location in _sqlite_locations()
        if not pathlib.Path(location).is_absolute()
    ]


@register(Tags.caches, deploy=True)
def check_sqlite_location_not_exposed(
    app_configs: Any = None, **kwargs: Any
) -> list[CheckMessage]:
    """As Django's ``caches.W002`` for FileBasedCache: a cache file under a directory the
    web server serves can be downloaded (it holds pickles: sessions, pages)."""
    served: list[tuple[str, pathlib.Path]] = []
    for name in ("MEDIA_ROOT", "STATIC_ROOT", "STATICFILES_DIRS"):
        setting = getattr(settings, name, None)
        if not setting:
            continue
        entries = setting if name == "STATICFILES_DIRS" else [setting]
        for entry in entries:
            if isinstance(entry, list | tuple):
                entry = entry[1]
            served.append((name, pathlib.Path(entry).resolve()))
    messages: list[CheckMessage] = []
    for alias, location in _sqlite_locations():
        path = pathlib.Path(location).resolve()
        for name, directory in served:
            if directory in path.parents:
                messages.append(
                    Warning(
                        f"The SQLite file of cache {alias!r} is inside {name}: it "
                        "could be downloaded.",
                        hint="Put it outside every directory the web server serves.",
                        id="smartcache.W041",
                    )
                )
                break
    return messages


def _multilevel_lower_levels() -> list[tuple[str, int, Mapping[str, Any]]]:
    """(alias, index, config) of every level below the first of each MultiLevelCache
    that lists ``LEVELS``; a level named by alias is that alias's config. A malformed
    entry is skipped here: the backend itself names what is wrong."""
    from .backends._level_config import multilevel_levels

    found = []
    for alias, _config, levels in multilevel_levels():
        for index, level in enumerate(levels[1:], 1):
            if isinstance(level, str):
                level = settings.CACHES.get(level)
            if isinstance(level, Mapping):
                found.append((alias, index, level))
    return found


@register(Tags.caches)
def check_redis_replicas_below_l1(
    app_configs: Any = None, **kwargs: Any
) -> list[CheckMessage]:
    """A Redis level listing several servers reads from its replicas (Django's
    ``RedisCache`` and django-redis alike). Just after an invalidation a process may read
    the old value from a replica that has not applied the write yet, and keep it in its
    L1: the staleness bound becomes the replica's lag plus ``L1_MAX_TTL``."""
    messages: list[CheckMessage] = []
    for alias, index, level in _multilevel_lower_levels():
        backend = str(level.get("BACKEND", ""))
        options = level.get("OPTIONS")
        client = options.get("CLIENT_CLASS", "") if isinstance(options, Mapping) else ""
        if not any(name in backend.lower() for name in ("redis", "valkey")) or str(
            client
        ).endswith("ShardClient"):  # (django-redis's shards hold each key once)
            continue
        location = level.get("LOCATION")
        # Django's RedisCache splits a string on ";" and ",", django-redis on ",".
        separators = "[;,]" if backend.startswith("django.core.") else ","
        servers = (
            [s for s in re.split(separators, location) if s.strip()]
            if isinstance(location, str)
            else list(location)
            if isinstance(location, list | tuple | set | frozenset)
            else []
        )
        if len(servers) > 1:
            messages.append(
                Warning(
                    f"Level {index} of cache {alias!r} lists {len(servers)} Redis "
                    "servers: its reads go to the replicas, and a value a lagging "
                    "replica still holds after an invalidation can be kept in L1.",
                    hint="List the primary only (the L1 takes the read load), or "
                    "accept a staleness bound of the replicas' lag plus L1_MAX_TTL "
                    "(docs/multilevel.md, Faults).",
                    id="smartcache.W042",
                )
            )
    return messages


@register(Tags.caches)
def check_multilevel_location_with_levels(
    app_configs: Any = None, **kwargs: Any
) -> list[CheckMessage]:
    """``LOCATION`` names the SQLite file of the default levels only: given with
    ``LEVELS`` (say to size L1 with an inline SmartCache level) it is ignored, and the
    SQLite level the user meant is not there."""
    from .backends._level_config import multilevel_levels

    messages: list[CheckMessage] = []
    for alias, config, _levels in multilevel_levels():
        location = config.get("LOCATION")
        text = os.fspath(location) if isinstance(location, str | os.PathLike) else ""
        # A path (a separator, a suffix): meant as the SQLite file. A plain name only
        # keeps this cache's L1 apart from another alias's with the same LEVELS.
        if text and (os.sep in text or os.path.splitext(text)[1]):
            messages.append(
                Warning(
                    f"Cache {alias!r} sets both LOCATION ({location!r}) and "
                    "OPTIONS['LEVELS']: no SQLite file is opened at LOCATION then (it "
                    "only names this cache's in-process L1 store).",
                    hint="List the SQLite level in LEVELS ({'BACKEND': "
                    "'django_smartcache.backends.SQLiteCache', 'LOCATION': ...}); to "
                    "keep two aliases' L1 apart, give LOCATION a name, not a path "
                    "(docs/multilevel.md).",
                    id="smartcache.W043",
                )
            )
    return messages


@register(Tags.caches)
def check_multilevel_has_a_shared_level(
    app_configs: Any = None, **kwargs: Any
) -> list[CheckMessage]:
    """A MultiLevelCache whose levels are all in-process (one SmartCache level) is a
    cache of each process's own: a write in one worker is never seen by another."""
    from .backends._level_config import _in_process, backend_class, multilevel_levels

    messages: list[CheckMessage] = []
    for alias, _config, levels in multilevel_levels():
        in_process = []
        for level in levels:
            if isinstance(level, str):
                level = settings.CACHES.get(level)
            cls = backend_class(
                level.get("BACKEND") if isinstance(level, Mapping) else None
            )
            in_process.append(cls is not None and _in_process(cls))
        if all(in_process):
            messages.append(
                Warning(
                    f"No level of cache {alias!r} is shared between processes "
                    f"(OPTIONS['LEVELS'] lists {len(levels)} in-process "
                    f"cache{'s' if len(levels) > 1 else ''}): each process has a "
                    "cache of its own, and a write in one is never seen by another.",
                    hint="List a shared level below L1 (a SQLiteCache file or "
                    "Redis), or use SmartCache itself if a per-process cache is "
                    "meant (docs/multilevel.md).",
                    id="smartcache.W044",
                )
            )
    return messages


#: Django's session stores that read a session from ``SESSION_CACHE_ALIAS`` first,
#: cached_db first (it subclasses neither, but a custom store may subclass both).
_CACHED_SESSION_STORES = (
    "django.contrib.sessions.backends.cached_db.SessionStore",
    "django.contrib.sessions.backends.cache.SessionStore",
)


def _cached_session_store(engine: str) -> str | None:
    """The one of ``_CACHED_SESSION_STORES`` that ``SESSION_ENGINE``'s store is (or
    subclasses), None for another store; an engine that cannot be imported is
    Django's own check to report."""
    from django.utils.module_loading import import_string

    try:
        store = import_string(f"{engine}.SessionStore")
        cached = [import_string(path) for path in _CACHED_SESSION_STORES]
    except Exception:  # noqa: BLE001 - a broken engine is Django's to report, not ours
        return None
    if not isinstance(store, type):
        return None
    for path, cls in zip(_CACHED_SESSION_STORES, cached, strict=True):
        if issubclass(store, cls):
            return path
    return None


def _sessions_cached_on(backend: str) -> tuple[str, str] | None:
    """(``SESSION_CACHE_ALIAS``, which of ``_CACHED_SESSION_STORES``) when sessions
    are read from a cache whose backend is our ``backend`` (or a subclass); else None."""
    from .backends._level_config import backend_is

    engine = getattr(settings, "SESSION_ENGINE", "")
    alias = getattr(settings, "SESSION_CACHE_ALIAS", "default")
    config = settings.CACHES.get(alias) if isinstance(alias, str) else None
    store = (
        _cached_session_store(engine)
        if isinstance(engine, str)
        and isinstance(config, Mapping)
        and backend_is(config.get("BACKEND"), backend)
        else None
    )
    return None if store is None else (alias, store)


@register(Tags.caches)
def check_sessions_not_in_an_l1(
    app_configs: Any = None, **kwargs: Any
) -> list[CheckMessage]:
    """Sessions read from a MultiLevelCache with an in-process level: a worker may read
    its own stale copy within the coherence bound and save it back over a newer session
    (gunicorn, 3 workers, one client adding 1 to a session counter 200 times over
    SQLite: it ended at 81 with the ``cache`` engine, 134 with ``cached_db``, which
    reads the cache first), or, with ``cache``, undo a logout (``cached_db``'s database
    refuses to save a deleted session again)."""
    found = _sessions_cached_on("MultiLevelCache")
    if found is None:
        return []
    alias, store = found
    # Every MultiLevelCache has one: its first level must be in-process (the backend
    # refuses any other), the default levels' a SmartCache.
    return [
        Warning(
            f"SESSION_CACHE_ALIAS {alias!r} is a MultiLevelCache with an in-process "
            "level: another worker may read its stale copy of a session within the "
            "coherence bound and save it back over the newer one ("
            + (
                "lost writes; a logged-out session is still read as logged in "
                "within the bound, though the database refuses to save it again)."
                if store == _CACHED_SESSION_STORES[0]
                else "lost writes, undone logouts; and a logout made while a lower "
                "level is down may delete nothing: the session's read misses, or "
                "raises, which Django's cache session store also takes for a missing "
                "session)."
            ),
            hint="Give sessions an alias of their own without an L1 (a SQLiteCache "
            "file of its own, or Redis) and point SESSION_CACHE_ALIAS at it, with "
            "the cached_db engine where a logout must hold through a cache outage "
            "(docs/multilevel.md, Sessions and other read-modify-write data).",
            id="smartcache.W046",
        )
    ]


@register(Tags.caches, deploy=True)
def check_sessions_not_in_one_process(
    app_configs: Any = None, **kwargs: Any
) -> list[CheckMessage]:
    """Sessions in a SmartCache live in one process's memory: every other worker has its
    own (a user is logged out, or sees an older session, whenever a request reaches
    another worker), and a restart or an eviction logs everyone out. With ``cached_db``
    a worker's copy outlives a logout made through another until it expires. Django
    says as much of LocMemCache in its docs; a deployment check says it here (runserver
    is one process: no warning without ``--deploy``)."""
    found = _sessions_cached_on("SmartCache")
    if found is None:
        return []
    alias, store = found
    if store == _CACHED_SESSION_STORES[0]:
        what = (
            "each worker process keeps its own copy of a session, and a copy outlives "
            "a logout or a change made through another worker until it expires"
        )
    else:
        what = (
            "sessions live in one worker process's memory: another worker does not "
            "know them (its requests are logged out), and a restart or an eviction "
            "loses them"
        )
    return [
        Warning(
            f"SESSION_CACHE_ALIAS {alias!r} is a SmartCache: {what}.",
            hint="Point SESSION_CACHE_ALIAS at a cache shared by every process (a "
            "SQLiteCache file of its own, or Redis), or use the db session engine; "
            "silence this for a single-process deployment "
            "(docs/multilevel.md, Sessions and other read-modify-write data).",
            id="smartcache.W047",
        )
    ]


#: The SQLiteCache options every alias on a file enforces on the whole file.
_FILE_BUDGET = (
    "MAX_SIZE",
    "MAX_ENTRIES",
    "CULL_FREQUENCY",
    "CHANGE_LOG_RETENTION",
    "CHANGE_LOG_MAX_ROWS",
)


def _budget(options: Any) -> dict[str, Any]:
    """The file budget ``OPTIONS`` give a SQLite file, as the backend reads it (the
    defaults filled in; ``"1GB"`` and ``1073741824`` alike); a value the backend
    would refuse is kept as written (it names it itself)."""
    from .backends._sqlite_options import DEFAULTS
    from .backends.base import django_int
    from .core.sizing import parse_size

    given = options if isinstance(options, Mapping) else {}
    budget: dict[str, Any] = {}
    for name in _FILE_BUDGET:
        value = given.get(name, DEFAULTS[name])
        if name == "MAX_SIZE":
            try:
                value = parse_size(value)
            except (TypeError, ValueError):
                pass
        elif name in ("MAX_ENTRIES", "CULL_FREQUENCY") and value is not None:
            number = django_int(value)
            value = value if number is None else number
        elif isinstance(value, int | float) and not isinstance(value, bool):
            value = float(value)  # seconds, rows: 60 and 60.0 alike
        budget[name] = value
    return budget


def _sqlite_files() -> list[tuple[str, str, dict[str, Any]]]:
    """(who, real path, budget) of every SQLite file in ``CACHES``, as
    ``_sqlite_locations`` finds them; ``who`` is the alias, with ``LEVELS[i]`` for an
    inline level. Paths resolved as the backends compare them (``realpath``)."""
    from .backends._level_config import _PASSED_TO_L2, backend_is, levels_option

    found: list[tuple[str, Any, Any]] = []
    for alias, config in settings.CACHES.items():
        if not isinstance(config, Mapping):
            continue
        backend = config.get("BACKEND")
        options = config.get("OPTIONS")
        if backend_is(backend, "SQLiteCache"):
            found.append((repr(alias), config.get("LOCATION"), options))
        elif backend_is(backend, "MultiLevelCache"):
            levels = levels_option(config)
            if levels is None:  # the default L2: MAX_ENTRIES/CULL_FREQUENCY passed on
                passed = options if isinstance(options, Mapping) else {}
                l2 = {k: passed[k] for k in _PASSED_TO_L2 if k in passed}
                found.append((repr(alias), config.get("LOCATION"), l2))
                continue
            for index, level in enumerate(
                levels if isinstance(levels, list | tuple) else ()
            ):
                if isinstance(level, Mapping) and backend_is(
                    level.get("BACKEND"), "SQLiteCache"
                ):
                    found.append(
                        (
                            f"{alias!r} (LEVELS[{index}])",
                            level.get("LOCATION"),
                            level.get("OPTIONS"),
                        )
                    )
    files = []
    for who, location, options in found:
        if isinstance(location, os.PathLike):
            location = os.fspath(location)
        if isinstance(location, str) and location and location != ":memory:":
            files.append((who, os.path.realpath(location), _budget(options)))
    return files


@register(Tags.caches)
def check_sqlite_file_budgets_agree(
    app_configs: Any = None, **kwargs: Any
) -> list[CheckMessage]:
    """Aliases on one SQLite file share one budget: each evicts the whole file down to
    its own ``MAX_SIZE``/``MAX_ENTRIES`` (and prunes the change log by its own
    retention), so the strictest governs every alias's entries: a sessions alias with
    ``MAX_SIZE`` 1MB on a MultiLevelCache's file evicts its pages, the
    MultiLevelCache's ``MAX_ENTRIES`` evicts the sessions."""
    by_file: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for who, path, budget in _sqlite_files():
        by_file.setdefault(path, []).append((who, budget))
    messages: list[CheckMessage] = []
    for path, users in by_file.items():
        differing = [
            name
            for name in _FILE_BUDGET
            if len({repr(budget[name]) for _, budget in users}) > 1
        ]
        if not differing:
            continue
        detail = "; ".join(
            f"{name}: " + ", ".join(f"{who} {budget[name]!r}" for who, budget in users)
            for name in differing
        )
        messages.append(
            Warning(
                f"Caches {', '.join(who for who, _ in users)} share the SQLite file "
                f"{path!r} with different budgets ({detail}): each evicts the whole "
                "file down to its own, so the strictest governs all of them.",
                hint="Give them the same budget, or each a file of its own (sessions: "
                "a SQLiteCache alias with its own file). See docs/sqlite.md, Size "
                "budget and eviction.",
                id="smartcache.W045",
            )
        )
    return messages


@register(Tags.caches)
def check_warmers_reach_their_caches(
    app_configs: Any = None, **kwargs: Any
) -> list[CheckMessage]:
    """A warmer's ``caches=`` naming an alias not in ``CACHES`` (``W048``), or its
    ``tags=`` going to an alias whose backend takes no tags (``W049``): either fails
    only when ``smartcache_warm`` runs, at a deploy. Warmers are registered by the
    apps' ``cache_warmers`` modules, imported in ``ready()``."""
    from django.core.cache import DEFAULT_CACHE_ALIAS

    from .backends._level_config import backend_class
    from .warmers import registry as warmers

    messages: list[CheckMessage] = []
    for entry in warmers:
        for alias in entry.caches or (DEFAULT_CACHE_ALIAS,):
            config = settings.CACHES.get(alias)
            if config is None:
                if entry.caches is not None:
                    messages.append(
                        Warning(
                            f"Warmer {entry.name!r} fills the cache alias {alias!r}, "
                            "which is not in settings.CACHES: smartcache_warm fails "
                            "there.",
                            hint="Fix caches= of the @warmer, or add the alias.",
                            obj=entry.name,
                            id="smartcache.W048",
                        )
                    )
                continue
            cls = backend_class(
                config.get("BACKEND") if isinstance(config, Mapping) else None
            )
            if (
                entry.tags
                and cls is not None
                and not getattr(cls, "supports_tags", False)
            ):
                messages.append(
                    Warning(
                        f"Warmer {entry.name!r} has tags= but fills the cache alias "
                        f"{alias!r} ({cls.__name__}), which takes no tags: "
                        "smartcache_warm fails there.",
                        hint="Fill an alias of a django_smartcache backend, or drop "
                        "tags= (or give the command a --cache that takes tags).",
                        obj=entry.name,
                        id="smartcache.W049",
                    )
                )
    return messages


@register(Tags.caches, deploy=True)
def check_sqlite_location_not_world_writable(
    app_configs: Any = None, **kwargs: Any
) -> list[CheckMessage]:
    """A SQLite cache file in a directory every local user may write (``/tmp``):
    anyone can create the file before the site does, and the pickles they put in it
    run as the site when read.
    Checked on the nearest directory that exists (the backend creates the rest)."""
    messages: list[CheckMessage] = []
    for alias, location in _sqlite_locations():
        try:
            directory = pathlib.Path(location).expanduser().resolve().parent
            while not directory.exists() and directory != directory.parent:
                directory = directory.parent
            mode = directory.stat().st_mode
        except (OSError, ValueError):
            # Not traversable by whoever runs the check, a NUL byte: the backend
            # names what is wrong with it (check --deploy must not crash).
            continue
        if mode & 0o002:
            messages.append(
                Warning(
                    f"The SQLite file of cache {alias!r} is in {str(directory)!r}, "
                    "which every local user may write: anyone can create the cache "
                    "file first, and the pickles in it run as your site when read.",
                    hint="Put it in a directory only the site's user (and group) may "
                    "write, such as /var/cache/<site>/. See docs/installation.md.",
                    id="smartcache.W050",
                )
            )
    return messages


@register(Tags.caches)
def check_inline_database_levels(
    app_configs: Any = None, **kwargs: Any
) -> list[CheckMessage]:
    """``createcachetable`` creates the tables of the ``DatabaseCache`` aliases in
    ``CACHES`` only: a level written inline in ``LEVELS`` never gets its table, so
    every call to it fails and it stays down (one warning a minute), and each process
    is left with its own L1: processes never see each other's writes."""
    from django.core.cache.backends.db import DatabaseCache

    from .backends._level_config import backend_class, multilevel_levels

    def database_cache(config: Any) -> bool:
        cls = backend_class(config.get("BACKEND"))
        return cls is not None and issubclass(cls, DatabaseCache)

    messages: list[CheckMessage] = []
    # The tables createcachetable makes: those of the DatabaseCache aliases.
    made = {
        str(config.get("LOCATION", ""))
        for config in settings.CACHES.values()
        if isinstance(config, Mapping) and database_cache(config)
    }
    for alias, _config, levels in multilevel_levels():
        for index, level in enumerate(levels):
            if (
                not isinstance(level, Mapping)  # (an alias: createcachetable sees it)
                or not database_cache(level)
                or str(level.get("LOCATION", "")) in made  # an alias's table
            ):
                continue
            messages.append(
                Warning(
                    f"Level {index} of cache {alias!r} is an inline DatabaseCache: "
                    "createcachetable creates tables for CACHES aliases only, so its "
                    "table is never made, the level stays down, and processes do "
                    "not share what they cache.",
                    hint="Declare it as a CACHES alias, name that alias in LEVELS, "
                    "and run createcachetable (docs/multilevel.md).",
                    id="smartcache.W051",
                )
            )
    return messages
