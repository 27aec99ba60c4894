"""``benchmarks.traces.load_file`` and ``hitratio --trace`` on the trace formats a user
brings: small files written here, one per format and per way they were misread."""

from __future__ import annotations

import bz2
import gzip
import lzma
import struct
import sys
import tracemalloc
from array import array
from collections.abc import Callable
from pathlib import Path

import pytest

from benchmarks import hitratio, traces


def cache2k_bytes(keys: list[int]) -> bytes:
    """The cache2k binary format, uncompressed: big-endian signed 32-bit keys."""
    data = array("i", keys)
    if sys.byteorder == "little":
        data.byteswap()
    return data.tobytes()


def peak_bytes_of(call: Callable[[], object]) -> int:
    """The peak of Python's allocations while ``call()`` runs."""
    tracemalloc.start()
    try:
        call()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("name", ["big.trace", "big.trace.xz"])
def test_a_limit_reads_only_the_requests_asked_for(tmp_path: Path, name: str) -> None:
    """load_file read (and decompressed) a whole binary trace, then kept its first
    ``limit`` keys: 1,000 requests of a 30M-request trace took 1.3 GB and 3 s."""
    raw = cache2k_bytes(list(range(1_000_000)))
    path = tmp_path / name
    # preset 0: a 256 KiB dictionary (the decoder allocates one of its size)
    path.write_bytes(lzma.compress(raw, preset=0) if name.endswith(".xz") else raw)
    keys: list[int] = []
    peak = peak_bytes_of(lambda: keys.extend(traces.load_file(path, limit=1_000)))
    assert keys == list(range(1_000))
    assert peak < 1_000_000, peak  # the whole file is 4 MB


def test_a_binary_file_cut_inside_a_key_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "cut.trace"
    path.write_bytes(cache2k_bytes([1, 2, 3])[:-1])
    with pytest.raises(ValueError, match="not a whole number of 32-bit keys"):
        traces.load_file(path)


@pytest.mark.parametrize("limit", [0, -5])
def test_a_limit_below_one_is_refused(tmp_path: Path, limit: int) -> None:
    """--limit 0 read one request of a text trace and none of a binary one."""
    text = tmp_path / "t.txt"
    text.write_text("a\nb\na\n")
    binary = tmp_path / "b.trace"
    binary.write_bytes(cache2k_bytes([1, 2, 1]))
    for path in (text, binary):
        with pytest.raises(ValueError, match="positive"):
            traces.load_file(path, limit=limit)


def test_the_command_refuses_a_limit_below_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "t.txt"
    path.write_text("a\nb\na\n")
    with pytest.raises(SystemExit) as exit_:
        hitratio.main(["--trace", str(path), "--limit", "0"])
    assert exit_.value.code == 2
    assert "--limit: '0' is not a positive whole number" in capsys.readouterr().err


def zstd_compress(data: bytes) -> bytes | None:
    """``data`` zstd-compressed by whatever this Python has, else ``None``."""
    try:
        from compression import zstd  # Python 3.14+

        return zstd.compress(data)  # type: ignore[no-any-return]
    except ImportError:
        pass
    try:
        import zstandard
    except ImportError:
        return None
    return zstandard.ZstdCompressor().compress(data)  # type: ignore[no-any-return]


COMPRESS = {".gz": gzip.compress, ".bz2": bz2.compress}


def test_traces_that_worked_are_read_as_before(tmp_path: Path) -> None:
    """Not a defect: cache2k ``.trace``/``.trace.xz`` and text traces read as before."""
    keys = [7, -1, 7, 2**31 - 1]
    (tmp_path / "b.trace").write_bytes(cache2k_bytes(keys))
    traces.write_file(tmp_path / "b.trace.xz", keys)
    assert traces.load_file(tmp_path / "b.trace") == keys
    assert traces.load_file(tmp_path / "b.trace.xz") == keys
    (tmp_path / "t.txt").write_text("x\n\n# note\ny\nx\n")
    assert traces.load_file(tmp_path / "t.txt") == [0, 1, 0]
    (tmp_path / "t.csv").write_text("# time, id, size\n0, 99, 5\n1, 98, 6\n2, 99, 5\n")
    assert traces.load_file(tmp_path / "t.csv", column=1) == [0, 1, 0]
    assert traces.load_file(tmp_path / "t.csv", column=1, limit=2) == [0, 1]
    (tmp_path / "t.txt.xz").write_bytes(lzma.compress(b"x\ny\nx\n"))
    assert traces.load_file(tmp_path / "t.txt.xz") == [0, 1, 0]
    (tmp_path / "n.txt").write_text("42932745\n42932746\n\n42932745\n7")
    assert traces.load_file(tmp_path / "n.txt") == [0, 1, 0, 2]
    # numbers first, then a word (auto reads the numbers as LIRS, then as text)
    (tmp_path / "w.txt").write_text("".join(f"{i}\n" for i in range(60)) + "ab\n0\n")
    assert traces.load_file(tmp_path / "w.txt") == [*range(60), 60, 0]


