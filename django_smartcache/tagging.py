"""Tags on any Django cache backend: a version per tag, checked on read.

``cache.set(key, value, tags=[...])`` stores a :class:`~django_smartcache.core.tags.Tagged`
envelope holding the value and the current version of each tag; a read fetches
the current versions in one ``get_many`` and treats any mismatch as a miss.
``invalidate_tags()`` writes one fresh, never reused version per tag: O(1) in the
number of tagged keys, and seen by every process that shares the cache (the version
keys are ordinary entries of the same cache). A missing version key counts as a
mismatch, so eviction or expiry of the bookkeeping can only cause misses, never
make stale data valid again.

A tag ``"A#B"`` depends on ``"A#*"``: entries tagged with a row tag also record
the version of their model's all-rows tag, so invalidating every row is O(1).

Inside ``transaction.atomic()`` an invalidation is applied at once and again when
the outermost block commits; until the transaction ends, this thread neither reads
nor stores entries carrying those tags (it may see its own uncommitted writes,
which must not reach the cache and would survive a rollback): that tracking is
:mod:`django_smartcache._transactions`. The module-level ``invalidate_tags()``,
across aliases, is in :mod:`django_smartcache._tag_caches`.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import pickle
from collections.abc import Callable, Iterable, Mapping, Sequence, Set as AbstractSet
from contextvars import ContextVar
from typing import Any

from asgiref.sync import sync_to_async
from django.core.cache import caches
from django.core.cache.backends.base import DEFAULT_TIMEOUT, BaseCache

from . import conf
from ._incr_envelopes import note_incremented
from ._key_warnings import key_warnings_given
from ._transactions import dirty_tags, mark_invalidated
from .core.tags import Tagged, new_version, normalize_tags, validate_tag
from .signals import tags_invalidated

logger = logging.getLogger("django_smartcache")

__all__ = [
    "TaggingMixin",
    "VersionKeys",
    "expand_tags",
]

_MISSING = object()


def _wid(value: Any) -> str | None:
    """The write id of a stored envelope (any ``Tagged``), None for anything else."""
    return value.wid if isinstance(value, Tagged) else None


def delete_unchanged(
    writes: dict[str, str],
    read_many: Callable[[list[str]], Mapping[str, Any]],
    delete_many: Callable[[list[str]], Any],
) -> None:
    """Delete each key of ``writes`` that still holds the envelope written as its
    ``wid``: a re-read, then a delete of the keys unchanged (a small window remains,
    for backends without an atomic compare)."""
    current = read_many(list(writes))
    unchanged = [k for k, wid in writes.items() if _wid(current.get(k)) == wid]
    if unchanged:
        delete_many(unchanged)


#: Recorded for a dependency key that was absent at write time.
_ABSENT = "-"


#: While a ``get_or_set(..., depends_on=...)`` computes: the write ids of the tagged
#: envelopes made in its context (``_envelope``), so that a dependency the computation
#: writes itself is recorded in the state it wrote, not taken for a change that makes
#: the value stale at once (it never cached: a miss at every call).
_COMPUTED_WRITES: ContextVar[set[str] | None] = ContextVar(
    "smartcache_computed_writes", default=None
)


def expand_tags(tags: Iterable[str]) -> tuple[str, ...]:
    """``tags`` plus the all-rows tag each row tag (``"A#B"``) depends on."""
    out: dict[str, None] = {}
    for tag in tags:
        out[tag] = None
        head, sep, tail = tag.rpartition("#")
        if sep and tail != "*":
            out[f"{head}#*"] = None
    return tuple(out)


class VersionKeys:
    """Made version keys per tuple of tags, so a tagged hit builds no key strings.

    ``make`` turns a version key into the backend's final key (its ``KEY_PREFIX``
    and default ``VERSION``, fixed per instance). Forgotten whenever the settings
    change (``TAG_KEY_PREFIX`` may) and, to stay bounded, when it holds ``limit``
    tuples (row tags make many).
    """

    __slots__ = ("_config", "_limit", "_made", "_make")

    def __init__(self, make: Any, limit: int = 4096) -> None:
        self._make = make
        self._limit = limit
        self._made: dict[tuple[str, ...], tuple[str, ...]] = {}
        self._config: object = None

    def __call__(self, tags: tuple[str, ...]) -> tuple[str, ...]:
        config = conf.get_config()
        if config is not self._config:
            self._made = {}
            self._config = config
        made = self._made.get(tags)
        if made is None:
            if len(self._made) >= self._limit:
                self._made = {}
            prefix = config["TAG_KEY_PREFIX"]
            make = self._make
            made = self._made[tags] = tuple(make(f"{prefix}{tag}") for tag in tags)
        return made


# -- the mixin --------------------------------------------------------------


def _digest(value: object) -> str:
    # Values read back from a cache were pickled by it already, so this cannot fail.
    data = pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
    return hashlib.blake2b(data, digest_size=16).hexdigest()


class TaggingMixin:
    """Adds ``tags=`` (and ``depends_on=``) to a ``BaseCache`` subclass.

    Put it first in the bases: ``class SmartCache(TaggingMixin, BaseCache)``. It only
    uses the backend's own ``get``/``get_many``/``set``/``set_many``/``add``/``delete``,
    so it works on any backend and across processes through whatever level those
    reach. Backends may override the hooks :meth:`_tags_stored` and
    :meth:`_tags_invalidated` (e.g. to free the bytes of invalidated entries).
    """

    supports_tags = True

    # hooks ------------------------------------------------------------------
    def _tags_stored(self, key: str, version: int | None, tags: Sequence[str]) -> None:
        """Called after a tagged entry was stored (``tags`` include dependencies)."""

    def _tags_invalidated(self, tags: Sequence[str]) -> None:
        """Called after ``tags`` got new versions (entries carrying them are stale)."""

    def _read_bookkeeping(
        self, keys: Sequence[str], version: int | None = None
    ) -> dict[str, Any]:
        """Read the mixin's own keys: tag versions, dependencies, an ``add``'s occupant.

        Not the caller's reads, so a backend with statistics overrides it to leave
        them out of its hits and misses (one ``get`` of a tagged entry is one hit).
        """
        return self._raw_get_many(keys, version)

    def _add_bookkeeping(self, key: str, value: str, timeout: Any) -> bool:
        """``add`` of a tag version key: backends that count writes leave it out."""
        return bool(super().add(key, value, timeout=timeout))  # type: ignore[misc]

    def _add_many_bookkeeping(
        self, data: dict[str, str], timeout: Any, present: Sequence[str] = ()
    ) -> AbstractSet[str]:
        """``add`` of a value's new tag version keys; the keys added. A backend that
        can adds them together, and evicts neither them nor ``present`` (the value's
        other version keys) for room (SmartCache)."""
        return {
            key
            for key, value in data.items()
            if self._add_bookkeeping(key, value, timeout)
        }

    def _write_bookkeeping(self, data: dict[str, str], timeout: Any) -> None:
        """``set_many`` of tag version keys: backends that count writes leave them out."""
        super().set_many(data, timeout=timeout)  # type: ignore[misc]

    def _stale_reads(self, keys: Sequence[str], version: int | None) -> None:
        """Called when reads counted as hits found envelopes gone stale: a backend
        with statistics counts them as misses, which is what the caller got."""

    # raw access (never unwraps envelopes) -----------------------------------
    def _raw_get(self, key: str, version: int | None = None) -> Any:
        return super().get(key, _MISSING, version=version)  # type: ignore[misc]

    def _raw_get_many(
        self, keys: Sequence[str], version: int | None = None
    ) -> dict[str, Any]:
        base = super().get_many  # type: ignore[misc]
        if getattr(base, "__func__", None) is BaseCache.get_many:
            # BaseCache.get_many calls self.get, which would unwrap: read one by one.
            found = {}
            for key in keys:
                value = self._raw_get(key, version)
                if value is not _MISSING:
                    found[key] = value
            return found
        return dict(base(keys, version=version))

    def _version_key(self, tag: str) -> str:
        return f"{conf.get('TAG_KEY_PREFIX')}{tag}"

    # versions ---------------------------------------------------------------
    def current_tag_versions(self, tags: Iterable[str]) -> dict[str, str]:
        """The current version of each tag; absent tags are left out."""
        keys = {self._version_key(tag): tag for tag in tags}
        if not keys:
            return {}
        found = self._read_bookkeeping(list(keys))
        return {keys[k]: v for k, v in found.items() if isinstance(v, str)}

    def tag_versions(self, tags: Iterable[str]) -> dict[str, str]:
        """The current version of each tag (``expand_tags`` applied), creating absent ones."""
        tags = expand_tags(normalize_tags(tags))
        versions = self.current_tag_versions(tags)
        absent = {self._version_key(tag): tag for tag in tags if tag not in versions}
        if not absent:
            return versions
        tokens = {vkey: new_version() for vkey in absent}
        present = [self._version_key(tag) for tag in versions]
        added = self._add_many_bookkeeping(
            tokens, conf.get("TAG_VERSION_TIMEOUT"), present
        )
        for vkey, tag in absent.items():
            token = tokens[vkey]
            if vkey not in added:
                # Another writer created it first: use theirs (or, if it is
                # already gone again, a token nothing else will ever match).
                theirs = self._read_bookkeeping([vkey]).get(vkey)
                token = theirs if isinstance(theirs, str) else token
            versions[tag] = token
        return versions

    def _bump(self, tags: Sequence[str]) -> None:
        timeout = conf.get("TAG_VERSION_TIMEOUT")
        self._write_bookkeeping(
            {self._version_key(tag): new_version() for tag in tags}, timeout
        )
        self._tags_invalidated(tags)

    def invalidate_tags(
        self, *tags: str, reason: str = "invalidate_tags()", db: str | None = None
    ) -> None:
        """Give each tag a new version, now and again when open transactions commit.

        ``db``: only the transaction of that database alias; by default every
        database connection of this thread that is inside ``atomic()`` or a manual
        transaction (``set_autocommit(False)``). The tags of a model a view model reads
        (``SMARTCACHE["VIEWS"]``) also invalidate all rows of that view model.
        """
        norm = normalize_tags(tags)
        if not norm:
            return
        if conf.get("VIEWS"):
            from .registry import with_views  # models: imported when used

            norm = with_views(norm)
        mark_invalidated(norm, lambda n=norm, r=reason: self._repeat(n, r), db)
        self._invalidate_now(norm, reason, on_commit=False)

    def _repeat(self, tags: Sequence[str], reason: str) -> None:
        """The repeat at commit. A cache that fails it (busy, unreachable) raises into
        Django, which logs it and runs the other hooks (the repeat is robust); logged
        first with what to do: entries other threads cached between the write and the
        commit (old rows, current versions) stay valid until their timeout."""
        try:
            self._bump(tags)
        except Exception as exc:
            alias = _alias_of(self)
            shown = ", ".join(tags[:8]) + (
                f" and {len(tags) - 8} more" if len(tags) > 8 else ""
            )
            logger.error(
                "django_smartcache: %s: the repeat at commit of the invalidation of "
                "%s failed in cache %s (%s: %s); values cached from the old rows "
                "before the commit may be served: clear it (manage.py "
                "smartcache_clear --cache %s) before serving from it",
                reason,
                shown,
                repr(alias) if alias else type(self).__name__,
                type(exc).__name__,
                exc,
                alias or "<alias>",
            )
            raise
        # (Outside the try: a receiver's error is not the cache's, and is not
        # logged as a failed invalidation.)
        self._announce(tags, reason, on_commit=True)

    def _invalidate_now(
        self, tags: Sequence[str], reason: str, *, on_commit: bool
    ) -> None:
        self._bump(tags)
        self._announce(tags, reason, on_commit=on_commit)

    def _announce(self, tags: Sequence[str], reason: str, *, on_commit: bool) -> None:
        """``tags_invalidated``, after the versions were written: a receiver that
        raises propagates to the caller, the invalidation itself complete."""
        tags_invalidated.send(
            sender=type(self),
            cache=self,
            tags=tuple(tags),
            reason=reason,
            on_commit=on_commit,
        )

    # envelopes --------------------------------------------------------------
    def _envelope(
        self,
        value: object,
        versions: Mapping[str, str],
        deps: Mapping[str, str],
    ) -> Tagged:
        """The envelope of ``value``, with what :meth:`_prepare` read: nothing is read
        here, so a value computed in between is recorded against the state before."""
        envelope = Tagged(value, versions, deps)
        computing = _COMPUTED_WRITES.get()
        if computing is not None:
            computing.add(envelope.wid)
        return envelope

    def _compute_pinned(
        self,
        default: Callable[[], Any],
        prepared: tuple[dict[str, str], dict[str, str]],
    ) -> Any:
        """``default()``, with the dependencies it writes itself (tagged: their write
        ids are this context's) pinned again after it, in the state it wrote; every
        other dependency keeps the state read before (``_prepare``)."""
        writes: set[str] = set()
        outer = _COMPUTED_WRITES.get()
        token = _COMPUTED_WRITES.set(writes)
        try:
            value = default()
        finally:
            _COMPUTED_WRITES.reset(token)
            if outer is not None:
                outer |= writes  # an enclosing computation wrote them too
        versions, deps = prepared
        if writes:
            raw = self._read_bookkeeping(list(deps))
            own = [
                dep
                for dep in deps
                if isinstance(found := raw.get(dep), Tagged) and found.wid in writes
            ]
            if own:
                deps.update(self._pin_dependencies(versions, own))
        return value

    def _pin_dependencies(
        self, versions: dict[str, str], depends_on: Sequence[str]
    ) -> dict[str, str]:
        """The state of each dependency key now (its write id if tagged, a digest of
        its value otherwise, ``_ABSENT`` if missing), and its own dependencies; its tag
        versions join ``versions`` (transitive: a dependant inherits them)."""
        deps: dict[str, str] = {}
        raw = self._read_bookkeeping(list(depends_on))
        for dep in depends_on:
            found = raw.get(dep, _MISSING)
            if isinstance(found, Tagged):
                deps[dep] = found.wid
                deps.update(found.deps)  # transitive: flattened
                for tag, ver in found.versions.items():
                    versions.setdefault(tag, ver)
                    if versions[tag] != ver:  # dependency already stale
                        versions[tag] = _ABSENT
            else:
                deps[dep] = _ABSENT if found is _MISSING else _digest(found)
        return deps

    def _prepare(
        self, tags: Iterable[str] | None, depends_on: Iterable[str] | None
    ) -> tuple[dict[str, str], dict[str, str]] | None:
        """Versions and dependency states to record, or ``None`` for a plain value.

        Everything is read here, before a ``get_or_set`` computes its value: an
        invalidation (or a dependency rewritten, deleted or first written) landing in
        between then makes the value stale at once, where a state read after the
        computation would record it as current. ``tags`` may also be a mapping from
        :meth:`tag_versions`, read before the value was computed (a plain ``set``
        cannot know when).
        """
        deps = tuple(depends_on or ())
        if isinstance(tags, Mapping):
            versions = {validate_tag(tag): tags[tag] for tag in tags}
            if not all(isinstance(v, str) for v in versions.values()):
                raise TypeError("tags= as a mapping takes what tag_versions() returns")
            if versions:
                self._warn_if_unreached()
            if not versions and not deps:
                return None
        else:
            norm = normalize_tags(tags)
            if not norm and not deps:
                return None
            if norm:
                self._warn_if_unreached()
            versions = self.tag_versions(norm)
        return versions, (self._pin_dependencies(versions, deps) if deps else {})

    def _warn_if_unreached(self) -> None:
        """Warn, once per alias, that this alias stores tagged entries while
        ``SMARTCACHE["TAG_CACHES"]`` leaves it out: model writes and the module-level
        ``invalidate_tags()`` never reach it. Checked once per instance and setting."""
        if not _app_checked:
            _warn_if_app_missing()
        config = conf.get_config()
        if self.__dict__.get("_reach_checked") is config:
            return
        self._reach_checked = config
        chosen = config["TAG_CACHES"]
        alias = None if chosen == conf.ALL else _alias_of(self)
        if alias is None or alias in _unreached_warned or alias in _reached(chosen):
            return
        _unreached_warned.add(alias)
        logger.warning(
            "django_smartcache: cache %r stores tagged entries, but "
            "SMARTCACHE['TAG_CACHES'] (%r) does not list it: model writes and "
            "invalidate_tags() never invalidate them, they are served until their "
            "timeout. Add %r to TAG_CACHES (or invalidate it yourself: "
            "invalidate_tags(..., using=%r)).",
            alias,
            list(chosen),
            alias,
            alias,
        )

    @staticmethod
    def _is_dirty(versions: Iterable[str]) -> bool:
        dirty = dirty_tags()
        return bool(dirty) and not dirty.isdisjoint(versions)

    def _valid(self, envelopes: Mapping[str, Tagged]) -> set[str]:
        """Keys of ``envelopes`` whose versions and dependencies are all current."""
        tags = {tag for env in envelopes.values() for tag in env.versions}
        deps = {dep for env in envelopes.values() for dep in env.deps}
        current: dict[str, object] = (
            dict(self.current_tag_versions(tags)) if tags else {}
        )
        dep_now: dict[str, str] = {}
        if deps:
            raw = self._read_bookkeeping(list(deps))
            for dep in deps:
                found = raw.get(dep, _MISSING)
                if isinstance(found, Tagged):
                    dep_now[dep] = found.wid
                else:
                    dep_now[dep] = _ABSENT if found is _MISSING else _digest(found)
        dirty = dirty_tags()
        valid = set()
        for key, env in envelopes.items():
            if dirty and not dirty.isdisjoint(env.versions):
                continue
            if env.is_current(current) and all(
                dep_now.get(dep) == wid for dep, wid in env.deps.items()
            ):
                valid.add(key)
        return valid

    def _incremented_envelope(self, key: str, version: Any, envelope: Tagged) -> None:
        """An ``incr``/``decr`` bumped the value inside ``envelope`` (kept): if the
        envelope was stale, the key was absent for ``get`` and ``has_key``, so it is
        for ``incr`` too: dropped, and ``ValueError`` as for a missing key. (Answering
        the bumped number would lose the increments: the next ``get`` drops the
        entry.) A lower level's envelope (a MultiLevelCache's) is its
        owner's to judge; a thread with those tags dirty leaves it as ``get`` does."""
        if type(envelope) is not Tagged:
            note_incremented(envelope)
            return
        if self._incremented_stale(key, envelope):
            self.delete(key, version=version)  # type: ignore[attr-defined]
            raise ValueError(f"Key '{key}' not found")

    def _incremented_stale(self, key: str, envelope: Tagged) -> bool:
        """Whether an incremented ``envelope`` is stale: ``incr`` then answers as for
        a missing key. A thread with its tags dirty leaves it as ``get`` does."""
        dirty = dirty_tags()
        if dirty and not dirty.isdisjoint(envelope.versions):
            return False
        return key not in self._valid({key: envelope})

    def _drop_stale(self, stale: Mapping[str, Tagged], version: int | None) -> None:
        """Delete the stale envelopes read, to free their bytes (never while this
        thread is dirty); ``stale`` maps each key to the envelope found there."""
        if stale and not dirty_tags():
            self._delete_stale({key: env.wid for key, env in stale.items()}, version)

    def _delete_stale(self, writes: dict[str, str], version: int | None) -> None:
        """Delete each key that still holds the write (``Tagged.wid``) judged stale.

        Another thread or process may have stored a fresh value since the read:
        deleting by key alone lost that write. Here by :func:`delete_unchanged`;
        SmartCache and SQLiteCache compare and delete atomically.
        """
        delete_unchanged(
            writes,
            functools.partial(self._raw_get_many, version=version),
            functools.partial(super().delete_many, version=version),  # type: ignore[misc]
        )

    def _clear_stale_occupant(
        self, key: str, occupant: Tagged, version: int | None
    ) -> None:
        """Let an ``add`` take a key held by an envelope judged stale: delete that
        envelope, never a value written since (the same compare as ``_delete_stale``)."""
        self._delete_stale({key: occupant.wid}, version)

    # the cache API ------------------------------------------------------------
    def get(self, key: str, default: Any = None, version: int | None = None) -> Any:
        value = self._raw_get(key, version)
        if value is _MISSING:
            return default
        if type(value) is not Tagged:
            return value
        if self._valid({key: value}):
            return value.value
        self._stale_reads([key], version)
        self._drop_stale({key: value}, version)
        return default

    def get_many(
        self, keys: Iterable[str], version: int | None = None
    ) -> dict[str, Any]:
        raw = self._raw_get_many(list(keys), version)
        for value in raw.values():
            if type(value) is Tagged:
                return self._unwrap_many(raw, version)
        return raw

    def _unwrap_many(
        self, raw: dict[Any, Any], version: int | None, kind: type = Tagged
    ) -> dict[Any, Any]:
        """``raw`` with its envelopes (of exactly type ``kind``) unwrapped; those whose
        tags have moved on are dropped from the result and from the cache."""
        envelopes = {k: v for k, v in raw.items() if type(v) is kind}
        valid = self._valid(envelopes)
        stale = [k for k in envelopes if k not in valid]
        if stale:
            self._stale_reads(stale, version)
            self._drop_stale({k: envelopes[k] for k in stale}, version)
        return {
            k: (v.value if type(v) is kind else v)
            for k, v in raw.items()
            if type(v) is not kind or k in valid
        }

    def has_key(self, key: str, version: int | None = None) -> bool:
        return self.get(key, _MISSING, version=version) is not _MISSING

    def set(
        self,
        key: str,
        value: Any,
        timeout: Any = DEFAULT_TIMEOUT,
        version: int | None = None,
        tags: Iterable[str] | None = None,
        depends_on: Iterable[str] | None = None,
    ) -> None:
        prepared = self._prepare(tags, depends_on)
        if prepared is None:
            super().set(key, value, timeout=timeout, version=version)  # type: ignore[misc]
            return
        env = self._envelope(value, *prepared)
        if self._is_dirty(env.versions):
            # This thread wrote those tags in an open transaction: the value may
            # come from uncommitted data. Drop the old entry, store nothing.
            super().delete(key, version=version)  # type: ignore[misc]
            return
        super().set(key, env, timeout=timeout, version=version)  # type: ignore[misc]
        self._tags_stored(key, version, tuple(env.versions))

    def add(
        self,
        key: str,
        value: Any,
        timeout: Any = DEFAULT_TIMEOUT,
        version: int | None = None,
        tags: Iterable[str] | None = None,
        depends_on: Iterable[str] | None = None,
    ) -> bool:
        prepared = self._prepare(tags, depends_on)
        payload: Any = value if prepared is None else self._envelope(value, *prepared)
        return self._add(key, payload, timeout, version)

    def _add(self, key: str, payload: Any, timeout: Any, version: int | None) -> bool:
        tagged = type(payload) is Tagged
        if tagged and self._is_dirty(payload.versions):
            return False
        if super().add(key, payload, timeout=timeout, version=version):  # type: ignore[misc]
            if tagged:
                self._tags_stored(key, version, tuple(payload.versions))
            return True
        # A stale envelope still occupying the key must not block the add.
        with key_warnings_given():
            occupant = self._read_bookkeeping([key], version).get(key, _MISSING)
            if type(occupant) is Tagged and key not in self._valid({key: occupant}):
                self._clear_stale_occupant(key, occupant, version)
                if super().add(key, payload, timeout=timeout, version=version):  # type: ignore[misc]
                    if tagged:
                        self._tags_stored(key, version, tuple(payload.versions))
                    return True
        return False

    def set_many(
        self,
        data: Mapping[str, Any],
        timeout: Any = DEFAULT_TIMEOUT,
        version: int | None = None,
        tags: Iterable[str] | None = None,
        depends_on: Iterable[str] | None = None,
    ) -> list[str]:
        prepared = self._prepare(tags, depends_on)
        if prepared is None:
            return list(super().set_many(data, timeout=timeout, version=version))  # type: ignore[misc]
        versions, deps = prepared
        envelopes = {k: self._envelope(v, versions, deps) for k, v in data.items()}
        if envelopes and self._is_dirty(next(iter(envelopes.values())).versions):
            super().delete_many(list(envelopes), version=version)  # type: ignore[misc]
            return []
        failed = list(super().set_many(envelopes, timeout=timeout, version=version))  # type: ignore[misc]
        for key, env in envelopes.items():
            if key not in failed:
                self._tags_stored(key, version, tuple(env.versions))
        return failed

    def get_or_set(
        self,
        key: str,
        default: Any,
        timeout: Any = DEFAULT_TIMEOUT,
        version: int | None = None,
        tags: Iterable[str] | None = None,
        depends_on: Iterable[str] | None = None,
    ) -> Any:
        value = self.get(key, _MISSING, version=version)
        if value is not _MISSING:
            return value
        # Versions and dependencies are read *before* computing: an invalidation
        # (or a dependency rewritten or deleted) that lands while the value is
        # computed makes what we store stale at once, never valid.
        prepared = self._prepare(tags, depends_on)
        if callable(default):
            if prepared is not None and prepared[1]:
                default = self._compute_pinned(default, prepared)
            else:
                default = default()
        payload: Any = (
            default if prepared is None else self._envelope(default, *prepared)
        )
        self._add(key, payload, timeout, version)
        # What is stored now (ours, or another writer's that got there first), read as
        # bookkeeping: the caller's one read, a miss, is counted already.
        found = self._read_bookkeeping([key], version).get(key, _MISSING)
        if type(found) is Tagged:
            return found.value if key in self._valid({key: found}) else default
        return default if found is _MISSING else found

    def incr_version(self, key: str, delta: int = 1, version: int | None = None) -> int:
        """Django's (the value moved to ``version + delta``), keeping a tagged value's
        envelope: moved as a bare value, it would no longer follow its tags, and a
        save would leave it served at the new version. A stale one is a missing
        key, as for ``get`` (``ValueError``). ``decr_version`` comes through here."""
        if version is None:
            version = self.version  # type: ignore[attr-defined]
        with key_warnings_given():  # Django's own warns as it reads, writes, deletes
            found = self._read_bookkeeping([key], version).get(key, _MISSING)
        if type(found) is not Tagged:
            return super().incr_version(key, delta, version)  # type: ignore[misc, no-any-return]
        self.make_and_validate_key(key, version=version)  # type: ignore[attr-defined]  # (its read's warning)
        if key not in self._valid({key: found}):
            self._drop_stale({key: found}, version)  # as get() does
            raise ValueError(f"Key '{key}' not found")
        moved = version + delta
        super().set(key, found, version=moved)  # type: ignore[misc]
        self._tags_stored(key, moved, tuple(found.versions))
        self.delete(key, version=version)  # type: ignore[attr-defined]
        return moved

    # async ------------------------------------------------------------------
    async def aincr_version(self, key: str, delta: int = 1, version: int | None = None) -> int:  # fmt: skip
        # Django's own is an aget/aset/adelete: the envelope would be dropped there.
        return await sync_to_async(self.incr_version, thread_sensitive=True)(  # type: ignore[no-any-return]
            key, delta, version
        )

    async def aset(self, key: str, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None, **kwargs: Any) -> None:  # fmt: skip
        await sync_to_async(self.set, thread_sensitive=True)(
            key, value, timeout, version, **kwargs
        )

    async def aadd(self, key: str, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None, **kwargs: Any) -> bool:  # fmt: skip
        return await sync_to_async(self.add, thread_sensitive=True)(
            key, value, timeout, version, **kwargs
        )  # type: ignore[no-any-return]

    async def aset_many(self, data: Mapping[str, Any], timeout: Any = DEFAULT_TIMEOUT, version: int | None = None, **kwargs: Any) -> list[str]:  # fmt: skip
        return await sync_to_async(self.set_many, thread_sensitive=True)(
            data, timeout, version, **kwargs
        )  # type: ignore[no-any-return]

    async def aget_or_set(self, key: str, default: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None, **kwargs: Any) -> Any:  # fmt: skip
        return await sync_to_async(self.get_or_set, thread_sensitive=True)(
            key, default, timeout, version, **kwargs
        )

    async def aget(
        self, key: str, default: Any = None, version: int | None = None
    ) -> Any:
        return await sync_to_async(self.get, thread_sensitive=True)(
            key, default, version
        )

    async def aget_many(
        self, keys: Iterable[str], version: int | None = None
    ) -> dict[str, Any]:
        return await sync_to_async(self.get_many, thread_sensitive=True)(keys, version)  # type: ignore[no-any-return]

    async def ahas_key(self, key: str, version: int | None = None) -> bool:
        return await sync_to_async(self.has_key, thread_sensitive=True)(key, version)  # type: ignore[no-any-return]

    async def ainvalidate_tags(self, *tags: str, **kwargs: Any) -> None:
        await sync_to_async(self.invalidate_tags, thread_sensitive=True)(
            *tags, **kwargs
        )


