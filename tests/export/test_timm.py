"""``--target timm``: the folder loads with ``timm.create_model("local-dir:…", pretrained=True)``
and, with the documented pooling, gives the artifact's embedding on the shipped tiles."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgepath.errors import ConfigError


def _student_artifact(folder: Path, name: str, embedding: str) -> Path:
    """A student artifact with LayerScale at 0.5 (random students start at 1e-5, where every
    block is a no-op and any architecture mistake past the patch embedding would go unseen)."""
    import torch

    from edgepath.models.artifact import save_encoder
    from edgepath.models.encoder import build_encoder
    from edgepath.models.loading import student_input
    from edgepath.models.students import student_spec

    torch.manual_seed(0)
    encoder = build_encoder(student_spec(name, input=student_input(), embedding=embedding)).eval()
    with torch.no_grad():
        for pname, p in encoder.named_parameters():
            if pname.endswith("gamma"):
                p.fill_(0.5)
    save_encoder(folder, encoder, kind="student", name=name)
    return folder


def _as_a_timm_user(folder: Path, tiles: np.ndarray) -> np.ndarray:
    """docs/export.md's timm one-liner, run with timm alone (no edgepath code)."""
    import timm
    import torch
    from PIL import Image

    model = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    transform = timm.data.create_transform(**timm.data.resolve_model_data_config(model))
    x = torch.stack([transform(Image.fromarray(t)) for t in tiles])
    definition = json.loads((folder / "config.json").read_text())["edgepath"]["embedding"]
    with torch.no_grad():
        if definition["definition"] == "cls+mean_patch":
            t = model.forward_features(x)
            emb = torch.cat([t[:, 0], t[:, model.num_prefix_tokens :].mean(1)], dim=-1)
        else:
            emb = model(x)
    return emb.numpy()


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


def _roundtrip(tmp_path: Path, name: str, embedding: str, tiles: np.ndarray) -> dict:
    from edgepath.export.run import export
    from edgepath.runtime import open_engine

    art = _student_artifact(tmp_path / "student", name, embedding)
    out = tmp_path / "timm"
    manifest = export(art, target="timm", out=out)
    with open_engine(str(art), engine="torch") as engine:
        reference = engine.embed_tiles(tiles)
    got = _as_a_timm_user(out, tiles)
    assert got.shape == reference.shape
    cos = _cosines(reference, got)
    print(f"{name} {embedding}: min cosine {cos.min():.7f} over {len(cos)} tiles")
    assert cos.min() >= 0.999
    return manifest


@pytest.mark.parametrize(
    "name,embedding",
    [("vit-mini14", "cls"), ("vit-mini14", "cls+mean_patch"), ("vit-test14", "mean_patch")],
)
def test_small_students_load_in_timm(tmp_path, tiles, name, embedding) -> None:
    m = _roundtrip(tmp_path, name, embedding, tiles)
    assert m["parity"]["timm"]["min_cosine"] >= 0.9999
    assert m["files"] == {
        "weights": "model.safetensors",
        "config": "config.json",
        "model_card": "README.md",
    }


@pytest.mark.slow
@pytest.mark.parametrize(
    "name,embedding",
    [("vit-s14", "cls+mean_patch"), ("vit-b14", "cls"), ("vit-b14-swiglu", "cls+mean_patch")],
)
def test_full_size_students_load_in_timm(tmp_path, tiles, name, embedding) -> None:
    _roundtrip(tmp_path, name, embedding, tiles)


def test_config_is_timms_hub_layout(tmp_path) -> None:
    """Keys as timm's own ``save_config_for_hf`` writes them; architecture in model_args."""
    from timm.models._hub import load_model_config_from_path
    from timm.models._pretrained import PretrainedCfg

    from edgepath.export.run import export

    art = _student_artifact(tmp_path / "s", "vit-test14", "cls+mean_patch")
    export(art, target="timm", out=tmp_path / "t")
    cfg = json.loads((tmp_path / "t" / "config.json").read_text())
    assert {"architecture", "num_classes", "num_features", "model_args", "pretrained_cfg"} <= set(
        cfg
    )
    pc = cfg["pretrained_cfg"]
    assert pc["crop_pct"] == 1.0 and pc["input_size"] == [3, 224, 224]
    assert pc["mean"] == [0.485, 0.456, 0.406] and pc["std"] == [0.229, 0.224, 0.225]
    args = cfg["model_args"]
    assert (args["embed_dim"], args["depth"], args["num_heads"], args["reg_tokens"]) == (
        64,
        2,
        2,
        4,
    )
    assert args["init_values"] == 1e-5 and args["global_pool"] == ""  # LayerScale; CLS ⊕ mean
    assert cfg["edgepath"]["mpp"] == 0.5
    assert cfg["edgepath"]["embedding"]["definition"] == "cls+mean_patch"
    # timm's own parser takes it (PretrainedCfg rejects unknown keys: nothing extra in there)
    pretrained_cfg, name, model_args = load_model_config_from_path(tmp_path / "t")
    assert name == "vit_small_patch14_reg4_dinov2" and model_args["embed_dim"] == 64
    assert PretrainedCfg(**pretrained_cfg).crop_pct == 1.0
    card = (tmp_path / "t" / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: timm\n")


def test_swiglu_student_goes_through_a_timm_architecture_that_has_it(tmp_path) -> None:
    import torch

    from edgepath.export.timm import SWIGLU_CARRIER, model_args
    from edgepath.models.encoder import build_encoder
    from edgepath.models.loading import student_input
    from edgepath.models.students import student_spec

    with torch.device("meta"):
        enc = build_encoder(student_spec("vit-b14-swiglu", input=student_input()))
    arch, args = model_args(enc)
    assert arch == SWIGLU_CARRIER
    assert args["act_layer"] == "silu" and args["embed_dim"] == 768 and args["depth"] == 12
    assert int(768 * args["mlp_ratio"]) == 4096


def test_export_artifact_still_runs_in_edgepath(tmp_path, tiles) -> None:
    """The timm folder is also an edgepath artifact (torch engine), with the student's identity."""
    from edgepath.export.run import export
    from edgepath.models import resolve
    from edgepath.runtime import open_engine

    art = _student_artifact(tmp_path / "s", "vit-test14", "cls")
    m = export(art, target="timm", out=tmp_path / "t")
    assert m["parent"]["sha256"] == resolve(str(art)).sha256
    with open_engine(str(tmp_path / "t")) as a, open_engine(str(art), engine="torch") as b:
        assert np.allclose(a.embed_tiles(tiles[:2]), b.embed_tiles(tiles[:2]), atol=1e-5)


def test_quantized_and_non_timm_models_are_refused(tmp_path, quantized_artifact) -> None:
    from edgepath.export.run import export

    with pytest.raises(ConfigError, match="refuses int8"):
        export(quantized_artifact, target="timm", out=tmp_path / "q")
    with pytest.raises(ConfigError, match="exports fp32, not fp16"):
        export("vit-test14", target="timm", out=tmp_path / "h", precision="fp16")
    assert not (tmp_path / "q").exists() and not (tmp_path / "h").exists()


def test_cli_prints_how_to_load(tmp_path, run_cli) -> None:
    art = _student_artifact(tmp_path / "s", "vit-test14", "cls+mean_patch")
    code, out, err = run_cli("export", str(art), "--target", "timm", "-o", str(tmp_path / "t"))
    assert code == 0, err
    assert f'timm.create_model("local-dir:{tmp_path / "t"}", pretrained=True)' in out
    assert "t[:, 5:].mean(1)" in out
