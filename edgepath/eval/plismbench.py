"""plismbench's protocol and files: tile order, fixed tile subsets, features.npy, results.csv.

owkin's plismbench (owkin/plism-benchmark, CC BY 4.0) scores an extractor on PLISM's 91 slides
× 16,278 aligned tiles. What edgepath reproduces from it:

- **Tile order.** Each slide's rows are the tiles ordered by the numeric (x, y) of their id
  ``<prefix>_<c0>_<c1>_<c2>`` (x = c1, y = c2), a stable sort of the ids in name order (the
  order h5py lists the keys of a slide's HDF5 file).
- **Tile subsets.** The metrics use a fixed subset of those rows, read from plismbench's files
  ``tiles_subset_{460,2713,5426,8139}.npy`` (shipped in ``edgepath/data/plism/``, in the
  files' own row order); 16,278 means every row. 8,139 is plismbench's default and the
  leaderboard's.
- **features.npy.** Its extractor writes ``DIR/{slide}/features.npy`` per slide (``slide`` as
  ``GMH_S60_to_GMH_S60.tif``): float32, one row per tile in the order above, ``[c0, c1, c2,
  feature…]``.
- **results.csv.** ``mean (std) ; median (iqr)`` per pair group and metric, each number rounded
  to 3 decimals and padded with zeros to 5 characters.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgepath.errors import ConfigError

PLISM_TILES = 16_278
PLISM_SLIDES = 91
#: plismbench's subset files; 8,139 (16,278 // 2) is its default and the leaderboard's.
SUBSETS: tuple[int, ...] = (460, 2713, 5426, 8139)
DEFAULT_TILES = 8139
SUBSET_DIR = Path(__file__).resolve().parents[1] / "data" / "plism"


def subset_rows(n_tiles: int) -> np.ndarray:
    """plismbench's row indices for ``n_tiles`` (in its file's order; 16,278: every row)."""
    if n_tiles == PLISM_TILES:
        return np.arange(PLISM_TILES)
    if n_tiles not in SUBSETS:
        raise ValueError(f"plismbench has no {n_tiles}-tile subset; it has {SUBSETS} and all")
    rows = np.load(SUBSET_DIR / f"tiles_subset_{n_tiles}.npy")
    if rows.shape != (n_tiles,) or len(np.unique(rows)) != n_tiles or rows.max() >= PLISM_TILES:
        raise ConfigError(
            f"{SUBSET_DIR}: tiles_subset_{n_tiles}.npy is damaged; reinstall edgepath"
        )
    return rows.astype(np.int64)


def parse_tile_id(tile_id: str) -> tuple[int, int, int] | None:
    """The three integers of a PLISM tile id ``<prefix>_<c0>_<c1>_<c2>``, or None."""
    parts = tile_id.split("_")
    if len(parts) < 4:
        return None
    try:
        return int(parts[-3]), int(parts[-2]), int(parts[-1])
    except ValueError:
        return None


def plismbench_order(ids: Sequence[str]) -> tuple[list[str], np.ndarray] | None:
    """Tile ids in plismbench's row order with their (c0, c1, c2), or None if any id lacks them."""
    named = sorted(ids)
    coords = [parse_tile_id(i) for i in named]
    if not named or any(c is None for c in coords):
        return None
    c = np.asarray(coords, dtype=np.int64)
    order = np.lexsort((c[:, 2], c[:, 1]))  # stable: by x (c1), then y (c2)
    return [named[i] for i in order], c[order]


def select_rows(
    n_aligned: int, n_tiles: int | None, *, plismbench_rows: bool, seed: int = 0
) -> tuple[np.ndarray, dict[str, Any]]:
    """The rows the metrics use, and how they were chosen.

    ``n_tiles`` None means plismbench's default, 8,139. Its subset files apply when the rows
    are in its order (``plismbench_rows``), a slide holds PLISM's 16,278 tiles and
    ``n_tiles`` is one of its sizes; otherwise a seeded random subset (sorted rows) of
    ``n_tiles``, or every row when there are no more than that, and the record says why.
    """
    want = DEFAULT_TILES if n_tiles is None else n_tiles
    if plismbench_rows and n_aligned == PLISM_TILES and want in (*SUBSETS, PLISM_TILES):
        name = "all 16,278 rows" if want == PLISM_TILES else f"tiles_subset_{want}.npy"
        return subset_rows(want), {"subset": "plismbench", "subset_file": name}
    if not plismbench_rows:
        why = "tile ids without plismbench's <prefix>_<c0>_<c1>_<c2> coordinates"
    elif n_aligned != PLISM_TILES:
        why = f"{n_aligned} aligned tiles, not PLISM's {PLISM_TILES:,}"
    else:
        why = f"{want} tiles is not one of plismbench's subsets {SUBSETS} or all"
    if want >= n_aligned:
        return np.arange(n_aligned), {"subset": "all", "subset_note": why}
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n_aligned, size=want, replace=False))
    return rows, {"subset": "seeded", "subset_seed": seed, "subset_note": why}


