"""trtexec flags per TensorRT major (8.6 / 10.x / 11.x) and the strongly typed engine build."""

from __future__ import annotations

import pytest

from edgepath.errors import ConfigError
from edgepath.export.targets import BatchProfile
from edgepath.export.tensorrt import FORBIDDEN, check_trtexec_args, trtexec_args

ARGS = dict(
    onnx="model.onnx",
    plan="model.plan",
    input_name="pixel_values",
    input_shape=(3, 224, 224),
    batch=BatchProfile(1, 16, 64),
)


def flags(version: str, precision: str, **kw) -> list[str]:
    args = trtexec_args(trt_version=version, precision=precision, **ARGS, **kw)
    check_trtexec_args(args, version)
    return args


def test_profile_and_workspace_in_every_major() -> None:
    for version in ("8.6", "10.3", "11.4"):
        args = flags(version, "fp16")
        assert "--minShapes=pixel_values:1x3x224x224" in args
        assert "--optShapes=pixel_values:16x3x224x224" in args
        assert "--maxShapes=pixel_values:64x3x224x224" in args
        assert any(a.startswith("--memPoolSize=workspace:") for a in args)
        assert not any(a.startswith("--workspace") for a in args)  # removed in 10.x


def test_tensorrt_8_6_is_weakly_typed_with_fp32_layernorm() -> None:
    args = flags("8.6", "fp16", keep_fp32=["/blocks.0/norm1/LayerNormalization"])
    assert "--fp16" in args and "--stronglyTyped" not in args
    assert "--precisionConstraints=obey" in args
    assert "--layerPrecisions=/blocks.0/norm1/LayerNormalization:fp32" in args
    assert "--int8" in flags("8.6", "int8")
    with pytest.raises(ConfigError, match="FP8 engines need TensorRT >= 10"):
        flags("8.6", "fp8")


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8", "fp8"])
def test_tensorrt_10_is_strongly_typed_without_precision_flags(precision) -> None:
    args = flags("10.3", precision)
    assert "--stronglyTyped" in args
    assert not {"--fp16", "--int8", "--fp8", "--best"} & set(args)


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8", "fp8"])
def test_tensorrt_11_has_no_precision_or_calibration_flags(precision) -> None:
    args = flags("11.4", precision)
    names = {a.split("=")[0] for a in args}
    assert not names & set(FORBIDDEN[11])
    assert "--stronglyTyped" not in names  # always on in 11.x


def test_fp32_disables_tf32() -> None:
    assert "--noTF32" in flags("10.3", "fp32")
    assert "--noTF32" not in flags("10.3", "fp16")


def test_checker_rejects_removed_flags() -> None:
    with pytest.raises(ConfigError, match="not valid for TensorRT 11"):
        check_trtexec_args(["trtexec", "--fp16"], "11.4")
    with pytest.raises(ConfigError, match="not valid for TensorRT 10"):
        check_trtexec_args(["trtexec", "--int8"], "10.3")
    with pytest.raises(ConfigError, match="not supported"):
        trtexec_args(trt_version="7.1", precision="fp16", **ARGS)


@pytest.mark.tensorrt
def test_strongly_typed_fp16_engine_matches_torch(student_artifact, tmp_path) -> None:
    from edgepath.export.run import export

    manifest = export(student_artifact, target="tensorrt", precision="fp16", out=tmp_path / "trt")
    assert manifest["tensorrt"]["strongly_typed"]
    assert manifest["tensorrt"]["compute_capability"]
    assert manifest["parity"]["tensorrt"]["min_cosine"] >= 0.999