# -- the mixin's warnings ---------------------------------------------------


#: The aliases :meth:`TaggingMixin._warn_if_unreached` warned about.
_unreached_warned: set[str] = set()
#: Whether a tagged write looked once for the receivers (with the apps ready).
_app_checked = False


def _warn_if_app_missing() -> None:
    """Warn, once per process, that tagged entries are written while no receiver is
    connected: ``"django_smartcache"`` is not in ``INSTALLED_APPS`` (its ``ready()``
    connects them), so no save, delete or SQL write invalidates a tag, and the
    entries are served stale until their timeout (a new user's silent trap).
    Judged by the receivers, not the setting: an ``override_settings`` of
    ``INSTALLED_APPS`` in a test leaves them connected."""
    global _app_checked
    from django.apps import apps

    if not apps.ready:
        return  # (looked at again by the next tagged write)
    _app_checked = True
    from . import invalidation

    if not invalidation.receivers_connected():
        logger.warning(
            "django_smartcache: tagged entries are being cached, but no receiver is "
            "connected ('django_smartcache' is not in INSTALLED_APPS): no model "
            "save, delete or SQL write invalidates their tags (only "
            "invalidate_tags() calls do), and they are served until their timeout. "
            "Add 'django_smartcache' to INSTALLED_APPS (docs/tagging.md)."
        )


def _reached(chosen: Iterable[str]) -> set[str]:
    """The aliases whose tags an invalidation of ``chosen`` bumps: those, and the
    aliases a chosen MultiLevelCache lists as its levels (it bumps them through its
    levels), level by level."""
    from .backends._level_config import multilevel_levels  # (backends import tagging)

    levels = {
        alias: [level for level in lower if isinstance(level, str)]
        for alias, _config, lower in multilevel_levels()
    }
    reached, todo = set(), list(chosen)
    while todo:
        alias = todo.pop()
        if alias not in reached:
            reached.add(alias)
            todo.extend(levels.get(alias, ()))
    return reached


def _alias_of(cache: Any) -> str | None:
    """The ``CACHES`` alias of ``cache`` among those built in this thread (Django's
    handler keeps one instance per alias and thread), or None."""
    from django.conf import settings

    built = getattr(caches, "_connections", None)
    for alias in settings.CACHES:
        if getattr(built, alias, None) is cache:
            return str(alias)
    return None
