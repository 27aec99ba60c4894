"""benchmarks/hitratio.py --relabel: the same stream under other key names."""

from __future__ import annotations

from benchmarks import hitratio, workloads


def test_a_relabelling_renames_keys_one_to_one() -> None:
    keys = workloads.zipf(5_000, 500, 0.9, seed=3)
    renamed = hitratio.relabelled(keys, 1)
    assert renamed == hitratio.relabelled(keys, 1)  # seeded
    assert renamed != hitratio.relabelled(keys, 2)
    rename = dict(zip(keys, renamed, strict=True))
    assert len(set(rename.values())) == len(rename)  # one-to-one
    assert [rename[k] for k in keys] == renamed
    # a policy that ignores names gives the same hits
    assert hitratio.replay("lru", renamed, 50) == hitratio.replay("lru", keys, 50)


def test_the_command_prints_the_spread(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    trace = tmp_path / "small.txt"
    trace.write_text("".join(f"k{k}\n" for k in workloads.zipf(3_000, 300, 0.9)))
    argv = ["--trace", str(trace), "--relabel", "2", "--no-bytes", "--no-store"]
    assert hitratio.main(argv) == 0
    out = capsys.readouterr().out
    assert "over 2 relabellings" in out
    assert out.count(" mean ") == 3
