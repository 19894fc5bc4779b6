"""The error hierarchy: every user-facing failure is an ``EdgepathError`` with one clear line."""

from __future__ import annotations


class EdgepathError(Exception):
    """Base of all errors edgepath reports to users (exit code 2, one line, no traceback)."""

    exit_code = 2


class ConfigError(EdgepathError):
    """A card, manifest, flag value or config that is malformed or inconsistent."""


class MissingWeightsError(EdgepathError):
    """Model weights that are not on disk, not in the Hugging Face cache and cannot be fetched."""


class SlideReadError(EdgepathError):
    """A slide or image that cannot be opened, read, or used at the requested resolution."""


class MissingDependencyError(EdgepathError):
    """An optional dependency that is not installed; the message names the pip extra."""

    def __init__(self, package: str, extra: str, *, purpose: str = "") -> None:
        what = f" for {purpose}" if purpose else ""
        super().__init__(
            f"{package} is needed{what} but is not installed: pip install 'edgepath[{extra}]'"
        )
        self.package = package
        self.extra = extra


class ToleranceError(EdgepathError):
    """A parity check or fidelity gate that failed its tolerance."""


class ArtifactError(EdgepathError):
    """An artifact folder that is missing, incomplete, or of the wrong kind."""


class OutputError(EdgepathError):
    """An output folder that cannot take a file: read-only, not permitted, or full.

    Not the fault of the input being processed: a batch stops (every following input would
    fail the same way) and ``edgepath watch`` retries once the folder takes files again.
    """


def require(module: str, extra: str, *, purpose: str = ""):
    """Import an optional dependency lazily or raise ``MissingDependencyError`` naming the extra.

    Args:
        module: Importable module name, e.g. ``"openvino"``.
        extra: The pip extra that installs it, e.g. ``"openvino"``.
        purpose: What it is needed for, shown in the message.

    Returns:
        The imported module.
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingDependencyError(module, extra, purpose=purpose) from exc
