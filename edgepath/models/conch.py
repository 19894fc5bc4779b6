"""CONCH's vision tower (ViT-B/16 trunk + attentional poolers), key-compatible with its weights.

Re-implemented from mahmoodlab/CONCH (``conch/open_clip_custom/coca_model.py``,
``vision_tower.py``, ``transformer.py``) so that no ``conch`` / ``open_clip`` install is needed:

- trunk: timm ``VisionTransformer(embed_dim=768, depth=12, num_heads=12, mlp_ratio=4,
  img_size=448, patch_size=16, num_classes=0)``, its ``forward_features`` (normed tokens);
- ``attn_pool_contrast``: one learned query (512-d) cross-attending over all trunk tokens
  (``nn.MultiheadAttention(512, 8, kdim=768, vdim=768)``, LayerNorms on query and keys), then
  ``ln_contrast``: this is ``encode_image(x, proj_contrast=False, normalize=False)``, the 512-d
  tile embedding UNI / CLAM / TRIDENT use for CONCH (card embedding ``attn_pool``);
- ``proj_contrast``, ``attn_pool_caption`` and ``ln_caption`` are kept so that the checkpoint's
  ``visual.*`` keys load strictly; they do not enter the embedding.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class AttentionalPooler(nn.Module):
    """Learned queries attending over a token sequence (CONCH/CoCa ``AttentionalPooler``)."""

    def __init__(
        self, d_model: int, context_dim: int, *, n_head: int = 8, n_queries: int = 1
    ) -> None:
        super().__init__()
        self.query = nn.Parameter(torch.randn(n_queries, d_model))
        self.attn = nn.MultiheadAttention(d_model, n_head, kdim=context_dim, vdim=context_dim)
        self.ln_q = nn.LayerNorm(d_model)
        self.ln_k = nn.LayerNorm(context_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, context_dim) tokens -> (B, n_queries, d_model)."""
        x = self.ln_k(x).permute(1, 0, 2)  # NLD -> LND
        q = self.ln_q(self.query).unsqueeze(1).repeat(1, x.shape[1], 1)
        out = self.attn(q, x, x, need_weights=False)[0]
        return out.permute(1, 0, 2)


class ConchVisual(nn.Module):
    """CONCH ``visual`` module: trunk tokens plus the contrastive attentional-pool embedding."""

    def __init__(
        self,
        *,
        img_size: int = 448,
        patch_size: int = 16,
        width: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        embed_dim_contrast: int = 512,
        embed_dim_caption: int = 768,
        n_queries_caption: int = 256,
        attn_pooler_heads: int = 8,
        **trunk_kwargs: Any,
    ) -> None:
        super().__init__()
        from timm.models.vision_transformer import VisionTransformer

        self.trunk = VisionTransformer(
            img_size=img_size,
            patch_size=patch_size,
            embed_dim=width,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=4.0,
            num_classes=0,
            **trunk_kwargs,
        )
        self.attn_pool_contrast = AttentionalPooler(
            embed_dim_contrast, width, n_head=attn_pooler_heads, n_queries=1
        )
        self.ln_contrast = nn.LayerNorm(embed_dim_contrast)
        self.proj_contrast = nn.Parameter(
            width**-0.5 * torch.randn(embed_dim_contrast, embed_dim_contrast)
        )
        self.attn_pool_caption = AttentionalPooler(
            embed_dim_caption, width, n_head=attn_pooler_heads, n_queries=n_queries_caption
        )
        self.ln_caption = nn.LayerNorm(embed_dim_caption)
        self.embed_dim = width
        self.num_prefix_tokens = self.trunk.num_prefix_tokens
        self.patch_embed = self.trunk.patch_embed

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The trunk's normed token sequence (B, 1 + N, 768)."""
        return self.trunk.forward_features(x)

    def pool_embedding(self, seq: torch.Tensor) -> torch.Tensor:
        """CONCH's tile embedding from the token sequence: (B, 512)."""
        return self.ln_contrast(self.attn_pool_contrast(seq)[:, 0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``encode_image(x, proj_contrast=False, normalize=False)``."""
        return self.pool_embedding(self.forward_features(x))


#: Architectures that edgepath builds itself (``library = "edgepath"`` in a card).
ARCHITECTURES = {"conch_visual": ConchVisual}
