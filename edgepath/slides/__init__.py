"""Whole-slide images: reading at an exact mpp, tissue, tiling, cross-magnification pairs, datasets."""

from __future__ import annotations

from typing import Any

from edgepath.slides.mpp import lookup_override, read_mpp_csv, resolve_mpp
from edgepath.slides.reader import Slide, open_slide
from edgepath.slides.tiling import (
    TileGrid,
    read_coords,
    read_patch_file,
    tile_slide,
    trident_magnification,
    write_coords,
)
from edgepath.slides.tissue import TissueParams, tissue_mask

# Torch-backed and heavier pieces load on first use (no torch import for `edgepath slides info`).
_LAZY = {
    "xmag_pairs": "edgepath.slides.xmag",
    "read_pair": "edgepath.slides.xmag",
    "xmag_factor": "edgepath.slides.xmag",
    "TileDataset": "edgepath.slides.datasets",
    "PairDataset": "edgepath.slides.datasets",
    "TileFolderDataset": "edgepath.slides.datasets",
    "synthesize_slide": "edgepath.slides.synth",
    "write_overlay": "edgepath.slides.overlay",
}

__all__ = [
    "Slide",
    "TileGrid",
    "TissueParams",
    "lookup_override",
    "open_slide",
    "read_coords",
    "read_mpp_csv",
    "read_patch_file",
    "resolve_mpp",
    "tile_slide",
    "tissue_mask",
    "trident_magnification",
    "write_coords",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'edgepath.slides' has no attribute '{name}'")
