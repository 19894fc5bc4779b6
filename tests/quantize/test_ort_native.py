"""ONNX Runtime-native INT8: the ViT graph rewrite is exact, the INT8 graph is what ORT fuses.

The tiny student's blocks get LayerScale 1 and non-zero biases first: at timm's init (LayerScale
1e-5, zero biases) the blocks barely touch the output, and a wrong rewrite would go unnoticed.
"""

from __future__ import annotations

import collections
import importlib.util
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("onnxruntime") is None, reason="needs onnxruntime"
)


@pytest.fixture(scope="module")
def encoder():
    import torch

    from edgepath.models.loading import random_encoder, student_input
    from edgepath.models.students import student_spec

    enc = random_encoder(student_spec("vit-test14", input=student_input()), seed=3)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in enc.named_parameters():
            if name.endswith(".gamma"):
                p.copy_(1.0 + 0.5 * torch.rand(p.shape, generator=g))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return enc.eval()


@pytest.fixture(scope="module")
def x(encoder) -> np.ndarray:
    from edgepath.eval.domains import base_tiles
    from edgepath.runtime import normalize

    return normalize(base_tiles(224, n=16, seed=1), encoder.spec).astype(np.float32)


@pytest.fixture(scope="module")
def files(encoder, x, tmp_path_factory) -> dict[str, Path]:
    from edgepath import cards
    from edgepath.quantize.pipeline import quantize_backend

    work = tmp_path_factory.mktemp("ort")
    float_file, q = quantize_backend(
        "ort", encoder, work, x[:8], cards.load("quantize", "int8-cpu")
    )
    return {"export": work / "export.onnx", "fused": float_file, "int8": q[0]}


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    s = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0]


def _ops(path: Path, optimized: bool = False, tmp: Path | None = None) -> collections.Counter:
    import onnx
    import onnxruntime as ort

    if optimized:
        assert tmp is not None
        opts = ort.SessionOptions()
        opts.optimized_model_filepath = str(tmp)
        opts.log_severity_level = 3
        ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        path = tmp
    return collections.Counter(n.op_type for n in onnx.load(str(path)).graph.node)


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_fused_float_graph_is_the_same_function(files, encoder, x) -> None:
    import torch

    ops = _ops(files["fused"])
    depth = len(encoder.backbone.blocks) if hasattr(encoder, "backbone") else 2
    assert ops["MultiHeadAttention"] == depth
    assert ops["LayerNormalization"] == 2 * depth + 1
    assert ops["Softmax"] == 0 and ops["Transpose"] <= 1  # attention core fully replaced
    with torch.inference_mode():
        ref = encoder(torch.from_numpy(x)).numpy()
    out = _run(files["fused"], x)
    np.testing.assert_allclose(out, ref, rtol=1e-3, atol=1e-4 * float(np.abs(ref).max()))


def test_fuse_vit_counts_and_leaves_other_graphs_alone(files) -> None:
    import onnx

    from edgepath.quantize.ort_native import fuse_vit

    m = onnx.load(str(files["export"]))
    assert fuse_vit(m) == {"layerscale": 4, "attention": 2}  # 2 blocks x (ls1, ls2)
    again = onnx.load(str(files["fused"]))
    assert fuse_vit(again) == {"layerscale": 0, "attention": 0}


def test_int8_graph_runs_fused_int8_kernels_and_stays_close(files, x, tmp_path) -> None:
    ops = _ops(files["int8"], optimized=True, tmp=tmp_path / "opt.onnx")
    int8 = ops["DynamicQuantizeMatMul"] + ops["MatMulIntegerToFloat"] + ops["MatMulInteger"]
    assert int8 == 6 * 2  # q, k, v, proj, fc1, fc2 per block, all INT8
    assert ops["MatMul"] == 0 and ops["QuantizeLinear"] == 0
    assert ops["MultiHeadAttention"] == 2
    ref = _run(files["fused"], x)
    q = _run(files["int8"], x)
    assert _cos(q, ref).min() > 0.99


def test_qkv_biases_ride_on_the_int8_matmuls_not_on_attention(files, tmp_path) -> None:
    """Each Q/K/V bias is folded into its MatMulIntegerToFloat (free in the GEMM's output
    stage), so MultiHeadAttention gets no bias input and skips its separate bias pass."""
    import onnx
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / "opt.onnx")
    opts.log_severity_level = 3
    ort.InferenceSession(str(files["int8"]), opts, providers=["CPUExecutionProvider"])
    g = onnx.load(str(tmp_path / "opt.onnx")).graph
    prod = {o: n for n in g.node for o in n.output}
    mha = [n for n in g.node if n.op_type == "MultiHeadAttention"]
    assert len(mha) == 2
    for n in mha:
        assert len([i for i in n.input if i]) == 3  # query, key, value: no bias
        for qkv in n.input[:3]:
            mm = prod[qkv]
            assert mm.op_type == "MatMulIntegerToFloat" and len(mm.input) == 7 and mm.input[6]
    fused = onnx.load(str(files["fused"])).graph
    for n in fused.node:
        if n.op_type == "MultiHeadAttention":
            assert len(n.input) == 3


def test_dynamic_scales_depend_little_on_batch_mates(files, x) -> None:
    """Activation scales are per batch: one tile alone vs in a batch of 16 stays ~identical."""
    batched = _run(files["int8"], x)
    alone = np.concatenate([_run(files["int8"], x[i : i + 1]) for i in range(4)])
    c = _cos(alone, batched[:4])
    assert c.min() > 0.999
    assert not np.array_equal(alone, batched[:4])  # and it is dynamic: they are not bit-equal


def test_ort_backend_refuses_fp8(tmp_path: Path) -> None:
    from edgepath import cards
    from edgepath.errors import ConfigError

    bad = tmp_path / "bad.toml"
    bad.write_text('precision = "fp8-e4m3"\nbackend = "ort"\n')
    with pytest.raises(ConfigError, match="ort"):
        cards.load("quantize", bad)
