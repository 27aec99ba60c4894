"""Tag names (``core.tags.validate_tag``)."""

from __future__ import annotations

import pytest

from django_smartcache.core.tags import InvalidTag, validate_tag


def test_a_tag_that_cannot_be_encoded_as_utf8_is_refused() -> None:
    """A lone surrogate: no SQLite file or Redis stores it, and the error came from
    the backend, naming an internal version key instead of the tag (review)."""
    with pytest.raises(InvalidTag, match="encodable as UTF-8"):
        validate_tag("t\udc80")
    assert validate_tag("café") == "café"
