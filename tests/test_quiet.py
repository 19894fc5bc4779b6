"""Quiet by default: the demo's quantize and export steps print no third-party warning lines at
default verbosity, and ``-v`` shows them (``edgepath.quiet``)."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from edgepath import quiet

WARNING_LINE = re.compile(r"Warning|WARNING")


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": ""}  # Python's own default warning filters
    return subprocess.run(
        [sys.executable, "-m", "edgepath", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=900,
    )


@pytest.fixture(scope="module")
def student(tmp_path_factory) -> Path:
    from edgepath.models import resolve
    from edgepath.models.artifact import save_encoder

    folder = tmp_path_factory.mktemp("quiet") / "student"
    save_encoder(folder, resolve("vit-test14").encoder, kind="student", name="vit-test14")
    return folder


@pytest.mark.slow
def test_quantize_and_export_steps_print_no_warning_lines(student, sample_slide, tmp_path) -> None:
    """The demo's int8-cpu quantization (ONNX Runtime, NNCF, OpenVINO) and its export targets."""
    repo = Path(__file__).resolve().parents[1]
    common = ["--calib", str(sample_slide), "--calibration-tiles", "12", "--heldout-tiles", "12"]
    q = _cli("quantize", str(student), "-o", str(tmp_path / "q"), *common, cwd=repo)
    assert q.returncode == 0, q.stderr
    outs = [q]
    for target, src in (("openvino", tmp_path / "q"), ("onnx", student), ("timm", student)):
        outs.append(
            _cli("export", str(src), "--target", target, "-o", str(tmp_path / target), cwd=repo)
        )
        assert outs[-1].returncode == 0, outs[-1].stderr
    noisy = [line for r in outs for line in r.stderr.splitlines() if WARNING_LINE.search(line)]
    assert noisy == [], "\n".join(noisy)
    # the same quantization with -v shows what the default hides
    v = _cli("-v", "quantize", str(student), "-o", str(tmp_path / "qv"), *common, cwd=repo)
    assert v.returncode == 0, v.stderr
    shown = [line for line in v.stderr.splitlines() if WARNING_LINE.search(line)]
    assert any("Please consider to run pre-processing" in line for line in shown), v.stderr
    assert any("TracerWarning" in line or "FutureWarning" in line for line in shown), v.stderr


def test_only_known_chatter_is_hidden(caplog) -> None:
    """The filter drops exactly the listed messages; an unknown warning still shows."""
    f = quiet.KnownChatter()

    def record(name: str, msg: str) -> logging.LogRecord:
        return logging.LogRecord(name, logging.WARNING, __file__, 1, msg, None, None)

    assert not f.filter(record("root", "Please consider to run pre-processing before quantization"))
    assert not f.filter(record("torch.utils.cpp_extension", "No CUDA runtime is found, using X"))
    trace = "x.py:1: FutureWarning: `torch.jit.trace` is deprecated. Please switch"
    assert not f.filter(record("py.warnings", trace))
    assert f.filter(record("py.warnings", "x.py:1: FutureWarning: something else is deprecated"))
    assert f.filter(record("edgepath.embed", "Please consider to run pre-processing"))  # not root
    assert all(why for _, _, why in quiet.KNOWN)  # every entry says why it is harmless


def test_install_leaves_everything_shown_with_verbose(monkeypatch) -> None:
    monkeypatch.setattr(quiet, "_SHOW_THIRD_PARTY", True)
    quiet.install(1)
    assert quiet.showing_third_party()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.warn("TracerWarning: shown with -v", UserWarning, stacklevel=1)
    assert caught


def test_third_party_output_is_dropped_at_default_verbosity(monkeypatch, capsys) -> None:
    monkeypatch.setattr(quiet, "_SHOW_THIRD_PARTY", False)
    with quiet.third_party_output():
        print("Statistics collection 100%")
        print("progress", file=sys.stderr)
    assert capsys.readouterr() == ("", "")
    monkeypatch.setattr(quiet, "_SHOW_THIRD_PARTY", True)
    with quiet.third_party_output():
        print("Statistics collection 100%")
    out, err = capsys.readouterr()
    assert out == "" and "Statistics collection" in err  # -v: shown, but never on stdout
