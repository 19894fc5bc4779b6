"""Export targets as data: the schema of ``export/*.toml`` cards and the JetPack/TensorRT table.

A target says what format to produce (ONNX, OpenVINO IR, TensorRT plan, Jetson build bundle,
Triton repository, timm model folder), which precisions it accepts and why it refuses the others, the optimisation
profile (min/opt/max batch), and for Jetson targets the SoC, its GPU architecture and the JetPack
releases with the TensorRT each ships.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from edgepath.errors import ConfigError

Format = Literal["onnx", "openvino", "tensorrt", "jetson", "triton", "timm"]
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8", "fp8")

#: JetPack release -> (TensorRT, CUDA) it ships. Sources: NVIDIA JetPack release notes (6.0: TRT
#: 8.6.2 / CUDA 12.2; 6.1 and 6.2: TRT 10.3 / CUDA 12.6; 7.0, the first Thor release: TRT 10.13 /
#: CUDA 13.0) and the TensorRT 11.4.1 notes (TRT 11.4 supports JetPack 7.2.2+ on AGX Orin and
#: Thor; earlier 11.x releases did not support JetPack at all).
JETPACK: dict[str, tuple[str, str]] = {
    "6.0": ("8.6", "12.2"),
    "6.1": ("10.3", "12.6"),
    "6.2": ("10.3", "12.6"),
    "7.0": ("10.13", "13.0"),
    "7.2": ("11.4", "13"),
}


def tensorrt_major(version: str) -> int:
    """Major TensorRT version of ``"10.3"`` -> 10."""
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        raise ConfigError(f"'{version}' is not a TensorRT version (expected e.g. 10.3)") from None


def normalize_precision(precision: str) -> str:
    """``fp8-e4m3`` -> ``fp8``; other names unchanged (lower case)."""
    p = precision.lower()
    return "fp8" if p.startswith("fp8") else p


@dataclass(frozen=True)
class BatchProfile:
    """TensorRT optimisation profile / Triton batch limits: min, opt and max batch size."""

    min: int = 1
    opt: int = 32
    max: int = 128


@dataclass(frozen=True)
class JetsonSpec:
    """A Jetson SoC: its GPU, and the JetPack releases it runs (the default first)."""

    soc: str
    gpu: str
    compute_capability: str
    jetpacks: tuple[str, ...]
    fp8: bool = False
    #: Memory pool for the TensorRT builder, MiB (the Orin/Thor modules share DRAM with the CPU).
    workspace_mib: int = 2048

    @property
    def jetpack(self) -> str:
        """The default JetPack release."""
        return self.jetpacks[0]


@dataclass(frozen=True)
class TritonSpec:
    """Triton model-repository settings."""

    backends: tuple[str, ...] = ("onnxruntime", "openvino")
    max_queue_delay_us: int = 2000
    instances: int = 1


@dataclass(frozen=True)
class ExportTarget:
    """One export target card (``export/NAME.toml``)."""

    name: str
    description: str
    format: Format
    precisions: tuple[str, ...] = ("fp32", "fp16", "int8")
    #: Precision -> why this target refuses it (shown verbatim in the error).
    refused: dict[str, str] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    opset: int = 17
    #: Take uint8 NHWC tiles and normalise inside the graph (see docs/export.md for the measure).
    fuse_preprocess: bool = False
    batch: BatchProfile = field(default_factory=BatchProfile)
    jetson: JetsonSpec | None = None
    triton: TritonSpec | None = None
    #: Tiles + reference embeddings shipped in bundles for on-device verification.
    verify_tiles: int = 16

    def validate(self) -> None:
        """Cross-field checks."""
        for p in (*self.precisions, *self.refused):
            if p not in PRECISIONS:
                raise ConfigError(f"precision '{p}' is not one of {', '.join(PRECISIONS)}")
        if set(self.precisions) & set(self.refused):
            raise ConfigError("a precision cannot be both accepted and refused")
        if self.opset < 17:
            raise ConfigError(f"opset {self.opset} < 17 would decompose LayerNorm")
        b = self.batch
        if not 1 <= b.min <= b.opt <= b.max:
            raise ConfigError(f"batch profile needs 1 <= min <= opt <= max, got {b}")
        if self.format == "jetson":
            if self.jetson is None:
                raise ConfigError("a jetson target needs a [jetson] table")
            unknown = [j for j in self.jetson.jetpacks if j not in JETPACK]
            if unknown or not self.jetson.jetpacks:
                raise ConfigError(
                    f"jetson.jetpacks has unknown release(s) {unknown}; known: {', '.join(JETPACK)}"
                )
            if "fp8" in self.precisions and not self.jetson.fp8:
                raise ConfigError("fp8 accepted but jetson.fp8 is false")
        if self.format == "triton" and self.triton is None:
            raise ConfigError("a triton target needs a [triton] table")

    def check_precision(self, precision: str) -> str:
        """The normalised precision if this target accepts it, else a ``ConfigError`` saying why."""
        p = normalize_precision(precision)
        if p in self.refused:
            raise ConfigError(f"--target {self.name} refuses {p}: {self.refused[p]}")
        if p not in self.precisions:
            raise ConfigError(f"--target {self.name} exports {', '.join(self.precisions)}, not {p}")
        return p


def load_target(name: str) -> ExportTarget:
    """Load an export target card by name, alias (``jetson`` -> ``jetson-orin``) or path."""
    from edgepath import cards

    try:
        return cards.load("export", name)
    except ConfigError as exc:
        if "no export card named" not in str(exc):
            raise
        for target in cards.load_all("export"):
            if name in target.aliases:
                return target
        raise
