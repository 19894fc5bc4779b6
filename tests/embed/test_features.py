"""Feature files: CLAM/TRIDENT layout, attributes, atomic writes."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from edgepath.embed.features import read_attrs, read_features, write_features
from edgepath.errors import ArtifactError


def test_layout_and_attrs(tmp_path):
    feats = np.random.default_rng(0).normal(size=(5, 8)).astype(np.float32)
    coords = np.array([[0, 0], [448, 0], [0, 448], [448, 448], [896, 0]])
    out = write_features(
        tmp_path / "s.h5",
        feats,
        coords,
        mpp=0.5,
        tile_px=224,
        level0_tile_size=448.0,
        attrs={"model_id": "m", "model_sha256": "ab" * 32, "tiling": {"mpp": 0.5}},
    )
    with h5py.File(out, "r") as f:
        assert f["features"].shape == (5, 8) and f["features"].dtype == np.float32
        assert f["coords"].shape == (5, 2) and f["coords"].dtype == np.int64
        # what TRIDENT's readers take from the coords dataset
        assert f["coords"].attrs["patch_size"] == 224
        assert f["coords"].attrs["patch_size_level0"] == 448
    ff = read_features(out)
    np.testing.assert_array_equal(ff.features, feats)
    np.testing.assert_array_equal(ff.coords, coords)
    a = read_attrs(out)
    assert a["mpp"] == 0.5 and a["tile_px"] == 224 and a["level0_tile_size"] == 448.0
    assert a["model_id"] == "m" and a["model_sha256"] == "ab" * 32
    assert a["edgepath_version"] and a["n_tiles"] == 5 and a["embed_dim"] == 8
    assert a["tiling"] == '{"mpp": 0.5}'
    assert [p.name for p in tmp_path.iterdir()] == ["s.h5"]  # no temporary left


def test_empty_slide(tmp_path):
    out = write_features(
        tmp_path / "e.h5",
        np.zeros((0, 4)),
        np.zeros((0, 2)),
        mpp=1,
        tile_px=8,
        level0_tile_size=8,
    )
    ff = read_features(out)
    assert ff.features.shape == (0, 4) and ff.coords.shape == (0, 2)


def test_mismatch_and_failure_leave_nothing(tmp_path):
    with pytest.raises(ValueError):
        write_features(
            tmp_path / "x.h5",
            np.zeros((3, 4)),
            np.zeros((2, 2)),
            mpp=1,
            tile_px=8,
            level0_tile_size=8,
        )
    assert list(tmp_path.iterdir()) == []


def test_unreadable(tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5")
    with pytest.raises(ArtifactError, match="bad.h5"):
        read_attrs(bad)
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = 1
    with pytest.raises(ArtifactError, match="not a feature file"):
        read_features(tmp_path / "other.h5")
