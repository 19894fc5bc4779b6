"""PLISM loading (HDF5 and tile folders) and the robustness CLI on a small fixture in PLISM layout."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from edgepath.eval import domains as D
from edgepath.eval import robustness

SLIDES = {  # staining_scanner -> a transform standing in for that staining / scanner
    "GM_AT2": lambda t, r: t,
    "GM_P": lambda t, r: D.blur(t, 1.0),
    "HR_AT2": lambda t, r: D.hed_jitter(t, 0.1, r),
    "HR_P": lambda t, r: D.blur(D.hed_jitter(t, 0.1, r), 1.0),
}


def _fixture_tiles(n: int = 24) -> dict[str, np.ndarray]:
    base = D.base_tiles(56, n=n, seed=0)
    rng = np.random.default_rng(0)
    return {f"{k}_to_GMH_S60.tif": np.stack([f(t, rng) for t in base]) for k, f in SLIDES.items()}


@pytest.fixture(scope="module")
def plism_h5(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Per-slide HDF5, one dataset per tile id, as owkin's release; one slide lacks one tile."""
    folder = tmp_path_factory.mktemp("plism-h5")
    for i, (name, tiles) in enumerate(_fixture_tiles().items()):
        with h5py.File(folder / f"{name}.h5", "w") as f:
            order = np.random.default_rng(i).permutation(len(tiles))  # written in any order
            for j in order:
                if i == 3 and j == 5:
                    continue  # a missing tile: it must drop out of every slide
                f.create_dataset(f"tile_{j:05d}", data=tiles[j])
    return folder


@pytest.fixture(scope="module")
def plism_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("plism-png")
    for name, tiles in _fixture_tiles().items():
        (folder / name).mkdir()
        for j, t in enumerate(tiles):
            if name.startswith("HR_P") and j == 5:
                continue
            Image.fromarray(t).save(folder / name / f"tile_{j:05d}.png")
    return folder


def test_layouts_align_the_same_tiles(plism_h5: Path, plism_png: Path) -> None:
    a = robustness.find_plism(plism_h5)
    b = robustness.find_plism(plism_png)
    assert [s.name for s in a] == [s.name for s in b]
    ids = robustness.aligned_ids(a)
    assert len(ids) == 23 and "tile_00005" not in ids
    assert ids == robustness.aligned_ids(b)
    for sa, sb in zip(a, b, strict=True):
        assert (sa.read(ids[:6]) == sb.read(ids[:6])).all()  # PNG is lossless
    # ids without plismbench's coordinates: sorted as text, seeded subset, and it says so
    all_ids, coords, rows, proto = robustness.plism_tiles(a, n_tiles=12, seed=0)
    assert all_ids == ids and coords is None
    assert len(rows) == 12 and proto["subset"] == "seeded" and "coordinates" in proto["subset_note"]
    assert "as text" in proto["order"]


def test_cli_robustness_on_plism_fixture(run_cli, plism_h5: Path, tmp_path: Path) -> None:
    code, out, err = run_cli(
        "bench",
        "robustness",
        "vit-test14",
        "--plism",
        str(plism_h5),
        "--tiles",
        "16",
        "--json",
        "-o",
        str(tmp_path),
    )
    assert code == 0, err
    d = json.loads(out)
    assert d["kind"] == "robustness" and d["suite"] == "plism"
    assert d["n_slides"] == 4 and d["n_tiles"] == 16 and d["n_pairs"] == 6
    assert d["model"]["random_weights"] is True
    assert d["precision"] == "float16"  # PLISM's default: plismbench's numbers
    assert d["protocol"]["subset"] == "seeded" and d["protocol"]["subset_seed"] == 0
    g = d["groups"]
    assert g["cross-scanner"]["cosine"]["n"] == 2  # GM: AT2-P, HR: AT2-P
    assert g["cross-staining"]["cosine"]["n"] == 2
    assert g["cross-both"]["cosine"]["n"] == 2
    assert 0.0 <= d["score"] <= 1.0
    lb = d["leaderboard"]
    assert lb["comparable"] is False and lb["place"] is None
    assert any("4 slides" in x for x in lb["differences"])
    assert Path(d["path"]).is_file()
    csv = tmp_path / "plismbench" / "16_tiles" / "vit-test14" / "results.csv"
    assert d["results_csv"] == str(csv) and csv.read_text().startswith(",cosine_similarity,")


def test_missing_plism_folder_is_a_clean_error(run_cli, tmp_path: Path) -> None:
    code, _, err = run_cli("bench", "robustness", "vit-test14", "--plism", str(tmp_path))
    assert code == 2 and "PLISM" in err and "Traceback" not in err
