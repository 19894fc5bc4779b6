"""Every stage writes its files with the mode a plain ``open(path, "w")`` gives (0666 less the
umask), through the one atomic-write helper (``edgepath.io.atomic_path``): a scanner service
running as another user can read a quantized model as well as an exported one."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest


def _modes(folder: Path) -> dict[str, int]:
    return {
        str(p.relative_to(folder)): stat.S_IMODE(p.stat().st_mode)
        for p in folder.rglob("*")
        if p.is_file()
    }


@pytest.fixture()
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.mark.slow
def test_every_stage_writes_files_readable_by_others(
    umask_022, run_cli, sample_slide: Path, tmp_path: Path
) -> None:
    from edgepath import cards
    from edgepath.data import sample_tiles
    from edgepath.distill.recipe import load_recipe
    from edgepath.distill.trainer import distill
    from edgepath.export.run import export
    from edgepath.quantize.pipeline import quantize_model
    from edgepath.slides import synthesize_slide

    slide = synthesize_slide(tmp_path / "synthetic.tiff", tiles=12, levels=2)
    card = load_recipe(
        "h0mini",
        [
            'teachers=[{card="tiny-teacher"}]',
            'student.name="vit-test14"',
            "train.steps=1",
            "train.batch_size=2",
            "train.eval_tiles=8",
            "data.holdout=0.4",
        ],
    )
    tiles = tmp_path / "tiles"
    tiles.mkdir()
    for i, p in enumerate(sample_tiles("he")[:8]):
        (tiles / f"{i}.png").write_bytes(p.read_bytes())
    distill(card, out=tmp_path / "student", tiles=tiles)
    preset = cards.load("quantize", "int8-tensorrt")
    quantize_model(
        tmp_path / "student",
        preset=preset,
        calib=[sample_slide],
        out=tmp_path / "quantized",
        calibration_tiles=4,
        heldout_tiles=12,
    )
    export(tmp_path / "student", target="onnx", out=tmp_path / "exported")
    code, _, err = run_cli(
        "embed", str(tmp_path / "student"), str(sample_slide), "-o", str(tmp_path / "f")
    )
    assert code == 0, err
    assert stat.S_IMODE(slide.stat().st_mode) == 0o644
    for stage in ("student", "quantized", "exported", "f"):
        modes = _modes(tmp_path / stage)
        assert modes, stage
        wrong = {k: oct(m) for k, m in modes.items() if m & 0o044 != 0o044}
        assert not wrong, (stage, wrong)
