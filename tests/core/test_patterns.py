"""KeyPattern: globs and regexes over callers' keys, matched on made keys."""

from __future__ import annotations

import fnmatch
import re

import pytest
from hypothesis import given, strategies as st

from django_smartcache.core.patterns import (
    KeyPattern,
    glob_literal_prefix,
    glob_to_regex,
    prefix_end,
)


@pytest.mark.parametrize(
    ("glob", "key", "expected"),
    [
        ("user:42:*", "user:42:profile", True),
        ("user:42:*", "user:42:", True),
        ("user:42:*", "user:421:x", False),
        ("user:*:name", "user:1:2:name", True),  # "*" crosses ":"
        ("user:?", "user:7", True),
        ("user:?", "user:77", False),
        ("v[0-9]", "v5", True),
        ("v[0-9]", "vx", False),
        ("v[!0-9]", "vx", True),
        ("v[^0-9]", "v5", False),
        (r"a\*b", "a*b", True),
        (r"a\*b", "axb", False),
        ("a[", "a[", True),  # an unclosed bracket is literal
        ("dots.and+plus", "dots.and+plus", True),
        ("dots.and+plus", "dotsXand+plus", False),
        ("line*", "line\nbreak", True),
    ],
)
def test_glob(glob: str, key: str, expected: bool) -> None:
    assert KeyPattern(glob).matches_key(key) is expected
    assert KeyPattern(glob, head="p:1:").matches("p:1:" + key) is expected


def test_head_must_match_exactly() -> None:
    pattern = KeyPattern("user:*", head="p:1:")
    assert pattern.matches("p:1:user:1")
    assert not pattern.matches("p:2:user:1")  # another version
    assert not pattern.matches("q:1:user:1")  # another prefix
    assert not pattern.matches(("p:1:user:1",))  # not a str key


def test_regex_is_search_on_the_callers_key() -> None:
    pattern = KeyPattern(r"^user:\d+$", regex=True, head="p:1:")
    assert pattern.matches("p:1:user:12")
    assert not pattern.matches("p:1:user:12x")
    assert not pattern.matches("p:1:xuser:12")
    unanchored = KeyPattern(r"\d{3}", regex=True, head="p:1:")
    assert unanchored.matches("p:1:order-123-x")
    assert unanchored.literal_prefix == "p:1:"
    with pytest.raises(re.error):
        KeyPattern("(", regex=True)


def test_literal_prefix() -> None:
    assert glob_literal_prefix("user:42:*") == "user:42:"
    assert glob_literal_prefix(r"a\*b*") == "a*b"
    assert glob_literal_prefix("*x") == ""
    assert glob_literal_prefix("ab?c") == "ab"
    assert KeyPattern("ab[cd]", head="h:").literal_prefix == "h:ab"


def test_redis_match_and_sql_like() -> None:
    # A superset of the glob's keys: classes and "?" become "*" (Redis's glob is not ours).
    assert KeyPattern("user:[!a]*", head="p:1:").redis_match() == "p:1:user:*"
    assert KeyPattern("a?[x]b", head="p:1:").redis_match() == "p:1:a*b"
    assert KeyPattern("x", head="p*[:1:").redis_match() == r"p\*\[:1:x"
    assert KeyPattern("r.*", regex=True, head="p:1:").redis_match() == "p:1:*"
    assert KeyPattern("a_%b*", head="p:1:").sql_like() == r"p:1:a\_\%b%"


def test_prefix_end() -> None:
    assert prefix_end("ab") == "ac"
    assert prefix_end("a" + chr(0x10FFFF)) == "b"
    assert prefix_end(chr(0x10FFFF)) is None
    assert prefix_end("") is None


_plain = st.text(alphabet="ab:*?", max_size=8)


@given(glob=_plain, key=st.text(alphabet="ab:", max_size=10))
def test_agrees_with_fnmatch_without_classes(glob: str, key: str) -> None:
    expected = fnmatch.fnmatchcase(key, glob)
    assert (re.match(glob_to_regex(glob), key) is not None) is expected
    assert KeyPattern(glob).matches_key(key) is expected


@given(glob=_plain, key=st.text(alphabet="ab:", max_size=10))
def test_a_match_starts_with_the_literal_prefix(glob: str, key: str) -> None:
    pattern = KeyPattern(glob, head="h:")
    if pattern.matches("h:" + key):
        assert ("h:" + key).startswith(pattern.literal_prefix)


