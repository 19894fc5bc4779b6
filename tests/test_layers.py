"""The layering contract of docs/design.md holds, and its check (``make lint``) catches a breach."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tools" / "check_layers.py"


def _checker():
    spec = importlib.util.spec_from_file_location("check_layers", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_edgepath_imports_run_one_way() -> None:
    assert _checker().violations(ROOT / "edgepath") == []


def test_every_unit_is_in_the_contract() -> None:
    check = _checker()
    units = {p.stem for p in (ROOT / "edgepath").glob("*.py")} - {"__init__"}
    units |= {p.name for p in (ROOT / "edgepath").iterdir() if (p / "__init__.py").is_file()}
    assert units | {"__init__"} == set(check.LAYER_OF)


def test_a_function_level_import_against_the_layers_fails_the_check(tmp_path: Path) -> None:
    """models importing bench inside a function (the kind of cycle this check was made for)."""
    pkg = tmp_path / "edgepath"
    shutil.copytree(ROOT / "edgepath", pkg, ignore=shutil.ignore_patterns("data", "__pycache__"))
    target = pkg / "models" / "encoder.py"
    target.write_text(
        target.read_text() + "\n\ndef _late():\n    from edgepath.bench import report\n"
    )
    run = subprocess.run(
        [sys.executable, str(SCRIPT), str(pkg)], capture_output=True, text=True, check=False
    )
    assert run.returncode == 1
    assert "models/encoder.py" in run.stdout and "models imports edgepath.bench" in run.stdout
    # relative imports count too: quantize reaching up into bench
    target.write_text(target.read_text().replace("from edgepath.bench import report", "pass"))
    (pkg / "quantize" / "late.py").write_text("from ..bench import throughput\n")
    run = subprocess.run(
        [sys.executable, str(SCRIPT), str(pkg)], capture_output=True, text=True, check=False
    )
    assert run.returncode == 1 and "quantize imports edgepath.bench" in run.stdout
    (pkg / "quantize" / "late.py").unlink()
    ok = subprocess.run([sys.executable, str(SCRIPT), str(pkg)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout
