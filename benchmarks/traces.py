"""Real access traces for the hit-ratio benchmark: the bundled ones, or any file given.

The bundled traces (cache2k, CC BY 4.0; origin, licence and credit in
``benchmarks/data/README.md``) are xz-compressed streams of big-endian signed 32-bit
keys, one per request. Every ``*.trace.xz`` / ``*.trace`` file of :data:`TRACE_DIR`, or
of its ``fetched/`` folder (where ``python -m benchmarks fetch-traces`` writes public
traces it converts; not committed), is a trace. A ``NAME.sizes.xz`` file beside
``NAME.trace.xz``, in the same format, holds the size in bytes of each request.
:func:`load_file` also reads the other formats of :data:`FORMATS` (text...), plain or
compressed, so a trace nobody here has seen can be replayed with
``python -m benchmarks hitratio --trace PATH [--format F]``.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import itertools
import lzma
import os
import re
import struct
import sys
from array import array
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

__all__ = [
    "FETCH_DIR",
    "FORMATS",
    "TRACES",
    "TRACE_DIR",
    "available",
    "detect_format",
    "load",
    "load_file",
    "load_sizes",
    "load_trace",
    "sizes_file",
    "trace_dirs",
    "write_file",
]

#: Where the traces live: ``$SMARTCACHE_TRACES``, else ``benchmarks/data``.
TRACE_DIR = Path(
    os.environ.get("SMARTCACHE_TRACES", Path(__file__).resolve().parent / "data")
)

#: Where ``fetch-traces`` writes: ``$SMARTCACHE_TRACES``, else ``benchmarks/data/fetched``
#: (git-ignored: downloaded traces are never committed).
FETCH_DIR = TRACE_DIR if "SMARTCACHE_TRACES" in os.environ else TRACE_DIR / "fetched"

#: Requests used of a named trace: orm-busy is cut to its first 2,000,000 requests, the
#: prefix its published reference ratios were measured on; others are used whole.
TRACES: dict[str, int | None] = {"orm-busy": 2_000_000}

_BINARY_SUFFIXES = (".trace.xz", ".trace")
_SIZES_SUFFIX = ".sizes.xz"
_XZ_MAGIC = b"\xfd7zXZ\x00"
_GZIP_MAGIC = b"\x1f\x8b"
_BZIP2_MAGIC = b"BZh"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_COMPRESSED_SUFFIXES = (".gz", ".xz", ".bz2", ".zst", ".zstd")
_SNIFF_BYTES = 1 << 16
_SAMPLE_LINES = 50
_DELIMITERS = (",", ";", "\t", "|")
_WHITESPACE_SEPS = ("space", "spaces", "whitespace", " ")
_LIRS_LINE = re.compile(r"[-+]?\d+|\*")
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?|0[xX][0-9a-fA-F]+")

#: The ``format`` values of :func:`load_file` (``--format`` of ``hitratio``).
FORMATS = ("auto", "cache2k", "text", "arc", "lirs", "oracle-general")
_BINARY_FORMATS = ("cache2k", "oracle-general")
#: An oracleGeneral record (timestamp, next_access_vtime skipped): obj_id, obj_size.
_ORACLE_RECORD = struct.Struct("<4xQI8x")
_ORACLE_CHUNK = 1 << 16


def _name(path: Path) -> str:
    for suffix in _BINARY_SUFFIXES:
        if path.name.endswith(suffix):
            return path.name[: -len(suffix)]
    return path.name


def trace_dirs() -> list[Path]:
    """The folders scanned for traces: :data:`TRACE_DIR`, then its ``fetched/``."""
    return [TRACE_DIR, TRACE_DIR / "fetched"]


def _find(name: str) -> Path | None:
    for folder in trace_dirs():
        for suffix in _BINARY_SUFFIXES:
            path = folder / f"{name}{suffix}"
            if path.is_file():
                return path
    return None


def available() -> list[str]:
    """The names of the binary traces in :func:`trace_dirs`, sorted (once each)."""
    return sorted(
        {
            _name(path)
            for folder in trace_dirs()
            if folder.is_dir()
            for path in folder.iterdir()
            if path.is_file() and path.name.endswith(_BINARY_SUFFIXES)
        }
    )


def load(name: str, limit: int | None = None) -> list[int]:
    """The keys of trace ``name`` (its standard prefix, or ``limit``); the first folder of
    :func:`trace_dirs` holding it wins."""
    path = _find(name)
    if path is None:
        raise FileNotFoundError(
            f"no trace {name!r} in {' or '.join(map(str, trace_dirs()))}"
        )
    return load_file(path, limit=limit if limit else TRACES.get(name))


def sizes_file(trace: str | Path) -> Path | None:
    """The ``NAME.sizes.xz`` file of a trace: ``trace`` is a name (str) or a binary
    trace file (Path); ``None`` when there is none."""
    path = _find(trace) if isinstance(trace, str) else Path(trace)
    if path is None or not path.name.endswith(_BINARY_SUFFIXES):
        return None
    sizes = path.with_name(_name(path) + _SIZES_SUFFIX)
    return sizes if sizes.is_file() else None


def load_sizes(trace: str | Path, limit: int | None = None) -> list[int] | None:
    """The size in bytes of each request of a trace (a name, or a trace file as a Path),
    cut like its keys (``limit``, else a named trace's standard prefix): its sizes
    file, or the records of an oracleGeneral file (named ``*oracleGeneral*``); ``None``
    when it has none."""
    if isinstance(trace, Path) and "oraclegeneral" in _base_name(trace):
        return _read_oracle(trace, limit, sizes=True)[1]
    path = sizes_file(trace)
    if path is None:
        return None
    if limit is None and isinstance(trace, str):
        limit = TRACES.get(trace)
    return _read_binary(path, limit)


def write_file(path: str | Path, values: array[int] | Sequence[int]) -> None:
    """Write ``values`` in the cache2k binary format (xz, big-endian signed 32-bit)."""
    data = values if isinstance(values, array) else array("i", values)
    if data.typecode != "i" or data.itemsize != 4:
        raise TypeError("write_file wants array('i') of 32-bit ints")
    if sys.byteorder == "little":
        data = array("i", data)
        data.byteswap()
    with lzma.open(path, "wb") as fh:
        fh.write(data.tobytes())


def _check_limit(limit: int | None) -> None:
    if limit is not None and (isinstance(limit, bool) or limit <= 0):
        raise ValueError(f"limit must be a positive number of requests, not {limit!r}")


def _read_exactly(fh: IO[bytes], size: int) -> bytes:
    """Up to ``size`` bytes (fewer only at the end of the stream)."""
    chunks = []
    while size > 0:
        chunk = fh.read(min(size, 1 << 24))
        if not chunk:
            break
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _read_binary(path: Path, limit: int | None) -> list[int]:
    """The 32-bit keys of a cache2k binary file; with ``limit``, only its first
    ``4 * limit`` bytes are read (decompressed)."""
    _check_limit(limit)
    with _open(path) as fh:
        raw = fh.read() if limit is None else _read_exactly(fh, 4 * limit)
    if len(raw) % 4:
        raise ValueError(
            f"{path}: {len(raw):,} bytes is not a whole number of 32-bit keys "
            "(not a cache2k binary trace?)"
        )
    data = array("i")
    data.frombytes(raw)
    del raw
    if data.itemsize != 4:  # pragma: no cover - array("i") is 32-bit on CPython
        raise RuntimeError("array('i') is not 32-bit here")
    if sys.byteorder == "little":
        data.byteswap()  # stored big-endian; array() reads native order
    return data.tolist()


def _zstd_open() -> Callable[[Path], IO[bytes]] | None:
    """How this Python opens a zstd stream: ``compression.zstd`` (Python 3.14+), else
    the ``zstandard`` package when installed; ``None`` when neither is there."""
    try:
        from compression import zstd
    except ImportError:
        pass
    else:
        return lambda path: zstd.open(path, "rb")
    try:
        import zstandard
    except ImportError:
        return None
    return lambda path: zstandard.open(path, "rb")


def _open(path: Path) -> IO[bytes]:
    """``path`` opened for reading bytes, decompressed by its magic bytes (xz, gzip,
    bzip2, zstd) whatever its name."""
    with open(path, "rb") as fh:
        head = fh.read(6)
    if head.startswith(_XZ_MAGIC):
        return lzma.open(path, "rb")
    if head.startswith(_GZIP_MAGIC):
        return gzip.open(path, "rb")
    if head.startswith(_BZIP2_MAGIC):
        return bz2.open(path, "rb")
    if head.startswith(_ZSTD_MAGIC):
        opener = _zstd_open()
        if opener is None:
            raise ValueError(
                f"{path} is zstd-compressed, which this Python cannot read (the "
                "standard library reads zstd from Python 3.14, or install the "
                f"'zstandard' package): decompress it first, `zstd -d {path}`, and "
                "give the decompressed file"
            )
        return opener(path)
    return open(path, "rb")


def _head(path: Path) -> bytes:
    """The first bytes of a file, decompressed."""
    with _open(path) as fh:
        return _read_exactly(fh, _SNIFF_BYTES)


def _not_text(head: bytes) -> str | None:
    """Why ``head`` (the start of a file) is not UTF-8 text, or ``None`` when it is."""
    if b"\0" in head:
        return f"a NUL byte at offset {head.index(0)}"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A multi-byte character cut by the end of the sample is still text.
        if not (exc.reason == "unexpected end of data" and exc.end == len(head)):
            return f"bytes that are not UTF-8 at offset {exc.start}"
    return None


def _base_name(path: Path) -> str:
    """The file's name in lower case, less a compression suffix (``.gz``...)."""
    name = path.name.lower()
    for suffix in _COMPRESSED_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _head_lines(head: bytes, whole: bool) -> list[str]:
    """The first data lines (neither blank nor ``#`` comments) of a text file's
    ``head``; its last line is left out unless ``head`` is the ``whole`` file."""
    lines = head.decode("utf-8-sig", errors="ignore").splitlines()
    if not whole:
        lines = lines[:-1]
    data = (line.strip() for line in lines)
    return [line for line in data if line and line[0] != "#"][:_SAMPLE_LINES]


def _named_format(name: str) -> str | None:
    """The format a file's name (lower case, less a compression suffix) says."""
    if "oraclegeneral" in name:
        return "oracle-general"
    if name.endswith(".lis"):
        return "arc"
    if name.endswith(".trc"):
        return "lirs"
    return None


def detect_format(path: str | Path, *, text_options: bool = False) -> str:
    """The format ``auto`` reads ``path`` as (one of :data:`FORMATS`).

    By name first (less a compression suffix): a name holding ``oracleGeneral``
    (``*.oracleGeneral.bin``, ``*.oracleGeneral.zst``...) is ``oracle-general``,
    ``*.lis`` is ``arc``, ``*.trc`` ``lirs``. Else by content: a file whose first 64 KiB
    (decompressed) are UTF-8 text without NUL bytes is ``lirs`` when its first data
    lines are each one integer or ``*`` (and ``text_options``, a column, separator or
    header, was not given; :func:`load_file` reads it as text if a later line is not
    one), else ``text``; a file named ``*.trace`` needs a line break there to be text. A
    file that is not text is ``cache2k`` if named ``*.trace`` (``.trace.xz``,
    ``.trace.gz``...), else ``oracle-general`` if its first records read as such
    (:func:`_looks_like_oracle`); any other binary file is refused, naming the formats
    to force.
    """
    path = Path(path)
    name = _base_name(path)
    named = _named_format(name)
    if named is not None:
        return named
    head = _head(path)
    why = _not_text(head)
    if why is None and (b"\n" in head or not name.endswith(".trace")):
        lines = _head_lines(head, whole=len(head) < _SNIFF_BYTES)
        if not text_options and lines and all(_LIRS_LINE.fullmatch(x) for x in lines):
            return "lirs"
        return "text"
    if name.endswith(".trace"):
        return "cache2k"
    if _looks_like_oracle(head):
        return "oracle-general"
    raise ValueError(
        f"{path} is not a text trace ({why}) and its name does not say which binary "
        "format it is: give --format cache2k (big-endian 32-bit keys) or "
        "--format oracle-general (libCacheSim's 24-byte records)"
        + (" or --format text" if text_options else "")
    )


def _lines(path: Path, where: list[int]) -> Iterator[str]:
    """The data lines of a text trace (neither blank nor ``#`` comments), less their
    line breaks; ``where[0]`` is the number of the line last given. The file is read
    as UTF-8: a NUL byte or bytes that are not UTF-8 raise ``ValueError`` (binary data
    read as text gives junk keys)."""
    number = 0
    formats = "|".join(_BINARY_FORMATS)
    with io.TextIOWrapper(_open(path), encoding="utf-8-sig", errors="strict") as fh:
        try:
            for number, line in enumerate(fh, 1):
                if "\0" in line:
                    raise ValueError(
                        f"{path}:{number}: a NUL byte: binary data, not a text trace "
                        f"(--format {formats}?)"
                    )
                stripped = line.strip()
                if stripped and stripped[0] != "#":
                    where[0] = number
                    yield line.rstrip("\r\n")
        except UnicodeDecodeError as exc:
            raise ValueError(
                f"{path}: near line {number + 1}, bytes that are not UTF-8 "
                f"({exc.reason}): binary data (--format {formats}?) or another "
                "encoding (convert it, e.g. iconv -f latin1 -t utf-8)"
            ) from None


def _split(line: str, sep: str | None) -> list[str]:
    """The fields of one line: on runs of white space (``sep`` None), else as CSV."""
    if sep is None:
        return line.split()
    return [f.strip() for f in next(csv.reader([line], **_csv_options(sep)), [])]


def _csv_options(sep: str) -> dict[str, Any]:
    return {"delimiter": sep, "skipinitialspace": True, "strict": False}


def _choose_sep(sample: list[str]) -> str | None:
    """The separator of a text trace, from its first data lines (a header aside): the
    first of ``,`` ``;`` tab ``|`` that splits every line into the same number (2 or
    more) of CSV fields, unless white space splits every line into more; else white
    space if it splits every line alike; else the first of them found on every line;
    else white space (``None``)."""
    lines = sample[1:] if len(sample) > 1 else sample
    widths = {len(line.split()) for line in lines}
    spaces = widths.pop() if len(widths) == 1 else None
    for sep in _DELIMITERS:
        counts = {len(_split(line, sep)) for line in lines}
        if len(counts) == 1 and (n := counts.pop()) >= 2 and (spaces or 0) <= n:
            return sep
    if spaces is not None:
        return None
    for sep in _DELIMITERS:
        if all(sep in line for line in lines):
            return sep
    return None


def _is_number(field: str) -> bool:
    return _NUMBER.fullmatch(field.strip()) is not None


def _looks_like_header(first: list[str], rest: list[list[str]]) -> bool:
    """A first line none of whose fields is a number, over lines where some field is
    a number on every one (``timestamp,key,size`` over ``0,k0,10``...)."""
    if not rest or any(_is_number(field) for field in first):
        return False
    return any(
        all(j < len(row) and _is_number(row[j]) for row in rest)
        for j in range(len(first))
    )


def _text_sep(sep: str | None) -> str | None:
    """``--sep`` as :func:`_split` takes it: ``None`` for white space."""
    if sep in _WHITESPACE_SEPS:
        return None
    if sep in ("tab", "\\t"):
        return "\t"
    if sep is None or len(sep) != 1 or sep in '"\r\n':
        raise ValueError(
            "sep must be one character (',' ';' '|' ...), 'tab' or 'space', "
            f"not {sep!r}"
        )
    return sep


def _read_text(
    path: Path,
    column: int | None,
    limit: int | None,
    sep: str | None = None,
    header: bool | None = None,
) -> list[int]:
    """The keys of a text trace (see :func:`load_file`)."""
    field = column or 0
    where = [0]
    lines = _lines(path, where)
    sample = [(where[0], line) for line in itertools.islice(lines, _SAMPLE_LINES)]
    chosen = (
        _choose_sep([line for _, line in sample]) if sep is None else _text_sep(sep)
    )
    if header is None:
        rows = [_split(line, chosen) for _, line in sample]
        header = _looks_like_header(rows[0], rows[1:]) if rows else False
    if header:
        sample = sample[1:]

    def text() -> Iterator[str]:
        for number, line in sample:
            where[0] = number
            yield line
        yield from lines

    rows_of: Iterator[list[str]] = (
        (line.split() for line in text())
        if chosen is None
        else csv.reader(text(), **_csv_options(chosen))
    )
    ids: dict[str, int] = {}
    out: list[int] = []
    try:
        for parts in rows_of:
            if field >= len(parts):
                raise ValueError(
                    f"{path}:{where[0]}: no field {field} in {parts!r:.80} "
                    f"(fields split on {_sep_name(chosen)}; --sep to choose)"
                )
            out.append(ids.setdefault(parts[field].strip(), len(ids)))
            if limit is not None and len(out) >= limit:
                break
    except csv.Error as exc:
        raise ValueError(f"{path}:{where[0]}: {exc}") from None
    return out


def _sep_name(sep: str | None) -> str:
    return {None: "white space", "\t": "tabs"}.get(sep, repr(sep))


def load_file(
    path: str | Path,
    *,
    column: int | None = None,
    limit: int | None = None,
    format: str = "auto",
    sep: str | None = None,
    header: bool | None = None,
) -> list[int]:
    """The requests of a trace file as keys, at most ``limit`` of them (only as much of
    the file is read).

    ``format`` is one of :data:`FORMATS`; ``auto`` (the default) is
    :func:`detect_format`. ``cache2k``: big-endian signed 32-bit keys, used as they are.
    ``oracle-general``: libCacheSim's 24-byte records (:func:`_read_oracle`). ``arc``,
    ``lirs``: the ARC and LIRS papers' traces (:func:`_read_arc`, :func:`_read_lirs`).
    Keys of all formats but cache2k are numbered in order of first appearance. ``text``:
    one request per line, blank lines and ``#`` comments skipped, the key being field
    ``column`` (default 0); a file that is not UTF-8 text, or holds a NUL byte, is
    refused. The separator is chosen once per file from its first 50 data lines
    (:func:`_choose_sep`), or given as ``sep`` (one character, ``"tab"`` or ``"space"``:
    runs of white space); fields are read as CSV (``"a,b"`` is one field) unless split
    on white space. ``header`` True skips the first data line, False keeps it, None
    (default) skips it when none of its fields is a number while some field is a number
    on each of the next 49. Plain, gzip, xz, bzip2 and zstd (when this Python reads it)
    files are read alike, by their magic bytes. ``column``, ``sep`` and ``header`` are
    for text only: given with another format they raise ``ValueError``.
    """
    return _load(
        Path(path),
        sizes=False,
        column=column,
        limit=limit,
        format=format,
        sep=sep,
        header=header,
    )[0]


def load_trace(path: str | Path, **options: Any) -> tuple[list[int], list[int] | None]:
    """The keys of a trace file as :func:`load_file` reads them (``options`` are its
    keyword arguments), and the size in bytes of each request when the trace has them:
    the ``obj_size`` of an oracleGeneral trace's records, or a cache2k trace's
    ``NAME.sizes.xz`` file (cut at ``limit`` too); ``None`` for the other formats."""
    return _load(Path(path), sizes=True, **options)


def _load(
    path: Path,
    *,
    sizes: bool,
    column: int | None = None,
    limit: int | None = None,
    format: str = "auto",
    sep: str | None = None,
    header: bool | None = None,
) -> tuple[list[int], list[int] | None]:
    _check_limit(limit)
    if format not in FORMATS:
        raise ValueError(
            f"unknown trace format {format!r}; known: {', '.join(FORMATS)}"
        )
    if column is not None and column < 0:
        raise ValueError(f"column must be 0 or more, not {column}")
    if sep is not None:
        _text_sep(sep)
    given = [
        option
        for option, value in (("column", column), ("sep", sep), ("header", header))
        if value is not None
    ]
    by_content = format == "auto" and _named_format(_base_name(path)) is None
    if format == "auto":
        format = detect_format(path, text_options=bool(given))
    if given and format != "text":
        raise ValueError(
            f"--{given[0]} is for --format text; {path} is read as {format}: give "
            "--format text to read it as text"
        )
    if format == "cache2k":
        keys = _read_binary(path, limit)
        return keys, load_sizes(path, limit) if sizes else None
    if format == "oracle-general":
        return _read_oracle(path, limit, sizes)
    if format == "arc":
        return _read_arc(path, limit), None
    if format == "lirs":
        try:
            return _read_lirs(path, limit), None
        except _NotLirs:
            if not by_content:
                raise
            # One number a line at first, then not: a text trace, read as before.
    return _read_text(path, column, limit, sep, header), None


def _read_oracle(
    path: Path, limit: int | None, sizes: bool
) -> tuple[list[int], list[int] | None]:
    """libCacheSim's oracleGeneral binary format: 24-byte little-endian records
    ``<IQIq`` (timestamp u32, obj_id u64, obj_size u32, next_access_vtime i64), as
    Caffeine's OracleGeneralTraceReader reads it; read in chunks, up to ``limit``
    records. The obj_ids are numbered in order of first appearance."""
    ids: dict[int, int] = {}
    keys: list[int] = []
    weights: list[int] = []
    size = _ORACLE_RECORD.size
    with _open(path) as fh:
        while limit is None or len(keys) < limit:
            want = (
                _ORACLE_CHUNK
                if limit is None
                else min(_ORACLE_CHUNK, limit - len(keys))
            )
            raw = _read_exactly(fh, want * size)
            if len(raw) % size:
                raise ValueError(
                    f"{path}: ends {len(raw) % size} bytes into a record: not an "
                    f"oracleGeneral trace (records of {size} bytes)?"
                )
            records = _ORACLE_RECORD.iter_unpack(raw)
            if sizes:
                records = list(records)
                weights.extend(obj_size for _, obj_size in records)
            setdefault = ids.setdefault
            keys.extend([setdefault(obj_id, len(ids)) for obj_id, _ in records])
            if len(raw) < want * size:
                break
    return keys, weights if sizes else None


def _looks_like_oracle(head: bytes) -> bool:
    """Whether ``head`` (a binary file's start) reads as oracleGeneral records: at least
    two, each one's next_access_vtime -1 (none) or after its own place, below 2**40."""
    count = len(head) // _ORACLE_RECORD.size
    if count < 2:
        return False
    records = struct.iter_unpack("<IQIq", head[: count * _ORACLE_RECORD.size])
    return all(
        nxt == -1 or index < nxt < 2**40 for index, (*_, nxt) in enumerate(records)
    )


def _read_arc(path: Path, limit: int | None) -> list[int]:
    """The ARC traces' format: a line ``start_block n_blocks ignore request_no`` is
    ``n_blocks`` requests, of blocks ``start_block`` .. ``start_block + n_blocks - 1``
    (as Caffeine's ArcTraceReader reads it)."""
    where = [0]
    ids: dict[int, int] = {}
    out: list[int] = []
    for line in _lines(path, where):
        parts = line.split()
        try:
            start, count = int(parts[0]), int(parts[1])
        except (IndexError, ValueError):
            count = -1
        if count < 0:
            raise ValueError(
                f"{path}:{where[0]}: {line!r:.80} is not an ARC trace line "
                "'start_block n_blocks ignore request_no'"
            )
        if limit is not None:
            count = min(count, limit - len(out))
        out.extend(
            ids.setdefault(block, len(ids)) for block in range(start, start + count)
        )
        if limit is not None and len(out) >= limit:
            break
    return out


class _NotLirs(ValueError):
    """A line of a file read as LIRS is not one."""


def _read_lirs(path: Path, limit: int | None) -> list[int]:
    """The LIRS traces' format: one block number a line, lines ``*`` (separators)
    skipped (as Caffeine's LirsTraceReader reads it)."""
    where = [0]
    ids: dict[int, int] = {}
    out: list[int] = []
    for line in _lines(path, where):
        text = line.strip()
        if text == "*":
            continue
        try:
            block = int(text)
        except ValueError:
            raise _NotLirs(
                f"{path}:{where[0]}: {text!r:.80} is not a LIRS trace line (one "
                "block number, or '*'): give --format text to read it as text"
            ) from None
        out.append(ids.setdefault(block, len(ids)))
        if limit is not None and len(out) >= limit:
            break
    return out
