"""``edgepath bench distill``: the trainer's own steps, timed by phase, live and cached."""

from __future__ import annotations

import json
import time
from pathlib import Path

from edgepath.bench.distill import _summary, wall_time_days
from edgepath.distill.timing import PhaseTimer


def test_phase_timer_and_summary() -> None:
    t = PhaseTimer("cpu")
    with t.once("cache_build"):
        pass
    t.start()
    for _ in range(3):
        with t.phase("data"):
            time.sleep(0.01)
        with t.phase("student"):
            time.sleep(0.03)
        t.end_step()
    assert len(t.steps) == 3 and set(t.setup) == {"cache_build"}
    s = _summary(t.steps, items_per_step=8)
    assert s["phases_s"]["student"] > s["phases_s"]["data"] > 0
    assert s["median_step_s"] >= s["phases_s"]["data"] + s["phases_s"]["student"]
    # "other" (>= 0) is what the phases' medians leave of the median step
    assert s["phases_s"]["other"] >= 0
    assert sum(s["phases_s"].values()) >= s["median_step_s"] - 1e-4
    assert abs(s["items_per_s"] - 8 / s["median_step_s"]) < 0.01 * s["items_per_s"]
    assert wall_time_days(86400 * 10, 10.0, gpus=1) == 1.0
    assert wall_time_days(86400 * 10, 10.0, gpus=4) == 0.25


def test_bench_distill_json(run_cli, sample_slide: Path, tmp_path: Path) -> None:
    code, out, err = run_cli(
        "bench",
        "distill",
        "xmag-demo",
        "--slides",
        str(sample_slide),
        "--steps",
        "2",
        "--warmup",
        "1",
        "--batch-size",
        "2",
        "--set",
        'student.name="vit-test14"',
        "-o",
        str(tmp_path / "res"),
        "--json",
    )
    assert code == 0, err
    d = json.loads(out)
    assert d["kind"] == "distill" and d["recipe"] == "xmag" and d["items"] == "regions"
    assert d["steps_per_s"] > 0 and d["items_per_s"] == d["live"]["items_per_s"]
    assert abs(d["live"]["items_per_s"] - 2 * d["live"]["steps_per_s"]) < 0.01  # batch 2
    assert d["live"]["phases_s"]["teacher"] > 0 and "cache_read" not in d["live"]["phases_s"]
    assert d["cached"]["phases_s"]["cache_read"] > 0 and "teacher" not in d["cached"]["phases_s"]
    assert d["cache_build"]["items"] > 0 and d["cache_speedup"] > 0
    assert d["teachers"] == [{"card": "tiny-teacher", "params_m": 0.9, "weights": "stand-in"}]
    assert d["peak_memory_mb"] > 0 and d["device"] == "cpu"
    saved = json.loads(Path(d["path"]).read_text())
    assert saved["steps_per_s"] == d["steps_per_s"]
    # edgepath report renders it
    code, out, err = run_cli("report", str(tmp_path / "res"), "-o", str(tmp_path / "rep"))
    assert code == 0, err
    assert "Distillation speed: xmag-demo" in (tmp_path / "rep" / "report.md").read_text()


def test_bench_distill_bad_device(run_cli) -> None:
    import pytest
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU: --device cuda is valid here")
    code, out, err = run_cli("bench", "distill", "xmag-demo", "--device", "cuda")
    assert code == 2 and out == ""
    assert "no CUDA GPU" in err and "Traceback" not in err
