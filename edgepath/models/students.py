"""Student architectures by name: DINOv2-configured ViT-S/14 and ViT-B/14 with 4 registers.

Students are referred to by these names from distillation recipes and ``edgepath bench``.
Their input spec (tile px, mpp, mean/std) comes from the recipe, not from the architecture.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edgepath.errors import ConfigError
from edgepath.models.cards import (
    Architecture,
    EmbeddingDefinition,
    EmbeddingSpec,
    EncoderSpec,
    InputSpec,
    TokenLayout,
)


@dataclass(frozen=True)
class StudentArch:
    """A named student architecture (timm model + kwargs) and its token width."""

    timm_name: str
    width: int
    kwargs: dict[str, Any] = field(default_factory=dict)
    description: str = ""


_DINOV2 = {"reg_tokens": 4, "class_token": True, "no_embed_class": True}

#: Named students. ``vit-s14``/``vit-b14`` are DINOv2's ViT-S/14 and ViT-B/14 with 4 registers
#: (timm ``vit_*_patch14_reg4_dinov2``: LayerScale, CLS at 0, registers 1-4, patches from 5).
STUDENTS: dict[str, StudentArch] = {
    "vit-s14": StudentArch(
        "vit_small_patch14_reg4_dinov2", 384, description="ViT-S/14, 4 reg, ~22 M"
    ),
    "vit-b14": StudentArch(
        "vit_base_patch14_reg4_dinov2", 768, description="ViT-B/14, 4 reg, ~86 M"
    ),
    # H0-mini's architecture: ViT-B/14 + 4 registers with SwiGLU + SiLU at DINOv2's fused hidden
    # size: 2/3 of 4 x 768 = 2048 (already a multiple of 8), ~86 M params. timm's SwiGLUPacked
    # packs both branches into fc1, so its hidden (fc1 out) is 2 x 2048: mlp_ratio = 4096 / 768.
    "vit-b14-swiglu": StudentArch(
        "vit_base_patch14_reg4_dinov2",
        768,
        {"mlp_layer": "SwiGLUPacked", "act_layer": "SiLU", "mlp_ratio": 4096 / 768},
        description="ViT-B/14, 4 reg, SwiGLU (H0-mini layout), ~86 M",
    ),
    # Small students for CPU demos and tests (same token layout, fewer/narrower blocks).
    "vit-t14": StudentArch(
        "vit_small_patch14_reg4_dinov2",
        192,
        {"embed_dim": 192, "depth": 12, "num_heads": 3},
        description="ViT-Ti/14, 4 reg, ~5.5 M",
    ),
    "vit-mini14": StudentArch(
        "vit_small_patch14_reg4_dinov2",
        96,
        {"embed_dim": 96, "depth": 4, "num_heads": 3},
        description="4-block width-96 ViT/14 for CPU demos, ~0.5 M",
    ),
    "vit-test14": StudentArch(
        "vit_small_patch14_reg4_dinov2",
        64,
        {"embed_dim": 64, "depth": 2, "num_heads": 2},
        description="2-block width-64 ViT/14 for unit tests",
    ),
}


def student_spec(
    name: str,
    *,
    input: InputSpec,
    embedding: EmbeddingDefinition = "cls",
) -> EncoderSpec:
    """The encoder spec of a named student at the recipe's input spec.

    Args:
        name: One of ``STUDENTS``.
        input: Tile px, mpp and mean/std (usually the teacher's normalisation).
        embedding: ``cls`` or ``cls+mean_patch``.
    """
    if name not in STUDENTS:
        raise ConfigError(f"unknown student '{name}'; expected one of: {', '.join(STUDENTS)}")
    arch = STUDENTS[name]
    dim = arch.width * (2 if embedding == "cls+mean_patch" else 1)
    return EncoderSpec(
        architecture=Architecture(
            name=arch.timm_name, library="timm", kwargs={**_DINOV2, **arch.kwargs}
        ),
        input=input,
        tokens=TokenLayout(patch_size=14, cls_index=0, num_registers=4),
        embedding=EmbeddingSpec(definition=embedding, dim=dim),
    )
