"""Scalar logs: TensorBoard when installed, else (and always) a CSV next to the run."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

log = logging.getLogger(__name__)


class ScalarLog:
    """Append scalars per step to ``scalars.csv`` (and TensorBoard if available)."""

    def __init__(self, folder: str | Path, *, enabled: bool = True) -> None:
        self.enabled = enabled
        self.path = Path(folder) / "scalars.csv"
        self._tb = None
        self._fields: list[str] | None = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(Path(folder) / "tensorboard"))
        except Exception:  # tensorboard not installed: CSV only
            self._tb = None

    def write(self, step: int, scalars: dict[str, float]) -> None:
        """Log one row."""
        if not self.enabled:
            return
        row = {"step": step, **scalars}
        new = not self.path.is_file()
        if self._fields is None:
            self._fields = list(row) if new else _header(self.path) or list(row)
        with open(self.path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self._fields, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow(row)
        if self._tb is not None:
            for k, v in scalars.items():
                self._tb.add_scalar(k, v, step)

    def truncate_after(self, step: int) -> None:
        """Drop rows after ``step`` (a resumed run rewrites them)."""
        if not self.enabled or not self.path.is_file():
            return
        with open(self.path, newline="") as f:
            rows = list(csv.DictReader(f))
        fields = _header(self.path)
        with open(self.path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            w.writerows(r for r in rows if int(r["step"]) <= step)

    def close(self) -> None:
        """Flush TensorBoard."""
        if self._tb is not None:
            self._tb.close()


def _header(path: Path) -> list[str]:
    with open(path, newline="") as f:
        return next(csv.reader(f), [])
