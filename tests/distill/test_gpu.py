"""GPU-only paths: bf16 autocast on CUDA (skipped without a GPU)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from edgepath.distill.recipe import load_recipe
from edgepath.distill.trainer import distill

from .conftest import TINY


@pytest.mark.gpu
def test_cuda_bf16_run(tile_dir: Path, tmp_path: Path) -> None:
    card = load_recipe(
        "h0mini", [*TINY, "train.steps=3", "data.holdout=0.4", "train.precision=bf16"]
    )
    man = distill(card, out=tmp_path, tiles=tile_dir)
    assert man["fidelity"]["n_tiles"] > 0
    assert torch.cuda.max_memory_allocated() > 0  # ran on the GPU
