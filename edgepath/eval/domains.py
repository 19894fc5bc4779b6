"""Synthetic stain and scanner domains from real tissue tiles, for robustness without PLISM.

Every domain is an aligned copy of the same base tiles (tile i of every domain shows the same
tissue), so the PLISM metrics apply unchanged, with domains in place of slides:

- *stain* domains: HED-space perturbations at Tellez et al.'s strengths (Med. Image Anal. 2019,
  "Quantifying the effects of data augmentation and stain color normalization": HED-light
  σ = 0.05, HED-strong σ = 0.2; per tile, per channel α ~ U(1-σ, 1+σ), β ~ U(-σ, σ) on the
  Ruifrok-Johnston stain concentrations) and Reinhard normalisation (Reinhard et al. 2001, lαβ
  mean/std transfer) to each of the shipped stain references;
- *scanner* domains: defocus blur (Gaussian), JPEG re-compression, colour/gamma response,
  sensor noise, and down/up resampling.

Domains are labelled like PLISM slides: a stain domain is (staining=name, scanner="orig"), a
scanner domain (staining="orig", scanner=name), the original (orig, orig), so pairs of stain
domains count as cross-staining, pairs of scanner domains as cross-scanner, mixed pairs as
cross-both. Everything is seeded: the same seed gives the same pixels.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgepath.colour import hed_to_rgb, rgb_to_hed
from edgepath.eval.plism import SlideKey


def hed_jitter(tile: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Tellez-style HED augmentation: per-channel scale α ~ U(1±σ) and shift β ~ U(±σ)."""
    hed = rgb_to_hed(tile)
    alpha = rng.uniform(1 - sigma, 1 + sigma, size=3)
    beta = rng.uniform(-sigma, sigma, size=3)
    return hed_to_rgb(hed * alpha + beta)


# Reinhard et al. 2001 (IEEE CG&A, "Color transfer between images"): RGB -> LMS -> log -> lαβ.
_RGB2LMS = np.array([[0.3811, 0.5783, 0.0402], [0.1967, 0.7244, 0.0782], [0.0241, 0.1288, 0.8444]])
_LMS2LAB = np.diag([1 / np.sqrt(3), 1 / np.sqrt(6), 1 / np.sqrt(2)]) @ np.array(
    [[1, 1, 1], [1, 1, -2], [1, -1, 0]], dtype=np.float64
)


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """uint8 RGB -> Reinhard's lαβ."""
    lms = (rgb.astype(np.float64) / 255.0) @ _RGB2LMS.T
    return np.log10(np.maximum(lms, 1e-4)) @ _LMS2LAB.T


def lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """Reinhard's lαβ -> uint8 RGB."""
    lms = 10.0 ** (lab @ np.linalg.inv(_LMS2LAB).T)
    rgb = lms @ np.linalg.inv(_RGB2LMS).T
    return np.clip(rgb * 255.0, 0, 255).round().astype(np.uint8)


def reinhard(tile: np.ndarray, target_mean: np.ndarray, target_std: np.ndarray) -> np.ndarray:
    """Match the lαβ mean and std of ``tile`` to a reference's."""
    lab = rgb_to_lab(tile).reshape(-1, 3)
    mean, std = lab.mean(0), np.maximum(lab.std(0), 1e-6)
    out = (lab - mean) / std * target_std + target_mean
    return lab_to_rgb(out).reshape(tile.shape)


