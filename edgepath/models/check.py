"""Sanity checks of a loaded teacher: embed a real sample tile, report dimension and checksum."""

from __future__ import annotations

import hashlib
import logging
import os
import time
from typing import TYPE_CHECKING, Any

from edgepath.errors import ConfigError, ToleranceError

if TYPE_CHECKING:
    import numpy as np

    from edgepath.models.cards import TeacherCard

log = logging.getLogger(__name__)

#: The shipped real H&E tile used by ``edgepath teachers check`` (TCGA lung, 512 x 512).
SAMPLE_TILE = "he-tile-tcga-lung.png"


def sample_tile(tile_px: int) -> np.ndarray:
    """A real H&E tile (uint8 H x W x 3): centre crop of the shipped TCGA tile, or resized
    (bicubic) when the model wants more pixels than it has."""
    import numpy as np
    from PIL import Image

    from edgepath.data import TILES_DIR

    img = Image.open(TILES_DIR / "he" / SAMPLE_TILE).convert("RGB")  # drops alpha if any
    w, h = img.size
    if min(w, h) < tile_px:
        img = img.resize((tile_px, tile_px), Image.Resampling.BICUBIC)
    else:
        left, top = (w - tile_px) // 2, (h - tile_px) // 2
        img = img.crop((left, top, left + tile_px, top + tile_px))
    return np.array(img, dtype=np.uint8)  # a writable copy (torch.as_tensor warns otherwise)


def architecture_summary(card: TeacherCard) -> dict[str, Any]:
    """Parameter count and embedding dimension, computed on the meta device (no weights)."""
    from edgepath.models.encoder import count_parameters

    params = count_parameters(card.spec)
    published = card.params_m * 1e6 if card.params_m else None
    return {
        "name": card.name,
        "params": params,
        "params_published": published,
        "embed_dim": card.embedding.dim,
        "embedding": card.embedding.definition,
        "tile_px": card.input.tile_px,
        "mpp": card.input.mpp,
        "tokens": {
            "patch_size": card.tokens.patch_size,
            "cls_index": card.tokens.cls_index,
            "num_registers": card.tokens.num_registers,
            "num_patches": (card.input.tile_px // card.tokens.patch_size) ** 2,
        },
    }


def check_teacher(
    card: TeacherCard | str | os.PathLike[str],
    *,
    weights: str | os.PathLike[str] | None = None,
    random_weights: bool = False,
    device: str = "cpu",
) -> dict[str, Any]:
    """Load a teacher, embed a real sample tile, check the output.

    Args:
        card: A ``TeacherCard``, card name or ``.toml`` path.
        weights: Checkpoint file or folder (default lookup: see ``edgepath.models.weights``).
        random_weights: Seeded random weights (architecture check only).
        device: Torch device for the forward pass (``cpu``, ``cuda``, ``cuda:1``).

    Returns:
        ``name``, ``embed_dim``, ``checksum`` (SHA-256 of the float32 embedding, first 16 hex),
        ``finite``, ``norm``, ``random_weights``, ``weights_sha256``, ``files``,
        ``load_seconds``, ``embed_seconds``.

    Raises:
        ToleranceError: The embedding has the wrong dimension or non-finite values.
    """
    import torch

    from edgepath.models.encoder import to_tensor
    from edgepath.models.loading import as_card
    from edgepath.models.resolver import resolve

    card = as_card(card)
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"--device {device!r} is not a torch device; use cpu or cuda") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: no CUDA GPU here; use --device cpu")
    t0 = time.perf_counter()
    model = resolve(card, weights=weights, random_weights=random_weights)
    enc = model.require_encoder()
    t1 = time.perf_counter()
    x = to_tensor(sample_tile(card.input.tile_px), card.spec)
    with torch.inference_mode():
        emb = enc.to(dev)(x.to(dev))[0].float().cpu()
    t2 = time.perf_counter()
    finite = bool(torch.isfinite(emb).all())
    vec = emb.numpy()
    result = {
        "name": card.name,
        "embed_dim": int(vec.shape[0]),
        "checksum": hashlib.sha256(vec.astype("<f4").tobytes()).hexdigest()[:16],
        "finite": finite,
        "norm": float(emb.norm()),
        "mean": float(emb.mean()),
        "random_weights": model.random_weights,
        "stand_in": card.stand_in,
        "weights_sha256": model.weights_sha256,
        "sha256": model.sha256,
        "files": list(model.files),
        "load_seconds": round(t1 - t0, 3),
        "embed_seconds": round(t2 - t1, 3),
        "device": device,
    }
    if not finite:
        raise ToleranceError(
            f"teacher '{card.name}': the sample tile's embedding has non-finite values; "
            "the weights are corrupt or do not belong to this card"
        )
    if result["embed_dim"] != card.embedding.dim:
        raise ToleranceError(
            f"teacher '{card.name}': embedding has {result['embed_dim']} values, the card says "
            f"{card.embedding.dim}; fix embedding.dim in the card"
        )
    return result
