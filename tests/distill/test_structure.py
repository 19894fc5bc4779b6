"""The trainer stays generic: no recipe named in it, no long functions in the distill package."""

from __future__ import annotations

import ast
from pathlib import Path

import edgepath.distill as pkg

ROOT = Path(pkg.__file__).parent


def test_trainer_names_no_recipe() -> None:
    """Recipe-specific behaviour is a method of the recipe class, not a name check."""
    tree = ast.parse((ROOT / "trainer.py").read_text())
    names = {"h0mini", "xmag", "expert", "xmag-demo"}
    literals = {
        n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
    }
    assert not literals & names, literals & names
    compares = [
        ast.unparse(n)
        for n in ast.walk(tree)
        if isinstance(n, ast.Compare)
        and any(ast.unparse(side).endswith(".recipe") for side in [n.left, *n.comparators])
    ]
    assert not compares, compares


def test_no_function_over_80_lines() -> None:
    long = []
    for f in sorted(ROOT.rglob("*.py")):
        for n in ast.walk(ast.parse(f.read_text())):
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef):
                length = n.end_lineno - n.lineno + 1
                if length > 80:
                    long.append(f"{f.relative_to(ROOT)}:{n.name} ({length} lines)")
    assert not long, long
