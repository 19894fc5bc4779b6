"""Pixel normalisation: the one place a model's input is made from RGB pixels.

``(x - mean) / std`` per channel of [0, 1] images, with the card's mean and std. Written once for
numpy arrays and torch tensors alike, so that the runtime's numpy path (engines without torch),
the torch path (``Encoder`` inputs) and distillation's views compute the same numbers, bit for
bit. Free of torch imports: ``edgepath.runtime`` uses it without loading torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from edgepath.errors import ConfigError

if TYPE_CHECKING:
    from edgepath.models.cards import EncoderSpec

T = TypeVar("T")


def standardize(
    x: T, mean: Sequence[float], std: Sequence[float], *, channels_last: bool = False
) -> T:
    """``(x - mean) / std`` per channel of float images in [0, 1].

    Args:
        x: NCHW (or, with ``channels_last``, ``..., 3``) float numpy array or torch tensor.
        mean: Per-channel mean (RGB), cast to ``x``'s dtype (and device).
        std: Per-channel standard deviation (RGB), likewise.
        channels_last: The channels are the last axis (NHWC) rather than axis 1 (NCHW).
    """
    shape = (3,) if channels_last else (1, 3, 1, 1)
    if isinstance(x, np.ndarray):
        m: Any = np.asarray(mean, dtype=x.dtype).reshape(shape)
        s: Any = np.asarray(std, dtype=x.dtype).reshape(shape)
    else:  # a torch tensor
        m = x.new_tensor(mean).view(shape)  # type: ignore[attr-defined]
        s = x.new_tensor(std).view(shape)  # type: ignore[attr-defined]
    return (x - m) / s  # type: ignore[operator]


def normalize(tiles: np.ndarray, spec: EncoderSpec) -> np.ndarray:
    """uint8 tiles (N, H, W, 3) -> normalised float32 NCHW as the spec prescribes.

    x / 255, then ``standardize`` with the spec's mean and std, in numpy (engines without torch
    do not import it); ``edgepath.models.encoder.to_tensor`` is the same as a torch tensor.
    """
    t = np.asarray(tiles)
    if t.ndim == 3:
        t = t[None]
    if t.ndim != 4 or t.shape[-1] != 3:
        raise ConfigError(f"expected uint8 tiles (N, H, W, 3), got shape {tuple(t.shape)}")
    x = t.astype(np.float32) / np.float32(255.0)
    x = standardize(x, spec.input.mean, spec.input.std, channels_last=True)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
