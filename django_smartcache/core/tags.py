"""Tag names, version tokens and the envelope a tagged value is stored in.

Pure data: the Django-facing mechanism in ``django_smartcache.tagging`` stores a
:class:`Tagged` envelope holding the value and the version of every tag (and the
write id of every key it depends on) seen at write time. A read is valid only if
each recorded version still equals the current one; a missing version never does.
"""

from __future__ import annotations

import os
import time
from collections.abc import Hashable, Iterable, Mapping

#: Tag names go into cache keys: keep them short and free of whitespace and
#: control characters (memcached's rules, which Django warns about too).
MAX_TAG_LENGTH = 200


class InvalidTag(ValueError):
    """A tag name that cannot be used as (part of) a cache key."""


def validate_tag(tag: object) -> str:
    """Return ``tag`` if it is a usable tag name, else raise :class:`InvalidTag`."""
    if not isinstance(tag, str):
        raise InvalidTag(f"tags must be str, not {type(tag).__name__}: {tag!r}")
    if not tag or len(tag) > MAX_TAG_LENGTH:
        raise InvalidTag(f"tag length must be 1..{MAX_TAG_LENGTH}: {tag!r}")
    if any(ch.isspace() or ord(ch) < 33 or ord(ch) == 127 for ch in tag):
        raise InvalidTag(f"tags may not contain whitespace or control chars: {tag!r}")
    if not tag.isascii():
        try:
            tag.encode()
        except UnicodeEncodeError:  # a lone surrogate: no file or server stores it
            raise InvalidTag(f"tags must be encodable as UTF-8: {tag!r}") from None
    return tag


def normalize_tags(tags: Iterable[object] | None) -> tuple[str, ...]:
    """Validated, de-duplicated tags in first-seen order (a str is one tag)."""
    if tags is None:
        return ()
    if isinstance(tags, str):
        tags = (tags,)
    seen: dict[str, None] = {}
    for tag in tags:
        seen[validate_tag(tag)] = None
    return tuple(seen)


def new_version() -> str:
    """A version token that is never reused: nanosecond clock + 64 random bits.

    Comparing with a fresh token is what makes a lost (evicted, expired, flushed)
    version key safe: entries recorded against the old token can never match again.
    """
    return f"{time.time_ns():x}.{os.urandom(8).hex()}"


class Tagged:
    """A stored value with the tag versions (and dependency write ids) it was valid for.

    ``versions`` maps a tag to the version current when the value was written.
    ``deps`` maps a dependency key (as made by the backend) to the write id, or the
    digest of the value, the dependency had then. ``wid`` identifies this write so
    that entries depending on this one can tell when it was replaced.
    """

    __slots__ = ("deps", "value", "versions", "wid")

    def __init__(
        self,
        value: object,
        versions: Mapping[str, str],
        deps: Mapping[str, str] | None = None,
        wid: str | None = None,
    ) -> None:
        self.value = value
        self.versions = dict(versions)
        self.deps = dict(deps or {})
        self.wid = wid or new_version()

    def __getstate__(self) -> tuple[object, dict[str, str], dict[str, str], str]:
        return (self.value, self.versions, self.deps, self.wid)

    def __setstate__(
        self, state: tuple[object, dict[str, str], dict[str, str], str]
    ) -> None:
        self.value, self.versions, self.deps, self.wid = state

    def __repr__(self) -> str:
        return f"Tagged({self.value!r}, versions={self.versions!r}, deps={self.deps!r})"

    def is_current(self, current: Mapping[str, object]) -> bool:
        """True if every recorded version equals ``current[tag]`` (absent never does)."""
        return all(current.get(tag) == ver for tag, ver in self.versions.items())


class _Keys(set):  # type: ignore[type-arg]
    """A tag's key set, which keeps the one ``str`` object its entries share for it."""

    __slots__ = ("tag",)

    tag: str


class TagIndex:
    """tag -> resident keys and key -> tags, for a backend that frees bytes on invalidation.

    Bounded by the resident keys: the owner calls :meth:`discard` whenever a key
    leaves (delete, expiry, eviction), so nothing outlives the entries it indexes.
    :meth:`detach` hands a tag's whole key set over in O(1); each key remembers the
    stamp of the write that tagged it, so a key written again after the detach is
    told apart (:meth:`tagged_before`) and survives the purge of the old set.
    Each indexed tag is one ``str`` object, kept with its key set: :meth:`add`
    returns the tags as those objects, for the owner to keep instead of its own
    (a caller that builds its tag strings anew per write kept a copy per entry).
    Not thread-safe on its own: call it under the store's lock.
    """

    __slots__ = ("_keys", "_stamp", "_tags", "_track", "orphans")

    def __init__(self, *, track_orphans: bool = False) -> None:
        self._keys: dict[str, _Keys] = {}
        self._tags: dict[Hashable, tuple[int, tuple[str, ...]]] = {}
        self._stamp = 0
        #: With ``track_orphans``: tags whose last key left (not by :meth:`detach`),
        #: for an owner that frees what it keeps per tag; it empties the list, and
        #: checks :meth:`carried` first (a key may carry the tag again by then).
        self._track = track_orphans
        self.orphans: list[str] = []

    def __len__(self) -> int:
        return len(self._tags)

    @property
    def tag_count(self) -> int:
        return len(self._keys)

    def add(self, key: Hashable, tags: Iterable[str]) -> tuple[str, ...]:
        """Record that resident ``key`` carries ``tags`` (replacing earlier tags);
        return ``tags`` as the index's own objects (one per tag, shared by its keys)."""
        tags = tuple(tags)
        record = self._tags.pop(key, None)
        if record is not None:
            # The tags it keeps are no orphans, not even for a moment.
            self._forget(key, [tag for tag in record[1] if tag not in tags])
        if not tags:
            return tags
        keys = self._keys
        shared = []
        for tag in tags:
            bucket = keys.get(tag)
            if bucket is None:
                bucket = keys[tag] = _Keys((key,))
                bucket.tag = tag
            else:
                bucket.add(key)
            shared.append(bucket.tag)
        tags = tuple(shared)
        self._stamp += 1
        self._tags[key] = (self._stamp, tags)
        return tags

    def discard(self, key: Hashable) -> None:
        """Forget ``key``; a tag left with no keys is forgotten too (an orphan)."""
        record = self._tags.pop(key, None)
        if record is not None:
            self._forget(key, record[1])

    def _forget(self, key: Hashable, tags: Iterable[str]) -> None:
        for tag in tags:
            keys = self._keys.get(tag)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._keys[tag]
                    if self._track:
                        self.orphans.append(tag)

    def carried(self, tag: Hashable) -> bool:
        """Whether a resident key carries ``tag`` (a detached tag counts as not)."""
        return tag in self._keys

    def detach(self, tag: str) -> tuple[set[Hashable], int]:
        """Hand over ``tag``'s key set and the current stamp, in O(1).

        The keys stay indexed (under their other tags too) until the owner removes
        them; only those for which :meth:`tagged_before` ``(key, stamp)`` still holds
        carry the detached tag's old write.
        """
        keys: set[Hashable] = self._keys.pop(tag, set())
        return keys, self._stamp

    def tagged_before(self, key: Hashable, stamp: int) -> bool:
        """Whether ``key`` is indexed by a write no later than ``stamp``."""
        record = self._tags.get(key)
        return record is not None and record[0] <= stamp

    def clear(self) -> None:
        self._keys.clear()
        self._tags.clear()
        self.orphans.clear()
