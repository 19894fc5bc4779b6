"""The report places a robustness result on the published PLISM leaderboard, or says why not."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
from PIL import Image

from edgepath.bench.report import make_report
from edgepath.eval import plism, plismbench
from edgepath.eval.robustness import as_result


def _result(*, n_slides: int, n_tiles: int, precision: str, subset: str, top10: float) -> dict:
    """A PLISM-like result whose four medians are 0.70 (cosine) and ``top10`` (each group)."""
    names = [f"S{i}_{sc}_to_GMH_S60.tif" for i, sc in itertools.product(range(3), ("A", "B"))]
    keys = {n: plism.parse_slide_name(n) for n in names}
    pairs = [
        {"a": a, "b": b, "group": plism.pair_group(keys[a], keys[b]), "cosine": 0.70,
         "top1": top10 / 2, "top3": top10, "top5": top10, "top10": top10}
        for a, b in itertools.combinations(names, 2)
    ]  # fmt: skip
    stats = plism.group_stats(pairs)
    res = {
        "suite": "plism", "n_slides": n_slides, "n_tiles": n_tiles, "n_pairs": len(pairs),
        "precision": precision, "score": plism.score(stats), "groups": stats, "pairs": pairs,
        "source": "fixture", "protocol": {"subset": subset, "subset_file": "tiles_subset_8139.npy"},
    }  # fmt: skip
    info = {"name": "my-student", "source": "artifact", "random_weights": False,
            "engine": "openvino", "precision": "int8"}  # fmt: skip
    return as_result(res, info, threads=1)


def test_report_ranks_a_run_under_the_leaderboard_protocol(tmp_path: Path) -> None:
    r = _result(n_slides=91, n_tiles=8139, precision="float16", subset="plismbench", top10=0.3)
    assert abs(r["score"] - (0.70 + 3 * 0.3) / 4) < 1e-12  # 0.4: between Virchow2 and Midnight
    assert r["leaderboard"]["comparable"] and r["leaderboard"]["place"] == 5
    rep = make_report([r], tmp_path)
    md = Path(rep["markdown"]).read_text()
    assert "**Place 5 of 16.**" in md
    table = [x for x in md.splitlines() if x.startswith("| ")][-16:]
    assert table[3].startswith("| 4 | Virchow2 |")
    assert table[4] == (
        "| 5 | **my-student (openvino int8)** | **0.700** | **0.300** | **0.300** | **0.300** "
        "| **0.400** |"
    )
    assert table[5].startswith("| 6 | Midnight-12k |")
    board = [p for p in rep["images"] if "leaderboard" in p]
    assert len(board) == 1 and Image.open(board[0]).size[0] > 600


def test_report_does_not_rank_another_protocol_and_says_why(tmp_path: Path) -> None:
    r = _result(n_slides=91, n_tiles=2713, precision="float32", subset="seeded", top10=0.9)
    assert r["leaderboard"]["place"] is None  # a score of 0.85 would otherwise be first
    md = Path(make_report([r], tmp_path)["markdown"]).read_text()
    assert "**Not ranked**" in md and "**Place" not in md
    assert "2713 tiles (a seeded subset), not plismbench's 8,139" in md
    assert "float32 metrics, the leaderboard's are float16" in md
    last = [x for x in md.splitlines() if x.startswith("| ")][-1]
    assert last.startswith("| – | **my-student (openvino int8)** |")
    assert "Protocol of this run: plism suite, 91 slides, 2713 tiles" in md
    assert np.isclose(r["leaderboard"]["components"]["top10_cross_both"], 0.9)
    assert plismbench.LEADERBOARD_SOURCE in md