def feature_slides(folder: str | Path) -> list[tuple[str, Path]]:
    """``(slide, features.npy)`` of a plismbench extractor folder, in directory order.

    Directory order is what plismbench's glob sees on the same folder; it sets which slide of a
    pair comes first, which only float16 ties depend on.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(
            f"{folder}: features folder not found; pass plismbench's extractor folder "
            "(one subfolder per slide holding features.npy)"
        )
    with os.scandir(folder) as it:
        found = [(e.name, Path(e.path) / "features.npy") for e in it if e.is_dir()]
    found = [(name, f) for name, f in found if f.is_file()]
    if len(found) < 2:
        raise ConfigError(
            f"{folder}: found {len(found)} slide folders with features.npy; expected plismbench's "
            "layout, one folder per slide (e.g. GMH_S60_to_GMH_S60.tif/features.npy)"
        )
    return found


def read_feature_file(path: Path) -> np.ndarray:
    """A features.npy (memory-mapped), checked to be 2-D with coordinates and features."""
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not a readable .npy file ({exc})") from None
    if arr.ndim != 2 or arr.shape[1] < 4 or arr.shape[0] < 1:
        raise ConfigError(
            f"{path}: shape {arr.shape}; plismbench's features.npy is (tiles, 3 + D): "
            "[c0, c1, c2, feature…] per row"
        )
    return arr


class FeatureFolder(Mapping[str, np.ndarray]):
    """Slide name -> float32 features of the chosen rows, read from disk when asked for."""

    def __init__(self, files: list[tuple[str, Path]], rows: np.ndarray) -> None:
        self.files, self.rows = dict(files), rows

    def __getitem__(self, name: str) -> np.ndarray:
        arr = read_feature_file(self.files[name])
        return np.asarray(arr[self.rows, 3:], dtype=np.float32)

    def __iter__(self) -> Iterator[str]:
        return iter(self.files)

    def __len__(self) -> int:
        return len(self.files)


def check_aligned(files: list[tuple[str, Path]]) -> tuple[int, np.ndarray]:
    """Row count and coordinates shared by every slide's features.npy (as plismbench asserts)."""
    first = read_feature_file(files[0][1])
    coords = np.asarray(first[:, :3])
    for _, path in files[1:]:
        arr = read_feature_file(path)
        if arr.shape[0] != len(coords) or not np.array_equal(arr[:, :3], coords):
            raise ConfigError(
                f"{path}: its tile coordinates (columns 0-2) differ from {files[0][1]}'s; every "
                "slide's features.npy must list the same tiles in the same order"
            )
        if arr.shape[1] != first.shape[1]:
            raise ConfigError(
                f"{path}: {arr.shape[1] - 3} features per tile, {files[0][1]} has {first.shape[1] - 3}"
            )
    return len(coords), coords


def write_feature_file(path: str | Path, coords: np.ndarray, features: np.ndarray) -> Path:
    """Write ``[c0, c1, c2, feature…]`` rows as float32, atomically (plismbench's layout)."""
    from edgepath.io import atomic_path

    rows = np.concatenate([np.asarray(coords, np.float32), np.asarray(features, np.float32)], 1)
    with atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, rows)
    return Path(path)


_CSV_GROUPS = ("inter-scanner", "inter-staining", "inter-scanner, inter-staining", "all")


def _cell(values: np.ndarray) -> str:
    if values.size:
        q1, q3 = np.quantile(values, 0.25), np.quantile(values, 0.75)
        stats = [np.mean(values), np.std(values), np.median(values), q3 - q1]
    else:
        stats = [np.nan] * 4
    s = [str(float(np.round(v, 3))).ljust(5, "0") for v in stats]
    return f"{s[0]} ({s[1]}) ; {s[2]} ({s[3]})"


