"""Shipped presets load, and bad values fail with the key named."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgepath import cards
from edgepath.errors import ConfigError


def test_shipped_presets_cover_the_issue() -> None:
    names = set(cards.card_paths("quantize"))
    assert {"int8-cpu", "int8-tensorrt", "fp8-e4m3", "fp8-e5m2"} <= names
    cpu = cards.load("quantize", "int8-cpu")
    assert cpu.backend == "auto" and set(cpu.backends()) == {"ort", "onnx", "openvino"}
    assert cpu.model_type == "transformer" and cpu.calibration_tiles >= 300
    assert (cpu.gate.min_cosine, cpu.gate.min_cosine_p1) == (0.99, 0.97)
    trt = cards.load("quantize", "int8-tensorrt")
    assert trt.backend == "onnx" and trt.scheme == "symmetric"
    for name in ("fp8-e4m3", "fp8-e5m2"):
        p = cards.load("quantize", name)
        assert p.fp8 and p.precision == name and p.backend == "openvino"


def test_nncf_kwargs_follow_the_preset() -> None:
    nncf = pytest.importorskip("nncf")
    from edgepath.quantize.nncf_ptq import quantize_kwargs

    kw = quantize_kwargs(cards.load("quantize", "int8-tensorrt"), subset_size=7)
    assert kw["model_type"] == nncf.ModelType.TRANSFORMER
    assert kw["preset"] == nncf.QuantizationPreset.PERFORMANCE  # symmetric for TensorRT
    assert kw["subset_size"] == 7
    assert kw["advanced_parameters"].smooth_quant_alphas.matmul == 0.95
    kw = quantize_kwargs(cards.load("quantize", "fp8-e5m2"), subset_size=1)
    assert kw["mode"] == nncf.QuantizationMode.FP8_E5M2 and "preset" not in kw
    broken = quantize_kwargs(cards.load("quantize", "int8-generic-broken"), subset_size=1)
    assert "model_type" not in broken


def test_bad_preset_names_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('precision = "int4"\n')
    with pytest.raises(ConfigError, match="precision"):
        cards.load("quantize", bad)
    bad.write_text("heldout_tiles = 5\n")
    with pytest.raises(ConfigError, match="heldout_tiles"):
        cards.load("quantize", bad)
    bad.write_text('candidates = ["tflite"]\n')
    with pytest.raises(ConfigError, match="candidates"):
        cards.load("quantize", bad)
