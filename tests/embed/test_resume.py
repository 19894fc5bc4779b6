"""A batch killed with SIGKILL mid-slide, then rerun: same outputs, no partials, nothing redone."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from edgepath.embed.features import read_features
from tests.embed.conftest import wait_for


def _slides(slide, tmp_path, names: str):
    """A folder with one copy of ``slide`` per name (distinct files, distinct outputs)."""
    slides = tmp_path / "slides"
    slides.mkdir()
    for n in names:
        shutil.copy(slide, slides / f"{n}{slide.suffix}")
    return slides


@pytest.fixture(scope="module")
def long_slide(tmp_path_factory):
    """A synthetic slide of ~600 tiles: its embedding lasts seconds, not the sample's ~0.3 s.

    The kill below must land inside the second slide; with the 44-tile sample a fast machine
    finished ``b`` before the kill (CI, stop 14: ``b.h5`` existed after the SIGKILL).
    """
    from edgepath.slides import synthesize_slide

    return synthesize_slide(tmp_path_factory.mktemp("long") / "long.tiff", tiles=600, seed=5)


def _embed_cmd(model, slides, out, *extra: str) -> list[str]:
    """``edgepath embed`` on onnxruntime with one reader process, JSON summary on stdout."""
    return [
        sys.executable,
        "-m",
        "edgepath",
        "-q",
        "embed",
        str(model),
        str(slides),
        "-o",
        str(out),
        "--engine",
        "onnxruntime",
        "--workers",
        "1",
        *extra,
        "--json",
    ]


def _children(pid: int) -> list[int]:
    kids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        kids.append(int(d))
            except (OSError, ValueError, IndexError):
                continue
    return kids


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
def test_kill_9_then_rerun(tiny_model, long_slide, tmp_path):
    slides = _slides(long_slide, tmp_path, "abc")
    out = tmp_path / "feats"
    cmd = _embed_cmd(tiny_model, slides, out, "--batch", "4")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: (out / "a.h5").exists(), 120, "a.h5")
        wait_for(lambda: (out / ".b.h5.lock").exists(), 60, "the lock of b")
        time.sleep(0.3)  # inside b's embedding
        readers = _children(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    assert readers  # the reader processes (and multiprocessing's resource tracker) ...
    wait_for(lambda: not any(_alive(p) for p in readers), 30, "orphaned readers to exit")
    assert not (out / "b.h5").exists() and not (out / "c.h5").exists()
    assert (out / ".b.h5.lock").exists()  # a dead process's lock ...
    a_mtime = (out / "a.h5").stat().st_mtime_ns

    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    s = json.loads(rerun.stdout)
    assert (s["skipped"], s["done"], s["failed"]) == (1, 2, 0)  # ... is taken over
    assert [r["status"] for r in s["results"]] == ["skipped", "done", "done"]
    assert (out / "a.h5").stat().st_mtime_ns == a_mtime  # finished slide not redone
    assert sorted(p.name for p in out.iterdir()) == ["a.h5", "b.h5", "c.h5"]  # no partials/locks
    a, b, c = (read_features(out / f"{n}.h5") for n in "abc")
    for other in (b, c):  # the same slide three times: the same outputs
        np.testing.assert_array_equal(other.coords, a.coords)
        np.testing.assert_allclose(other.features, a.features, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_two_processes_share_the_work(tiny_model, sample_slide, tmp_path):
    slides = _slides(sample_slide, tmp_path, "abcd")
    out = tmp_path / "feats"
    cmd = _embed_cmd(tiny_model, slides, out)
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    results = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=300)
        assert p.returncode == 0, stderr
        results.append(json.loads(stdout)["results"])
    done = [r["slide"] for rs in results for r in rs if r["status"] == "done"]
    assert sorted(done) == sorted(str(slides / f"{n}.svs") for n in "abcd")  # each exactly once
    for rs in results:  # the rest: being done by the other, or already done
        assert {r["status"] for r in rs} <= {"done", "busy", "skipped"}
    assert sorted(p.name for p in out.iterdir()) == ["a.h5", "b.h5", "c.h5", "d.h5"]