@pytest.mark.parametrize("suffix", sorted(COMPRESS))
def test_binary_and_text_traces_are_read_compressed(
    tmp_path: Path, suffix: str
) -> None:
    """A cache2k trace gzipped (``.trace.gz``) was read as text: 300 keys gave 7
    junk requests. bzip2 was read as text whatever the format."""
    binary = tmp_path / f"b.trace{suffix}"
    binary.write_bytes(COMPRESS[suffix](cache2k_bytes([7, -1, 7, 2**31 - 1] * 75)))
    assert traces.load_file(binary) == [7, -1, 7, 2**31 - 1] * 75
    assert traces.load_file(binary, limit=3) == [7, -1, 7]
    text = tmp_path / f"t.txt{suffix}"
    text.write_bytes(COMPRESS[suffix](b"a\nb\na\n"))
    assert traces.load_file(text) == [0, 1, 0]


def test_a_text_trace_named_like_a_binary_one_is_read_as_text(tmp_path: Path) -> None:
    """Caffeine ships its LIRS traces as gzipped text named ``NAME.trace.gz``: they
    were read as big-endian keys (or failed on a length not a multiple of 4)."""
    path = tmp_path / "loop.trace.gz"
    path.write_bytes(gzip.compress(b"10\n20\n10\n30\n"))
    assert traces.load_file(path) == [0, 1, 0, 2]
    plain = tmp_path / "loop.trace"
    plain.write_bytes(b"10\n20\n10\n")
    assert traces.load_file(plain) == [0, 1, 0]


def test_a_column_with_a_binary_trace_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--column with a ``.trace.xz`` file read its compressed bytes as text lines."""
    path = tmp_path / "x.trace.xz"
    traces.write_file(path, list(range(100)) * 3)
    with pytest.raises(ValueError, match="--column is for --format text"):
        traces.load_file(path, column=0)
    with pytest.raises(SystemExit) as exit_:
        hitratio.main(["--trace", str(path), "--column", "0"])
    assert exit_.value.code == 2
    assert "is read as cache2k" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"1\n2\n\x00\x00\x00\x07\n", "NUL byte"),
        (b"caf\xe9\n" * 10, "not UTF-8"),
        (b"k\n" * 40_000 + b"\x00\x01\x02\x03\n", "NUL byte"),  # after the sample
        (b"k\n" * 40_000 + b"\xff\xfe\n", "not UTF-8"),
    ],
)
def test_binary_data_is_not_read_as_text(
    tmp_path: Path, data: bytes, message: str
) -> None:
    """Bytes that are not text were decoded with replacement characters into keys."""
    path = tmp_path / "trace.dat"
    path.write_bytes(data)
    with pytest.raises(ValueError, match=message):
        traces.load_file(path)


def test_a_zstd_trace_without_a_decoder_says_to_decompress_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Python before 3.14 has no zstd: ``.zst`` files were decoded as text, giving one
    junk key per line of compressed bytes."""
    monkeypatch.setattr(traces, "_zstd_open", lambda: None)
    path = tmp_path / "twitter.csv.zst"
    path.write_bytes(b"\x28\xb5\x2f\xfd" + bytes(range(256)) * 4)
    with pytest.raises(ValueError, match=r"zstd-compressed.*`zstd -d .*twitter\.csv"):
        traces.load_file(path, column=1)


def test_a_zstd_trace_is_read_when_this_python_can(tmp_path: Path) -> None:
    data = zstd_compress(b"0, a, 10\n1, b, 10\n2, a, 10\n")
    if data is None or traces._zstd_open() is None:
        pytest.skip("no zstd in this Python (compression.zstd or zstandard)")
    path = tmp_path / "t.csv.zst"
    path.write_bytes(data)
    assert traces.load_file(path, column=1) == [0, 1, 0]


