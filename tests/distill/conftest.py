"""Fixtures: a folder of real H&E tiles, and recipe overrides for a tiny, fast CPU run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

#: Tiny stand-in teacher, 2-block student, few prototypes: seconds per run on one CPU core.
TINY = [
    'teachers=[{card="tiny-teacher"}]',
    'student.name="vit-test14"',
    "train.batch_size=2",
    "train.log_every=1",
    "train.checkpoint_every=2",
    "train.eval_tiles=16",
    "optim.warmup_steps=2",
    "views.fixed_views=2",
    "views.global_crops=1",
    "views.local_crops=1",
    "loss.dino_out_dim=64",
    "loss.ibot_out_dim=64",
    "loss.head_hidden_dim=32",
    "loss.head_bottleneck_dim=16",
    "loss.proj_hidden_dim=32",
    "loss.teacher_temp_warmup_steps=0",
    "loss.koleo_weight=0.1",  # the h0mini card's; explicit, so the training tests keep its path
    "ema.momentum=0.9",
]


#: ``xmag`` regions on the small sample slide (2220 x 2967 px; a 2.0 mpp region is 898 px): a
#: half-region stride, a 30 % held-out band, regions with at least 30 % tissue.
XMAG_SAMPLE = ["data.stride=0.5", "data.holdout=0.3", "data.min_tissue=0.3"]


@pytest.fixture(scope="session")
def tile_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """224 px tiles cut from the shipped real H&E images (20 tiles)."""
    from edgepath.data import sample_tiles

    folder = tmp_path_factory.mktemp("tiles")
    n = 0
    for path in sample_tiles("he") + sample_tiles("stain"):
        rgb = np.asarray(Image.open(path).convert("RGB"))
        h, w = rgb.shape[:2]
        for y in range(0, h - 223, 224):
            for x in range(0, w - 223, 224):
                Image.fromarray(rgb[y : y + 224, x : x + 224]).save(folder / f"t{n:03d}.png")
                n += 1
    assert n >= 20
    return folder


@pytest.fixture(autouse=True)
def _one_thread():
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
