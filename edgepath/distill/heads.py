"""Projection heads: DINO heads (MLP → bottleneck → L2 → weight-normalised prototypes) and MLPs."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm


def _mlp(in_dim: int, out_dim: int, *, hidden_dim: int, nlayers: int) -> nn.Sequential:
    if nlayers == 1:
        return nn.Sequential(nn.Linear(in_dim, out_dim))
    layers: list[nn.Module] = [nn.Linear(in_dim, hidden_dim), nn.GELU()]
    for _ in range(nlayers - 2):
        layers += [nn.Linear(hidden_dim, hidden_dim), nn.GELU()]
    layers.append(nn.Linear(hidden_dim, out_dim))
    return nn.Sequential(*layers)


def _init_linear(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


class DINOHead(nn.Module):
    """DINOv2's head (``dino_head.py``): MLP → bottleneck → L2 norm → weight-normalised prototypes.

    The prototype layer is ``weight_norm(Linear(bottleneck, out_dim, bias=False))`` with its gain
    fixed to 1 at init, so logits are cosine-like scores against ``out_dim`` prototypes.

    Args:
        in_dim: Token width of the backbone.
        out_dim: Number of prototypes (DINOv2: 65536 for DINO, 65536 or shared for iBOT).
        hidden_dim: MLP hidden width (DINOv2: 2048).
        bottleneck_dim: Bottleneck width (DINOv2: 256 for DINO, 256/384 for iBOT).
        nlayers: MLP layers (DINOv2: 3).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        *,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        nlayers: int = 3,
    ) -> None:
        super().__init__()
        self.mlp = _mlp(in_dim, bottleneck_dim, hidden_dim=hidden_dim, nlayers=max(nlayers, 1))
        self.apply(_init_linear)
        self.last_layer = weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        with torch.no_grad():
            self.last_layer.parametrizations.weight.original0.fill_(1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., in_dim) tokens → (..., out_dim) prototype logits."""
        x = F.normalize(self.mlp(x), dim=-1, p=2, eps=1e-6 if x.dtype == torch.float16 else 1e-12)
        return self.last_layer(x)


class ProjectionHead(nn.Module):
    """An MLP from the student's token width to a teacher's embedding or token width.

    XMAG's ``head_g`` / ``head_l`` and GPFM's per-teacher heads: ``nlayers`` linear layers with
    GELU between (``nlayers = 1``: a linear map).
    """

    def __init__(
        self, in_dim: int, out_dim: int, *, hidden_dim: int = 1024, nlayers: int = 2
    ) -> None:
        super().__init__()
        self.mlp = _mlp(in_dim, out_dim, hidden_dim=hidden_dim, nlayers=max(nlayers, 1))
        self.apply(_init_linear)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., in_dim) → (..., out_dim)."""
        return self.mlp(x)


class FrozenPrototypeHead(nn.Module):
    """Teacher-side DINO/iBOT head for released teachers that ship without theirs.

    ``logits = normalize(x - mu) · P^T`` with ``P`` ``out_dim`` fixed unit-norm Gaussian prototypes
    drawn from ``seed`` and ``mu`` an optional fixed teacher mean (set from the first batches).
    Random unit directions preserve angles (Johnson-Lindenstrauss), so the softmax over them is a
    soft, locality-sensitive code of the teacher token's direction: two teacher tokens get close
    targets iff their cosine is high. The student's trainable DINO head then has to reproduce the
    teacher's angular geometry, which is what the distillation is for; being frozen it cannot
    drift or collapse, and being a pure function of the teacher output it is cacheable.
    (tests/distill/test_heads.py checks determinism, no gradients, and that target similarity
    grows with teacher cosine.)
    """

    def __init__(self, in_dim: int, out_dim: int, *, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        protos = torch.randn(out_dim, in_dim, generator=g)
        self.register_buffer("prototypes", F.normalize(protos, dim=-1))
        self.register_buffer("mu", torch.zeros(in_dim))
        self.register_buffer("scale", torch.tensor(math.sqrt(in_dim)))

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., in_dim) teacher tokens → (..., out_dim) logits (cosine · sqrt(in_dim))."""
        z = F.normalize(x.float() - self.mu, dim=-1)
        # cosines with random directions have std 1/sqrt(d): rescale so that the teacher
        # temperature means the same thing for any teacher width.
        return (z @ self.prototypes.t()) * self.scale
