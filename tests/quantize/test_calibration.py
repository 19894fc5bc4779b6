"""Calibration sampling: real tissue, deterministic, hashed, held-out disjoint from calibration."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgepath.data import TILES_DIR
from edgepath.errors import ConfigError
from edgepath.quantize.calibration import sample_calibration


def _boxes(origins: list[str], size: float) -> dict[str, list[tuple[float, float]]]:
    out: dict[str, list[tuple[float, float]]] = {}
    for o in origins:
        name, xy = o.rsplit("@", 1)
        x, y = map(float, xy.split(","))
        out.setdefault(name, []).append((x, y))
    return out


def _overlap(a: tuple[float, float], b: tuple[float, float], size: float) -> bool:
    return abs(a[0] - b[0]) < size - 1e-6 and abs(a[1] - b[1]) < size - 1e-6


def test_slide_sampling_is_deterministic_disjoint_and_tissue(sample_slide: Path) -> None:
    cal, held = sample_calibration([sample_slide], tile_px=224, mpp=0.5, n_calib=60, n_heldout=20)
    assert cal.tiles.shape == (60, 224, 224, 3) and cal.tiles.dtype == np.uint8
    assert len(held) == 20 and len(set(cal.origins)) == 60
    # more calibration tiles than the slide has grid tiles: sub-cell offsets make them distinct
    again, held2 = sample_calibration(
        [sample_slide], tile_px=224, mpp=0.5, n_calib=60, n_heldout=20
    )
    assert again.sha256 == cal.sha256 and held2.sha256 == held.sha256
    other, _ = sample_calibration(
        [sample_slide], tile_px=224, mpp=0.5, n_calib=60, n_heldout=20, seed=1
    )
    assert other.sha256 != cal.sha256
    # no calibration pixel inside any held-out tile (level-0 footprint of 224 px at 0.5 mpp)
    fp = 224 * 0.5 / 0.499
    c, h = _boxes(cal.origins, fp), _boxes(held.origins, fp)
    for name, boxes in c.items():
        for b in boxes:
            assert not any(_overlap(b, hb, fp) for hb in h.get(name, []))
    # tissue, not glass: H&E tiles are far from white on average
    assert cal.tiles.mean() < 215 and held.tiles.mean() < 215


def test_tile_images_skip_pen_and_glass() -> None:
    cal, held = sample_calibration([TILES_DIR], tile_px=224, mpp=0.5, n_calib=20, n_heldout=12)
    used = {o.rsplit("@", 1)[0] for o in cal.origins + held.origins}
    assert used and not any(n.startswith(("no-tissue", "almost-white")) for n in used)
    assert not set(cal.origins) & set(held.origins)


def test_missing_or_empty_input_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        sample_calibration([tmp_path / "nope.svs"], tile_px=224, mpp=0.5)
    with pytest.raises(ConfigError, match="empty"):
        sample_calibration([tmp_path], tile_px=224, mpp=0.5)
