"""``edgepath slides info|tile|synthesize``: real output, and one clear message per bad slide."""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest
from PIL import Image

GLASS = (242, 242, 240)


@pytest.fixture()
def bad(tmp_path, sample_slide):
    """Bad inputs by kind, each a path."""
    import tifffile

    d = tmp_path / "bad"
    d.mkdir()
    (d / "empty.svs").touch()
    (d / "cut.svs").write_bytes(sample_slide.read_bytes()[:200_000])
    data = bytearray(sample_slide.read_bytes())  # header intact, JPEG tiles overwritten
    data[len(data) // 2 : len(data) // 2 + 200_000] = b"\xff" * 200_000
    (d / "corrupt.svs").write_bytes(bytes(data))
    (d / "notes.txt").write_text("not a slide\n")
    (d / "folder").mkdir()
    tifffile.imwrite(
        d / "glass.tif",
        np.full((900, 900, 3), GLASS, np.uint8),
        resolution=(2e4, 2e4),
        resolutionunit="CENTIMETER",
    )
    tifffile.imwrite(d / "dpi72.tif", np.full((300, 300, 3), 200, np.uint8), resolution=(72, 72))
    Image.new("RGB", (600, 600), (200, 100, 150)).save(d / "nompp.png")
    return d


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("empty.svs", r"empty\.svs: empty file \(0 bytes\)"),
        (
            "cut.svs",
            r"cut\.svs: OpenSlide does not recognise this \.svs file; it is corrupt or truncated",
        ),
        ("corrupt.svs", r"corrupt\.svs: cannot read region .* the file is corrupt or truncated"),
        ("notes.txt", r"notes\.txt: unsupported or corrupt file"),
        ("folder", r"folder: is a directory, not a slide"),
        ("missing.svs", r"missing\.svs: no such file"),
        ("glass.tif", r"glass\.tif: no tissue found \(0 of 16 tiles"),
        ("dpi72.tif", r"dpi72\.tif: implausible mpp 352\.8 µm/px .*--slide-mpp VALUE"),
        ("nompp.png", r"nompp\.png: no mpp in the slide's metadata; set it with --slide-mpp"),
    ],
)
def test_bad_slide_one_message_exit_2(run_cli, bad, tmp_path, name, message):
    import re

    code, out, err = run_cli("slides", "tile", str(bad / name), "-o", str(tmp_path / "o"))
    assert code == 2
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and re.search(message, lines[0])
    assert "Traceback" not in err and out == ""
    code, out, err = run_cli("slides", "tile", str(bad / name), "-o", str(tmp_path / "o"), "--json")
    assert code == 2
    data = json.loads(out)
    assert data["failed"] == 1 and re.search(message, data["slides"][0]["error"])


def test_target_finer_than_base(run_cli, sample_slide, tmp_path):
    code, out, err = run_cli(
        "slides", "tile", str(sample_slide), "--mpp", "0.25", "-o", str(tmp_path)
    )
    assert code == 2
    assert "finer than the slide's base 0.499 µm/px" in err and "--allow-upsample" in err
    code, out, _ = run_cli(
        "slides",
        "tile",
        str(sample_slide),
        "--mpp",
        "0.25",
        "--allow-upsample",
        "-o",
        str(tmp_path),
        "--json",
        "--no-overlay",
    )
    assert code == 0 and json.loads(out)["slides"][0]["tiles"] > 100


def test_batch_goes_on_and_lists_failures(run_cli, sample_slide, bad, tmp_path):
    out_dir = tmp_path / "o"
    code, out, err = run_cli(
        "slides",
        "tile",
        str(bad / "empty.svs"),
        str(sample_slide),
        str(bad / "notes.txt"),
        "-o",
        str(out_dir),
        "--json",
    )
    assert code == 1
    data = json.loads(out)
    assert data["failed"] == 2 and [("error" in r) for r in data["slides"]] == [True, False, True]
    assert data["slides"][1]["tiles"] > 0 and (out_dir / "cmu-1-small-region.h5").exists()
    assert "2 of 3 slides failed" in err and "empty.svs" in err and "notes.txt" in err


def test_tile_sample_slide(run_cli, sample_slide, tmp_path):
    code, out, _ = run_cli("slides", "tile", str(sample_slide), "-o", str(tmp_path), "--json")
    assert code == 0
    r = json.loads(out)["slides"][0]
    assert r["mpp"] == 0.5 and r["tile_px"] == 224 and r["mpp_source"] == "property"
    assert r["base_mpp"] == 0.499 and r["level0_tile_size"] == pytest.approx(224.4489, abs=1e-3)
    with h5py.File(r["coords"]) as f:
        coords = f["coords"][...]
        assert coords.shape == (r["tiles"], 2) and coords.dtype == np.int64
        assert f["coords"].attrs["mpp"] == 0.5 and f["coords"].attrs["tile_px"] == 224
    overlay = Image.open(r["overlay"])
    assert max(overlay.size) == 1200


def test_overrides_flag_and_csv(run_cli, bad, tmp_path):
    p = bad / "nompp.png"
    code, out, _ = run_cli("slides", "info", str(p), "--slide-mpp", "0.5", "--json")
    assert code == 0
    d = json.loads(out)["slides"][0]
    assert d["mpp"] == 0.5 and d["mpp_source"] == "override"
    csv = tmp_path / "mpp.csv"
    csv.write_text("slide,mpp\nnompp.png,0.2431\n")
    code, out, _ = run_cli("slides", "info", str(p), "--mpp-csv", str(csv), "--json")
    assert code == 0 and json.loads(out)["slides"][0]["mpp"] == 0.2431


def test_info_sample(run_cli, sample_slide):
    code, out, _ = run_cli("slides", "info", str(sample_slide), "--json")
    assert code == 0
    d = json.loads(out)["slides"][0]
    assert d["vendor"] == "aperio" and d["mpp"] == 0.499 and len(d["levels"]) == 1
    assert 0.25 < d["tissue_fraction"] < 0.45
    code, out, _ = run_cli("slides", "info", str(sample_slide))
    assert "0.499 µm/px (property)" in out and "tissue" in out


def test_synthesize_cli(run_cli, tmp_path):
    out = tmp_path / "syn.tiff"
    code, text, _ = run_cli("slides", "synthesize", "-o", str(out), "--tiles", "30", "--json")
    assert code == 0
    d = json.loads(text)
    assert d["vendor"] == "generic-tiff" and len(d["levels"]) == 4 and d["mpp"] == 0.499
    shutil.rmtree(tmp_path / "o", ignore_errors=True)
    code, text, _ = run_cli("slides", "tile", str(out), "-o", str(tmp_path / "o"), "--json")
    assert code == 0 and 20 <= json.loads(text)["slides"][0]["tiles"] <= 40


def test_same_name_twice_in_a_batch(run_cli, sample_slide, tmp_path):
    other = tmp_path / "b" / sample_slide.name
    other.parent.mkdir()
    shutil.copy(sample_slide, other)
    code, out, _ = run_cli(
        "slides",
        "tile",
        str(sample_slide),
        str(other),
        "-o",
        str(tmp_path / "o"),
        "--json",
        "--no-overlay",
    )
    assert code == 1
    rows = json.loads(out)["slides"]
    assert "tiles" in rows[0] and "is taken by" in rows[1]["error"]
