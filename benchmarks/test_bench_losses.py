"""Distillation losses at a ViT-S/14 student's training shapes (batch 64, 65,536 prototypes)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def logits():
    g = torch.Generator().manual_seed(0)
    return {
        "cls_s": [torch.randn(32, 8192, generator=g) for _ in range(2)],
        "cls_t": [torch.softmax(torch.randn(32, 8192, generator=g), -1) for _ in range(2)],
        "patch_s": torch.randn(16, 256, 2048, generator=g),
        "patch_t": torch.softmax(torch.randn(16, 256, 2048, generator=g), -1),
        "emb": torch.randn(64, 384, generator=g),
    }


def test_dino_cls_loss(benchmark, logits) -> None:
    from edgepath.distill.losses.dino_cls import DINOLoss

    loss = DINOLoss(8192)
    out = benchmark(loss, logits["cls_s"], logits["cls_t"])
    assert torch.isfinite(out)


def test_ibot_patch_loss(benchmark, logits) -> None:
    from edgepath.distill.losses.ibot_patch import IBOTPatchLoss

    loss = IBOTPatchLoss(2048)
    out = benchmark(loss, logits["patch_s"], logits["patch_t"])
    assert torch.isfinite(out)


def test_koleo_loss(benchmark, logits) -> None:
    from edgepath.distill.losses.koleo import KoLeoLoss

    out = benchmark(KoLeoLoss(), logits["emb"])
    assert torch.isfinite(out)


@pytest.mark.parametrize("precision", ["float32", "float16"])
def test_plism_pair_metrics(benchmark, precision: str) -> None:
    """One PLISM slide pair at plismbench's default subset (8,139 tiles, 384-d), slides prepared."""
    import numpy as np

    from edgepath.eval import plism_rank

    rng = np.random.default_rng(0)
    a = rng.normal(size=(8139, 384)).astype(np.float32)
    b = (a + rng.normal(scale=0.5, size=a.shape)).astype(np.float32)
    pa = plism_rank.prepare(a, precision=precision)
    pb = plism_rank.prepare(b, precision=precision)
    out = benchmark(plism_rank.pair_metrics, pa, pb, precision=precision)
    assert 0 <= out["top10"] <= 1
