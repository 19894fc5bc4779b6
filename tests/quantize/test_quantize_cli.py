"""``edgepath quantize`` end to end on the tiny student and the real sample slide.

Small calibration / held-out sets keep these at CPU-seconds; the ViT-S/14 and ViT-B/14 runs are
in docs/quantize.md (benchmarks, not tests).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("nncf") is None or importlib.util.find_spec("openvino") is None,
    reason="needs NNCF and OpenVINO: pip install 'edgepath[openvino]'",
)

SMALL = ("--calibration-tiles", "16", "--heldout-tiles", "16")


def _preset(tmp_path: Path, base: str, **changes: object) -> Path:
    """A copy of a shipped preset with some keys changed (robustness off to save CPU)."""
    from edgepath import cards

    _, table = cards.raw("quantize", base)
    table = {**table, **{k: v for k, v in changes.items() if k != "gate"}}
    gate = {**table.get("gate", {}), **changes.get("gate", {})}  # type: ignore[dict-item]
    lines = []
    for k, v in table.items():
        if not isinstance(v, dict):
            lines.append(f"{k} = {json.dumps(v)}")
    lines.append("[gate]")
    lines += [f"{k} = {json.dumps(v)}" for k, v in gate.items()]
    out = tmp_path / f"{base}-test.toml"
    out.write_text("\n".join(lines) + "\n")
    return out


@pytest.mark.slow
def test_int8_cpu_measures_both_backends_passes_and_runs(
    run_cli, sample_slide: Path, tmp_path: Path
) -> None:
    out = tmp_path / "q"
    preset = _preset(tmp_path, "int8-cpu", gate={"robustness_tiles": 12})
    code, stdout, err = run_cli(
        "quantize",
        "vit-test14",
        "--preset",
        str(preset),
        "--calib",
        str(sample_slide),
        *SMALL,
        "-o",
        str(out),
        "--json",
    )
    assert code == 0, err
    data = json.loads(stdout)  # exactly one JSON object on stdout (NNCF's bars go to stderr)
    assert data["status"] == "ok" and data["precision"] == "int8"
    assert set(data["speed"]) == {"ort", "onnx", "openvino"}  # all measured side by side
    fastest = max(data["speed"], key=lambda b: data["speed"][b]["quantized_tiles_per_s"])
    assert data["backend"] == fastest  # picked by measurement, not by name
    assert data["figures"]["cosine"] >= 0.99 and data["figures"]["cosine_p1"] >= 0.97
    assert "robustness_drop" in data["figures"]

    manifest = json.loads((out / "edgepath.json").read_text())
    assert manifest["kind"] == "quantized" and manifest["status"] == "ok"
    assert manifest["calibration"]["n_tiles"] == 16 and len(manifest["calibration"]["sha256"]) == 64
    assert manifest["calibration"]["heldout_sha256"] != manifest["calibration"]["sha256"]
    assert manifest["backend"]["selection"] == "measured"
    assert manifest["fidelity"]["n_tiles"] == 16

    # the runtime opens it from the manifest alone and it agrees with the float model
    from edgepath.models import resolve
    from edgepath.quantize.calibration import sample_calibration
    from edgepath.runtime import open_engine

    _, held = sample_calibration([sample_slide], tile_px=224, mpp=0.5, n_calib=1, n_heldout=12)
    parent = resolve("vit-test14")
    assert manifest["parent"]["sha256"] == parent.sha256  # the one identity (models.resolver)
    with open_engine(out) as q, open_engine(parent) as f:
        assert q.name == manifest["engine"]
        a, b = q.embed_tiles(held.tiles), f.embed_tiles(held.tiles)
    cos = np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() > 0.97


@pytest.mark.slow
def test_gate_catches_quantizing_layernorm_and_residual_adds(
    run_cli, sample_slide: Path, tmp_path: Path
) -> None:
    out = tmp_path / "broken"
    code, stdout, err = run_cli(
        "quantize",
        "vit-test14",
        "--preset",
        "int8-generic-broken",
        "--calib",
        str(sample_slide),
        *SMALL,
        "-o",
        str(out),
    )
    assert code == 3
    assert "FAILED" in stdout and "cosine" in stdout  # the figures are printed
    assert "FAILED the fidelity gate" in err
    manifest = json.loads((out / "edgepath.json").read_text())
    assert manifest["status"] == "failed" and not manifest["gate"]["passed"]
    assert manifest["fidelity"]["cosine"] < 0.99

    from edgepath.errors import ArtifactError
    from edgepath.runtime import open_engine

    with pytest.raises(ArtifactError, match="failed"):
        open_engine(out)  # never used as a good model


@pytest.mark.slow
def test_fp8_e4m3_reports_fidelity_and_says_emulated(
    run_cli, sample_slide: Path, tmp_path: Path
) -> None:
    out = tmp_path / "fp8"
    preset = _preset(tmp_path, "fp8-e4m3", gate={"robustness_tiles": 0})
    code, stdout, err = run_cli(
        "quantize",
        "vit-test14",
        "--preset",
        str(preset),
        "--calib",
        str(sample_slide),
        *SMALL,
        "-o",
        str(out),
        "--json",
    )
    data = json.loads(stdout)
    assert data["precision"] == "fp8-e4m3" and data["emulated"] is True
    assert 0.0 < data["figures"]["cosine"] <= 1.0 + 1e-6
    assert code == (0 if data["status"] == "ok" else 3), err
    manifest = json.loads((out / "edgepath.json").read_text())
    assert manifest["scheme"]["emulated"] and "emulated" in manifest["scheme"]["note"]


def test_fp8_qdq_onnx_says_what_to_do(run_cli, sample_slide: Path, tmp_path: Path) -> None:
    preset = _preset(tmp_path, "fp8-e4m3", backend="onnx", gate={"robustness_tiles": 0})
    code, _, err = run_cli(
        "quantize",
        "vit-test14",
        "--preset",
        str(preset),
        "--calib",
        str(sample_slide),
        "--calibration-tiles",
        "4",
        "--heldout-tiles",
        "12",
        "-o",
        str(tmp_path / "x"),
    )
    if code == 0:  # a newer NNCF/ORT that builds and runs FP8 QDQ on CPU: fine too
        return
    assert code == 2 and "FP8 QDQ ONNX" in err and 'backend = "openvino"' in err


def test_unknown_preset_and_missing_calibration(run_cli, tmp_path: Path) -> None:
    code, _, err = run_cli(
        "quantize", "vit-test14", "--preset", "int3", "--calib", str(tmp_path), "-o", "x"
    )
    assert code == 2 and "no quantize card named 'int3'" in err
    code, _, err = run_cli(
        "quantize", "vit-test14", "--calib", str(tmp_path / "none.svs"), "-o", str(tmp_path / "o")
    )
    assert code == 2 and "not found" in err


@pytest.mark.slow
def test_accuracy_control_runs_on_openvino(run_cli, sample_slide: Path, tmp_path: Path) -> None:
    preset = _preset(tmp_path, "int8-cpu", backend="openvino", gate={"robustness_tiles": 0})
    out = tmp_path / "ac"
    code, _, err = run_cli(
        "quantize",
        "vit-test14",
        "--preset",
        str(preset),
        "--accuracy-control",
        "--calib",
        str(sample_slide),
        *SMALL,
        "-o",
        str(out),
        "--json",
    )
    assert code == 0, err
    manifest = json.loads((out / "edgepath.json").read_text())
    assert manifest["backend"]["accuracy_control"] is True and manifest["engine"] == "openvino"
    assert set(manifest["files"].values()) == {"model.xml", "model.bin"}


def test_backend_choice_is_fastest_passing() -> None:
    from edgepath.quantize.gate import GateResult
    from edgepath.quantize.pipeline import _choose

    def r(tps: float, ok: bool) -> dict:
        return {
            "gate": GateResult({}, {}, [] if ok else ["cosine 0.5 < 0.99"]),
            "speed": {"quantized_tiles_per_s": tps},
        }

    assert _choose({"onnx": r(50, True), "openvino": r(40, True)}) == "onnx"
    assert _choose({"onnx": r(50, False), "openvino": r(40, True)}) == "openvino"
    assert _choose({"onnx": r(50, False), "openvino": r(40, False)}) == "onnx"


@pytest.mark.slow
def test_int8_tensorrt_writes_symmetric_qdq_onnx(
    run_cli, sample_slide: Path, tmp_path: Path
) -> None:
    import onnx
    from onnx import numpy_helper

    preset = _preset(tmp_path, "int8-tensorrt", gate={"robustness_tiles": 0})
    out = tmp_path / "trt"
    code, _, err = run_cli(
        "quantize",
        "vit-test14",
        "--preset",
        str(preset),
        "--calib",
        str(sample_slide),
        *SMALL,
        "-o",
        str(out),
    )
    assert code == 0, err
    model = onnx.load(str(out / "model.onnx"))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    q_nodes = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert q_nodes, "no QDQ nodes: nothing was quantized"
    for n in q_nodes:  # TensorRT explicit quantization: INT8, zero point 0 everywhere
        zp = inits[n.input[2]]
        assert zp.dtype == np.int8 and not zp.any(), n.name
    # MatMuls are quantized, LayerNorm inputs are not (model_type transformer)
    producers = {o: n for n in model.graph.node for o in n.output}
    ln_inputs = [
        producers.get(n.input[0]) for n in model.graph.node if n.op_type == "LayerNormalization"
    ]
    assert ln_inputs and all(p is None or p.op_type != "DequantizeLinear" for p in ln_inputs)
