"""Triton repository configs match the model; OpenVINO IR (float, FP16-compressed, INT8) parity."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgepath.export.onnx import describe_onnx
from edgepath.export.run import export
from edgepath.export.targets import load_target
from edgepath.export.triton import TRITON_TYPES, parse_pbtxt


@pytest.fixture(scope="module")
def triton_repo(student_artifact, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("t") / "repo"
    export(student_artifact, target="triton", out=out)
    return out


def test_triton_configs_match_the_graph(triton_repo) -> None:
    m = json.loads((triton_repo / "edgepath.json").read_text())
    models = m["triton"]["models"]
    assert set(models) == {"onnxruntime", "openvino"}
    info = describe_onnx(triton_repo / m["files"]["onnx"])
    card = load_target("triton")
    for backend, folder in models.items():
        cfg = parse_pbtxt((triton_repo / folder / "config.pbtxt").read_text())
        assert cfg["name"] == folder
        assert cfg["backend"] == backend
        assert cfg["max_batch_size"] == card.batch.max
        assert cfg["dynamic_batching"]
        (inp,), (out,) = cfg["input"], cfg["output"]
        assert inp["name"] == info["inputs"][0]["name"] == "pixel_values"
        assert inp["dims"] == info["inputs"][0]["shape"][1:] == [3, 224, 224]
        assert inp["data_type"] == TRITON_TYPES[info["inputs"][0]["dtype"]] == "TYPE_FP32"
        assert out["name"] == "embedding"
        assert out["dims"] == [m["embedding"]["dim"]]
    assert (triton_repo / models["openvino"] / "1" / "model.bin").is_file()
    assert set(m["parity"]) == {"onnxruntime", "openvino"}
    assert min(p["min_cosine"] for p in m["parity"].values()) >= 0.9999


def test_triton_repository_opens_as_an_engine(triton_repo, tiles) -> None:
    from edgepath.runtime import open_engine

    engine = open_engine(triton_repo)
    assert engine.embed_tiles(tiles).shape == (len(tiles), 128)


def test_tensorrt_plan_config(tmp_path) -> None:
    from edgepath.export.triton import config_pbtxt

    card = load_target("triton")
    text = config_pbtxt(
        "m_trt",
        "tensorrt_plan",
        inputs=[{"name": "tiles", "dtype": "uint8", "shape": ["batch", 224, 224, 3]}],
        outputs=[{"name": "embedding", "dtype": "float32", "shape": ["batch", 768]}],
        batch=card.batch,
        triton=card.triton,
    )
    cfg = parse_pbtxt(text)
    assert cfg["platform"] == "tensorrt_plan" and "KIND_GPU" in text
    assert cfg["input"] == [{"name": "tiles", "data_type": "TYPE_UINT8", "dims": [224, 224, 3]}]


@pytest.mark.slow
def test_openvino_fp32_and_fp16_compressed(student_artifact, tmp_path) -> None:
    m32 = export(student_artifact, target="openvino", out=tmp_path / "fp32")
    m16 = export(student_artifact, target="openvino", precision="fp16", out=tmp_path / "fp16")
    assert m32["engine"] == m16["engine"] == "openvino"
    assert m32["parity"]["openvino"]["min_cosine"] >= 0.9999
    assert m16["parity"]["openvino"]["min_cosine"] >= 0.999
    size32 = (tmp_path / "fp32" / "model.bin").stat().st_size
    size16 = (tmp_path / "fp16" / "model.bin").stat().st_size
    assert 0.45 < size16 / size32 < 0.6  # weights stored as FP16
    assert not (tmp_path / "fp32" / "model.onnx").exists()


@pytest.mark.slow
def test_quantized_artifact_to_openvino_and_onnx(quantized_artifact, tmp_path) -> None:
    m = export(quantized_artifact, target="openvino", out=tmp_path / "ov")
    assert m["precision"] == "int8" and m["parity"]["openvino"]["min_cosine"] >= 0.99
    m = export(quantized_artifact, target="onnx", out=tmp_path / "onnx")
    assert m["graph"]["qdq"] and m["parity"]["onnxruntime"]["min_cosine"] >= 0.99
