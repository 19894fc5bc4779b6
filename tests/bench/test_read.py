"""``edgepath bench read``: the reader alone against its baseline and decode limit (no timing
thresholds here: benchmarks check speed, tests check that the figures are the right ones)."""

from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="module")
def slide(tmp_path_factory):
    from edgepath.slides import synthesize_slide

    return synthesize_slide(tmp_path_factory.mktemp("read") / "s.tiff", tiles=40, seed=5)


def test_bench_read_json(run_cli, slide):
    code, stdout, err = run_cli(
        "bench", "read", str(slide), "--workers", "1,2", "--repeats", "2", "--batch", "8", "--json"
    )
    assert code == 0, err
    d = json.loads(stdout)
    assert [r["workers"] for r in d["rows"]] == [1, 2]
    assert all(r["tiles_per_s"] > 0 for r in d["rows"])
    row2 = d["rows"][1]
    assert row2["tiles_per_s_per_worker"] == pytest.approx(row2["tiles_per_s"] / 2)
    assert row2["scaling_vs_1"] == pytest.approx(row2["tiles_per_s"] / d["rows"][0]["tiles_per_s"])
    pairs = zip(d["rows"][0]["seconds"], row2["seconds"], strict=True)
    assert row2["scaling_per_repeat"] == pytest.approx([a / b for a, b in pairs])
    assert d["baseline"]["tiles_per_s"] > 0 and d["decode_limit"]["tiles_per_s"] > 0
    s = d["slides"][0]
    assert s["tiles"] >= 20 and s["level"] == 0 and s["resize"] is False
    # every TIFF tile under the tiles, once: about (224.45 / 256)^2 of a TIFF tile per tile,
    # plus the edges of the tissue
    assert 0.7 * s["tiles"] <= d["decode_limit"]["tiff_tiles"] <= 2.0 * s["tiles"]
    # the limit is the fastest repeat, the reader rows the medians
    limit = s["decode_limit"]
    assert limit["tiles_per_s"] == pytest.approx(s["tiles"] / min(limit["seconds"]))
    assert len(limit["seconds"]) == 2 and len(s["rows"][0]["seconds"]) == 2
    # the pool's first pass (a run's first slide) apart from the passes after it
    first = row2["first_pass"]
    assert first["tiles_per_s"] == pytest.approx(s["tiles"] / first["seconds"])
    assert d["split_s"]["decode"] > 0 and d["split_s"]["resize"] == 0
    assert d["machine"]["cpu_features"] is not None and d["date"]


def test_decode_limit_counts_the_tiles_the_reader_decodes(slide):
    from edgepath.bench.read import decode_limit
    from edgepath.slides import open_slide, tile_slide

    with open_slide(slide) as s:
        coords = tile_slide(s, mpp=0.5).coords
        s.read_batch(coords, mpp=0.5)
        decoded = s._pyramid().decoded  # the reader decodes each TIFF tile once, in one process
    assert decode_limit(slide, coords, mpp=0.5, tile_px=224)["tiff_tiles"] == decoded


def test_bench_read_bad_input(run_cli, tmp_path):
    code, _, err = run_cli("bench", "read", str(tmp_path / "none.svs"), "--repeats", "1")
    assert code == 2 and "none.svs: no such file" in err and "Traceback" not in err
    code, _, err = run_cli("bench", "read", str(tmp_path / "x.svs"), "--workers", "0")
    assert code == 2 and "--workers" in err
