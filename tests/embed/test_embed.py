"""``edgepath embed``: features match the model on the same tiles, coords match tiling, resume."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from edgepath.embed.features import read_features
from edgepath.metrics import rowwise_cosine


def _direct(model_dir, slide, coords):
    """Embed the tiles at ``coords`` with the torch model directly (the reference)."""
    import torch

    from edgepath.models.artifact import load_encoder
    from edgepath.models.encoder import to_tensor
    from edgepath.slides import open_slide

    enc = load_encoder(model_dir)
    spec = enc.spec
    with open_slide(slide) as s:
        tiles = np.stack(
            [s.read_tile(x, y, mpp=spec.input.mpp, tile_px=spec.input.tile_px) for x, y in coords]
        )
    with torch.no_grad():
        return enc(to_tensor(tiles, spec)).numpy()


@pytest.mark.parametrize("engine", ["onnxruntime", "openvino"])
def test_sample_slide_matches_direct_embedding(run_cli, tiny_model, sample_slide, tmp_path, engine):
    from edgepath.slides import open_slide, tile_slide

    out = tmp_path / "feats"
    code, stdout, err = run_cli(
        "embed",
        str(tiny_model),
        str(sample_slide),
        "-o",
        str(out),
        "--engine",
        engine,
        "--batch",
        "16",
        "--workers",
        "1",
        "--json",
    )
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["done"] == 1 and summary["failed"] == 0 and summary["tiles"] > 0
    ff = read_features(out / "cmu-1-small-region.h5")
    with open_slide(sample_slide) as s:
        grid = tile_slide(s, mpp=0.5, tile_px=224)
    np.testing.assert_array_equal(ff.coords, grid.coords)
    assert ff.features.shape == (len(grid.coords), 64)
    ref = _direct(tiny_model, sample_slide, ff.coords)
    cos = rowwise_cosine(ff.features, ref)
    assert cos.min() >= 0.999, cos.min()
    a = ff.attrs
    assert a["engine"] == engine and a["mpp"] == 0.5 and a["tile_px"] == 224
    assert a["level0_tile_size"] == pytest.approx(224 * 0.5 / 0.499, rel=1e-3)
    assert a["model_sha256"] and a["key"] and a["edgepath_version"]
    assert sorted(p.name for p in out.iterdir()) == ["cmu-1-small-region.h5"]


def test_model_hash_is_the_child_manifests_parent_hash(run_cli, tiny_model, sample_slide, tmp_path):
    """One identity per model: the hash a feature file records for a model is the one an
    artifact made from it records as its parent's (both from ``edgepath.models.resolve``)."""
    from edgepath.export.run import export

    code, _, err = run_cli(
        "embed", str(tiny_model), str(sample_slide), "-o", str(tmp_path / "f"), "--workers", "1"
    )
    assert code == 0, err
    feature_hash = read_features(tmp_path / "f" / "cmu-1-small-region.h5").attrs["model_sha256"]
    child = export(tiny_model, target="onnx", out=tmp_path / "exported")
    assert child["parent"]["sha256"] == feature_hash and len(feature_hash) == 64


def test_student_at_another_mpp_means_the_same_in_embed_and_export(run_cli, sample_slide, tmp_path):
    """``NAME@MPP`` is resolved by the one resolver, so embed and export take it as bench does."""
    from edgepath.export.run import export

    code, _, err = run_cli(
        "embed", "vit-test14@1.0", str(sample_slide), "-o", str(tmp_path / "f"), "--workers", "1"
    )
    assert code == 0, err
    ff = read_features(tmp_path / "f" / "cmu-1-small-region.h5")
    assert ff.attrs["mpp"] == 1.0 and ff.attrs["model_id"] == "vit-test14@1.0 (random weights)"
    child = export("vit-test14@1.0", target="onnx", out=tmp_path / "exported")
    assert child["input"]["mpp"] == 1.0
    assert child["parent"]["sha256"] == ff.attrs["model_sha256"]


