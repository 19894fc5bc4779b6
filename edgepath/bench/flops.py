"""Analytic FLOPs per tile of a ViT encoder, and the GEMM shapes that dominate them.

Counted from the architecture (built on the meta device: no memory, no weights): every Linear
layer inside the transformer blocks (N × in × out multiply-adds for N tokens), the two attention
matmuls (QKᵀ and AV: 2 × N² × D), and the patch embedding (patches × 3p² × D). Norms, softmax,
activations and biases are left out (< 1 %). FLOPs = 2 × MACs.

Check: ViT-B/16 at 224 px gives 17.58 G MACs = 35.2 GFLOPs. The "17.6 GFLOPs" of the DeiT paper
(Touvron et al. 2021, Table 1) and of fvcore/timm tables counts one multiply-add as one FLOP, i.e.
it is the MAC count.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edgepath.models.cards import EncoderSpec


@dataclass(frozen=True)
class VitCost:
    """Per-tile cost of a ViT encoder.

    Attributes:
        macs: Multiply-adds per tile.
        tokens: Sequence length (prefix + patches).
        width: Token width D.
        depth: Number of blocks.
        linear_shapes: (K, N, count) of the per-token Linear layers (in, out, how many), for the
            GEMM ceiling at the model's own shapes.
        attention_macs: Share of ``macs`` in QKᵀ and AV.
    """

    macs: int
    tokens: int
    width: int
    depth: int
    linear_shapes: tuple[tuple[int, int, int], ...] = field(default=())
    attention_macs: int = 0

    @property
    def flops(self) -> int:
        """FLOPs per tile (2 × MACs)."""
        return 2 * self.macs

    @property
    def gflops(self) -> float:
        """GFLOPs per tile."""
        return self.flops / 1e9

    @property
    def linear_flops(self) -> int:
        """FLOPs per tile in the blocks' Linear layers: the GEMMs an INT8 export quantizes
        (``quantize.ort_native`` and the NNCF presets turn exactly these MatMuls into INT8)."""
        return 2 * self.tokens * sum(k * n * c for k, n, c in self.linear_shapes)

    @property
    def other_flops(self) -> int:
        """FLOPs per tile outside the Linear layers: attention (QKᵀ, AV) and the patch
        embedding, which stay in float in an INT8 export."""
        return self.flops - self.linear_flops


def vit_cost(spec: EncoderSpec) -> VitCost:
    """Per-tile MACs of the encoder in ``spec`` at its tile size (timm ViT-like backbones)."""
    import torch
    from torch import nn

    from edgepath.models.encoder import build_backbone

    with torch.device("meta"):
        model = build_backbone(spec)
    blocks = getattr(model, "blocks", None)
    patch = getattr(model, "patch_embed", None)
    if blocks is None or patch is None:
        raise ValueError(f"{spec.architecture.name}: not a ViT with blocks and a patch embedding")
    grid = patch.grid_size if hasattr(patch, "grid_size") else None
    if grid is None:
        side = spec.input.tile_px // spec.tokens.patch_size
        grid = (side, side)
    n_patches = int(grid[0] * grid[1])
    prefix = int(getattr(model, "num_prefix_tokens", spec.tokens.num_prefix))
    tokens = n_patches + prefix
    width = int(model.embed_dim)
    proj = patch.proj
    patch_macs = n_patches * proj.in_channels * proj.kernel_size[0] * proj.kernel_size[1] * width

    shapes: dict[tuple[int, int], int] = {}
    linear_macs = 0
    for block in blocks:
        for mod in block.modules():
            if isinstance(mod, nn.Linear):
                linear_macs += tokens * mod.in_features * mod.out_features
                key = (mod.in_features, mod.out_features)
                shapes[key] = shapes.get(key, 0) + 1
    attention = 2 * tokens * tokens * width * len(blocks)
    return VitCost(
        macs=int(patch_macs + linear_macs + attention),
        tokens=tokens,
        width=width,
        depth=len(blocks),
        linear_shapes=tuple((k, n, c) for (k, n), c in shapes.items()),
        attention_macs=int(attention),
    )
