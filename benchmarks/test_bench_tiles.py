"""Tile reading + resizing and preprocessing: what feeds the engines."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def slide():
    from edgepath.data import SAMPLE_SLIDE
    from edgepath.slides import open_slide

    with open_slide(SAMPLE_SLIDE) as s:
        yield s


@pytest.mark.parametrize("mpp", [0.5, 1.0, 2.0])
def test_read_tile(benchmark, slide, mpp: float) -> None:
    """One 224 px tile at ``mpp`` from the real sample slide (0.499 mpp level 0): read + resize."""
    side = int(224 * mpp / slide.mpp) + 1
    w, h = slide.dimensions
    rng = np.random.default_rng(0)
    xy = [(int(rng.integers(0, w - side)), int(rng.integers(0, h - side))) for _ in range(64)]
    it = iter(xy * 10_000)

    def read() -> np.ndarray:
        x, y = next(it)
        return slide.read_tile(x, y, mpp=mpp, tile_px=224)

    tile = benchmark(read)
    assert tile.shape == (224, 224, 3)


def test_preprocess_batch16(benchmark) -> None:
    """uint8 NHWC batch of 16 -> normalised float32 NCHW (the runtime's normalize)."""
    from edgepath.models.cards import InputSpec
    from edgepath.models.students import student_spec
    from edgepath.runtime import normalize

    spec = student_spec(
        "vit-s14", input=InputSpec(224, 0.5, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    )
    tiles = np.random.default_rng(0).integers(0, 256, (16, 224, 224, 3), dtype=np.uint8)
    out = benchmark(normalize, tiles, spec)
    assert out.shape == (16, 3, 224, 224) and out.dtype == np.float32
