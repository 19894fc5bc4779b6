"""TRIDENT and CLAM compatibility: the attributes their readers use, reading their files back,
and ``embed --coords`` on a patch file written as TRIDENT writes it."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from edgepath.embed.features import read_features
from edgepath.metrics import rowwise_cosine

from .test_embed import _direct

#: TRIDENT's coords attributes (``trident.IO.coords_to_h5``) and CLAM's ``patch_level``.
TRIDENT_COORDS = {
    "patch_size",
    "patch_size_level0",
    "level0_magnification",
    "target_magnification",
    "overlap",
    "level0_width",
    "level0_height",
    "name",
    "patch_level",
}


def _save_h5_as_trident(path, assets: dict, attributes: dict) -> None:
    """``trident.IO.save_h5``: chunked, resizable datasets, attributes on the datasets only."""
    with h5py.File(path, "w") as f:
        for key, val in assets.items():
            d = f.create_dataset(
                key,
                shape=val.shape,
                maxshape=(None, *val.shape[1:]),
                chunks=(1, *val.shape[1:]),
                dtype=val.dtype,
            )
            d[:] = val
            for k, v in attributes.get(key, {}).items():
                d.attrs[k] = json.dumps(v) if isinstance(v, dict) else ("None" if v is None else v)


def _trident_patch_file(path, coords, *, patch_size, src_mag, target_mag, width, height, name):
    """``trident.IO.coords_to_h5`` (TRIDENT's ``extract_tissue_coords``), attribute for attribute."""
    _save_h5_as_trident(
        path,
        {"coords": np.asarray(coords, dtype=np.int64)},
        {
            "coords": {
                "patch_size": patch_size,
                "patch_size_level0": patch_size * src_mag // target_mag,
                "level0_magnification": src_mag,
                "target_magnification": target_mag,
                "overlap": 0,
                "name": name,
                "savetodir": str(path.parent.parent),
                "level0_width": width,
                "level0_height": height,
            }
        },
    )


def test_feature_file_carries_tridents_and_clams_attributes(
    run_cli, tiny_model, sample_slide, tmp_path
) -> None:
    from edgepath.slides import open_slide

    code, _, err = run_cli("embed", str(tiny_model), str(sample_slide), "-o", str(tmp_path))
    assert code == 0, err
    ff = read_features(tmp_path / "cmu-1-small-region.h5")
    c = ff.coords_attrs
    assert set(c) >= TRIDENT_COORDS
    with open_slide(sample_slide) as s:
        width, height = s.dimensions
    assert (c["level0_width"], c["level0_height"]) == (width, height)
    # 0.499 µm/px slide: TRIDENT's 20x; 0.5 µm/px tiles: 10 / 0.5 = 20x, read at level 0
    assert (c["level0_magnification"], c["target_magnification"]) == (20, 20)
    assert (c["patch_size"], c["patch_size_level0"], c["overlap"], c["patch_level"]) == (
        224,
        224,
        0,
        0,
    )
    assert c["name"] == "cmu-1-small-region" and c["mpp"] == 0.5  # edgepath's kept
    assert ff.features_attrs == {"encoder": "vit-test14", "name": "cmu-1-small-region"}
    # TRIDENT's extract_patch_features / visualize_coords: all three present (no CLAM fallback),
    # and the level-0 patch its WSIPatcher derives is the one edgepath read
    assert None not in (
        c.get("patch_size"),
        c.get("level0_magnification"),
        c["target_magnification"],
    )
    src = round(
        c["patch_size"] * (10 / c["target_magnification"]) / (10 / c["level0_magnification"])
    )
    assert src == c["patch_size_level0"]
    with h5py.File(tmp_path / "cmu-1-small-region.h5") as f:  # TRIDENT's read_coords_legacy
        assert f["coords"].attrs["patch_level"] == 0 and f["coords"].attrs["patch_size"] == 224


def test_read_features_returns_tridents_dataset_metadata(tmp_path) -> None:
    path = tmp_path / "slide.h5"
    _save_h5_as_trident(
        path,
        {"features": np.ones((3, 8), np.float32), "coords": np.zeros((3, 2), np.int64)},
        {
            "features": {"name": "slide", "savetodir": str(tmp_path), "encoder": "uni_v1"},
            "coords": {"patch_size": 256, "level0_magnification": 40, "target_magnification": 20},
        },
    )
    ff = read_features(path)
    assert ff.attrs == {}  # TRIDENT writes nothing on the root
    assert ff.features_attrs["encoder"] == "uni_v1" and ff.features_attrs["name"] == "slide"
    assert ff.coords_attrs["level0_magnification"] == 40 and ff.coords_attrs["patch_size"] == 256
    assert ff.features.shape == (3, 8)


def test_coords_files_carry_the_same_attributes(sample_slide, tmp_path) -> None:
    from edgepath.slides import open_slide, read_coords, tile_slide, write_coords

    with open_slide(sample_slide) as s:
        grid = tile_slide(s, mpp=2.0, tile_px=224, min_tissue=0.1)
    write_coords(tmp_path / "c.h5", grid)
    with h5py.File(tmp_path / "c.h5") as f:
        a = dict(f["coords"].attrs)
    assert set(a) >= TRIDENT_COORDS
    assert a["target_magnification"] == 5 and a["level0_magnification"] == 20
    assert a["patch_size_level0"] == round(224 * 2.0 / 0.499)
    back = read_coords(tmp_path / "c.h5")
    assert back.dimensions == grid.dimensions and "level0_width" not in back.extra


def _embed_with_coords(run_cli, model, slide, coords_dir, out):
    return run_cli(
        "embed", str(model), str(slide), "-o", str(out), "--coords", str(coords_dir), "--json"
    )


def test_embed_reuses_a_trident_patch_file(run_cli, tiny_model, sample_slide, tmp_path) -> None:
    """A TRIDENT job's patches/<name>_patches.h5 (20x, 224 px): no retiling, same corners."""
    from edgepath.slides import open_slide

    with open_slide(sample_slide) as s:
        width, height = s.dimensions
    coords = np.array([[0, 0], [224, 0], [448, 224], [672, 448], [896, 672]])
    job = tmp_path / "trident_job" / "20x_224px_0px_overlap"
    (job / "patches").mkdir(parents=True)
    _trident_patch_file(
        job / "patches" / "cmu-1-small-region_patches.h5",
        coords,
        patch_size=224,
        src_mag=20,
        target_mag=20,
        width=width,
        height=height,
        name="cmu-1-small-region",
    )
    code, stdout, err = _embed_with_coords(run_cli, tiny_model, sample_slide, job, tmp_path / "f")
    assert code == 0, err
    assert json.loads(stdout)["tiles"] == len(coords)
    ff = read_features(tmp_path / "f" / "cmu-1-small-region.h5")
    np.testing.assert_array_equal(ff.coords, coords)
    assert rowwise_cosine(ff.features, _direct(tiny_model, sample_slide, coords)).min() >= 0.999
    assert ff.attrs["coords_file"].endswith("cmu-1-small-region_patches.h5")
    # the patch file is part of the resume key: the same one is skipped, another is redone
    code, stdout, _ = _embed_with_coords(run_cli, tiny_model, sample_slide, job, tmp_path / "f")
    assert json.loads(stdout)["skipped"] == 1
    _trident_patch_file(
        job / "patches" / "cmu-1-small-region_patches.h5",
        coords[:2],
        patch_size=224,
        src_mag=20,
        target_mag=20,
        width=width,
        height=height,
        name="cmu-1-small-region",
    )
    code, stdout, _ = _embed_with_coords(run_cli, tiny_model, sample_slide, job, tmp_path / "f")
    assert json.loads(stdout)["done"] == 1
    assert len(read_features(tmp_path / "f" / "cmu-1-small-region.h5").coords) == 2


def test_embed_takes_clam_patch_files(run_cli, tiny_model, sample_slide, tmp_path) -> None:
    """CLAM's create_patches_fp: patch_size at patch_level, no patch_size_level0."""
    coords = np.array([[0, 0], [256, 256]], dtype=np.int64)
    with h5py.File(tmp_path / "cmu-1-small-region.h5", "w") as f:
        d = f.create_dataset("coords", data=coords)
        d.attrs["patch_size"], d.attrs["patch_level"] = 224, 0
        d.attrs["downsample"] = np.array([1.0, 1.0])
    code, _, err = _embed_with_coords(run_cli, tiny_model, sample_slide, tmp_path, tmp_path / "o")
    assert code == 0, err
    np.testing.assert_array_equal(
        read_features(tmp_path / "o" / "cmu-1-small-region.h5").coords, coords
    )


@pytest.mark.parametrize("mag", [10, None])
def test_wrong_or_missing_patch_file_fails_that_slide(
    run_cli, tiny_model, sample_slide, tmp_path, mag
) -> None:
    if mag is not None:  # 10x patches: 448 level-0 px, the model reads 224
        _trident_patch_file(
            tmp_path / "cmu-1-small-region_patches.h5",
            [[0, 0]],
            patch_size=224,
            src_mag=20,
            target_mag=mag,
            width=2220,
            height=2967,
            name="cmu-1-small-region",
        )
    code, stdout, _ = _embed_with_coords(
        run_cli, tiny_model, sample_slide, tmp_path, tmp_path / "o"
    )
    assert code == 3
    error = json.loads(stdout)["failures"][0]["error"]
    assert ("--mag 20 --patch_size 224" if mag else "no patch file") in error