def results_csv(pairs: list[dict[str, Any]], keys: Mapping[str, Any], ks: Sequence[int]) -> str:
    """plismbench's results.csv for these pair rows (``keys``: slide -> staining/scanner)."""
    metrics = [("cosine", "cosine_similarity"), *((f"top{k}", f"top_{k}_accuracy") for k in ks)]

    def member(p: dict[str, Any], group: str) -> bool:
        a, b = keys[p["a"]], keys[p["b"]]
        same_stain, same_scan = a.staining == b.staining, a.scanner == b.scanner
        return {
            "inter-scanner": same_stain,
            "inter-staining": same_scan,
            "inter-scanner, inter-staining": not same_stain and not same_scan,
            "all": True,
        }[group]

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["", *(name for _, name in metrics)])
    for group in _CSV_GROUPS:
        sel = [p for p in pairs if member(p, group)]
        w.writerow([group, *(_cell(np.asarray([p[m] for p in sel], float)) for m, _ in metrics)])
    return buf.getvalue()


#: Where the leaderboard below comes from, and its protocol.
LEADERBOARD_SOURCE = (
    "plismbench README (owkin/plism-benchmark), 2025-03-03: 91 slides, 8,139 tiles "
    "(tiles_subset_8139.npy), float16"
)
_BOARD = """
H0-Mini 0.800 0.864 0.318 0.183 0.541
CONCH 0.846 0.752 0.241 0.155 0.498
H-Optimus-0 0.685 0.744 0.327 0.166 0.480
Virchow2 0.777 0.609 0.306 0.163 0.464
Midnight-12k 0.748 0.435 0.200 0.108 0.373
Prov-GigaPath 0.570 0.592 0.118 0.054 0.333
UNI2-h 0.591 0.501 0.190 0.046 0.332
UNI 0.547 0.532 0.169 0.053 0.325
Kaiko_ViT-B/8 0.764 0.346 0.147 0.045 0.325
GPFM 0.594 0.356 0.092 0.017 0.265
PLIP 0.878 0.054 0.040 0.004 0.244
Phikon 0.622 0.125 0.021 0.004 0.193
Kaiko_ViT-L/14 0.569 0.115 0.041 0.006 0.183
Phikon_v2 0.557 0.064 0.030 0.003 0.164
Hibou_Large 0.490 0.061 0.030 0.008 0.147
"""
#: The score's four components, in the leaderboard's column order.
COMPONENTS: tuple[str, ...] = (
    "cosine_all",
    "top10_cross_scanner",
    "top10_cross_staining",
    "top10_cross_both",
)
#: The published rows: extractor, the four components and the score (``metric``).
LEADERBOARD: tuple[dict[str, Any], ...] = tuple(
    {
        "extractor": f[0].replace("_", " "),
        **dict(zip(COMPONENTS, map(float, f[1:5]), strict=True)),
        "score": float(f[5]),
    }
    for f in (line.split() for line in _BOARD.strip().splitlines())
)


def components(result: Mapping[str, Any]) -> dict[str, float]:
    """A robustness result's score and its four components (medians over pairs)."""
    g = result["groups"]
    return {
        "cosine_all": g["all"]["cosine"]["median"],
        "top10_cross_scanner": g["cross-scanner"]["top10"]["median"],
        "top10_cross_staining": g["cross-staining"]["top10"]["median"],
        "top10_cross_both": g["cross-both"]["top10"]["median"],
        "score": result["score"],
    }


def protocol_differences(result: Mapping[str, Any]) -> list[str]:
    """How a robustness run differs from the leaderboard's protocol (empty: it ranks)."""
    out = []
    if result.get("suite") != "plism":
        out.append(f"{result.get('suite')} suite, not PLISM")
    elif result.get("n_slides") != PLISM_SLIDES:
        out.append(f"{result.get('n_slides')} slides, not PLISM's {PLISM_SLIDES}")
    proto = result.get("protocol", {})
    if result.get("n_tiles") != DEFAULT_TILES or proto.get("subset") != "plismbench":
        how = {"seeded": "a seeded subset", "all": "all rows"}.get(proto.get("subset", ""), "")
        out.append(
            f"{result.get('n_tiles')} tiles{f' ({how})' if how else ''}, not plismbench's "
            "8,139 (tiles_subset_8139.npy)"
        )
    if result.get("precision") != "float16":
        out.append(f"{result.get('precision', 'float32')} metrics, the leaderboard's are float16")
    return out


def place(score: float) -> int:
    """The model's place among the leaderboard rows (1 = first; ties go to the model)."""
    return 1 + sum(row["score"] > score for row in LEADERBOARD)
