"""The CLI shell: version, help lists only real verbs, flag errors exit 2."""

from __future__ import annotations

import subprocess
import sys

from edgepath import __version__
from edgepath.cli.main import COMMANDS


def test_version(run_cli) -> None:
    code, out, _ = run_cli("--version")
    assert code == 0
    assert __version__ in out


def test_help_lists_exactly_the_registered_verbs(run_cli) -> None:
    code, out, _ = run_cli("--help")
    assert code == 0
    listed = out.split("Commands:")[1].split()
    for verb in COMMANDS:
        assert verb in listed
    # every registered verb imports and has help
    for verb in COMMANDS:
        code, out, _ = run_cli(verb, "--help")
        assert code == 0, verb
        assert "Usage:" in out


def test_unknown_verb_and_bad_flag_exit_2(run_cli) -> None:
    assert run_cli("no-such-verb")[0] == 2
    assert run_cli("cards", "list", "--no-such-flag")[0] == 2
    assert run_cli("cards", "list", "not-a-kind")[0] == 2


def test_import_is_light() -> None:
    code = (
        "import sys, edgepath, edgepath.cards, edgepath.cli.main;"
        "bad=[m for m in ('torch','openslide','openvino','onnxruntime','timm') if m in sys.modules];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stderr == ""


def test_python_dash_m(tmp_path) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "edgepath", "--version"], capture_output=True, text=True
    )
    assert res.returncode == 0
    assert __version__ in res.stdout
