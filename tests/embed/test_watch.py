"""``edgepath watch``: slides arriving while it runs, a slowly written one, a bad one, SIGTERM."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from edgepath.embed.features import read_features
from tests.embed.conftest import wait_for


def _lines(path) -> list[str]:
    return [ln for ln in path.read_text().splitlines() if ln[:2] == "20"]  # timestamped lines


@pytest.mark.slow
def test_watch_inbox(tiny_model, sample_slide, tmp_path):
    inbox, out = tmp_path / "inbox", tmp_path / "feats"
    inbox.mkdir()
    shutil.copy(sample_slide, inbox / "a.svs")  # there before the watcher starts
    err_path = tmp_path / "stderr.txt"
    cmd = [
        sys.executable,
        "-m",
        "edgepath",
        "watch",
        str(inbox),
        "--model",
        str(tiny_model),
        "-o",
        str(out),
        "--engine",
        "onnxruntime",
        "--workers",
        "1",
        "--poll",
        "0.2",
        "--settle",
        "1.0",
        "--json",
    ]
    with open(err_path, "w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True)
    try:
        wait_for(lambda: (out / "a.h5").exists(), 120, "a.h5")
        # A scanner writing b.svs slowly: a chunk every 0.3 s, never still for the 1 s settle.
        data = sample_slide.read_bytes()
        chunks = np.array_split(np.frombuffer(data, np.uint8), 12)
        with open(inbox / "b.svs", "wb") as f:
            for c in chunks:
                f.write(c.tobytes())
                f.flush()
                time.sleep(0.3)
        (inbox / "c.svs").write_bytes(b"II*\x00 a truncated scan" * 100)  # a bad slide
        wait_for(lambda: (out / "b.h5").exists(), 60, "b.h5")
        wait_for(lambda: any("c.svs" in ln for ln in _lines(err_path)), 30, "c's log line")
        shutil.copy(sample_slide, inbox / "d.svs")  # after the bad one: still going
        wait_for(lambda: (out / "d.h5").exists(), 60, "d.h5")
        time.sleep(1.5)  # a few more polls: nothing is done twice
        proc.send_signal(signal.SIGTERM)
        stdout, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err_path.read_text()
    summary = json.loads(stdout)
    assert (summary["done"], summary["failed"]) == (3, 1)
    lines = _lines(err_path)
    by_slide = {
        n: [ln for ln in lines if f" {n}:" in ln] for n in ("a.svs", "b.svs", "c.svs", "d.svs")
    }
    assert all(len(v) == 1 for v in by_slide.values()), lines  # one line per slide, once each
    assert " done " in by_slide["b.svs"][0]  # never tried while still growing
    assert " failed " in by_slide["c.svs"][0]
    assert sorted(p.name for p in out.iterdir()) == ["a.h5", "b.h5", "d.h5"]
    a, b = read_features(out / "a.h5"), read_features(out / "b.h5")
    np.testing.assert_allclose(b.features, a.features, rtol=1e-5, atol=1e-6)


def test_summary_keeps_counts_of_retired_results():
    """A watch keeps its last results only; the counts still cover every slide."""
    from edgepath.embed.run import SlideResult, Summary

    s = Summary(seconds=10.0)
    for i in range(50):
        status = "failed" if i % 10 == 0 else "done"
        s.results.append(SlideResult(f"s{i}.svs", f"s{i}.h5", status, n_tiles=4, seconds=0.5))
        s.retire(keep=7)
    d = s.to_dict()
    assert len(s.results) == 7 and len(d["results"]) == 7
    assert (d["slides"], d["done"], d["failed"], d["tiles"]) == (50, 45, 5, 180)
    assert d["embedding_seconds"] == pytest.approx(22.5) and s.exit_code == 3
