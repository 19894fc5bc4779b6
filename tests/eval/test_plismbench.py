"""plismbench's protocol files and formats: subsets, tile order, features.npy, results.csv."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest

from edgepath.errors import ConfigError
from edgepath.eval import plism, plismbench

#: SHA-256 of plismbench's assets/tiles_subset_*.npy (owkin/plism-benchmark b4f32b7): the
#: shipped copies must be byte-identical, or edgepath would score other tiles than plismbench.
SUBSET_SHA256 = {
    460: "6526e1c43f329c16d1282e59feb5688aca827bde678320e86b3fc5c12567807f",
    2713: "5299caccb226cd3f5ae466cf1d9b620167bde598f2d02e8fbbc7a84d0dbf3698",
    5426: "4941e90d717e846a0aab5ffd8fa121948619002cd1d07192a97cc074ab6b9f67",
    8139: "7d3c5cb3cd5364263a388d0bb4ad25b0dfa117f9718c4f69688e427a77ebb298",
}


@pytest.mark.parametrize("n", plismbench.SUBSETS)
def test_shipped_subset_files_are_plismbench_s(n: int) -> None:
    path = plismbench.SUBSET_DIR / f"tiles_subset_{n}.npy"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == SUBSET_SHA256[n]
    rows = plismbench.subset_rows(n)
    assert rows.shape == (n,) and len(set(rows.tolist())) == n
    assert rows.min() >= 0 and rows.max() < plismbench.PLISM_TILES
    assert not (np.diff(rows) > 0).all()  # the file's own order, not sorted: it is kept


def test_select_rows_uses_the_files_only_under_plismbench_s_protocol() -> None:
    for n in plismbench.SUBSETS:
        rows, info = plismbench.select_rows(16_278, n, plismbench_rows=True)
        assert (rows == np.load(plismbench.SUBSET_DIR / f"tiles_subset_{n}.npy")).all()
        assert info == {"subset": "plismbench", "subset_file": f"tiles_subset_{n}.npy"}
    rows, info = plismbench.select_rows(16_278, None, plismbench_rows=True)  # the default
    assert len(rows) == 8139 and info["subset_file"] == "tiles_subset_8139.npy"
    rows, info = plismbench.select_rows(16_278, 16_278, plismbench_rows=True)
    assert (rows == np.arange(16_278)).all() and info["subset"] == "plismbench"
    # any other size, other ids or another tile count: a seeded subset, and the reason
    rows, info = plismbench.select_rows(16_278, 1000, plismbench_rows=True, seed=3)
    assert info["subset"] == "seeded" and "not one of plismbench's subsets" in info["subset_note"]
    assert len(rows) == 1000 and (np.diff(rows) > 0).all()
    again, _ = plismbench.select_rows(16_278, 1000, plismbench_rows=True, seed=3)
    assert (rows == again).all()
    _, info = plismbench.select_rows(16_278, 8139, plismbench_rows=False)
    assert info["subset"] == "seeded" and "coordinates" in info["subset_note"]
    rows, info = plismbench.select_rows(500, None, plismbench_rows=True)
    assert info["subset"] == "all" and "500 aligned tiles" in info["subset_note"]
    assert len(rows) == 500


def test_tile_order_is_numeric_x_then_y() -> None:
    rng = np.random.default_rng(0)
    coords = [(16, x, y) for x in (3, 9, 10, 100) for y in (0, 7, 20)]
    ids = [f"GMHS60_{c0}_{x}_{y}" for c0, x, y in coords]
    shuffled = [ids[i] for i in rng.permutation(len(ids))]
    got, c = plismbench.plismbench_order(shuffled)
    # as strings "100" < "3" < "9"; numerically x = 3, 9, 10, 100, then y
    assert got == ids
    assert c.tolist() == [list(t) for t in coords]
    assert plismbench.plismbench_order(["tile_1_2", "a_1_2_3"]) is None  # not every id parses
    assert plismbench.parse_tile_id("x_1_2_3") == (1, 2, 3)
    assert plismbench.parse_tile_id("000123") is None


def test_feature_files_round_trip_and_bad_files_name_the_file(tmp_path: Path) -> None:
    coords = np.array([[16, 1, 2], [16, 1, 3]])
    feats = np.arange(8, dtype=np.float64).reshape(2, 4)
    path = plismbench.write_feature_file(
        tmp_path / "S_A_to_GMH_S60.tif" / "features.npy", coords, feats
    )
    arr = np.load(path)
    assert arr.dtype == np.float32 and arr.shape == (2, 7)
    assert (arr[:, :3] == coords).all() and (arr[:, 3:] == feats).all()
    assert not [p for p in path.parent.iterdir() if p.name != "features.npy"]  # no temp left
    bad = tmp_path / "S_B_to_GMH_S60.tif"
    bad.mkdir()
    np.save(bad / "features.npy", np.zeros((2, 3), np.float32))
    with pytest.raises(ConfigError, match=r"S_B_to_GMH_S60.tif/features.npy: shape \(2, 3\)"):
        plismbench.check_aligned(plismbench.feature_slides(tmp_path))
    np.save(bad / "features.npy", np.zeros((2, 7), np.float32))
    with pytest.raises(ConfigError, match="tile coordinates"):
        plismbench.check_aligned(plismbench.feature_slides(tmp_path))
    with pytest.raises(ConfigError, match="features folder not found"):
        plismbench.feature_slides(tmp_path / "nowhere")


def test_results_csv_is_plismbench_s_format() -> None:
    keys = {n: plism.parse_slide_name(n) for n in ("GM_P_x", "GM_S60_x", "HR_P_x", "HR_S60_x")}
    names = list(keys)
    pairs = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            pairs.append({"a": a, "b": b, "cosine": 0.5, "top1": 1.0, "top10": 0.25})
    pairs[0]["cosine"] = 1.0  # GM_P-GM_S60 (inter-scanner)
    text = plismbench.results_csv(pairs, keys, ks=(1, 10))
    lines = text.splitlines()
    assert lines[0] == ",cosine_similarity,top_1_accuracy,top_10_accuracy"
    # inter-scanner: cosines 1.0 and 0.5 -> mean 0.75, std 0.25, median 0.75, IQR 0.25
    assert lines[1] == (
        "inter-scanner,0.750 (0.250) ; 0.750 (0.250),1.000 (0.000) ; 1.000 (0.000),"
        "0.250 (0.000) ; 0.250 (0.000)"
    )
    assert lines[3].startswith('"inter-scanner, inter-staining",0.500 (0.000) ; 0.500 (0.000),')
    assert lines[4].startswith("all,0.583 (0.186) ; 0.500 (0.000),")  # IQR of 5 x 0.5, 1 x 1.0
    cell = re.compile(r"^-?\d\.\d{3} \(\d\.\d{3}\) ; -?\d\.\d{3} \(\d\.\d{3}\)$")
    assert all(cell.match(c) for line in lines[1:] for c in line.rsplit(",", 3)[1:])


def test_leaderboard_rows_are_consistent_and_placing_works() -> None:
    assert len(plismbench.LEADERBOARD) == 15
    assert plismbench.LEADERBOARD[0]["extractor"] == "H0-Mini"
    for row in plismbench.LEADERBOARD:  # the published metric is the mean of the four columns
        mean = np.mean([row[c] for c in plismbench.COMPONENTS])
        assert abs(mean - row["score"]) <= 0.0006, row
    assert plismbench.place(0.6) == 1 and plismbench.place(0.541) == 1
    assert plismbench.place(0.5) == 2 and plismbench.place(0.0) == 16
    base = {"suite": "plism", "n_slides": 91, "n_tiles": 8139, "precision": "float16"}
    ok = {**base, "protocol": {"subset": "plismbench"}}
    assert plismbench.protocol_differences(ok) == []
    diffs = plismbench.protocol_differences(
        {**base, "precision": "float32", "n_tiles": 2713, "protocol": {"subset": "seeded"}}
    )
    assert len(diffs) == 2 and "seeded" in diffs[0] and "float32" in diffs[1]
    assert "synthetic suite" in plismbench.protocol_differences({**ok, "suite": "synthetic"})[0]
