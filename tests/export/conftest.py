"""Fixtures for export tests: a tiny student artifact and quantized artifacts made from it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="session")
def tiny_encoder():
    """vit-test14 at the tiny teacher's input, LayerScale at 0.5 so that blocks matter (random
    students start at 1e-5, where every block is a no-op and parity would be trivial)."""
    import torch

    from edgepath import cards
    from edgepath.models.encoder import build_encoder
    from edgepath.models.students import student_spec

    torch.manual_seed(0)
    teacher = cards.load("teachers", "tiny-teacher")
    spec = student_spec("vit-test14", input=teacher.input, embedding="cls+mean_patch")
    encoder = build_encoder(spec).eval()
    with torch.no_grad():
        for name, p in encoder.named_parameters():
            if name.endswith("gamma"):
                p.fill_(0.5)
    return encoder


def _weight_only_qdq(src: Path, dst: Path) -> None:
    """INT8 weights (per output channel, symmetric) behind DequantizeLinear: the QDQ form
    ``edgepath quantize`` hands over, minus activation quantization (kept out so that the
    fixture's accuracy does not depend on calibrating a random model)."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(src))
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    new_nodes = []
    for node in g.node:
        if node.op_type not in ("MatMul", "Conv", "Gemm"):
            continue
        for idx, name in enumerate(node.input):
            if name not in inits or idx != 1:
                continue
            w = numpy_helper.to_array(inits[name]).astype(np.float32)
            axis = 0 if node.op_type == "Conv" else w.ndim - 1
            red = tuple(a for a in range(w.ndim) if a != axis)
            scale = np.maximum(np.abs(w).max(axis=red), 1e-8) / 127.0
            shape = [1] * w.ndim
            shape[axis] = -1
            q = np.clip(np.round(w / scale.reshape(shape)), -127, 127).astype(np.int8)
            g.initializer.remove(inits[name])
            g.initializer.extend(
                [
                    numpy_helper.from_array(q, f"{name}_q"),
                    numpy_helper.from_array(scale.astype(np.float32), f"{name}_scale"),
                    numpy_helper.from_array(np.zeros_like(scale, np.int8), f"{name}_zp"),
                ]
            )
            new_nodes.append(
                helper.make_node(
                    "DequantizeLinear",
                    [f"{name}_q", f"{name}_scale", f"{name}_zp"],
                    [name],
                    name=f"{name}_dq",
                    axis=axis,
                )
            )
    for n in reversed(new_nodes):
        g.node.insert(0, n)
    onnx.save(model, str(dst))


@pytest.fixture(scope="session")
def quantized_artifact(tiny_encoder, tmp_path_factory) -> Path:
    """A ``kind = quantized`` artifact as the quantize stage writes it: QDQ ``model.onnx``."""
    from edgepath.export.onnx import export_onnx
    from edgepath.models.artifact import new_manifest, write_manifest

    folder = tmp_path_factory.mktemp("quantized")
    fp32 = export_onnx(tiny_encoder, folder / "fp32.onnx")
    _weight_only_qdq(fp32, folder / "model.onnx")
    fp32.unlink()
    manifest = new_manifest(
        "quantized",
        tiny_encoder.spec,
        name="vit-test14-int8",
        precision="int8",
        engine="onnxruntime",
        files={"onnx": "model.onnx"},
        fidelity={"cosine": 0.999, "n_tiles": 16, "against": "parent"},
    )
    write_manifest(folder, manifest)
    return folder
