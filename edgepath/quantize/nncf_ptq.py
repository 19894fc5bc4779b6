"""NNCF post-training quantization of an encoder on OpenVINO (IR) or ONNX (QDQ) from a preset.

Settings follow NNCF's advice for transformers (docs "Post-Training Quantization", "ModelType"):
``model_type=TRANSFORMER`` keeps residual adds, LayerNorm (MVN) and Softmax in float and applies
SmoothQuant to MatMuls; calibration items are single tiles (batch 1), NNCF's subset size being the
number of calibration tiles.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgepath.errors import ConfigError, require
from edgepath.quantize.presets import QuantizePreset
from edgepath.quiet import third_party_output

if TYPE_CHECKING:
    from edgepath.models.encoder import Encoder

log = logging.getLogger(__name__)

FP8_MODES = {"fp8-e4m3": "FP8_E4M3", "fp8-e5m2": "FP8_E5M2"}


def nncf_version() -> str:
    """Installed NNCF version."""
    return require("nncf", "openvino", purpose="quantization").__version__


def quantize_kwargs(preset: QuantizePreset, *, subset_size: int) -> dict[str, Any]:
    """The keyword arguments of ``nncf.quantize`` for a preset."""
    nncf = require("nncf", "openvino", purpose="quantization")
    from nncf.quantization.advanced_parameters import (
        AdvancedQuantizationParameters,
        AdvancedSmoothQuantParameters,
    )

    kw: dict[str, Any] = {
        "subset_size": subset_size,
        "fast_bias_correction": preset.fast_bias_correction,
        "target_device": getattr(nncf.TargetDevice, preset.target_device),
    }
    if preset.model_type == "transformer":
        kw["model_type"] = nncf.ModelType.TRANSFORMER
    if preset.fp8:
        kw["mode"] = getattr(nncf.QuantizationMode, FP8_MODES[preset.precision])
    else:
        kw["preset"] = (
            nncf.QuantizationPreset.PERFORMANCE
            if preset.scheme == "symmetric"
            else nncf.QuantizationPreset.MIXED
        )
    scope = preset.ignored_scope
    if scope.names or scope.patterns or scope.types:
        kw["ignored_scope"] = nncf.IgnoredScope(
            names=list(scope.names), patterns=list(scope.patterns), types=list(scope.types)
        )
    alpha = preset.smooth_quant_alpha
    kw["advanced_parameters"] = AdvancedQuantizationParameters(
        smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=alpha if alpha >= 0 else -1)
    )
    return kw


def _run_nncf(fn: Callable[..., Any], *args: Any, what: str, **kw: Any) -> Any:
    """Call NNCF, turning its configuration errors into one-line ``ConfigError``s."""
    nncf = require("nncf", "openvino", purpose="quantization")
    try:
        with third_party_output():  # NNCF's progress bars: off stdout (--json), hidden unless -v
            return fn(*args, **kw)
    except (nncf.ValidationError, ValueError) as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"NNCF could not quantize {what}: {msg}; check the preset") from None


def calibration_items(x: np.ndarray, *, input_name: str | None = None) -> list[Any]:
    """One calibration item per tile (batch 1, as NNCF advises for transformers)."""
    items = [np.ascontiguousarray(x[i : i + 1], dtype=np.float32) for i in range(len(x))]
    return [{input_name: a} for a in items] if input_name else items


def save_openvino(model: Any, xml: Path) -> list[Path]:
    """Save an ``ov.Model`` as ``xml`` + ``.bin`` atomically (both files appear together)."""
    ov = require("openvino", "openvino", purpose="OpenVINO IR")
    xml = Path(xml)
    xml.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=xml.parent, prefix=".ov-") as tmp:
        t = Path(tmp) / xml.name
        # keep float parts in FP32: compress_to_fp16 would change the model the gate measured
        ov.save_model(model, str(t), compress_to_fp16=False)
        os.replace(t.with_suffix(".bin"), xml.with_suffix(".bin"))
        os.replace(t, xml)
    return [xml, xml.with_suffix(".bin")]


def float_openvino(encoder: Encoder, xml: Path) -> Any:
    """Convert the torch encoder to an OpenVINO model (``openvino.convert_model``) and save it."""
    import torch

    ov = require("openvino", "openvino", purpose="OpenVINO conversion")
    px = encoder.spec.input.tile_px
    with torch.no_grad():
        model = ov.convert_model(encoder.eval(), example_input=torch.zeros(1, 3, px, px))
    model.reshape({model.inputs[0]: [-1, 3, px, px]})
    save_openvino(model, xml)
    return model


def quantize_openvino(
    model: Any,
    calib: np.ndarray,
    preset: QuantizePreset,
    *,
    accuracy_control: tuple[np.ndarray, np.ndarray] | None = None,
) -> Any:
    """Quantize an OpenVINO model with NNCF.

    Args:
        model: The float ``ov.Model``.
        calib: Normalised float32 NCHW calibration tiles.
        preset: The preset.
        accuracy_control: ``(tiles, float embeddings)`` to run NNCF's accuracy-controlled
            quantization with the mean cosine to float as the metric (layers go back to float
            until the drop is within ``1 - gate.min_cosine``). These are calibration-zone
            tiles, never the held-out ones, so the gate stays an independent check.

    Returns:
        The quantized ``ov.Model``.
    """
    nncf = require("nncf", "openvino", purpose="quantization")
    kw = quantize_kwargs(preset, subset_size=len(calib))
    data = nncf.Dataset(calibration_items(calib))
    if accuracy_control is None:
        return _run_nncf(nncf.quantize, model, data, what="the OpenVINO model", **kw)
    tiles, ref = accuracy_control
    val = nncf.Dataset(list(zip(calibration_items(tiles), ref, strict=True)))

    def validate(compiled: Any, items: Any) -> tuple[float, list[float]]:
        cos = []
        for x, r in items:
            out = np.asarray(compiled(x)[0], dtype=np.float64)[0]
            cos.append(float(out @ r / max(np.linalg.norm(out) * np.linalg.norm(r), 1e-12)))
        return float(np.mean(cos)), cos

    kw["advanced_quantization_parameters"] = kw.pop("advanced_parameters")
    return _run_nncf(
        nncf.quantize_with_accuracy_control,
        model,
        data,
        val,
        validate,
        max_drop=max(1.0 - preset.gate.min_cosine, 1e-4),
        what="the OpenVINO model with accuracy control",
        **kw,
    )


def quantize_onnx(float_onnx: Path, calib: np.ndarray, preset: QuantizePreset, out: Path) -> Path:
    """Quantize an ONNX file with NNCF into a QDQ ONNX file (written atomically).

    Raises:
        ConfigError: FP8 QDQ that the installed NNCF / ONNX Runtime cannot build.
    """
    nncf = require("nncf", "openvino", purpose="quantization")
    import onnx

    from edgepath.io import atomic_path

    model = onnx.load(str(float_onnx))
    name = model.graph.input[0].name
    kw = quantize_kwargs(preset, subset_size=len(calib))
    data = nncf.Dataset(calibration_items(calib, input_name=name))
    try:
        with third_party_output():
            q = nncf.quantize(model, data, **kw)
    except Exception as exc:  # NNCF runs ONNX Runtime inside; FP8 QDQ fails there on CPU
        if not preset.fp8:
            if isinstance(exc, nncf.ValidationError | ValueError):
                raise ConfigError(f"NNCF could not quantize {float_onnx}: {exc}") from None
            raise
        first = str(exc).strip().splitlines()[0][:200]
        raise ConfigError(
            f"FP8 QDQ ONNX is not available with NNCF {nncf.__version__} and onnxruntime on "
            f'this machine ({first}); use a preset with backend = "openvino" (fp8-e4m3, '
            "fp8-e5m2) to check FP8 fidelity, then build FP8 engines with TensorRT"
        ) from None
    with atomic_path(out, suffix=".onnx") as tmp:
        onnx.save(q, str(tmp))
    return Path(out)


def copy_files(files: list[Path], folder: Path) -> list[str]:
    """Copy model files into the artifact folder atomically; returns their names."""
    from edgepath.io import atomic_path

    names = []
    for f in files:
        with atomic_path(folder / f.name, suffix=f.suffix) as tmp:
            shutil.copyfile(f, tmp)
        names.append(f.name)
    return names
