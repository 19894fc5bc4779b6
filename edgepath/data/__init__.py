"""Real sample histology shipped with edgepath (see NOTICE.md for sources and licenses)."""

from __future__ import annotations

from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent
SAMPLE_SLIDE = DATA_DIR / "slides" / "cmu-1-small-region.svs"
TILES_DIR = DATA_DIR / "tiles"


def sample_tiles(group: str = "he") -> list[Path]:
    """The shipped PNG tiles of a group (``he``, ``stain``, ``tissue``), sorted by name."""
    return sorted((TILES_DIR / group).glob("*.png"))
