"""``embed --shard I/N``: deterministic disjoint shares (SLURM arrays), run side by side."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgepath.embed.jobs import parse_shard, shard
from edgepath.errors import ConfigError


@pytest.mark.parametrize("n_slides", [0, 1, 5, 23])
@pytest.mark.parametrize("count", [1, 2, 3, 7])
def test_every_slide_in_exactly_one_shard(n_slides: int, count: int) -> None:
    slides = [
        Path(f"/scans/{d}/case-{i:03d}.svs")
        for i, d in zip(range(n_slides), "abcdefghijklmnopqrstuvw", strict=False)
    ]
    shares = [shard(slides, i, count) for i in range(count)]
    taken = [p for share in shares for p in share]
    assert sorted(taken) == sorted(slides)  # every slide once: none lost, none twice
    assert max(map(len, shares)) - min(map(len, shares)) <= 1  # balanced
    shuffled = random.Random(count).sample(slides, len(slides))
    assert [shard(shuffled, i, count) for i in range(count)] == shares  # order of the input


def test_shard_syntax() -> None:
    assert parse_shard("0/8") == (0, 8) and parse_shard("7/8") == (7, 8)
    for bad in ("8/8", "-1/4", "1", "a/b", "1/0"):
        with pytest.raises(ConfigError, match="expected I/N"):
            parse_shard(bad)


def test_bad_shard_is_one_line_exit_2(run_cli, tiny_model, sample_slide, tmp_path) -> None:
    code, out, err = run_cli(
        "embed", str(tiny_model), str(sample_slide), "-o", str(tmp_path), "--shard", "2/2"
    )
    assert code == 2 and out == ""
    assert err.strip().count("\n") == 0 and "--shard 2/2" in err


def test_two_shards_side_by_side(tiny_model, sample_slide, tmp_path) -> None:
    """Two processes at once, one shard each: every slide embedded once, nobody waits on a lock."""
    scans = tmp_path / "scans"
    scans.mkdir()
    names = ["a", "b", "c", "d", "e"]
    for n in names:
        shutil.copy(sample_slide, scans / f"{n}.svs")
    out = tmp_path / "features"
    repo = Path(__file__).resolve().parents[2]
    cmd = [sys.executable, "-m", "edgepath", "embed", str(tiny_model), str(scans), "-o", str(out)]
    cmd += ["--engine", "onnxruntime", "--workers", "0", "--json"]
    procs = [
        subprocess.Popen(
            [*cmd, "--shard", f"{i}/2"],
            cwd=repo,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(os.environ),
        )
        for i in range(2)
    ]
    results = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=600)
        assert p.returncode == 0, stderr
        results.append(json.loads(stdout))
    assert [r["shard"] for r in results] == ["0/2", "1/2"]
    assert [r["done"] for r in results] == [3, 2]  # a c e | b d
    assert all(r["busy"] == 0 and r["skipped"] == 0 and r["failed"] == 0 for r in results)
    done = [Path(x["slide"]).stem for r in results for x in r["results"]]
    assert sorted(done) == names
    assert sorted(p.name for p in out.iterdir()) == [f"{n}.h5" for n in names]
