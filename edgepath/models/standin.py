"""A stand-in teacher with histology structure, for distillation tests and CPU acceptance runs.

Why not a random ViT: a random-weight ViT is a poor stand-in for what distillation has to learn.
With LayerScale initialised at 1e-5 (``tiny-teacher``) every block is the identity up to 1e-5,
so its embedding is LayerNorm(linear map of the tile's mean 16×16 patch): mean colour plus a
16-px-periodic pixel pattern. That pattern is invisible to a student at 5x (``xmag``) and carries
no tissue information; the kNN neighbourhoods it defines are noise that no student learns in a
few hundred steps. Without LayerScale (``small-teacher``) the blocks mix, but a random network's
fine neighbourhoods stay pixel-space accidents. Real teachers (UNI, Virchow2, H-optimus) embed
what the tissue is: stain amounts, nuclear density and texture, architecture.

:class:`HistoFeatureTeacher` is a deterministic encoder that embeds exactly such properties, so a
CPU run can check that a student learns a teacher's geometry:

1. per pixel: Ruifrok-Johnston colour deconvolution into haematoxylin, eosin and residual optical
   densities (the matrix of scikit-image's ``rgb2hed``), total optical density, gradient
   magnitudes of H and E, a difference of Gaussians on H (nuclei-sized blobs, both signs),
   oriented gradient energies of H (4 directions) and local standard deviations of H and E;
2. averaged over each ``patch_size`` patch (and the blob channel's maximum), standardised with
   fixed per-channel constants, into tokens ``tanh(z W + b)`` with a seeded random ``W``;
3. the CLS token is ``tanh([mean_p z, std_p z] W_c + b_c)`` over the patch grid.

It has no trained weights and is not a pathology model: its cards say ``stand_in = true``.
Its only parameters are the two seeded projections (frozen like any teacher's).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

#: Per-channel centre (median) and scale (std) of the pooled patch features (H, E, D, OD, then
#: in log: |∇H|, |∇E|, DoG+, DoG-, 4 oriented energies, std H, std E, max DoG+), measured once on
#: 256 training tiles (0.5 mpp) of the shipped sample slide and a synthetic slide built from real
#: H&E; fixed so that a tile's embedding never depends on the batch it is in.
_CENTER = (0.481, 0.282, 0.494, 0.634, -2.332, -2.979, -3.113, -2.785, -5.547, -5.561, -5.541, -5.54, -1.478, -2.215, -0.853)  # fmt: skip
_SCALE = (0.429, 0.155, 0.204, 0.346, 1.081, 0.94, 1.253, 0.979, 1.103, 1.107, 1.099, 1.093, 1.078, 0.952, 1.328)  # fmt: skip
N_FEATURES = len(_CENTER)
_LOG_EPS = 1e-3


def _gauss(sigma: float) -> torch.Tensor:
    r = max(1, int(math.ceil(3 * sigma)))
    x = torch.arange(-r, r + 1, dtype=torch.float32)
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (B, C, H, W), reflect padding."""
    g = _gauss(sigma).to(x)
    r = g.numel() // 2
    c = x.shape[1]
    x = F.pad(x, (r, r, 0, 0), mode="reflect")
    x = F.conv2d(x, g.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    x = F.pad(x, (0, 0, r, r), mode="reflect")
    return F.conv2d(x, g.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def _grad(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Central differences (d/dx, d/dy) of (B, C, H, W), same size."""
    p = F.pad(x, (1, 1, 1, 1), mode="replicate")
    gx = (p[..., 1:-1, 2:] - p[..., 1:-1, :-2]) / 2
    gy = (p[..., 2:, 1:-1] - p[..., :-2, 1:-1]) / 2
    return gx, gy


class HistoFeatureTeacher(nn.Module):
    """Deterministic histology-feature encoder with a ViT's token interface (see module doc).

    Args:
        img_size: Input side in pixels (a multiple of ``patch_size``).
        patch_size: Side of the patches the tokens pool over.
        embed_dim: Token width.
        seed: Seed of the two random projections.
        input_mean, input_std: The normalisation its input arrives with (the card's
            ``input.mean``/``input.std``, passed in by ``edgepath.models.encoder``); undone first,
            since optical densities need the raw intensities.

    ``forward_features`` takes tiles normalised like any teacher's, ``(x - mean) / std`` of RGB
    in [0, 1], and returns ``(B, 1 + N, embed_dim)``: CLS, then the N patch tokens in row-major
    order.

    Why the cards normalise (with H-optimus-0's H&E statistics) instead of feeding [0, 1]: a
    student inherits its teacher's normalisation, and a ViT fed raw [0, 1] H&E (mean ~0.7, std
    ~0.2) learns far slower: plain regression onto this teacher reached a held-out centred cosine
    of 0.10 after 200 steps with [0, 1] inputs and 0.74 with standardised ones
    (research/distill-standins.md).
    """

    #: the builder passes the card's input normalisation to models that declare this
    takes_input_norm = True

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 16,
        embed_dim: int = 192,
        seed: int = 0,
        input_mean: tuple[float, float, float] = (0.0, 0.0, 0.0),
        input_std: tuple[float, float, float] = (1.0, 1.0, 1.0),
    ):
        super().__init__()
        if img_size % patch_size:
            raise ValueError(f"img_size {img_size} is not a multiple of patch_size {patch_size}")
        self.patch_size = patch_size
        self.embed_dim = embed_dim
        self.num_prefix_tokens = 1
        g = torch.Generator().manual_seed(seed)
        c = N_FEATURES
        self.proj = nn.Parameter(torch.randn(c, embed_dim, generator=g) / math.sqrt(c))
        self.proj_bias = nn.Parameter(0.5 * torch.randn(embed_dim, generator=g))
        self.cls_proj = nn.Parameter(torch.randn(2 * c, embed_dim, generator=g) / math.sqrt(2 * c))
        self.cls_bias = nn.Parameter(0.5 * torch.randn(embed_dim, generator=g))
        # Ruifrok & Johnston (2001) colour deconvolution, the matrix of scikit-image's rgb2hed
        from edgepath.colour import HED_FROM_RGB

        # constants kept in the state dict, so the weights hash a teacher cache checks covers them
        self.register_buffer("hed_from_rgb", torch.tensor(HED_FROM_RGB, dtype=torch.float32))
        self.register_buffer("center", torch.tensor(_CENTER).view(1, -1, 1, 1))
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, -1, 1, 1))
        self.register_buffer(
            "input_mean", torch.tensor(input_mean, dtype=torch.float32).view(1, 3, 1, 1)
        )
        self.register_buffer(
            "input_std", torch.tensor(input_std, dtype=torch.float32).view(1, 3, 1, 1)
        )

    def pixel_maps(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised RGB -> (B, 14, H, W) per-pixel feature maps."""
        x = (x.float() * self.input_std + self.input_mean).clamp(0.0, 1.0)
        od = -torch.log((x * 255.0 + 1.0) / 256.0)  # optical density, as rgb_to_hed
        hed = torch.einsum("bchw,cd->bdhw", od, self.hed_from_rgb)
        h = hed[:, :1]
        he = _blur(hed[:, :2], 1.0)
        gx, gy = _grad(he)
        grad = (gx**2 + gy**2).sqrt()  # |∇H|, |∇E|
        dog = _blur(h, 1.5) - _blur(h, 4.0)  # nuclei-sized blobs on haematoxylin
        hs = _blur(h, 2.0)
        hx, hy = _grad(hs)
        d1, d2 = (hx + hy) / math.sqrt(2), (hx - hy) / math.sqrt(2)
        orient = torch.cat([hx**2, hy**2, d1**2, d2**2], 1)
        m = _blur(he, 3.0)
        local_std = (_blur(he**2, 3.0) - m**2).clamp_min(0).sqrt()
        return torch.cat(
            [
                hed,
                od.mean(1, keepdim=True),
                grad,
                dog.clamp_min(0),
                (-dog).clamp_min(0),
                orient,
                local_std,
            ],
            1,
        )

    def patch_features(self, x: torch.Tensor) -> torch.Tensor:
        """Standardised per-patch features (B, N_FEATURES, H/p, W/p)."""
        maps = self.pixel_maps(x)
        p = self.patch_size
        mean = F.avg_pool2d(maps, p)
        peak = F.max_pool2d(maps[:, 6:7], p)  # strongest blob in the patch
        f = torch.cat([mean, peak], 1)
        # texture channels are heavy-tailed (flat glass vs dense nuclei): compare them in log
        f = torch.cat([f[:, :4], torch.log(f[:, 4:] + _LOG_EPS)], 1)
        return (f - self.center) / self.scale

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        z = self.patch_features(x).flatten(2).transpose(1, 2)  # (B, N, C)
        patches = torch.tanh(z @ self.proj + self.proj_bias)
        stats = torch.cat([z.mean(1), z.std(1)], -1)
        cls = torch.tanh(stats @ self.cls_proj + self.cls_bias)
        return torch.cat([cls[:, None], patches], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)[:, 0]


#: Stand-in architectures edgepath builds itself (``library = "edgepath"`` in a card).
ARCHITECTURES = {"histo_features": HistoFeatureTeacher}
