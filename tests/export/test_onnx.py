"""ONNX export: opset 17 with fused LayerNorm, fixed tile size, dynamic batch, parity on real tiles."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from edgepath.errors import ConfigError, ToleranceError
from edgepath.export.onnx import convert_fp16, describe_onnx, export_onnx, onnx_parity


@pytest.fixture(scope="module")
def onnx_file(tiny_encoder, tmp_path_factory):
    return export_onnx(tiny_encoder, tmp_path_factory.mktemp("onnx") / "model.onnx")


def test_graph_has_opset17_fused_layernorm_fixed_tile_dynamic_batch(onnx_file, tiny_encoder):
    info = describe_onnx(onnx_file)
    assert info["opset"] == 17
    # vit-test14: 2 blocks x 2 norms + final norm, each one fused op (never ReduceMean/Pow/Sqrt)
    assert info["ops"]["LayerNormalization"] == 5
    assert info["inputs"] == [
        {"name": "pixel_values", "dtype": "float32", "shape": ["batch", 3, 224, 224]}
    ]
    assert info["outputs"][0]["name"] == "embedding"
    assert info["outputs"][0]["shape"][1] == tiny_encoder.embed_dim
    assert not info["qdq"]


def test_parity_on_real_tiles(onnx_file, tiny_encoder) -> None:
    parity = onnx_parity(tiny_encoder, onnx_file)
    assert parity.min_cosine >= 0.9999
    assert parity.n_tiles == 16


def test_dynamic_batch_runs_1_and_7(onnx_file, tiny_encoder, tiles) -> None:
    from edgepath.runtime.onnxruntime_engine import OnnxRuntimeEngine

    engine = OnnxRuntimeEngine(onnx_file, spec=tiny_encoder.spec)
    assert engine.embed_tiles(tiles[:1]).shape == (1, 128)
    seven = np.concatenate([tiles, tiles[:1]])
    assert engine.embed_tiles(seven).shape == (7, 128)


def test_parity_failure_is_a_typed_error(onnx_file, tiny_encoder) -> None:
    import torch

    other = copy.deepcopy(tiny_encoder)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    with pytest.raises(ToleranceError, match="parity failed on real tiles"):
        onnx_parity(other, onnx_file)


def test_opset_below_17_refused(tiny_encoder, tmp_path) -> None:
    with pytest.raises(ConfigError, match="LayerNorm"):
        export_onnx(tiny_encoder, tmp_path / "m.onnx", opset=16)
    assert not (tmp_path / "m.onnx").exists()


def test_fused_preprocessing_takes_uint8_nhwc(tiny_encoder, tmp_path) -> None:
    path = export_onnx(tiny_encoder, tmp_path / "fused.onnx", fuse_preprocess=True)
    info = describe_onnx(path)
    assert info["inputs"][0] == {"name": "tiles", "dtype": "uint8", "shape": ["batch", 224, 224, 3]}
    assert onnx_parity(tiny_encoder, path).min_cosine >= 0.9999


def test_fp16_autocast_keeps_layernorm_and_softmax_fp32(onnx_file, tiny_encoder, tmp_path):
    import onnx

    path = convert_fp16(onnx_file, tmp_path / "fp16.onnx")
    model = onnx.load(str(path))
    produced = {o: n for n in model.graph.node for o in n.output}
    ln = [n for n in model.graph.node if n.op_type in ("LayerNormalization", "Softmax")]
    assert len(ln) == 7
    for node in ln:  # each input is cast back to float (1) right before the op
        src = produced.get(node.input[0])
        assert src is not None and src.op_type == "Cast"
        assert next(a.i for a in src.attribute if a.name == "to") == onnx.TensorProto.FLOAT
    halves = [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT16]
    assert halves, "no FP16 weights"
    info = describe_onnx(path)
    assert info["inputs"][0]["dtype"] == "float32"  # I/O kept FP32
    assert onnx_parity(tiny_encoder, path, precision="fp16").min_cosine >= 0.999
