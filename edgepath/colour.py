"""Colour deconvolution of H&E stains (Ruifrok & Johnston), shared by the stand-in teachers and
the stain domains of the robustness suite."""

from __future__ import annotations

import numpy as np

#: Ruifrok & Johnston (Anal. Quant. Cytol. Histol. 2001) H, E, DAB optical-density vectors, the
#: matrix scikit-image's ``rgb2hed`` uses.
RGB_FROM_HED = np.array(
    [[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], dtype=np.float64
)
RGB_FROM_HED = RGB_FROM_HED / np.linalg.norm(RGB_FROM_HED, axis=1, keepdims=True)
HED_FROM_RGB = np.linalg.inv(RGB_FROM_HED)


def rgb_to_hed(rgb: np.ndarray) -> np.ndarray:
    """uint8 RGB (..., 3) -> stain concentrations (..., 3) by colour deconvolution."""
    od = -np.log((rgb.astype(np.float64) + 1.0) / 256.0)
    return od @ HED_FROM_RGB


def hed_to_rgb(hed: np.ndarray) -> np.ndarray:
    """Stain concentrations -> uint8 RGB (inverse of ``rgb_to_hed``)."""
    od = hed @ RGB_FROM_HED
    return np.clip(256.0 * np.exp(-od) - 1.0, 0, 255).round().astype(np.uint8)
