"""Every engine gives the torch embeddings on real tiles; selection follows the manifest."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgepath.errors import ArtifactError, ConfigError, EdgepathError
from edgepath.runtime import available_engines, normalize, open_engine


def test_normalize_matches_torch_to_tensor(tiny_encoder, tiles) -> None:
    from edgepath.models.encoder import to_tensor

    ours = normalize(tiles, tiny_encoder.spec)
    ref = to_tensor(tiles, tiny_encoder.spec).numpy()
    assert ours.dtype == np.float32 and ours.shape == (len(tiles), 3, 224, 224)
    np.testing.assert_allclose(ours, ref, atol=1e-6)


def test_available_engines_lists_installed_runtimes() -> None:
    engines = available_engines()
    assert {"torch", "onnxruntime", "openvino"} <= set(engines)
    assert "tensorrt" not in engines or _cuda()


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def test_torch_engine_from_encoder_and_artifact_agree(tiny_encoder, student_artifact, tiles):
    a = open_engine(tiny_encoder)
    b = open_engine(student_artifact)
    assert a.name == b.name == "torch"
    assert a.embed_dim == b.embed_dim == 128  # vit-test14: CLS ⊕ mean patch, 2 x 64
    ea, eb = a.embed_tiles(tiles), b.embed_tiles(tiles)
    assert ea.shape == (len(tiles), 128) and ea.dtype == np.float32
    np.testing.assert_allclose(ea, eb, atol=1e-5)
    # __call__ on normalised NCHW is the same as embed_tiles on uint8 NHWC
    np.testing.assert_allclose(a(normalize(tiles, a.spec)), ea, atol=1e-6)


def test_engine_rejects_wrong_shapes_and_dtypes(tiny_encoder, tiles) -> None:
    engine = open_engine(tiny_encoder)
    with pytest.raises(ConfigError, match="224"):
        engine.embed_tiles(tiles[:, :112, :112])
    with pytest.raises(ConfigError, match="uint8"):
        engine.embed_tiles(tiles.astype(np.float32))
    with pytest.raises(ConfigError, match="NCHW"):
        engine(tiles.astype(np.float32))


def _export_artifact(folder: Path, encoder, *, fuse: bool = False) -> Path:
    from edgepath.export.onnx import export_onnx
    from edgepath.models.artifact import new_manifest, write_manifest

    export_onnx(encoder, folder / "model.onnx", fuse_preprocess=fuse)
    manifest = new_manifest("export", encoder.spec, engine="onnxruntime")
    manifest["files"] = {"onnx": "model.onnx"}
    write_manifest(folder, manifest)
    return folder


@pytest.mark.parametrize("fuse", [False, True], ids=["nchw-float32", "nhwc-uint8"])
def test_onnxruntime_and_openvino_match_torch(tiny_encoder, tiles, tmp_path, fuse) -> None:
    folder = _export_artifact(tmp_path, tiny_encoder, fuse=fuse)
    ref = open_engine(tiny_encoder).embed_tiles(tiles)
    for name in ("onnxruntime", "openvino"):
        engine = open_engine(folder, engine=name)
        assert engine.name == name
        assert engine.input_format == ("nhwc-uint8" if fuse else "nchw-float32")
        out = engine.embed_tiles(tiles)
        cos = (out * ref).sum(1) / np.linalg.norm(out, axis=1) / np.linalg.norm(ref, axis=1)
        assert cos.min() > 0.9999, name
        # the float NCHW entry point works on fused graphs too (exact round trip to uint8)
        np.testing.assert_allclose(engine(normalize(tiles, engine.spec)), out, atol=1e-5)
        engine.close()


def test_auto_picks_an_engine_that_can_run_the_files(tiny_encoder, tmp_path) -> None:
    folder = _export_artifact(tmp_path, tiny_encoder)
    engine = open_engine(folder)  # manifest says onnxruntime: it validated there
    assert engine.name == "onnxruntime"
    with pytest.raises(ConfigError, match="cannot run this artifact"):
        open_engine(folder, engine="torch")


def test_unknown_engine_and_bad_artifacts_fail_in_one_line(student_artifact, tmp_path) -> None:
    with pytest.raises(ConfigError, match="unknown engine 'tflite'"):
        open_engine(student_artifact, engine="tflite")
    with pytest.raises(ArtifactError, match="not an edgepath artifact"):
        open_engine(tmp_path)
    failed = tmp_path / "failed"
    shutil.copytree(student_artifact, failed)
    manifest = json.loads((failed / "edgepath.json").read_text())
    manifest["status"] = "failed"
    (failed / "edgepath.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="failed"):
        open_engine(failed)


def test_tensorrt_refused_cleanly_without_gpu(student_artifact) -> None:
    if "tensorrt" in available_engines():
        pytest.skip("TensorRT is usable here")
    with pytest.raises(EdgepathError):
        open_engine(student_artifact, engine="tensorrt")


def test_torch_engine_normalises_uint8_tiles_as_the_runtime_does(tiny_encoder, tiles) -> None:
    """The torch engine's uint8 input (its default on CUDA, where tiles go to the GPU as uint8
    and are normalised there) gives the float32 path's embeddings bit for bit: the same float32
    operations as ``normalize``. ``submit`` gives what the call gives."""
    import copy

    from edgepath.runtime.torch_engine import TorchEngine

    f32 = TorchEngine(copy.deepcopy(tiny_encoder))
    u8 = TorchEngine(copy.deepcopy(tiny_encoder), input_format="nhwc-uint8")
    assert f32.input_format == "nchw-float32" and u8.input_format == "nhwc-uint8"
    ref = f32.embed_tiles(tiles)
    np.testing.assert_array_equal(u8.embed_tiles(tiles), ref)
    np.testing.assert_array_equal(u8(normalize(tiles, tiny_encoder.spec)), ref)  # float as is
    fetches = [u8.submit(tiles[:3], tiles=True), f32.submit(normalize(tiles[3:], f32.spec))]
    np.testing.assert_array_equal(np.concatenate([f() for f in fetches]), ref)
    with pytest.raises(ConfigError, match="uint8"):
        u8.submit(tiles.astype(np.float32), tiles=True)