def test_editing_a_manifests_spec_changes_the_model_identity(tiny_model, tmp_path):
    """The identity covers what changes the output: weights and the manifest's spec. A copy
    whose mpp was edited (spec and its top-level copy) is another model; editing only the
    top-level copy is refused as an inconsistent manifest."""
    import shutil

    from edgepath.errors import ArtifactError
    from edgepath.models import resolve

    copy = tmp_path / "copy"
    shutil.copytree(tiny_model, copy)
    assert resolve(copy).sha256 == resolve(tiny_model).sha256  # same files, same identity
    manifest = json.loads((copy / "edgepath.json").read_text())
    manifest["input"]["mpp"] = 2.0
    (copy / "edgepath.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="disagrees with 'spec.input'"):
        resolve(copy)
    manifest["spec"]["input"]["mpp"] = 2.0
    (copy / "edgepath.json").write_text(json.dumps(manifest))
    edited = resolve(copy)
    assert edited.mpp == 2.0 and edited.sha256 != resolve(tiny_model).sha256
    assert edited.weights_sha256 == resolve(tiny_model).weights_sha256


def test_resume_force_and_workers_agree(run_cli, tiny_model, slides_dir, tmp_path):
    out = tmp_path / "feats"
    args = ["embed", str(tiny_model), str(slides_dir), "-o", str(out), "--engine", "onnxruntime"]
    code, stdout, _ = run_cli(*args, "--workers", "0", "--json")
    assert code == 0 and json.loads(stdout)["done"] == 2
    first = {p.name: p.stat().st_mtime_ns for p in out.glob("*.h5")}
    code, stdout, _ = run_cli(*args, "--workers", "2", "--json")
    s = json.loads(stdout)
    assert code == 0 and s["skipped"] == 2 and s["done"] == 0
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.h5")} == first  # not rewritten
    a0 = read_features(out / "a.h5").features
    code, stdout, _ = run_cli(*args, "--workers", "2", "--force", "--json")
    assert code == 0 and json.loads(stdout)["done"] == 2
    # inline reading and two reader processes give the same features
    np.testing.assert_allclose(read_features(out / "a.h5").features, a0, rtol=1e-5, atol=1e-6)


def test_a_bad_slide_does_not_stop_the_batch(run_cli, tiny_model, slides_dir, tmp_path):
    (slides_dir / "broken.svs").write_bytes(b"II*\x00 this is not a slide")
    out = tmp_path / "feats"
    code, stdout, _ = run_cli(
        "embed",
        str(tiny_model),
        str(slides_dir),
        "-o",
        str(out),
        "--engine",
        "onnxruntime",
        "--json",
    )
    s = json.loads(stdout)
    assert code == 3  # some slides failed
    assert s["done"] == 2 and s["failed"] == 1
    assert s["failures"][0]["slide"].endswith("broken.svs") and s["failures"][0]["error"]
    assert sorted(p.name for p in out.iterdir()) == ["a.h5", "b.h5"]


def test_changed_input_is_recomputed(run_cli, tiny_model, sample_slide, tmp_path):
    slide = tmp_path / "s.svs"
    shutil.copy(sample_slide, slide)
    out = tmp_path / "feats"
    args = ["embed", str(tiny_model), str(slide), "-o", str(out), "--json"]
    assert json.loads(run_cli(*args)[1])["done"] == 1
    with open(slide, "ab") as f:  # a rescan under the same name
        f.write(b"\0" * 16)
    assert json.loads(run_cli(*args)[1])["done"] == 1


def test_usage_errors(run_cli, tiny_model, tmp_path):
    code, _, err = run_cli(
        "embed", str(tiny_model), str(tmp_path / "nope.svs"), "-o", str(tmp_path)
    )
    assert code == 2 and "no such slide" in err


def test_per_slide_mpp_override(run_cli, tiny_model, tmp_path):
    from PIL import Image

    from edgepath.data import sample_tiles

    img = tmp_path / "he.png"  # a plain image: no mpp in the file
    Image.open(sample_tiles("he")[0]).convert("RGB").save(img)
    out = tmp_path / "feats"
    args = ["embed", str(tiny_model), str(img), "-o", str(out), "--workers", "1", "--json"]
    code, stdout, _ = run_cli(*args)
    assert code == 3 and "mpp" in json.loads(stdout)["failures"][0]["error"]
    csv = tmp_path / "mpp.csv"
    csv.write_text("slide,mpp\nhe,0.25\n")
    code, stdout, err = run_cli(*args, "--mpp-csv", str(csv))
    assert code == 0, err
    ff = read_features(out / "he.h5")
    assert ff.attrs["slide_mpp"] == 0.25 and json.loads(ff.attrs["tiling"])["slide_mpp"] == 0.25
    assert ff.attrs["level0_tile_size"] == pytest.approx(448.0)