_classy = st.text(alphabet="ab:*?[]!^-\\é", max_size=8)


@given(glob=_classy, key=st.text(alphabet="ab:*?[]!^-\\é", max_size=8))
def test_redis_match_is_a_superset(glob: str, key: str) -> None:
    # redis_match() holds only escaped literals and "*": read it as a regex that way.
    try:
        pattern = KeyPattern(glob, head="h[1]:")
    except ValueError:  # a reversed range, "[b-a]" (refused, as documented)
        return
    if pattern.matches("h[1]:" + key):
        redis = pattern.redis_match()
        regex = "".join(
            ".*" if part == "*" else re.escape(part[-1])
            for part in re.findall(r"\\.|\*|[^\\*]", redis)
        )
        assert re.fullmatch(regex, "h[1]:" + key, re.DOTALL), (glob, key, redis)


def _glob_to_regex_with_backtracking(glob: str) -> str:
    """The translation before the atomic groups: each ``*`` a greedy ``.*``."""
    return glob_to_regex(glob).replace("(?>.*?", "(?:.*?")


@given(
    st.text(alphabet="ab*?[]!-\\^", max_size=10),
    st.text(alphabet="ab-]![\\^*?\n", max_size=8),
)
def test_atomic_stars_match_what_plain_stars_match(glob: str, key: str) -> None:
    try:
        fast = re.compile(glob_to_regex(glob))
    except ValueError:
        return  # a reversed range: refused (below)
    slow = re.compile(_glob_to_regex_with_backtracking(glob))
    assert bool(fast.match(key)) == bool(slow.match(key))


def test_many_stars_do_not_backtrack() -> None:
    """``*a*a...*a`` on a long key that fails at the end: linear, not exponential
    (``.*a.*a...`` took minutes for 40 stars; fnmatch has the same guard)."""
    pattern = KeyPattern("*a" * 40 + "*b")
    assert pattern.matches_key("a" * 200) is False
    assert pattern.matches_key("a" * 60 + "b") is True
    assert "(?>" in glob_to_regex("*a*b")


@pytest.mark.parametrize("glob", ["[z-a]", "x[!9-0]", "[ab-a]"])
def test_a_reversed_range_is_a_clear_error(glob: str) -> None:
    with pytest.raises(ValueError, match=r"invalid glob .* the range .* is reversed"):
        KeyPattern(glob)


@pytest.mark.parametrize(
    ("glob", "key"),
    [("[a-c-b]", "-"), ("[a-c-b]", "b"), ("[--a]", "-"), ("[!--/]", "a")],
)
def test_a_dash_after_a_range_is_a_member_as_in_re(glob: str, key: str) -> None:
    assert KeyPattern(glob).matches_key(key)


def test_prefix_end_skips_the_surrogates() -> None:
    """U+D7FF + 1 is a surrogate, which no UTF-8 text (SQLite's) can hold."""
    assert prefix_end("a\ud7ff") == "a\ue000"
    assert prefix_end("a\ud7fe") == "a\ud7ff"
    "a\ue000".encode()  # encodable


@pytest.mark.parametrize(
    ("glob", "exact"),
    [
        ("user:*", "h:user:*"),
        ("a\\*b*", "h:a\\*b*"),
        ("a[b", "h:a\\[b"),  # no closing bracket: a literal "["
        ("x**y", "h:x*y"),
        ("é*", "h:é*"),
        ("[!a]*", None),  # Redis reads classes otherwise ("!" a member, "^" negates)
        ("??", None),  # Redis's "?" is one byte of a UTF-8 character
        ("a[\\]b", None),
    ],
)
def test_redis_exact_is_only_literals_and_stars(glob: str, exact: str | None) -> None:
    """For a level whose own delete_pattern() reads Redis's glob (django-redis's
    ShardClient): given ours as it was, "[!a]*" deleted the keys starting with "a"."""
    assert KeyPattern(glob, head="h:").redis_exact() == exact
    assert KeyPattern("a", regex=True).redis_exact() is None


def test_an_invalid_regex_is_a_value_error_and_a_re_error() -> None:
    """``check_pattern`` says ValueError for a bad pattern; re.error is not one."""
    import re

    from django_smartcache.core.patterns import InvalidRegex

    with pytest.raises(ValueError, match="missing \\)") as info:
        KeyPattern("(", regex=True)
    assert isinstance(info.value, re.error)
    assert isinstance(info.value, InvalidRegex)
