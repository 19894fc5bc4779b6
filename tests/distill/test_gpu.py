"""GPU-only paths: bf16 autocast on CUDA, NCCL, FSDP-sharded teacher (skipped without a GPU)."""

from __future__ import annotations

import os
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


@pytest.mark.gpu
def test_fsdp_teacher_single_gpu(
    tile_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch.distributed as dist

    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29533")
    dist.init_process_group("nccl", rank=0, world_size=1)
    try:
        card = load_recipe(
            "xmag",
            [
                *TINY,
                "train.steps=2",
                "train.strategy=fsdp",
                "data.holdout=0.3",
                "data.min_tissue=0.3",
            ],
        )
        from edgepath.data import SAMPLE_SLIDE

        man = distill(card, out=tmp_path, slides=SAMPLE_SLIDE)
        assert man["steps"] == 2
    finally:
        dist.destroy_process_group()
        os.environ.pop("MASTER_PORT", None)
