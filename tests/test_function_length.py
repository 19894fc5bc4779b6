"""Every function in ``edgepath/`` reads as one job: none over 85 lines (80 is the aim;
docstrings count). ``edgepath/distill`` keeps the stricter 80 (tests/distill/test_structure.py)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 85


def test_no_function_over_the_limit() -> None:
    long = []
    for path in sorted((ROOT / "edgepath").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = node.end_lineno - node.lineno + 1
                if n > LIMIT:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({n} lines)")
    assert not long, "split these into functions that each do one job: " + "; ".join(long)
