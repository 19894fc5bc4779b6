"""The acceptance path at full size: a ViT-S/14 student to ONNX and a Jetson bundle (slow)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_vit_s14_to_jetson_bundle(tmp_path) -> None:
    from edgepath.export.onnx import describe_onnx
    from edgepath.export.run import export

    out = tmp_path / "orin"
    m = export("vit-s14", target="jetson", out=out)
    info = describe_onnx(out / "model.onnx")
    assert info["opset"] == 17
    assert info["ops"]["LayerNormalization"] == 12 * 2 + 1  # 12 blocks x 2 + final norm
    assert m["parity"]["onnxruntime"]["min_cosine"] >= 0.9999
    run = subprocess.run(
        [sys.executable, "-I", str(out / "verify.py"), "--cpu"], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["min_cosine"] >= 0.9999