def test_the_command_takes_a_format(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A cache2k trace not named ``*.trace`` is refused unless --format names it."""
    path = tmp_path / "keys.bin"
    path.write_bytes(cache2k_bytes([k % 40 for k in range(400)]))
    with pytest.raises(SystemExit):
        hitratio.main(["--trace", str(path), "--no-bytes"])
    assert "give --format cache2k" in capsys.readouterr().err
    assert hitratio.main(["--trace", str(path), "--format", "cache2k"]) == 0
    assert "keys.bin" in capsys.readouterr().out


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_space_separated_trace_keeps_the_commas_of_its_keys(tmp_path: Path) -> None:
    """A line holding a comma was split on commas: three Wikipedia URLs with commas
    became one key, and a size field vanished on the lines whose URL had one."""
    every = write(
        tmp_path,
        "wiki.txt",
        "1 /wiki/Paris,_Texas 200\n2 /wiki/Austin,_Texas 200\n"
        "3 /wiki/Dallas,_Texas 200\n",
    )
    assert traces.load_file(every, column=1) == [0, 1, 2]
    some = write(
        tmp_path, "some.txt", "1 /wiki/A 200\n2 /wiki/Paris,_Texas 300\n3 /wiki/A 200\n"
    )
    assert traces.load_file(some, column=1) == [0, 1, 0]
    assert traces.load_file(some, column=2) == [0, 1, 0]


def test_a_quoted_csv_field_is_one_field(tmp_path: Path) -> None:
    """``"a,b"`` was split inside its quotes: the fields after it shifted."""
    path = write(tmp_path, "q.csv", '1,"a,b",10\n2,"a,c",10\n3,"a,b",10\n')
    assert traces.load_file(path, column=1) == [0, 1, 0]
    assert traces.load_file(path, column=2) == [0, 0, 0]


@pytest.mark.parametrize(
    "text",
    [
        "0;k0;10\n1;k1;10\n2;k0;20\n",
        "0\tNew York\t10\n1\tParis\t10\n2\tNew York\t20\n",
        "0|k0|10\n1|k1|10\n2|k0|20\n",
    ],
)
def test_a_csv_trace_with_another_separator_is_read(tmp_path: Path, text: str) -> None:
    """Only commas and white space were separators: a semicolon file had no field 1;
    a tab file split 'New York' in two."""
    path = write(tmp_path, "t.csv", text)
    assert traces.load_file(path, column=1) == [0, 1, 0]
    assert traces.load_file(path, column=2) == [0, 0, 1]


def test_sep_forces_the_separator(tmp_path: Path) -> None:
    path = write(tmp_path, "t.txt", "a,b c\na,d e\n")
    assert traces.load_file(path, sep="space") == [0, 1]
    assert traces.load_file(path, sep=",") == [0, 0]
    assert traces.load_file(path, sep=",", column=1) == [0, 1]
    with pytest.raises(ValueError, match="sep must be one character"):
        traces.load_file(path, sep=";;")
    with pytest.raises(ValueError, match="no field 1 in .*split on ';'"):
        traces.load_file(path, sep=";", column=1)


@pytest.mark.parametrize(
    ("text", "column"),
    [
        ("timestamp,key,size\n" + "".join(f"{i},k{i % 7},10\n" for i in range(70)), 1),
        ("time key size\n" + "".join(f"{i} k{i % 7} 10\n" for i in range(70)), 1),
        # libCacheSim's cloudPhysicsIO.csv
        (
            "version,time,op,size,lbn\n"
            + "".join(
                f"1,{5633898 + i},2a,512,{42932745 + i % 7}\n" for i in range(70)
            ),
            4,
        ),
        ("block\n" + "".join(f"{i % 7}\n" for i in range(70)), 0),
    ],
)
def test_a_header_line_is_not_a_request(tmp_path: Path, text: str, column: int) -> None:
    """A CSV header without '#' was read as a request: 71 requests over 8 keys."""
    path = write(tmp_path, "h.csv", text)
    keys = traces.load_file(path, column=column)
    assert (len(keys), len(set(keys))) == (70, 7)
    assert len(traces.load_file(path, column=column, header=False)) == 71


def test_header_forces_the_first_line_out(tmp_path: Path) -> None:
    path = write(tmp_path, "t.txt", "a\nb\na\n")
    assert traces.load_file(path, header=True) == [0, 1]
    with pytest.raises(ValueError, match="--header is for --format text"):
        traces.load_file(tmp_path / "missing.trace", header=True, format="cache2k")


def test_a_first_line_of_data_is_kept(tmp_path: Path) -> None:
    """Not a defect: what the header detection must leave alone."""
    for text, keys in [
        ("k1\nk2\nk1\n", [0, 1, 0]),  # no field is a number anywhere
        ("GET,/a\nGET,/b\nGET,/a\n", [0, 0, 0]),
        ("0,k0,10\n1,k1,10\n", [0, 1]),  # a number on the first line
        ("/a 1\n", [0]),  # one line
    ]:
        assert traces.load_file(write(tmp_path, "t.txt", text)) == keys, text


def test_a_byte_order_mark_is_not_part_of_the_first_key(tmp_path: Path) -> None:
    """A UTF-8 file saved with a BOM (as Windows tools do) had it in its first key."""
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbfa,1\nb,2\na,3\n")
    assert traces.load_file(path) == [0, 1, 0]


def test_a_negative_column_is_refused(tmp_path: Path) -> None:
    """--column -1 took the last field of each line."""
    path = write(tmp_path, "t.csv", "0,a,1\n1,b,1\n")
    with pytest.raises(ValueError, match="column must be 0 or more"):
        traces.load_file(path, column=-1)


def test_the_command_takes_sep_and_header(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "t.txt", "".join(f"k{i % 30};{i}\n" for i in range(300)))
    args = ["--trace", str(path), "--sep", ";", "--no-header", "--no-bytes"]
    assert hitratio.main(args) == 0
    assert "t.txt" in capsys.readouterr().out


ARC = "1000 3 0 1\n5 2 0 2\n1001 1 0 3\n"  # blocks 1000-1002, 5-6, 1001


@pytest.mark.parametrize("name", ["OLTP.lis", "P1.lis.gz"])
def test_an_arc_line_is_a_run_of_blocks(tmp_path: Path, name: str) -> None:
    """A line of the ARC traces, 'start_block n_blocks ignore request_no', was one
    request (the key being its start block): 1000 lines of 8 blocks gave 1,000
    requests for 8,000."""
    path = tmp_path / name
    data = ARC.encode()
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    assert traces.load_file(path) == [0, 1, 2, 3, 4, 1]
    assert traces.load_file(path, limit=4) == [0, 1, 2, 3]
    other = write(tmp_path, "arc.txt", ARC)
    assert traces.load_file(other, format="arc") == [0, 1, 2, 3, 4, 1]


def test_a_long_arc_run_is_cut_at_the_limit(tmp_path: Path) -> None:
    path = write(tmp_path, "big.lis", "0 2000000000 0 1\n")
    assert traces.load_file(path, limit=5) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("line", ["1000\n", "x 8 0 1\n", "1000 -1 0 1\n"])
def test_a_line_that_is_not_arc_is_reported(tmp_path: Path, line: str) -> None:
    path = write(tmp_path, "t.lis", "1 1 0 1\n" + line)
    with pytest.raises(ValueError, match=r"t\.lis:2: .* is not an ARC trace line"):
        traces.load_file(path)


@pytest.mark.parametrize("name", ["multi.trc", "multi1.trace.gz", "blocks.txt"])
def test_lirs_separator_lines_are_skipped(tmp_path: Path, name: str) -> None:
    """The LIRS traces' '*' lines (Caffeine's LirsTraceReader skips them) were keys:
    7 requests over 4 keys for 6 over 3. Caffeine names them NAME.trace.gz."""
    path = tmp_path / name
    data = b"1\n2\n3\n*\n1\n2\n3\n"
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    assert traces.load_file(path) == [0, 1, 2, 0, 1, 2]
    assert traces.load_file(path, limit=4) == [0, 1, 2, 0]


def test_a_line_that_is_not_lirs_is_reported(tmp_path: Path) -> None:
    path = write(tmp_path, "t.trc", "1\n2\n/a\n")
    with pytest.raises(
        ValueError, match=r"t\.trc:3: '/a' is not a LIRS.*--format text"
    ):
        traces.load_file(path)
    assert traces.load_file(path, format="text") == [0, 1, 2]


def test_text_options_with_an_arc_or_lirs_file_are_refused(tmp_path: Path) -> None:
    """Column 0 of an ARC file is its start blocks: asked for, it must be said."""
    path = write(tmp_path, "t.lis", ARC)
    with pytest.raises(ValueError, match="is read as arc: give --format text"):
        traces.load_file(path, column=0)
    assert traces.load_file(path, column=0, format="text") == [0, 1, 2]


def test_the_command_takes_arc_and_lirs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "t.log", "".join(f"{i % 50} 3 0 {i}\n" for i in range(200)))
    assert hitratio.main(["--trace", str(path), "--format", "arc", "--no-bytes"]) == 0
    assert "t.log" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        hitratio.main(["--trace", str(path), "--format", "lirs"])
    assert "is not a LIRS trace line" in capsys.readouterr().err


def oracle_bytes(records: list[tuple[int, int]]) -> bytes:
    """libCacheSim's oracleGeneral records <IQIq for (obj_id, obj_size) pairs: the
    timestamp counts seconds, next_access_vtime is the (1-based) place of the next
    request of the object, or -1."""
    out = []
    for place, (obj_id, size) in enumerate(records):
        later = [i for i, (o, _) in enumerate(records) if o == obj_id and i > place]
        out.append(
            struct.pack(
                "<IQIq", 1000 + place, obj_id, size, later[0] + 1 if later else -1
            )
        )
    return b"".join(out)


ORACLE = [(2**64 - 1, 737), (5, 248), (2**64 - 1, 737), (7, 54), (5, 248)]


@pytest.mark.parametrize(
    "name", ["w.oracleGeneral.bin", "w.oracleGeneral.bin.xz", "renamed.bin"]
)
def test_an_oracle_general_trace_is_read_by_its_records(
    tmp_path: Path, name: str
) -> None:
    """libCacheSim's oracleGeneral binary was decoded as text: cloudPhysicsIO's
    113,872 records gave 51,356 junk requests."""
    path = tmp_path / name
    data = oracle_bytes(ORACLE)
    path.write_bytes(lzma.compress(data) if name.endswith(".xz") else data)
    assert traces.load_file(path) == [0, 1, 0, 2, 1]
    assert traces.load_file(path, limit=2) == [0, 1]
    assert traces.load_trace(path) == ([0, 1, 0, 2, 1], [737, 248, 737, 54, 248])
    assert traces.load_trace(path, limit=3) == ([0, 1, 0], [737, 248, 737])


def test_a_zstd_oracle_general_trace_is_read_when_this_python_can(
    tmp_path: Path,
) -> None:
    data = zstd_compress(oracle_bytes(ORACLE))
    if data is None or traces._zstd_open() is None:
        pytest.skip("no zstd in this Python (compression.zstd or zstandard)")
    path = tmp_path / "w.oracleGeneral.zst"
    path.write_bytes(data)
    assert traces.load_trace(path) == ([0, 1, 0, 2, 1], [737, 248, 737, 54, 248])
    assert traces.load_sizes(path, limit=2) == [737, 248]


def test_an_oracle_general_limit_reads_only_the_records_asked_for(
    tmp_path: Path,
) -> None:
    path = tmp_path / "big.oracleGeneral.bin"
    record = struct.Struct("<IQIq")
    path.write_bytes(b"".join(record.pack(i, i % 1000, 10, -1) for i in range(200_000)))
    keys: list[int] = []
    peak = peak_bytes_of(lambda: keys.extend(traces.load_file(path, limit=1_000)))
    assert keys == list(range(1_000))
    assert peak < 1_000_000, peak  # the whole file is 4.8 MB


def test_an_oracle_general_file_cut_inside_a_record_is_reported(
    tmp_path: Path,
) -> None:
    path = tmp_path / "w.oracleGeneral.bin"
    path.write_bytes(oracle_bytes(ORACLE)[:-5])
    with pytest.raises(ValueError, match="19 bytes into a record"):
        traces.load_file(path)
    with pytest.raises(ValueError, match="--column is for --format text"):
        traces.load_file(tmp_path / "w.oracleGeneral.bin", column=1)


def test_the_command_replays_an_oracle_general_trace_with_its_sizes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The byte-budget table of a trace with sizes was only for a cache2k trace with a
    NAME.sizes.xz file."""
    path = tmp_path / "w.oracleGeneral.bin"
    record = struct.Struct("<IQIq")
    path.write_bytes(
        b"".join(record.pack(i, i * 7 % 40, 100 + i * 7 % 40, -1) for i in range(400))
    )
    assert hitratio.main(["--trace", str(path), "--limit", "300"]) == 0
    out = capsys.readouterr().out
    assert "Byte budget: w.oracleGeneral.bin, 300 requests over 40 keys" in out
