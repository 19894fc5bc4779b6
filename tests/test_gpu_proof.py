"""benchmarks/gpu_proof.sh: its CPU dry run (tiny models, every part) and its combine step, so
that the script a lent GPU runs cannot rot between the sessions that have one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_proof.sh"
PARTS = (
    "doctor",
    "throughput-students",
    "throughput-teachers",
    "distill-xmag",
    "distill-h0mini",
    "embed",
    "pytest-gpu",
)


def _run(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "PY": sys.executable, **env},
    )


@pytest.mark.slow
def test_dry_run_writes_every_part_and_the_combined_result(tmp_path: Path) -> None:
    proc = _run("--dry-run", str(tmp_path))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) <= 8, files  # the device tool brings back at most 8 files
    for part in PARTS:
        assert isinstance(json.loads((tmp_path / f"{part}.json").read_text()), dict), part
    (combined,) = tmp_path.glob("gpu-*.json")
    d = json.loads(combined.read_text())
    assert combined.name == f"gpu-dry-run-cpu-{d['date']}.json"
    assert d["kind"] == "gpu-proof" and d["dry_run"] is True and d["all_ok"] is True
    assert list(d["parts"]) == list(PARTS)
    assert all(p["status"] == "ok" and p["result"] for p in d["parts"].values()), d["parts"]
    assert any("TensorRT" in line for line in d["not_executed"])
    s = d["summary"]
    assert {r["model"] for r in s["throughput"]} == {"vit-test14", "tiny-teacher"}
    assert all(r["tiles_per_s"] > 0 and r["wsi_per_min"] > 0 for r in s["throughput"])
    assert {x["card"] for x in s["distill"]} == {"xmag", "h0mini"}
    assert all(x["steps_per_s"] > 0 and x["cached_steps_per_s"] > 0 for x in s["distill"])
    e = s["embed"]
    assert e["end_to_end_tiles_per_s"] > 0 and e["engine_alone_tiles_per_s"] > 0
    assert e["tiles_per_slide"] > 0
    assert s["pytest"]["exit_code"] == 0  # gpu tests collected and skipped without a GPU
    assert "part" in proc.stderr + proc.stdout and "all_ok" in proc.stdout
    table = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "gpu_proof.py"), "table", str(combined)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "| vit-test14 (random weights) | fp32 | 2 |" in table
    assert "| xmag: tiny-teacher → vit-test14 |" in table and "`edgepath embed`" in table


def test_unknown_part_and_missing_folder_are_refused(tmp_path: Path) -> None:
    proc = _run("--dry-run", str(tmp_path), PARTS="doctor gemm")
    assert proc.returncode == 2 and "unknown part 'gemm'" in proc.stderr
    proc = subprocess.run(
        ["bash", str(SCRIPT)], capture_output=True, text=True, env={**os.environ, "OUT": ""}
    )
    assert proc.returncode == 2 and "usage" in proc.stderr


def test_a_part_that_fails_or_runs_out_of_budget_is_recorded(tmp_path: Path) -> None:
    """A failing part and parts skipped for lack of budget: each has its JSON, saying so."""
    proc = _run("--dry-run", str(tmp_path / "a"), PARTS="doctor embed", BUDGET="14")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "PARTS=doctor" in proc.stdout  # how to rerun it
    d = json.loads(next((tmp_path / "a").glob("gpu-*.json")).read_text())
    assert d["all_ok"] is False
    assert {k: p["status"] for k, p in d["parts"].items()} == {
        "doctor": "skipped",
        "embed": "skipped",
    }
    assert json.loads((tmp_path / "a" / "embed.json").read_text())["status"] == "skipped"
    proc = _run(
        "--dry-run", str(tmp_path / "b"), PARTS="throughput-students", TP_EXTRA="--no-such-flag"
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    part = json.loads((tmp_path / "b" / "throughput-students.json").read_text())
    assert part["status"] == "failed" and part["exit_code"] == 2
    assert "no-such-flag" in part["stderr_tail"]
    d = json.loads(next((tmp_path / "b").glob("gpu-*.json")).read_text())
    assert d["parts"]["throughput-students"]["status"] == "failed"
    assert "no-such-flag" in d["parts"]["throughput-students"]["stderr_tail"]


def test_combine_slug_and_missing_json(tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import gpu_proof
    finally:
        sys.path.pop(0)
    assert gpu_proof.slug("NVIDIA H200") == "nvidia-h200"
    log = tmp_path / "x.log"
    log.write_text("Traceback ...\nRuntimeError: CUDA out of memory\n")
    (tmp_path / "doctor.json").write_text('{"edgepath": "0"}')
    status = tmp_path / "status.tsv"
    status.write_text(f"doctor\tok\t0\t1.5\t45\t{log}\nembed\ttimeout\t124\t100\t100\t{log}\n")
    assert gpu_proof.main(["combine", str(tmp_path), str(status), "--dry-run"]) == 0
    d = json.loads(next(tmp_path.glob("gpu-*.json")).read_text())
    assert d["parts"]["doctor"]["status"] == "ok" and d["parts"]["doctor"]["stderr_tail"] is None
    assert d["parts"]["embed"]["status"] == "timeout"
    assert "out of memory" in d["parts"]["embed"]["stderr_tail"]
    assert d["all_ok"] is False
