"""One cache (or one receiver) failing an invalidation does not leave the others stale.

An outside probe: the module-level ``invalidate_tags()`` stopped at the first alias
that raised, and the SQL watcher's error reached the caller after the autocommit
write had committed: the healthy alias after it served the old row. A
``tags_invalidated`` receiver that raised (a metrics client down) did the same.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.core.cache import caches
from django.test import override_settings

from django_smartcache import model_tag
from django_smartcache.backends import SmartCache
from django_smartcache.signals import tags_invalidated
from tests.testapp.models import Author

pytestmark = pytest.mark.django_db(transaction=True)


class UnreachableCache(SmartCache):
    """A tag-aware cache whose invalidations fail while ``down`` (Redis down, a
    locked file)."""

    down = False

    def invalidate_tags(self, *tags: str, **kwargs: Any) -> None:
        if self.down:
            raise ConnectionError("unreachable")
        super().invalidate_tags(*tags, **kwargs)


def _smart(location: str) -> dict[str, Any]:
    return {"BACKEND": "django_smartcache.backends.SmartCache", "LOCATION": location}


@pytest.fixture
def aliases(request: pytest.FixtureRequest) -> Iterator[list[str]]:
    """``first``, ``second`` and ``third``, every one taking tags."""
    first = getattr(request, "param", "smart")
    configs = {
        "default": _smart("invalidation-failures-default"),
        "first": (
            {"BACKEND": f"{__name__}.UnreachableCache", "LOCATION": "failing-first"}
            if first == "unreachable"
            else _smart("invalidation-failures-first")
        ),
        "second": _smart("invalidation-failures-second"),
        "third": _smart("invalidation-failures-third"),
    }
    names = ["first", "second", "third"]
    with override_settings(CACHES=configs, SMARTCACHE={"TAG_CACHES": names}):
        yield names
        for name in names:
            caches[name].clear()


def _cache_everywhere(names: list[str], author: Author) -> None:
    for name in names[1:]:
        caches[name].set("row", author.name, tags=[model_tag(Author, author.pk)])


@pytest.mark.parametrize("aliases", ["unreachable"], indirect=True)
def test_a_failing_cache_does_not_stop_the_others(aliases: list[str]) -> None:
    author = Author.objects.create(name="old")
    _cache_everywhere(aliases, author)
    UnreachableCache.down = True
    try:
        with pytest.raises(ConnectionError):
            Author.objects.filter(pk=author.pk).update(name="new")  # committed
    finally:
        UnreachableCache.down = False
    assert Author.objects.get(pk=author.pk).name == "new"
    for name in aliases[1:]:
        assert caches[name].get("row") is None, name


def test_a_failing_receiver_does_not_stop_the_other_caches(
    aliases: list[str],
) -> None:
    author = Author.objects.create(name="old")
    _cache_everywhere(["first", *aliases], author)

    def metrics_down(**kwargs: Any) -> None:
        raise ConnectionError("statsd down")

    tags_invalidated.connect(metrics_down)
    try:
        with pytest.raises(ConnectionError):
            Author.objects.filter(pk=author.pk).update(name="new")
    finally:
        tags_invalidated.disconnect(metrics_down)
    for name in aliases:
        assert caches[name].get("row") is None, name


def test_a_bad_tag_is_raised_once_before_any_cache(
    aliases: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    # A review: each alias raised InvalidTag and the second and third were logged at
    # ERROR as failed caches; the tag is the caller's mistake.
    from django_smartcache import invalidate_tags
    from django_smartcache.core.tags import InvalidTag

    with (
        caplog.at_level("ERROR", logger="django_smartcache"),
        pytest.raises(InvalidTag),
    ):
        invalidate_tags("")
    assert not [r for r in caplog.records if "failed too" in r.getMessage()]


def test_an_alias_that_cannot_be_built_does_not_stop_the_others() -> None:
    from django.core.exceptions import ImproperlyConfigured

    from django_smartcache import invalidate_tags

    configs = {
        "default": _smart("invalidation-failures-default"),
        "broken": {
            "BACKEND": "django_smartcache.backends.SmartCache",
            "OPTIONS": {"POLICY": "no-such-policy"},
        },
        "second": _smart("invalidation-failures-unbuilt"),
    }
    with override_settings(
        CACHES=configs, SMARTCACHE={"TAG_CACHES": ["broken", "second"]}
    ):
        caches["second"].set("page", 1, tags=["t"])
        with pytest.raises(ImproperlyConfigured, match="POLICY"):
            invalidate_tags("t")
        assert caches["second"].get("page") is None
        caches["second"].clear()