def lab_stats(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """lαβ mean and std of a reference image."""
    lab = rgb_to_lab(image).reshape(-1, 3)
    return lab.mean(0), lab.std(0)


def blur(tile: np.ndarray, sigma: float) -> np.ndarray:
    """Defocus as a Gaussian blur of ``sigma`` pixels."""
    from scipy.ndimage import gaussian_filter

    out = gaussian_filter(tile.astype(np.float32), sigma=(sigma, sigma, 0), mode="reflect")
    return np.clip(out, 0, 255).round().astype(np.uint8)


def jpeg(tile: np.ndarray, quality: int) -> np.ndarray:
    """Re-compress as JPEG at ``quality``."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(tile).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def response(tile: np.ndarray, gamma: float, gains: tuple[float, float, float]) -> np.ndarray:
    """A scanner's tone curve and white balance: per-channel gain then gamma."""
    x = tile.astype(np.float64) / 255.0 * np.asarray(gains)
    return np.clip(np.clip(x, 0, 1) ** gamma * 255.0, 0, 255).round().astype(np.uint8)


def noise(tile: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Additive Gaussian sensor noise of ``sigma`` grey levels."""
    out = tile.astype(np.float64) + rng.normal(0, sigma, size=tile.shape)
    return np.clip(out, 0, 255).round().astype(np.uint8)


def resample(tile: np.ndarray, factor: float) -> np.ndarray:
    """Down-sample by ``factor`` and back up (bilinear): a lower optical resolution."""
    from PIL import Image

    h, w = tile.shape[:2]
    small = Image.fromarray(tile).resize(
        (max(1, round(w * factor)), max(1, round(h * factor))), Image.BILINEAR
    )
    return np.asarray(small.resize((w, h), Image.BILINEAR))


@dataclass(frozen=True)
class Domain:
    """A named transform applied to every base tile, with its PLISM-style labels."""

    name: str
    kind: str  # "original" | "stain" | "scanner"
    apply: Callable[[np.ndarray, np.random.Generator], np.ndarray]

    @property
    def key(self) -> SlideKey:
        """Labels for pair grouping."""
        if self.kind == "stain":
            return SlideKey(self.name, self.name, "orig")
        if self.kind == "scanner":
            return SlideKey(self.name, "orig", self.name)
        return SlideKey(self.name, "orig", "orig")


def default_domains(references: list[np.ndarray] | None = None) -> list[Domain]:
    """The standard suite: original, 3 HED strengths, Reinhard to each reference, 8 scanners."""
    if references is None:
        references = stain_references()
    doms = [Domain("original", "original", lambda t, r: t)]
    for label, sigma in (("hed-light", 0.05), ("hed-medium", 0.1), ("hed-strong", 0.2)):
        doms.append(Domain(label, "stain", lambda t, r, s=sigma: hed_jitter(t, s, r)))
    for i, ref in enumerate(references):
        mean, std = lab_stats(ref)
        doms.append(
            Domain(f"reinhard-ref{i + 1}", "stain", lambda t, r, m=mean, s=std: reinhard(t, m, s))
        )
    doms += [
        Domain("blur-1.0", "scanner", lambda t, r: blur(t, 1.0)),
        Domain("blur-2.0", "scanner", lambda t, r: blur(t, 2.0)),
        Domain("jpeg-q50", "scanner", lambda t, r: jpeg(t, 50)),
        Domain("jpeg-q20", "scanner", lambda t, r: jpeg(t, 20)),
        Domain("gamma-0.8-warm", "scanner", lambda t, r: response(t, 0.8, (1.05, 1.0, 0.92))),
        Domain("gamma-1.25-cool", "scanner", lambda t, r: response(t, 1.25, (0.94, 1.0, 1.06))),
        Domain("noise-6", "scanner", lambda t, r: noise(t, 6.0, r)),
        Domain("resample-0.5", "scanner", lambda t, r: resample(t, 0.5)),
    ]
    return doms


def _load_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))  # histolab tiles are RGBA: drop alpha


def stain_references() -> list[np.ndarray]:
    """The shipped stain reference tiles (``edgepath.data.sample_tiles("stain")``)."""
    from edgepath.data import sample_tiles

    return [_load_rgb(p) for p in sample_tiles("stain")]


def _tissue_fraction(tile: np.ndarray) -> float:
    """Share of pixels that are neither background-bright nor grey (a simple saturation test)."""
    rgb = tile.astype(np.int16)
    sat = rgb.max(-1) - rgb.min(-1)
    return float(np.mean((sat > 20) & (rgb.mean(-1) < 230)))


def base_tiles(
    tile_px: int, *, n: int | None = None, seed: int = 0, min_tissue: float = 0.5
) -> np.ndarray:
    """Aligned base tiles cut from the shipped real H&E images (tissue only), (N, px, px, 3).

    Tiles are cut on a grid (stride = tile size) from every ``he`` and tissue-bearing ``tissue``
    sample image large enough; ``n`` picks a seeded subset.
    """
    from edgepath.data import sample_tiles

    tiles = []
    for path in sample_tiles("he") + sample_tiles("tissue"):
        img = _load_rgb(path)
        h, w = img.shape[:2]
        for y in range(0, h - tile_px + 1, tile_px):
            for x in range(0, w - tile_px + 1, tile_px):
                t = img[y : y + tile_px, x : x + tile_px]
                if _tissue_fraction(t) >= min_tissue:
                    tiles.append(np.ascontiguousarray(t))
    if not tiles:
        raise ValueError(f"no tissue tile of {tile_px} px in the shipped sample images")
    out = np.stack(tiles)
    if n is not None and n < len(out):
        idx = np.sort(np.random.default_rng(seed).choice(len(out), n, replace=False))
        out = out[idx]
    return out


def make_domains(
    tiles: np.ndarray, *, domains: list[Domain] | None = None, seed: int = 0
) -> dict[str, np.ndarray]:
    """Apply every domain to every tile: name -> (N, H, W, 3) uint8, deterministic in ``seed``."""
    domains = domains if domains is not None else default_domains()
    out = {}
    for d_idx, dom in enumerate(domains):
        rng = np.random.default_rng([seed, d_idx])
        out[dom.name] = np.stack([dom.apply(t, rng) for t in tiles])
    return out
