"""``edgepath export`` and ``edgepath doctor`` on the command line: JSON out, exit 2 on failures."""

from __future__ import annotations

import importlib.util
import json

import pytest


def _one_error_line(code: int, out: str, err: str) -> str:
    assert code == 2
    assert out == ""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


def test_export_json_is_one_object(run_cli, student_artifact, tmp_path) -> None:
    code, out, err = run_cli(
        "export", str(student_artifact), "--target", "onnx", "-o", str(tmp_path / "o"), "--json"
    )
    assert code == 0, err
    data = json.loads(out)
    assert data["target"] == "onnx" and data["precision"] == "fp32"
    assert data["graph"]["opset"] == 17 and data["graph"]["input"] == "pixel_values"
    assert data["parity"]["onnxruntime"]["min_cosine"] >= 0.9999
    # the output folder is an artifact that any stage can open
    assert json.loads((tmp_path / "o" / "edgepath.json").read_text())["kind"] == "export"


def test_unknown_target_exits_2(run_cli, student_artifact, tmp_path) -> None:
    line = _one_error_line(
        *run_cli("export", str(student_artifact), "--target", "tflite", "-o", str(tmp_path / "o"))
    )
    assert "tflite" in line and "jetson-orin" in line


def test_fp8_on_orin_exits_2_with_the_reason(run_cli, student_artifact, tmp_path) -> None:
    line = _one_error_line(
        *run_cli(
            "export",
            str(student_artifact),
            "--target",
            "jetson",
            "--precision",
            "fp8",
            "-o",
            str(tmp_path / "o"),
        )
    )
    assert "no FP8" in line and "sm_87" in line
    assert not (tmp_path / "o").exists()


def test_int8_from_a_float_model_points_to_quantize(run_cli, student_artifact, tmp_path):
    line = _one_error_line(
        *run_cli(
            "export",
            str(student_artifact),
            "--target",
            "jetson-thor",
            "--precision",
            "int8",
            "-o",
            str(tmp_path / "o"),
        )
    )
    assert "edgepath quantize" in line


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT here")
def test_missing_tensorrt_exits_2(run_cli, student_artifact, tmp_path) -> None:
    line = _one_error_line(
        *run_cli("export", str(student_artifact), "--target", "tensorrt", "-o", str(tmp_path / "o"))
    )
    assert "edgepath[tensorrt]" in line


def test_parity_failure_exits_2_and_leaves_nothing(
    run_cli, student_artifact, tmp_path, monkeypatch
) -> None:
    import edgepath.export.run as run

    monkeypatch.setattr(run, "min_cosine_for", lambda precision: 1.5)  # unreachable
    line = _one_error_line(
        *run_cli("export", str(student_artifact), "--target", "onnx", "-o", str(tmp_path / "o"))
    )
    assert "parity failed on real tiles" in line
    assert not (tmp_path / "o").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".o.")]  # no staging left


def test_existing_output_needs_overwrite(run_cli, student_artifact, tmp_path) -> None:
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "keep.txt").write_text("x")
    line = _one_error_line(
        *run_cli("export", str(student_artifact), "--target", "onnx", "-o", str(tmp_path / "o"))
    )
    assert "--overwrite" in line
    assert (tmp_path / "o" / "keep.txt").exists()


def test_doctor_json(run_cli) -> None:
    code, out, err = run_cli("doctor", "--json")
    assert code == 0, err
    d = json.loads(out)
    assert d["openslide"]["library"]  # openslide-bin ships the C library
    assert {"torch", "onnxruntime", "openvino"} <= set(d["engines"])
    assert "CPUExecutionProvider" in d["engines"]["onnxruntime"]["providers"]
    assert "CPU" in d["engines"]["openvino"]["devices"]
    assert d["usable_engines"][0] in ("openvino", "tensorrt")
    assert isinstance(d["cpu"]["features"], list) and d["cpu"]["int8_acceleration"]
    assert "version" in d["engines"]["tensorrt"]


def test_doctor_human(run_cli) -> None:
    code, out, _ = run_cli("doctor")
    assert code == 0
    for word in ("openslide", "onnxruntime", "openvino", "tensorrt", "INT8"):
        assert word in out
