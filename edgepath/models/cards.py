"""Schemas of teacher cards and of the encoder spec that every artifact manifest also carries.

Kept free of torch so that ``edgepath cards list`` and ``edgepath teachers list`` stay instant.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from edgepath.errors import ConfigError

#: ``attn_pool``: the backbone's own learned pooling (CONCH's attentional pooler), see
#: ``Encoder.forward``; the others are computed from the tokens by ``Encoder.pool``.
EmbeddingDefinition = Literal["cls", "cls+mean_patch", "mean_patch", "attn_pool"]


@dataclass(frozen=True)
class Architecture:
    """How to build the network: a timm model name + kwargs (or a transformers class, or an
    architecture edgepath implements itself: ``library = "edgepath"``, see
    ``edgepath.models.conch.ARCHITECTURES`` and ``edgepath.models.standin.ARCHITECTURES``).

    Layer kwargs given as strings (``mlp_layer = "SwiGLUPacked"``, ``act_layer = "SiLU"``) are
    resolved to timm / torch classes when the model is built.
    """

    name: str
    library: Literal["timm", "transformers", "edgepath"] = "timm"
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class InputSpec:
    """What the model expects: tile size, resolution, normalisation."""

    tile_px: int
    mpp: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


@dataclass(frozen=True)
class TokenLayout:
    """Where CLS, registers and patch tokens sit in the backbone's output sequence."""

    patch_size: int
    cls_index: int = 0
    num_registers: int = 0

    @property
    def num_prefix(self) -> int:
        """Tokens before the first patch token (CLS + registers)."""
        return 1 + self.num_registers


@dataclass(frozen=True)
class EmbeddingSpec:
    """The card's tile embedding: CLS, CLS ⊕ mean of patch tokens, or mean of patch tokens."""

    definition: EmbeddingDefinition
    dim: int


@dataclass(frozen=True)
class EncoderSpec:
    """Everything needed to rebuild and run an encoder; shared by teacher cards and manifests."""

    architecture: Architecture
    input: InputSpec
    tokens: TokenLayout
    embedding: EmbeddingSpec


@dataclass(frozen=True)
class WeightSource:
    """Where the weights come from; edgepath never bundles weights."""

    hf_repo: str | None = None
    files: tuple[str, ...] = ("model.safetensors",)
    gated: bool = False
    #: Key prefix to strip from checkpoints (``module.``, ``model.``, ``backbone.`` are tried too).
    strip_prefix: str = ""
    env_var: str = ""


@dataclass(frozen=True)
class TeacherCard:
    """A pathology foundation model (or a stand-in) as data."""

    name: str
    description: str
    architecture: Architecture
    input: InputSpec
    tokens: TokenLayout
    embedding: EmbeddingSpec
    weights: WeightSource = field(default_factory=WeightSource)
    license: str = ""
    source: str = ""
    #: Published parameter count, in millions (checked by the tests, ±2 %).
    params_m: float | None = None
    #: Random-weight stand-in for tests and the demo: labelled as such everywhere.
    stand_in: bool = False

    @property
    def spec(self) -> EncoderSpec:
        """The encoder spec of this card."""
        return EncoderSpec(self.architecture, self.input, self.tokens, self.embedding)

    def validate(self) -> None:
        """Cross-field checks that a type check cannot do."""
        if self.input.tile_px % self.tokens.patch_size:
            raise ConfigError(
                f"input.tile_px {self.input.tile_px} is not a multiple of "
                f"tokens.patch_size {self.tokens.patch_size}"
            )
        if not 0.05 <= self.input.mpp <= 20:
            raise ConfigError(f"input.mpp {self.input.mpp} is not a plausible µm/px value")
        if any(s <= 0 for s in self.input.std):
            raise ConfigError("input.std values must be positive")
