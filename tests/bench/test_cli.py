"""edgepath bench throughput / fidelity and edgepath report, end to end on tiny models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def throughput_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    from edgepath.cli.main import main

    out = tmp_path_factory.mktemp("run")
    import contextlib
    import io

    buf, code = io.StringIO(), 0
    with contextlib.redirect_stdout(buf):
        try:
            main(
                [
                    "bench",
                    "throughput",
                    "vit-test14@1.0",
                    "--engines",
                    "torch,onnxruntime",
                    "--precision",
                    "fp32",
                    "--batch",
                    "2",
                    "--threads",
                    "1",
                    "--rounds",
                    "2",
                    "--per-round",
                    "1",
                    "--tiles-per-slide",
                    "1000",
                    "--json",
                    "-o",
                    str(out),
                ]
            )
        except SystemExit as exc:
            code = exc.code
    assert code in (0, None)
    return json.loads(buf.getvalue()), out


def test_throughput_rows(throughput_run: tuple[dict, Path]) -> None:
    d, out = throughput_run
    assert d["kind"] == "throughput"
    rows = {(r["engine"], r["precision"]): r for r in d["rows"]}
    assert set(rows) == {("torch", "fp32"), ("onnxruntime", "fp32")}
    for r in rows.values():
        assert r["model"] == "vit-test14@1.0" and r["random_weights"] is True
        assert r["mpp"] == 1.0 and r["batch"] == 2 and r["threads"] == 1
        assert r["n_batches"] == 2 and r["tiles_per_s"] > 0
        assert r["latency_ms_p95"] >= r["latency_ms_p50"] > 0
        assert r["tiles_per_s"] == pytest.approx(2 / (r["latency_ms_p50"] / 1e3))
        assert r["tiles_per_slide"] == 1000
        assert r["wsi_per_min"] == pytest.approx(60 * r["tiles_per_s"] / 1000)
        assert r["ceiling_gflops"] > 0 and r["ceiling_fraction"] > 0
        assert r["achieved_gflops"] == pytest.approx(r["gflops_per_tile"] * r["tiles_per_s"])
        # float rows: one ceiling for every op class, so the per-op roofline is the same figure
        assert r["roofline_fraction"] == pytest.approx(r["ceiling_fraction"])
        assert r["gflops_linear"] + r["gflops_other"] == pytest.approx(r["gflops_per_tile"])
    assert rows[("torch", "fp32")]["speedup_vs_torch_fp32"] == 1.0
    assert d["machine"]["threads"] == 1 and "torch" in d["machine"]["versions"]
    assert (out / "throughput.json").is_file()


def test_throughput_result_says_when_and_under_what_load(throughput_run: tuple[dict, Path]) -> None:
    from datetime import datetime, timedelta

    d, _ = throughput_run
    start = datetime.fromisoformat(d["when"]["started_utc"])
    end = datetime.fromisoformat(d["when"]["finished_utc"])
    assert start.utcoffset() == end.utcoffset() == timedelta(0)  # UTC, as the docs quote it
    assert start <= end < start + timedelta(hours=1)
    load = d["when"]["load_avg_start"]
    assert load is None or (len(load) == 3 and all(x >= 0 for x in load))


def test_tissue_area_tile_count() -> None:
    from edgepath.bench.throughput import tiles_for_area

    # 224 px at 0.5 mpp = 112 µm: 1 mm² holds 79.7 tiles -> 80
    assert tiles_for_area(1.0, tile_px=224, mpp=0.5) == 80
    # 16x fewer tiles at 2.0 mpp for the same tissue
    assert tiles_for_area(160.0, tile_px=224, mpp=2.0) == pytest.approx(
        tiles_for_area(160.0, tile_px=224, mpp=0.5) / 16, rel=0.01
    )


def test_fidelity_of_a_model_with_itself(run_cli, tmp_path: Path) -> None:
    code, out, err = run_cli(
        "bench",
        "fidelity",
        "vit-test14",
        "vit-test14",
        "--max-tiles",
        "24",
        "--json",
        "-o",
        str(tmp_path),
    )
    assert code == 0, err
    d = json.loads(out)
    assert d["n_tiles"] == 24
    assert d["cosine"] == pytest.approx(1.0, abs=1e-5)
    assert d["centered_cosine"] == pytest.approx(1.0, abs=1e-4)
    assert d["knn10_agreement"] == pytest.approx(1.0)
    assert d["cka"] == pytest.approx(1.0, abs=1e-5)
    assert len(d["per_tile"]["cosine"]) == 24


def test_report_from_runs(run_cli, throughput_run: tuple[dict, Path], tmp_path: Path) -> None:
    _, run = throughput_run
    code, out, err = run_cli(
        "bench", "robustness", "vit-test14", "--tiles", "12", "--json", "-o", str(run)
    )
    assert code == 0, err
    code, out, err = run_cli("report", str(run), "-o", str(tmp_path), "--json")
    assert code == 0, err
    d = json.loads(out)
    assert d["n_results"] == 2 and len(d["images"]) == 3  # throughput, robustness, leaderboard
    md = Path(d["markdown"]).read_text()
    assert "## Throughput" in md and "## Robustness" in md and "Score:" in md
    assert "**Not ranked**" in md and "synthetic suite, not PLISM" in md
    assert "vit-test14@1.0 (random weights)" in md
    for img in d["images"]:
        assert Path(img).read_bytes()[:4] == b"\x89PNG"
    summary = json.loads(Path(d["json"]).read_text())
    assert {r["kind"] for r in summary["results"]} == {"throughput", "robustness"}
    assert "pairs" not in summary["results"][1]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["bench", "throughput", "vit-test14", "--compare"], "--compare takes two"),
        (["bench", "throughput", "vit-test14", "--engines", "cuda"], "--engines"),
        (["bench", "throughput", "vit-test14", "--batch", "x"], "--batch"),
        (["bench", "throughput", "vit-s14@fast"], "mpp"),
        (["bench", "throughput", "vit-test14", "--end-to-end"], "--end-to-end needs --slide"),
        (["report", "/nonexistent-run"], "does not exist"),
    ],
)
def test_user_errors_are_one_line(run_cli, args: list[str], needle: str) -> None:
    code, _, err = run_cli(*args)
    assert code == 2, err
    assert needle in err and "Traceback" not in err


@pytest.mark.parametrize(
    "args",
    [
        ["bench", "throughput", "vit-test14", "--engines", "torch", "--device", "cuda"],
        ["bench", "robustness", "vit-test14", "--device", "cuda"],
        ["bench", "fidelity", "vit-test14", "vit-test14", "--device", "cuda"],
        ["embed", "vit-test14", "SLIDE", "-o", "OUT", "--device", "cuda"],
    ],
)
def test_device_cuda_without_a_gpu_is_one_line(
    run_cli, args: list[str], sample_slide: Path, tmp_path: Path
) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("checks the answer where torch sees no GPU")
    where = {"SLIDE": str(sample_slide), "OUT": str(tmp_path / "features")}
    code, _, err = run_cli(*[where.get(a, a) for a in args])
    assert code == 2, err
    assert err.strip() == "error: --device cuda: torch sees no CUDA GPU here; use --device cpu"


def test_half_precision_on_cpu_is_one_line_naming_the_fix(run_cli) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("checks the answer where torch sees no GPU")
    code, _, err = run_cli(
        "bench", "throughput", "vit-test14", "--engines", "torch", "--precision", "fp32,bf16"
    )
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "bf16 on CUDA only; use --precision fp32 on cpu, or --device cuda" in err


@pytest.mark.slow
def test_compare_teacher_vs_student_on_the_sample_slide(run_cli, sample_slide: Path) -> None:
    code, out, err = run_cli(
        "bench",
        "throughput",
        "tiny-teacher",
        "vit-test14@2.0",
        "--compare",
        "--slide",
        str(sample_slide),
        "--engines",
        "onnxruntime",
        "--precision",
        "fp32",
        "--batch",
        "4",
        "--rounds",
        "1",
        "--per-round",
        "1",
        "--json",
    )
    assert code == 0, err
    d = json.loads(out)
    ref, cand = d["reference"], d["candidate"]
    assert (ref["mpp"], cand["mpp"]) == (0.5, 2.0)
    assert ref["tiles"] > cand["tiles"] > 0  # the same tissue in fewer, coarser tiles
    t_ref, t_cand = d["rows"]
    assert (t_ref["engine"], t_ref["precision"]) == ("torch", "fp32")
    assert d["ratio_computed"] == pytest.approx(t_cand["wsi_per_min"] / t_ref["wsi_per_min"])
    e2e = d["end_to_end"]
    assert e2e["candidate"]["n_tiles"] == cand["tiles"]
    assert e2e["candidate"]["wsi_per_min"] == pytest.approx(60 / e2e["candidate"]["seconds"])
    assert e2e["reference"]["n_tiles"] == ref["tiles"]  # small slide: measured, not skipped


def test_int8_variant_is_the_quantize_stage_ort_model_and_workdir_is_reused(
    tmp_path: Path,
) -> None:
    pytest.importorskip("onnxruntime")
    from edgepath.bench.throughput import run_throughput

    kw = {
        "engines": ("onnxruntime",),
        "precisions": ("int8",),
        "batches": (2,),
        "threads": 1,
        "rounds": 1,
        "per_round": 1,
        "ceiling": False,
        "tiles_per_slide": 10,
        "workdir": tmp_path,
    }
    d = run_throughput(["vit-test14"], **kw)
    (row,) = d["rows"]
    assert row["quantized_by"] == "ort"  # int8-cpu's first onnxruntime candidate
    model = next(tmp_path.glob("*/int8-onnxruntime/model.onnx"))
    stamp = model.stat().st_mtime_ns
    again = run_throughput(["vit-test14"], **kw)
    assert again["rows"][0]["quantized_by"] == "ort"
    assert model.stat().st_mtime_ns == stamp  # prepared once, reused


def test_end_to_end_per_row(run_cli, tmp_path: Path) -> None:
    from edgepath.slides import synthesize_slide

    slide = synthesize_slide(tmp_path / "s.tiff", tiles=12, seed=2)
    code, out, err = run_cli(
        "bench", "throughput", "vit-test14", "--engines", "onnxruntime", "--precision", "fp32",
        "--batch", "4", "--threads", "1", "--rounds", "1", "--per-round", "1", "--no-ceiling",
        "--slide", str(slide), "--end-to-end", "--workers", "1", "--json",
    )  # fmt: skip
    assert code == 0, err
    (row,) = json.loads(out)["rows"]
    e2e = row["end_to_end"]
    assert e2e["n_tiles"] == row["tiles_per_slide"] and e2e["workers"] == 1
    assert row["end_to_end_ratio"] == pytest.approx(e2e["tiles_per_s"] / row["tiles_per_s"])
