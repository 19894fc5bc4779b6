"""Quantization presets (``quantize/*.toml``): precision, backend, NNCF settings, gate thresholds."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from edgepath.errors import ConfigError

Precision = Literal["int8", "fp8-e4m3", "fp8-e5m2"]
#: ``auto`` quantizes with every backend in ``candidates`` and keeps the fastest INT8 model on this
#: machine that passes the gate (measured, not assumed: see docs/quantize.md).
#: ``openvino``: NNCF on OpenVINO IR; ``onnx``: NNCF QDQ ONNX (also what TensorRT builds from);
#: ``ort``: ONNX Runtime's own path (fused transformer graph + dynamic INT8 MatMuls,
#: ``edgepath.quantize.ort_native``), INT8 only.
Backend = Literal["auto", "openvino", "onnx", "ort"]
BACKENDS: tuple[str, ...] = ("openvino", "onnx", "ort")
#: The runtime that runs each backend's output.
ENGINE_OF: dict[str, str] = {"openvino": "openvino", "onnx": "onnxruntime", "ort": "onnxruntime"}


@dataclass(frozen=True)
class IgnoredScope:
    """Layers NNCF must leave in float (``nncf.IgnoredScope``): exact names, regexes, op types."""

    names: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()
    types: tuple[str, ...] = ()


@dataclass(frozen=True)
class GateSpec:
    """Fidelity gate thresholds, measured on held-out tiles (quantized vs float embeddings).

    Attributes:
        min_cosine: Mean cosine between quantized and float embeddings of the same tile.
        min_cosine_p1: 1st percentile of that cosine (the worst tiles).
        min_knn10: Mean top-10 neighbourhood overlap; None reports it without gating.
        max_robustness_drop: Largest allowed drop of the synthetic stain/scanner robustness
            score (``edgepath bench robustness``); None reports it without gating.
        robustness_tiles: Base tiles for the robustness check (0 skips it).
    """

    min_cosine: float = 0.99
    min_cosine_p1: float = 0.97
    min_knn10: float | None = None
    max_robustness_drop: float | None = None
    robustness_tiles: int = 0


@dataclass(frozen=True)
class QuantizePreset:
    """One ``quantize/*.toml`` preset.

    Attributes:
        name: Card name (file stem).
        description: One line for ``edgepath cards list``.
        precision: ``int8``, ``fp8-e4m3`` or ``fp8-e5m2``.
        backend: ``openvino`` (IR, FakeQuantize / FakeConvert), ``onnx`` (QDQ), or ``auto``.
        candidates: Backends tried by ``auto``.
        scheme: ``mixed`` (symmetric weights, asymmetric activations: NNCF's MIXED preset) or
            ``symmetric`` (both symmetric: NNCF's PERFORMANCE preset, what TensorRT requires).
        model_type: ``transformer`` keeps residual adds, LayerNorm and softmax in float
            (``nncf.ModelType.TRANSFORMER``); ``generic`` quantizes every quantizable op.
        smooth_quant_alpha: SmoothQuant migration strength for MatMul; negative disables it.
        target_device: NNCF target device (``ANY``, ``CPU``, ``GPU``, ``NPU``).
        fast_bias_correction: NNCF's fast bias correction (else the full one).
        calibration_tiles: Tiles sampled across the calibration slides (NNCF's subset size).
        heldout_tiles: Tiles kept apart for the gate (never used for calibration).
        speed_batch: Batch used to measure tiles/s (FP32 vs quantized, side by side).
        per_channel: ``ort`` backend: per-output-channel weight scales (else per tensor).
        reduce_range: ``ort`` backend: 7-bit weights, ONNX Runtime's remedy for u8s8
            saturation of ``vpmaddubsw`` on AVX2 / AVX-512 CPUs without VNNI.
        ignored_scope: Layers kept in float.
        gate: Fidelity thresholds.
    """

    name: str
    description: str = ""
    precision: Precision = "int8"
    backend: Backend = "auto"
    candidates: tuple[str, ...] = BACKENDS
    scheme: Literal["mixed", "symmetric"] = "mixed"
    model_type: Literal["transformer", "generic"] = "transformer"
    smooth_quant_alpha: float = 0.95
    target_device: Literal["ANY", "CPU", "GPU", "NPU"] = "ANY"
    fast_bias_correction: bool = True
    calibration_tiles: int = 300
    heldout_tiles: int = 64
    speed_batch: int = 8
    per_channel: bool = False
    reduce_range: bool = False
    ignored_scope: IgnoredScope = field(default_factory=IgnoredScope)
    gate: GateSpec = field(default_factory=GateSpec)

    @property
    def fp8(self) -> bool:
        """True for the FP8 precisions."""
        return self.precision.startswith("fp8")

    def backends(self) -> tuple[str, ...]:
        """The backends this preset quantizes with (one, or the ``auto`` candidates)."""
        return self.candidates if self.backend == "auto" else (self.backend,)

    def validate(self) -> None:
        """Check value ranges and combinations.

        Raises:
            ConfigError: On a bad value, naming the key and the fix.
        """
        bad = [b for b in self.candidates if b not in BACKENDS]
        if bad or not self.candidates:
            raise ConfigError(
                f"key 'candidates' has {bad or 'nothing'}; expected some of: {', '.join(BACKENDS)}"
            )
        if "ort" in self.backends() and self.precision != "int8":
            raise ConfigError(
                f"backend 'ort' (ONNX Runtime dynamic INT8) has no {self.precision}; use "
                '"openvino" for FP8 or set precision = "int8"'
            )
        if self.calibration_tiles < 1:
            raise ConfigError("key 'calibration_tiles' must be at least 1 (NNCF advises 300)")
        if self.heldout_tiles <= 10:
            raise ConfigError(
                "key 'heldout_tiles' must be more than 10 (the gate's top-10 kNN needs them)"
            )
        if self.speed_batch < 1:
            raise ConfigError("key 'speed_batch' must be at least 1")
        if not -1.0 <= self.smooth_quant_alpha <= 1.0:
            raise ConfigError(
                "key 'smooth_quant_alpha' must be in [0, 1] (or negative to disable SmoothQuant)"
            )
        g = self.gate
        for key in ("min_cosine", "min_cosine_p1", "min_knn10"):
            v = getattr(g, key)
            if v is not None and not -1.0 <= v <= 1.0:
                raise ConfigError(f"key 'gate.{key}' = {v} must be between -1 and 1")
        if g.robustness_tiles < 0 or (0 < g.robustness_tiles <= 10):
            raise ConfigError("key 'gate.robustness_tiles' must be 0 (off) or more than 10")
