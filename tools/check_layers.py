#!/usr/bin/env python3
"""Check that imports between edgepath's subpackages run one way (``make lint``).

Every import of ``edgepath.X`` inside ``edgepath/Y`` (module level, inside functions and under
``TYPE_CHECKING`` alike) must go to a unit in a lower layer than Y's. Units of one layer do not
import each other. A unit that is not in the contract below is an error too: add it where it
belongs. The contract is drawn in docs/design.md ("Layers"); change both together.

Usage: ``python tools/check_layers.py [PACKAGE_DIR]`` (default: ``edgepath`` next to this
folder). Exit 1 with one line per offending import.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

#: Lowest first. A unit is a subpackage (``models``) or a top-level module (``cards``);
#: ``__init__`` is the package's own ``edgepath/__init__.py`` (``__version__``).
LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"__init__", "errors", "data", "colour", "quiet"}),
    frozenset({"io", "metrics"}),
    frozenset({"cards"}),
    frozenset({"models"}),
    frozenset({"runtime"}),
    frozenset({"slides"}),
    frozenset({"eval"}),
    frozenset({"distill", "embed", "export"}),
    frozenset({"quantize"}),
    frozenset({"bench"}),
    frozenset({"demo"}),
    frozenset({"cli"}),
    frozenset({"__main__"}),
)
LAYER_OF = {unit: i for i, layer in enumerate(LAYERS) for unit in layer}


def _module_name(package: Path, path: Path) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _unit(package: Path, dotted: str) -> str | None:
    """The unit a dotted module name belongs to (None outside the package)."""
    parts = dotted.split(".")
    if parts[0] != package.name:
        return None
    if len(parts) == 1:
        return "__init__"
    name = parts[1]
    if (package / name).is_dir() or (package / f"{name}.py").is_file():
        return name
    return "__init__"  # a name defined in edgepath/__init__.py (``__version__``)


def _imports(package: Path, path: Path) -> Iterator[tuple[int, str]]:
    """(line, dotted target) for every import in ``path``, relative ones resolved."""
    module = _module_name(package, path)
    base = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                head = base[: len(base) - node.level + 1]
                target = ".".join(head + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == package.name:  # ``from edgepath import models``: each name counts
                for alias in node.names:
                    yield node.lineno, f"{target}.{alias.name}"
            else:
                yield node.lineno, target


def violations(package: Path) -> list[str]:
    """One line per import that goes against ``LAYERS`` (empty when the package keeps it)."""
    out = []
    for path in sorted(package.rglob("*.py")):
        src = _unit(package, _module_name(package, path))
        if src not in LAYER_OF:
            out.append(f"{path}: unit '{src}' is not in tools/check_layers.py LAYERS; add it")
            continue
        for line, target in _imports(package, path):
            dst = _unit(package, target)
            if dst is None or dst == src:
                continue
            if dst not in LAYER_OF:
                out.append(f"{path}:{line}: imports unit '{dst}', which is not in LAYERS")
            elif LAYER_OF[dst] >= LAYER_OF[src]:
                out.append(
                    f"{path}:{line}: {src} imports {target}, but {dst} is not below {src} "
                    "(docs/design.md, Layers)"
                )
    return out


def main(argv: list[str]) -> int:
    package = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parents[1] / "edgepath"
    found = violations(package)
    for line in found:
        print(line)
    if found:
        print(f"{len(found)} import(s) against the layering of {package}")
        return 1
    print(f"{package}: imports between units run one way ({len(LAYERS)} layers)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
