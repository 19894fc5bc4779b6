"""A synthesized pyramidal slide embeds on onnxruntime and openvino like ``slides tile`` + torch."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgepath.embed.features import read_features
from edgepath.metrics import rowwise_cosine


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    from edgepath.slides import synthesize_slide

    return synthesize_slide(tmp_path_factory.mktemp("syn") / "syn.tiff", tiles=60, seed=3)


@pytest.mark.slow
def test_synthetic_slide_on_both_engines(run_cli, tiny_model, synthetic, tmp_path):
    import torch

    from edgepath.models.artifact import load_encoder
    from edgepath.models.encoder import to_tensor
    from edgepath.slides import open_slide, read_coords

    code, _, err = run_cli(
        "slides", "tile", str(synthetic), "-o", str(tmp_path / "tiles"), "--no-overlay", "--json"
    )
    assert code == 0, err
    tiled = read_coords(tmp_path / "tiles" / "syn.h5")
    feats = {}
    for engine in ("onnxruntime", "openvino"):
        out = tmp_path / engine
        code, stdout, err = run_cli(
            "embed",
            str(tiny_model),
            str(synthetic),
            "-o",
            str(out),
            "--engine",
            engine,
            "--workers",
            "1",
            "--json",
        )
        assert code == 0, err
        assert json.loads(stdout)["done"] == 1
        ff = read_features(out / "syn.h5")
        np.testing.assert_array_equal(ff.coords, tiled.coords)  # as `edgepath slides tile`
        assert ff.attrs["level0_tile_size"] == pytest.approx(tiled.level0_tile_size)
        feats[engine] = ff.features
    enc = load_encoder(tiny_model)
    with open_slide(synthetic) as s:
        tiles = np.stack([s.read_tile(x, y, mpp=0.5, tile_px=224) for x, y in tiled.coords])
    with torch.no_grad():
        ref = enc(to_tensor(tiles, enc.spec)).numpy()
    for engine, f in feats.items():
        assert rowwise_cosine(f, ref).min() >= 0.999, engine
