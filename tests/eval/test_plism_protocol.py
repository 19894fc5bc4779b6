"""plismbench's protocol end to end on synthetic features in its layout (91 → 9 slides).

The fixtures are written here with plain numpy / h5py, not with edgepath's writers: one folder
per slide named ``{staining}_{scanner}_to_GMH_S60.tif`` holding ``features.npy`` with 16,278
rows ``[c0, c1, c2, feature…]`` sorted by (c1, c2), as plismbench's extractor writes them.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from edgepath.data import DATA_DIR
from edgepath.eval import plismbench, robustness
from tests.eval.test_plism import brute_force_sorted
from tests.eval.test_plism_float16 import brute_force_f16

STAININGS, SCANNERS = ("GM", "HR", "KR"), ("AT2", "P", "S60")
N = 16_278
#: (x, y) of the 16,278 tiles: 6 columns x 2,713 rows of 224 px, in plismbench's row order
COORDS = np.array([(16, 224 * x, 224 * y) for x in range(6) for y in range(2713)])


def _features(seed: int = 0, d: int = 16) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(N, d))
    out = {}
    for st, sc in itertools.product(STAININGS, SCANNERS):
        shift = np.random.default_rng(STAININGS.index(st)).normal(scale=0.5, size=d)
        mix = np.random.default_rng(10 + SCANNERS.index(sc)).normal(scale=0.1, size=(d, d))
        mix += np.eye(d)
        f = (base + shift) @ mix + 0.8 * rng.normal(size=(N, d)) + 1.5
        out[f"{st}_{sc}_to_GMH_S60.tif"] = f.astype(np.float32)
    return out


@pytest.fixture(scope="module")
def features() -> dict[str, np.ndarray]:
    return _features()


@pytest.fixture(scope="module")
def feature_dir(tmp_path_factory: pytest.TempPathFactory, features) -> Path:
    root = tmp_path_factory.mktemp("features") / "my_extractor"
    for name, f in features.items():
        (root / name).mkdir(parents=True)
        np.save(root / name / "features.npy", np.concatenate([COORDS, f], 1).astype(np.float32))
    return root


def _subset_file(n: int) -> np.ndarray:
    return np.load(DATA_DIR / "plism" / f"tiles_subset_{n}.npy")


@pytest.mark.slow
def test_subsets_pick_the_indexed_tiles_in_numeric_xy_order(tmp_path: Path) -> None:
    """HDF5 slides keyed by tile id: ordered by numeric (x, y), then the file's rows."""
    rng = np.random.default_rng(1)
    ids = [f"tile_{c0}_{x}_{y}" for c0, x, y in COORDS]  # already in numeric (x, y) order
    assert sorted(ids) != ids  # as text, "tile_16_0_10024" < "tile_16_0_224": the order differs
    for s in ("GM_P_to_GMH_S60.tif", "HR_S60_to_GMH_S60.tif"):
        with h5py.File(tmp_path / f"{s}.h5", "w") as f:
            for i in rng.permutation(N)[:N]:
                f.create_dataset(ids[i], data=np.zeros((1, 1, 3), np.uint8))
    slides = robustness.find_plism(tmp_path)
    for n in (*plismbench.SUBSETS, N):
        got_ids, coords, rows, proto = robustness.plism_tiles(slides, n_tiles=n)
        assert got_ids == ids and (coords == COORDS).all()
        want = np.arange(N) if n == N else _subset_file(n)
        assert (rows == want).all()  # the file's rows, in the file's order
        assert proto["subset"] == "plismbench" and "numeric (x, y)" in proto["order"]
    _, _, rows, proto = robustness.plism_tiles(slides, n_tiles=None)
    assert (rows == _subset_file(8139)).all() and proto["subset_file"] == "tiles_subset_8139.npy"


def test_features_metrics_equal_brute_force_on_the_subset(feature_dir: Path, features) -> None:
    rows = _subset_file(460)
    for precision in ("float32", "float16"):
        res = robustness.features_robustness(feature_dir, n_tiles=460, precision=precision)
        assert res["n_tiles"] == 460 and res["n_pairs"] == 36 and res["precision"] == precision
        for p in res["pairs"][::7]:
            a, b = features[p["a"]][rows], features[p["b"]][rows]
            want = brute_force_f16(a, b) if precision == "float16" else brute_force_sorted(a, b)
            assert abs(p["cosine"] - want["cosine"]) < 1e-6
            assert all(p[f"top{k}"] == want[f"top{k}"] for k in (1, 3, 5, 10)), (p, want)


