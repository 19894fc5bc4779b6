"""Training: artifacts and manifests, kill -9 and resume bitwise, DDP on 2 gloo processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from edgepath.distill.recipe import load_recipe
from edgepath.distill.trainer import distill
from edgepath.errors import ConfigError
from edgepath.models.artifact import load_encoder, read_manifest

from .conftest import TINY, XMAG_SAMPLE


def test_xmag_on_the_sample_slide_writes_a_student(sample_slide: Path, tmp_path: Path) -> None:
    over = [
        *TINY,
        *XMAG_SAMPLE,
        "train.steps=3",
        "data.eval_stride=0.125",
        "data.max_items=4",
        "views.fixed_views=1",
        "train.eval_tiles=12",
        "loss.center_targets=true",
    ]
    m = distill(load_recipe("xmag", over), out=tmp_path / "run", slides=sample_slide)
    man = read_manifest(tmp_path / "run")
    assert man == m
    assert man["kind"] == "student" and man["recipe"] == "xmag"
    assert man["input"]["mpp"] == 2.0 and man["input"]["tile_px"] == 224
    assert man["input"]["mean"] == [0.485, 0.456, 0.406]  # the teacher's normalisation
    assert man["teacher"]["card"] == "tiny-teacher" and len(man["teacher"]["sha256"]) == 64
    assert man["stand_in"] is True and man["steps"] == 3
    for key in ("cosine", "centered_cosine", "knn10_agreement", "n_tiles"):
        assert man["fidelity"][key] is not None and key in man["fidelity_init"]
    assert set(man["files"]) == {"weights", "heads", "recipe"}
    from safetensors.torch import load_file

    heads = load_file(str(tmp_path / "run" / "heads.safetensors"))
    assert {"head_g.mlp.0.weight", "head_l.mlp.0.weight"} <= set(heads)
    assert heads["t_mean"].abs().sum() > 0  # centred targets: the teacher mean was measured
    enc = load_encoder(tmp_path / "run")
    assert enc(torch.zeros(1, 3, 224, 224)).shape == (1, 64)
    ckpts = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert ckpts == ["step-00000002.pt", "step-00000003.pt"]  # keep_checkpoints = 2


def test_xmag_metric_calibration_is_recorded_and_resumes_bitwise(
    sample_slide: Path, tmp_path: Path
) -> None:
    """The metric calibration after the last step is deterministic (a killed and resumed run
    ends with the same files) and recorded in the manifest, at init and at the end."""
    over = [
        *TINY,
        *XMAG_SAMPLE,
        "train.steps=6",
        "data.max_items=16",
        "views.fixed_views=2",
        "train.eval_tiles=12",
        "data.eval_stride=0.125",
        "loss.center_targets=true",
        "train.metric_calibration=true",
        "train.calibration_items=16",
    ]
    card = load_recipe("xmag", over)
    distill(card, out=tmp_path / "straight", slides=sample_slide)
    distill(card, out=tmp_path / "cut", slides=sample_slide, stop_after=3)
    distill(card, out=tmp_path / "cut", slides=sample_slide, resume=True)
    for name in ("model.safetensors", "heads.safetensors"):
        assert (tmp_path / "cut" / name).read_bytes() == (
            tmp_path / "straight" / name
        ).read_bytes(), name
    man = read_manifest(tmp_path / "straight")
    cal = man["metric_calibration"]
    assert cal["items"] == man["train_items"] == 6  # every training region of the sample
    assert cal["kl_after"] < cal["kl_before"]
    assert set(cal["before"]) == {"knn10_agreement", "knn10_agreement_centered"}
    assert set(man["fidelity_init"]["metric_calibrated"]) == set(cal["before"])
    # the factors went into the final LayerNorm: the weights differ from an uncalibrated run
    plain = load_recipe(
        "xmag", [*(o for o in over if "calibration" not in o), "train.metric_calibration=false"]
    )
    distill(plain, out=tmp_path / "plain", slides=sample_slide)
    assert (tmp_path / "plain" / "model.safetensors").read_bytes() != (
        tmp_path / "straight" / "model.safetensors"
    ).read_bytes()


def test_refuses_to_overwrite_a_run(tile_dir: Path, tmp_path: Path) -> None:
    card = load_recipe("h0mini", [*TINY, "train.steps=2", "data.holdout=0.4"])
    distill(card, out=tmp_path, tiles=tile_dir, stop_after=2)
    with pytest.raises(ConfigError, match="--resume"):
        distill(card, out=tmp_path, tiles=tile_dir)
    other = load_recipe("h0mini", [*TINY, "train.steps=2", "data.holdout=0.4", "optim.lr=1"])
    with pytest.raises(ConfigError, match="different recipe"):
        distill(other, out=tmp_path, tiles=tile_dir, resume=True)


def _cli(tile_dir: Path, out: Path, *extra: str) -> list[str]:
    sets = [a for o in TINY for a in ("--set", o)]
    return [
        sys.executable,
        "-m",
        "edgepath",
        "-q",
        "distill",
        "h0mini",
        "--tiles",
        str(tile_dir),
        "-o",
        str(out),
        "--steps",
        "8",
        *sets,
        "--set",
        "data.holdout=0.4",
        *extra,
    ]


@pytest.mark.slow
def test_sigkill_and_resume_is_bitwise_identical(tile_dir: Path, tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    subprocess.run(_cli(tile_dir, tmp_path / "straight"), check=True, env=env)
    run = tmp_path / "killed"
    proc = subprocess.Popen(_cli(tile_dir, run), env=env)
    target = run / "checkpoints" / "step-00000004.pt"
    deadline = time.time() + 300
    while not target.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert target.exists(), "the run never reached its step-4 checkpoint"
    assert not (run / "edgepath.json").exists(), "killed too late: the run had finished"
    subprocess.run([*_cli(tile_dir, run), "--resume"], check=True, env=env)
    for name in ("model.safetensors", "heads.safetensors"):
        assert (run / name).read_bytes() == (tmp_path / "straight" / name).read_bytes(), name


def _ddp_worker(rank: int, world: int, port: int, recipe: str, data: dict, out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        WORLD_SIZE=str(world),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
    import torch.distributed as dist

    from edgepath.distill import trainer

    over = [*TINY, "train.steps=3", *data.pop("over")]
    card = load_recipe(recipe, over)
    captured = {}
    real = trainer._ema_update

    def spy(ema, model, m):
        real(ema, model, m)
        captured["ema"] = ema

    trainer._ema_update = spy
    trainer.distill(card, out=out, **data)
    flat = torch.cat([p.detach().flatten() for p in captured["ema"].parameters()])
    torch.save(flat, Path(out) / f"ema-rank{rank}.pt")
    dist.destroy_process_group()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    "recipe",
    [
        "xmag",
        "xmag-calibrated",
        pytest.param("h0mini", marks=pytest.mark.slow),
        pytest.param("expert", marks=pytest.mark.slow),
    ],
)
def test_ddp_two_gloo_processes(
    recipe: str, tile_dir: Path, sample_slide: Path, tmp_path: Path
) -> None:
    import torch.multiprocessing as mp

    if recipe.startswith("xmag"):
        data = {
            "slides": str(sample_slide),
            "over": [
                *XMAG_SAMPLE,
                "data.eval_stride=0.125",
                "data.max_items=4",
                "views.fixed_views=1",
                "train.eval_tiles=12",
            ],
        }
        if recipe == "xmag-calibrated":  # the calibration is fitted on rank 0 and broadcast
            data["over"] += ["train.calibration_items=16"]
    else:
        data = {"tiles": str(tile_dir), "over": ["data.holdout=0.4"]}
        if recipe == "expert":
            data["over"].append('teachers=[{card="tiny-teacher"}, {card="tiny-teacher"}]')
    mp.spawn(_ddp_worker, args=(2, _free_port(), recipe, data, str(tmp_path)), nprocs=2)
    a, b = (torch.load(tmp_path / f"ema-rank{r}.pt") for r in (0, 1))
    assert torch.equal(a, b)  # gradients were all-reduced: both ranks hold the same model
    man = json.loads((tmp_path / "edgepath.json").read_text())
    assert man["world_size"] == 2 and man["steps"] == 3


def _losses(run: Path) -> list[float]:
    import csv

    with (run / "scalars.csv").open() as f:
        return [float(r["loss"]) for r in csv.DictReader(f)]


def test_ddp_equals_one_process(sample_slide: Path, tmp_path: Path) -> None:
    """2 gloo processes with a per-rank batch of 2 train as 1 process with a batch of 4: the
    ranks share out each global batch by sample number (the same regions and views), DDP
    averages their gradients, and every random choice is seeded by sample number, so the
    losses and the weights agree up to float32 summation order. (xmag's losses are per-item
    means; h0mini's KoLeo, like DINOv2's, is taken over each rank's own batch, so h0mini is
    not expected to match.)"""
    import torch.multiprocessing as mp
    from safetensors.torch import load_file

    over = [
        *XMAG_SAMPLE,
        "train.steps=5",
        "data.max_items=8",
        "views.fixed_views=2",
        "train.eval_tiles=12",
        "data.eval_stride=0.125",
        "optim.warmup_steps=1",
    ]
    one = tmp_path / "one"
    distill(
        load_recipe("xmag-demo", [*TINY, *over, "train.batch_size=4"]), out=one, slides=sample_slide
    )
    two = tmp_path / "two"
    data = {"slides": str(sample_slide), "over": [*over, "train.batch_size=2"]}
    mp.spawn(_ddp_worker, args=(2, _free_port(), "xmag-demo", data, str(two)), nprocs=2)
    a, b = _losses(one), _losses(two)
    assert len(a) == len(b) == 5
    assert a[0] != a[-1]  # it trained
    assert torch.allclose(torch.tensor(a), torch.tensor(b), rtol=1e-5, atol=1e-6), (a, b)
    wa, wb = (load_file(str(r / "model.safetensors")) for r in (one, two))
    assert wa.keys() == wb.keys()
    worst = max(float((wa[k] - wb[k]).abs().max()) for k in wa)
    assert worst < 1e-5, worst
    # a different global batch does not match: the comparison can fail
    other = tmp_path / "other"
    distill(
        load_recipe("xmag-demo", [*TINY, *over, "train.batch_size=2"]),
        out=other,
        slides=sample_slide,
    )
    assert not torch.allclose(torch.tensor(_losses(other)), torch.tensor(a), rtol=1e-5)


def test_student_on_raw_rgb_teacher_warns(caplog) -> None:
    """A teacher card that feeds raw [0, 1] RGB hands the student unstandardised inputs: warn."""
    import dataclasses
    import logging
    from types import SimpleNamespace

    from edgepath.distill.recipe import load_recipe
    from edgepath.distill.trainer import _student
    from edgepath.models.loading import as_card

    from .conftest import TINY

    card = load_recipe("expert", [*TINY])
    real = as_card("histo-teacher")
    raw = dataclasses.replace(
        real, input=dataclasses.replace(real.input, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    )
    with caplog.at_level(logging.WARNING, logger="edgepath.distill.trainer"):
        _student(card, [SimpleNamespace(card=real)], "cpu")
        assert not caplog.records
        _, spec, _ = _student(card, [SimpleNamespace(card=raw)], "cpu")
    assert spec.input.std == (1.0, 1.0, 1.0)
    assert any("raw [0, 1] RGB" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("recipe", "extra"),
    [
        ("xmag-demo", ["train.cache=false"]),  # workers build student and teacher views
        ("h0mini", ["data.holdout=0.4"]),  # workers build the student-only local crops too
    ],
)
def test_workers_train_bitwise_like_the_main_process(
    recipe: str, extra: list[str], sample_slide: Path, tile_dir: Path, tmp_path: Path
) -> None:
    """``train.num_workers`` processes build each micro-batch ahead of its step; the batches
    are a pure function of the seed and the sample numbers, so the run is the same bit for bit
    as one that builds them in the main process (edgepath/distill/loader.py)."""
    from safetensors.torch import load_file

    over = [*TINY, *extra, "train.steps=3", "optim.warmup_steps=1"]
    if recipe == "xmag-demo":
        over += [*XMAG_SAMPLE, "data.max_items=6", "train.eval_tiles=8"]
        data = {"slides": sample_slide}
    else:
        data = {"tiles": tile_dir}
    runs = {}
    for workers in (0, 2):
        out = tmp_path / f"w{workers}"
        distill(load_recipe(recipe, [*over, f"train.num_workers={workers}"]), out=out, **data)
        runs[workers] = (_losses(out), load_file(str(out / "model.safetensors")))
    (la, wa), (lb, wb) = runs[0], runs[2]
    assert la == lb and la[0] != la[-1]
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
