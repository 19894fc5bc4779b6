"""The research scripts' helpers (research/_helpers.py, outside the package) and their entry points."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from research._helpers import code_knn_agreement, ridge_readout
from tests.conftest import REPO


def test_ridge_readout_recovers_a_linear_map_across_dimensions():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 6))
    w, b = rng.normal(size=(6, 3)), rng.normal(size=3)
    xe = rng.normal(size=(20, 6))
    pred = ridge_readout(x, x @ w + b, xe, alpha=1e-8)
    assert pred.shape == (20, 3)
    assert np.allclose(pred, xe @ w + b, atol=1e-5)
    shrunk = ridge_readout(x, x @ w + b, xe, alpha=10.0)  # the penalty does act
    assert not np.allclose(shrunk, xe @ w + b, atol=1e-2)


def test_frozen_head_code_keeps_the_teachers_neighbourhoods_at_frozen_head_temp() -> None:
    """Why ``loss.frozen_head_temp`` exists: at DINO's 0.07 the random-prototype code is one or
    two prototypes wide and loses most neighbourhoods; at the default it keeps most of them."""
    import torch

    from edgepath.distill.heads import FrozenPrototypeHead
    from edgepath.distill.recipe import LossSpec

    g = torch.Generator().manual_seed(0)
    z, mix = torch.randn(400, 8, generator=g), torch.randn(8, 192, generator=g)
    x = 3.0 + z @ mix + 0.5 * torch.randn(400, 192, generator=g)  # low-rank structure + noise
    head = FrozenPrototypeHead(192, 2048, seed=1)
    head.mu.copy_(x.mean(0))
    dino = code_knn_agreement(x, head, 0.07)
    frozen = code_knn_agreement(x, head, LossSpec().frozen_head_temp)
    assert dino < 0.5 and frozen > 0.75, (dino, frozen)  # measured 0.37 / 0.86


@pytest.mark.parametrize("script", ["xmag_ceiling", "standin_predictability", "frozen_head_code"])
def test_scripts_import_their_helpers_as_module_and_as_file(script: str) -> None:
    for cmd in (["-m", f"research.{script}"], [str(REPO / "research" / f"{script}.py")]):
        res = subprocess.run(
            [sys.executable, *cmd, "--help"], cwd=REPO, capture_output=True, text=True
        )
        assert res.returncode == 0 and "usage:" in res.stdout, res.stderr


@pytest.mark.skipif(
    shutil.which("gcc") is None or not Path("/usr/include/jpeglib.h").exists(),
    reason="needs gcc and libjpeg headers (apt install gcc libjpeg-dev)",
)
def test_decode_scatter_writes_the_readers_tiles(tmp_path: Path) -> None:
    """The issue-26 prototype (research/decode_scatter.c) decodes straight into output tiles: the
    script checks them against the reader's, bit for bit, before it times anything, and exits
    non-zero if they differ."""
    import json

    from edgepath.slides.synth import synthesize_slide

    slide = synthesize_slide(tmp_path / "s.tiff", tiles=40, seed=2, levels=2)
    script = REPO / "research" / "decode_scatter.py"
    res = subprocess.run(
        [sys.executable, str(script), str(slide), "--repeats", "1", "--ring", "48"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["tiles"] >= 30 and out["tiff_tiles"] > 0
    assert set(out["fraction_of_limit"]) == {"scanline_scatter", "reader"}
    assert all(len(v) == 1 for v in out["seconds"].values())


def test_reader_prefetch_pairs_each_depth_with_one_worker(tmp_path: Path) -> None:
    """research/reader_prefetch.py times every pool on the same passes and reports each
    2-worker depth's scaling as one worker's median over its own."""
    import json
    import statistics

    from edgepath.slides.synth import synthesize_slide

    slide = synthesize_slide(tmp_path / "s.tiff", tiles=20, seed=4, levels=2)
    script = REPO / "research" / "reader_prefetch.py"
    cmd = [sys.executable, str(script), str(slide), "--repeats", "2", "--prefetch", "2,4"]
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    sec = out["seconds"]
    assert set(sec) == {"w1-p2", "w2-p2", "w2-p4"} and all(len(v) == 2 for v in sec.values())
    want = statistics.median(sec["w1-p2"]) / statistics.median(sec["w2-p4"])
    assert out["scaling_vs_1"]["p4"] == pytest.approx(want, rel=2e-3)
    assert len(out["scaling_per_repeat"]["p2"]) == 2