@pytest.mark.slow
def test_cli_features_subset_and_default(run_cli, feature_dir: Path, tmp_path: Path) -> None:
    code, out, err = run_cli(
        "bench", "robustness", "--features", str(feature_dir), "--tiles", "460", "--json",
        "-o", str(tmp_path),
    )  # fmt: skip
    assert code == 0, err
    d = json.loads(out)
    assert d["n_tiles"] == 460 and d["n_slides"] == 9 and d["n_pairs"] == 36
    assert d["precision"] == "float16" and d["protocol"]["subset_file"] == "tiles_subset_460.npy"
    assert d["model"]["name"] == "my_extractor"
    names = {p.name for p in feature_dir.iterdir()}
    for p in d["pairs"]:
        assert {p["a"], p["b"]} <= names
        assert {"cosine", "top1", "top3", "top5", "top10"} <= set(p)
    assert d["leaderboard"]["comparable"] is False  # 9 slides, 460 tiles
    csv = tmp_path / "plismbench" / "460_tiles" / "my_extractor" / "results.csv"
    lines = csv.read_text().splitlines()
    assert lines[0] == (
        ",cosine_similarity,top_1_accuracy,top_3_accuracy,top_5_accuracy,top_10_accuracy"
    )
    assert [x.rsplit(",", 5)[0] for x in lines[1:]] == [
        "inter-scanner", "inter-staining", '"inter-scanner, inter-staining"', "all",
    ]  # fmt: skip

    code, out, err = run_cli("bench", "robustness", "--features", str(feature_dir), "--json")
    assert code == 0, err
    d = json.loads(out)
    assert d["n_tiles"] == 8139 and d["protocol"]["subset_file"] == "tiles_subset_8139.npy"
    assert d["n_pairs"] == 36 and d["precision"] == "float16"


def _coord_plism(folder: Path, n: int = 24) -> None:
    """A tiny PLISM folder of HDF5 slides whose tile ids carry coordinates."""
    from edgepath.eval import domains as D

    base = D.base_tiles(56, n=n, seed=0)
    rng = np.random.default_rng(0)
    for k, (st, sc) in enumerate(itertools.product(("GM", "HR"), ("AT2", "P"))):
        with h5py.File(folder / f"{st}_{sc}_to_GMH_S60.tif.h5", "w") as f:
            for j in rng.permutation(n):
                tile = D.hed_jitter(base[j], 0.05 * k, rng) if st == "HR" else base[j]
                f.create_dataset(f"tile_16_{224 * (j % 5)}_{224 * (j // 5)}", data=tile)


def test_save_features_are_plismbench_s_layout_and_score_the_same(run_cli, tmp_path: Path) -> None:
    src, saved = tmp_path / "plism", tmp_path / "feats" / "vit-test14"
    src.mkdir()
    _coord_plism(src)
    args = ("bench", "robustness", "vit-test14", "--plism", str(src), "--precision", "float32")
    code, out, err = run_cli(*args, "--save-features", str(saved), "--json")
    assert code == 0, err
    ran = json.loads(out)
    assert (
        ran["protocol"]["subset"] == "all" and "24 aligned tiles" in ran["protocol"]["subset_note"]
    )
    for slide in ("GM_AT2_to_GMH_S60.tif", "HR_P_to_GMH_S60.tif"):
        arr = np.load(saved / slide / "features.npy")
        assert arr.dtype == np.float32 and arr.shape[0] == 24
        xy = arr[:, 1:3]
        assert (np.lexsort((xy[:, 1], xy[:, 0])) == np.arange(24)).all()  # sorted by x, then y
        assert set(map(tuple, xy.astype(int))) == {
            (224 * (j % 5), 224 * (j // 5)) for j in range(24)
        }
    code, out, err = run_cli(
        "bench", "robustness", "--features", str(saved), "--precision", "float32", "--json"
    )
    assert code == 0, err
    back = json.loads(out)
    key = lambda p: frozenset((p["a"], p["b"]))  # noqa: E731
    want = {key(p): p for p in ran["pairs"]}
    for p in back["pairs"]:
        q = want[key(p)]
        assert abs(p["cosine"] - q["cosine"]) < 1e-6 and p["top10"] == q["top10"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("vit-test14", "--features", "{dir}"), "without MODEL"),
        ((), "give a MODEL"),
        (("vit-test14", "--save-features", "{dir}"), "needs --plism"),
        (("--features", "{dir}", "--tiles", "half"), "--tiles 'half'"),
        (("--features", "{dir}", "--tiles", "5"), "at least 11"),
    ],
)
def test_robustness_argument_errors_are_one_line(run_cli, tmp_path: Path, args, message) -> None:
    args = tuple(a.replace("{dir}", str(tmp_path)) for a in args)
    code, _, err = run_cli("bench", "robustness", *args)
    assert code == 2 and message in err and "Traceback" not in err


def test_bad_feature_file_names_the_file(run_cli, tmp_path: Path) -> None:
    for name, shape in (("GM_P_to_GMH_S60.tif", (30, 8)), ("HR_P_to_GMH_S60.tif", (29, 8))):
        (tmp_path / name).mkdir()
        np.save(tmp_path / name / "features.npy", np.zeros(shape, np.float32))
    code, _, err = run_cli("bench", "robustness", "--features", str(tmp_path))
    assert code == 2 and "features.npy" in err and "Traceback" not in err
