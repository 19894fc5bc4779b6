"""Teacher-feature cache: same loss curve as the live teacher; validated, rebuilt or refused."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from edgepath.distill.cache import FeatureCache
from edgepath.distill.recipe import load_recipe
from edgepath.distill.trainer import distill
from edgepath.errors import ConfigError

from .conftest import TINY, XMAG_SAMPLE


def _losses(run: Path) -> list[float]:
    with open(run / "scalars.csv") as f:
        return [float(r["loss"]) for r in csv.DictReader(f)]


@pytest.mark.parametrize("recipe", ["h0mini", pytest.param("expert", marks=pytest.mark.slow)])
def test_cached_and_live_give_the_same_loss_curve(
    recipe: str, tile_dir: Path, tmp_path: Path
) -> None:
    extra = (
        ['teachers=[{card="tiny-teacher"}, {card="tiny-teacher", weight=0.5}]']
        if recipe == "expert"
        else []
    )
    common = [*TINY, *extra, "train.steps=4", "data.holdout=0.4"]
    live = distill(
        load_recipe(recipe, [*common, "train.cache=false"]), out=tmp_path / "live", tiles=tile_dir
    )
    cached = distill(load_recipe(recipe, common), out=tmp_path / "cached", tiles=tile_dir)
    a, b = _losses(tmp_path / "live"), _losses(tmp_path / "cached")
    assert len(a) == len(b) == 4
    assert a == pytest.approx(b, rel=1e-5, abs=1e-6)
    meta = json.loads((tmp_path / "cached" / "cache" / "meta.json").read_text())
    assert meta["complete"] and meta["key"]["teachers"][0]["sha256"]
    assert not (tmp_path / "live" / "cache").exists()
    assert live["fidelity"]["n_tiles"] == cached["fidelity"]["n_tiles"] > 0


def test_xmag_cache_with_flips_matches_the_live_teacher(sample_slide: Path, tmp_path: Path) -> None:
    """Rotated / reflected regions: cached 4x4 teacher features equal the live ones."""
    common = [
        *TINY,
        *XMAG_SAMPLE,
        "train.steps=3",
        "data.max_items=4",
        "train.eval_tiles=8",
        "views.flip=true",
    ]
    live = tmp_path / "live"
    distill(load_recipe("xmag", [*common, "train.cache=false"]), out=live, slides=sample_slide)
    distill(load_recipe("xmag", common), out=tmp_path / "cached", slides=sample_slide)
    assert _losses(live) == pytest.approx(_losses(tmp_path / "cached"), rel=1e-5, abs=1e-6)
    meta = json.loads((tmp_path / "cached" / "cache" / "meta.json").read_text())
    assert meta["key"]["views_format"] == 2  # caches of the flip-less views are not reused


def _compute(idx: list[int], view: int) -> dict[str, torch.Tensor]:
    return {"emb": torch.tensor([[i + 0.25 * view] for i in idx])}


def test_cache_shards_roundtrip_and_mismatch(tmp_path: Path) -> None:
    key = {"teacher": "tiny", "sha256": "abc", "tiling": [1, 2]}
    c = FeatureCache(tmp_path, key, n_items=10, n_views=2, shard_size=4)
    assert c.prepare() == "missing"
    assert c.build(_compute, batch=3) == 3
    c.finish()
    assert c.status() == "complete"
    got = c.get([0, 5, 9], [1, 0, 1])["emb"]
    assert got.tolist() == [[0.25], [5.0], [9.25]]
    # a second process with two ranks would split shards 0, 2 / 1: nothing left to do here
    assert c.build(_compute) == 0
    other = FeatureCache(tmp_path, {**key, "sha256": "def"}, n_items=10, n_views=2, shard_size=4)
    assert other.status() == "mismatch"
    with pytest.raises(ConfigError, match=r"different key\.sha256"):
        other.prepare(on_mismatch="error")
    assert other.prepare(on_mismatch="rebuild") == "mismatch"
    assert other.status() == "partial"  # wiped, fresh meta, shards to build
    assert not other.shard_path(0).exists()


def test_interrupted_build_resumes(tmp_path: Path) -> None:
    c = FeatureCache(tmp_path, {"k": 1}, n_items=8, n_views=1, shard_size=2)
    c.prepare()
    c.build(_compute, rank=0, world=2)  # only shards 0 and 2
    assert c.status() == "partial"
    assert c.build(_compute, rank=0, world=1) == 2  # the two missing ones
    c.finish()
    assert c.status() == "complete"
