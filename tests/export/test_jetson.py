"""Jetson bundles: the ONNX runs in onnxruntime, verify.py passes in CPU mode on its own, and
build_engine.sh is valid bash whose trtexec flags fit the chosen JetPack's TensorRT major."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgepath.errors import ConfigError
from edgepath.export.run import export
from edgepath.export.targets import JETPACK, tensorrt_major
from edgepath.export.tensorrt import FORBIDDEN


@pytest.fixture(scope="module")
def orin_bundle(student_artifact, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("b") / "orin"
    export(student_artifact, target="jetson", out=out)
    return out


def _script_flags(script: Path) -> set[str]:
    text = script.read_text()
    call = text[text.index('"$TRTEXEC" \\') :]
    return {m.split("=")[0] for m in re.findall(r"(--[A-Za-z0-9]+(?:=\S+)?)", call)}


def _verify(folder: Path, *args: str) -> subprocess.CompletedProcess:
    # -I: isolated mode, no edgepath on the path, as on a device without edgepath installed
    return subprocess.run(
        [sys.executable, "-I", str(folder / "verify.py"), *args],
        capture_output=True,
        text=True,
        cwd=folder.parent,
        timeout=120,
    )


def test_bundle_contents_and_manifest(orin_bundle) -> None:
    m = json.loads((orin_bundle / "edgepath.json").read_text())
    assert m["kind"] == "export" and m["target"] == "jetson-orin"
    for name in ("model.onnx", "build_engine.sh", "verify.py", "verify_tiles.npy"):
        assert (orin_bundle / name).is_file()
    b = m["bundle"]
    assert (b["soc"], b["compute_capability"], b["jetpack"]) == ("orin", "8.7", "6.2")
    assert b["tensorrt_expected"] == JETPACK["6.2"][0]
    assert b["precision"] == m["precision"] == "fp32"
    tiles = np.load(orin_bundle / "verify_tiles.npy")
    ref = np.load(orin_bundle / "verify_reference.npy")
    assert tiles.dtype == np.uint8 and tiles.shape[1:] == (224, 224, 3)
    assert ref.shape == (len(tiles), m["embedding"]["dim"])
    assert m["parity"]["onnxruntime"]["min_cosine"] >= 0.9999
    assert (orin_bundle / "build_engine.sh").stat().st_mode & 0o111


def test_bundle_onnx_runs_in_onnxruntime(orin_bundle, tiny_encoder, tiles) -> None:
    from edgepath.runtime import open_engine

    engine = open_engine(orin_bundle)  # no plan yet: onnxruntime runs the bundle's ONNX
    assert engine.name == "onnxruntime"
    ref = open_engine(tiny_encoder).embed_tiles(tiles)
    np.testing.assert_allclose(engine.embed_tiles(tiles), ref, atol=1e-4)


def test_verify_py_cpu_mode_passes_standalone(orin_bundle, tmp_path) -> None:
    copy = tmp_path / "on-device"
    shutil.copytree(orin_bundle, copy)
    result = _verify(copy, "--cpu")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["ok"] and out["n_tiles"] == 16 and out["min_cosine"] >= 0.9999


def test_verify_py_fails_on_wrong_reference(orin_bundle, tmp_path) -> None:
    copy = tmp_path / "tampered"
    shutil.copytree(orin_bundle, copy)
    ref = np.load(copy / "verify_reference.npy")
    np.save(copy / "verify_reference.npy", ref[::-1].copy())  # tiles and embeddings mismatched
    result = _verify(copy, "--cpu")
    assert result.returncode == 1
    assert not json.loads(result.stdout)["ok"]


def test_verify_py_without_engine_says_build_first(orin_bundle) -> None:
    pytest.importorskip("tensorrt", reason="needs TensorRT to reach the plan check")
    result = _verify(orin_bundle)
    assert result.returncode == 2 and "build_engine.sh" in result.stderr


def test_build_script_is_valid_bash_with_flags_for_its_tensorrt(orin_bundle) -> None:
    script = orin_bundle / "build_engine.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    m = json.loads((orin_bundle / "edgepath.json").read_text())
    major = tensorrt_major(m["bundle"]["tensorrt_expected"])
    assert f"EXPECTED_TRT_MAJOR={major}" in script.read_text()
    used = _script_flags(script)
    assert "--stronglyTyped" in used
    assert not used & set(FORBIDDEN[major])


@pytest.mark.parametrize(
    ("jetpack", "precision"), [("6.0", "fp16"), ("6.2", "fp16"), ("7.2", "fp16")]
)
def test_build_script_per_jetpack(student_artifact, tmp_path, jetpack, precision) -> None:
    out = tmp_path / f"jp{jetpack}"
    m = export(
        student_artifact, target="jetson-orin", precision=precision, jetpack=jetpack, out=out
    )
    script = out / "build_engine.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    major = tensorrt_major(m["bundle"]["tensorrt_expected"])
    used = _script_flags(script)
    assert not used & set(FORBIDDEN[major])
    if major == 8:  # weakly typed: FP16 flag plus LayerNorm/Softmax pinned to FP32 by name
        assert {"--fp16", "--precisionConstraints", "--layerPrecisions"} <= used
        import onnx

        names = {n.name for n in onnx.load(str(out / "model.onnx")).graph.node}
        pinned = re.search(r"--layerPrecisions=(\S+)", script.read_text()).group(1)
        layers = [p.rsplit(":", 1)[0] for p in pinned.strip("'").split(",")]
        assert layers and set(layers) <= names
    elif major == 10:
        assert "--stronglyTyped" in used and "--fp16" not in used
    else:
        assert not {"--fp16", "--stronglyTyped"} & used
    # FP16 is carried by the graph: LayerNorm inputs are cast back to FP32
    assert m["graph"]["input_format"] == "nchw-float32"


def test_thor_takes_fp16_and_orin_refuses_fp8(student_artifact, tmp_path) -> None:
    m = export(student_artifact, target="jetson-thor", precision="fp16", out=tmp_path / "thor")
    assert m["bundle"]["compute_capability"] == "11.0"
    assert m["parity"]["onnxruntime"]["min_cosine"] >= 0.999
    with pytest.raises(ConfigError, match="sm_87"):
        export(student_artifact, target="jetson-orin", precision="fp8", out=tmp_path / "o")
    assert not (tmp_path / "o").exists()
    with pytest.raises(ConfigError, match="--jetpack 5.1"):
        export(student_artifact, target="jetson-orin", jetpack="5.1", out=tmp_path / "o")


def test_quantized_artifact_to_jetson(quantized_artifact, tmp_path) -> None:
    out = tmp_path / "q"
    m = export(quantized_artifact, target="jetson-orin", out=out)
    assert m["precision"] == "int8" and m["graph"]["qdq"]
    assert m["parent"]["path"] == str(quantized_artifact.resolve())
    assert m["fidelity"]["against"] == "parent"  # carried from the quantize stage
    used = _script_flags(out / "build_engine.sh")
    assert "--stronglyTyped" in used and "--int8" not in used  # Q/DQ carries INT8
    result = _verify(out, "--cpu")
    assert result.returncode == 0, result.stderr
    with pytest.raises(ConfigError, match="is int8; export it at that precision"):
        export(quantized_artifact, target="jetson-orin", precision="fp16", out=tmp_path / "x")
