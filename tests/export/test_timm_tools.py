"""docs/export.md's one-liners for tools that load the timm export, run where the tool is
installed (skipped elsewhere: eva and LazySlide are not edgepath dependencies)."""

from __future__ import annotations

import numpy as np
import pytest

from .test_timm import _cosines, _student_artifact


def test_eva_timm_wrapper(tmp_path, tiles) -> None:
    """eva 0.4.5: ``TimmModel`` + ``ExtractCLSFeatures(num_register_tokens=4,
    include_patch_tokens=True)`` on the token sequence that ``global_pool=""`` returns."""
    pytest.importorskip("eva.vision", exc_type=ImportError)
    import timm
    import torch
    from eva.core.models.transforms import ExtractCLSFeatures
    from eva.vision.models.wrappers import TimmModel
    from PIL import Image

    from edgepath.export.run import export
    from edgepath.runtime import open_engine

    art = _student_artifact(tmp_path / "s", "vit-test14", "cls+mean_patch")
    export(art, target="timm", out=tmp_path / "t")
    backbone = TimmModel(
        model_name=f"local-dir:{tmp_path / 't'}",
        pretrained=True,
        transforms=ExtractCLSFeatures(num_register_tokens=4, include_patch_tokens=True),
    ).eval()
    cfg = timm.data.resolve_model_data_config(backbone.model)
    transform = timm.data.create_transform(**cfg)
    x = torch.stack([transform(Image.fromarray(t)) for t in tiles])
    with torch.no_grad():
        got = backbone(x).numpy()
    with open_engine(str(art), engine="torch") as engine:
        reference = engine.embed_tiles(tiles)
    print(f"eva: min cosine {_cosines(reference, got).min():.7f}")
    assert _cosines(reference, got).min() >= 0.999


def test_lazyslide_feature_extraction(tmp_path, sample_slide) -> None:
    """LazySlide 0.13: ``zs.tl.feature_extraction(wsi, "local-dir:…", transform=…)`` gives
    edgepath's embedding of the very tiles LazySlide read."""
    pytest.importorskip("lazyslide", exc_type=ImportError)
    import lazyslide as zs
    import timm
    import torch
    from torchvision.transforms.v2 import Compose, Normalize, ToDtype, ToImage
    from wsidata import open_wsi

    from edgepath.export.run import export
    from edgepath.runtime import open_engine
    from edgepath.slides import open_slide

    art = _student_artifact(tmp_path / "s", "vit-test14", "cls")
    out = tmp_path / "t"
    export(art, target="timm", out=out)
    wsi = open_wsi(str(sample_slide))
    cfg = timm.data.resolve_model_data_config(timm.create_model(f"local-dir:{out}"))
    zs.pp.find_tissues(wsi)
    zs.pp.tile_tissues(wsi, 224, mpp=0.5)
    transform = Compose(
        [ToImage(), ToDtype(torch.float32, scale=True), Normalize(cfg["mean"], cfg["std"])]
    )
    got = zs.tl.feature_extraction(
        wsi,
        f"local-dir:{out}",
        model_name="student",  # the table's key: a local-dir: name has characters it refuses
        transform=transform,
        return_features=True,
        pbar=False,
    )
    bounds = wsi.shapes["tiles"].bounds
    side = int(round(bounds["maxx"].iloc[0] - bounds["minx"].iloc[0]))  # LazySlide's level-0 read
    with open_slide(sample_slide) as s:
        tiles = np.stack(
            [
                s.read_region((int(x), int(y)), 0, (side, side))
                for x, y in zip(bounds["minx"], bounds["miny"], strict=True)
            ]
        )
    with open_engine(str(art), engine="torch") as engine:
        reference = engine.embed_tiles(tiles)
    print(f"LazySlide: {len(got)} tiles, min cosine {_cosines(reference, got).min():.7f}")
    assert got.shape == reference.shape and _cosines(reference, got).min() >= 0.999
