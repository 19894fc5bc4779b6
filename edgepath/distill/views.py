"""Deterministic augmented views: random-resized crops, flips and colour jitter seeded per tile.

Teacher views are a pure function of (seed, tile index, view index), so a teacher output can be
computed once and cached; student-only local crops are seeded by (seed, step, slot) so a resumed
run sees exactly the same crops. The multi-crop scheme follows DINOv2's
``DataAugmentationDINO`` (global crops 0.32-1.0 of the area, local crops 0.05-0.32).
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import torch
import torch.nn.functional as F

from edgepath.models.preprocess import standardize


def seed_of(*parts: object) -> int:
    """A 63-bit seed from any parts (stable across processes and Python versions)."""
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def generator(*parts: object) -> torch.Generator:
    """A CPU generator seeded from ``parts``."""
    return torch.Generator().manual_seed(seed_of(*parts))


def to_float(tile: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 HWC (or NHWC) RGB -> float32 CHW (NCHW) in [0, 1]."""
    t = torch.from_numpy(np.array(tile, copy=True)) if isinstance(tile, np.ndarray) else tile
    if t.shape[-1] == 4:
        t = t[..., :3]
    t = t.permute(2, 0, 1) if t.ndim == 3 else t.permute(0, 3, 1, 2)
    return t.float().div_(255.0)


def resize(x: torch.Tensor, px: int) -> torch.Tensor:
    """Resize CHW or NCHW to ``px`` x ``px`` (bilinear, antialiased); identity if already."""
    if x.shape[-1] == px and x.shape[-2] == px:
        return x
    batched = x.ndim == 4
    y = F.interpolate(
        x if batched else x[None],
        size=(px, px),
        mode="bilinear",
        antialias=True,
        align_corners=False,
    )
    return y if batched else y[0]


def random_resized_crop(
    x: torch.Tensor, px: int, scale: tuple[float, float], g: torch.Generator
) -> torch.Tensor:
    """Crop a random box of area fraction in ``scale`` and aspect 3/4-4/3, resized to ``px``."""
    _, h, w = x.shape
    u = torch.rand(4, generator=g).tolist()
    area = h * w * (scale[0] + (scale[1] - scale[0]) * u[0])
    log_r = math.log(3 / 4) + (math.log(4 / 3) - math.log(3 / 4)) * u[1]
    ratio = math.exp(log_r)
    cw = int(round(min(w, math.sqrt(area * ratio))))
    ch = int(round(min(h, math.sqrt(area / ratio))))
    cw, ch = max(cw, 1), max(ch, 1)
    x0 = int((w - cw) * u[2])
    y0 = int((h - ch) * u[3])
    return resize(x[:, y0 : y0 + ch, x0 : x0 + cw], px)


def flips(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random horizontal and vertical flips (histology has no canonical orientation)."""
    u = torch.rand(2, generator=g).tolist()
    return dihedral(x, int(u[0] < 0.5) | int(u[1] < 0.5) << 1)


def dihedral(x: torch.Tensor, code: int) -> torch.Tensor:
    """One of the 8 symmetries of the square on the last two axes (H, W) of ``x``.

    ``code`` bit 0 flips W, bit 1 flips H, bit 2 transposes (H <-> W); together they give the
    four rotations and four reflections (histology has no canonical orientation).
    """
    if code & 1:
        x = x.flip(-1)
    if code & 2:
        x = x.flip(-2)
    if code & 4:
        x = x.transpose(-1, -2)
    return x


def dihedral_cells(cells: torch.Tensor, code: int) -> torch.Tensor:
    """The same symmetry applied to a k x k grid of tiles (k², C, px, px), row-major.

    The grid is stitched into one image, transformed and cut again, so cell j of the result
    is the tile that lies at position j of the transformed region (what a student looking at
    the transformed region sees in its cell j).
    """
    n, c, h, w = cells.shape
    k = int(round(n**0.5))
    if k * k != n or h != w:
        raise ValueError(f"expected k² square cells, got {tuple(cells.shape)}")
    big = cells.reshape(k, k, c, h, w).permute(2, 0, 3, 1, 4).reshape(c, k * h, k * w)
    big = dihedral(big, code)
    return big.reshape(c, k, h, k, w).permute(1, 3, 0, 2, 4).reshape(n, c, h, w)


def jitter_params(strength: float, g: torch.Generator) -> tuple[float, float, float]:
    """Brightness, contrast, saturation factors in [1 - s, 1 + s]."""
    u = torch.rand(3, generator=g)
    b, c, s = (1 - strength + 2 * strength * u).tolist()
    return b, c, s


def color_jitter(x: torch.Tensor, params: tuple[float, float, float]) -> torch.Tensor:
    """Apply brightness, contrast and saturation factors to CHW / NCHW [0, 1] images."""
    b, c, s = params
    x = x * b
    mean = x.mean(dim=(-3, -2, -1), keepdim=True)
    x = (x - mean) * c + mean
    gray = 0.299 * x[..., 0:1, :, :] + 0.587 * x[..., 1:2, :, :] + 0.114 * x[..., 2:3, :, :]
    x = (x - gray) * s + gray
    return x.clamp_(0.0, 1.0)


def global_crops(
    tile: torch.Tensor,
    *,
    n: int,
    px: int,
    scale: tuple[float, float],
    flip: bool,
    jitter: float,
    g: torch.Generator,
) -> torch.Tensor:
    """``n`` augmented crops (n, 3, px, px) of a float CHW tile."""
    out = []
    for _ in range(n):
        v = random_resized_crop(tile, px, scale, g)
        if flip:
            v = flips(v, g)
        if jitter > 0:
            v = color_jitter(v, jitter_params(jitter, g))
        out.append(v)
    return torch.stack(out)


#: The models' per-channel normalisation (``edgepath.models.preprocess.standardize``), under the
#: name scripts import from here.
normalize = standardize
