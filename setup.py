"""Build hook: copy the top-level TOML card folders into the package so the wheel ships them."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

CARD_KINDS = ("teachers", "students", "distill", "quantize", "export")


class BuildWithCards(build_py):
    """Copy the card folders (``teachers/``, ``students/`` …) into ``edgepath/_cards``."""

    def run(self) -> None:
        super().run()
        root = Path(__file__).parent
        target = Path(self.build_lib) / "edgepath" / "_cards"
        shutil.rmtree(target, ignore_errors=True)  # no stale card from an earlier build
        for kind in CARD_KINDS:
            src = root / kind
            if not src.is_dir():
                continue
            dst = target / kind
            dst.mkdir(parents=True, exist_ok=True)
            for card in src.glob("*.toml"):
                shutil.copy2(card, dst / card.name)


setup(cmdclass={"build_py": BuildWithCards})
