"""Third-party chatter: what is hidden at the CLI's default verbosity, and shown with ``-v``.

Libraries edgepath drives print things a user reads as something going wrong: ONNX Runtime's
quantizer advises a pre-processing pass, torch warns that ``torch.jit.trace`` (which OpenVINO's
converter calls) is deprecated, the tracer warns about Python booleans, torch's C++-extension
module says it found no CUDA runtime, NNCF draws progress bars. Each known message is listed
in ``KNOWN`` with why it is harmless here; ``install(verbose=0)`` (the CLI, before any verb)
hides exactly those, and ``third_party_output()`` drops third-party progress output. Anything
not listed still shows, and ``-v`` shows everything. The library alone never filters anything.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import sys
from collections.abc import Iterator

#: (logger the message arrives on, regex on the message, why it is harmless here). Python
#: warnings arrive on ``py.warnings`` (``logging.captureWarnings``) as "file:line: Category: text".
KNOWN: tuple[tuple[str, str, str], ...] = (
    (
        "root",
        r"^Please consider to run pre-processing before quantization",
        "onnxruntime.quantization's advice to run its shape-inference pre-pass; edgepath "
        "exports static-shape graphs and the fidelity gate measures the result",
    ),
    (
        "torch.utils.cpp_extension",
        r"^No CUDA runtime is found",
        "torch's C++-extension module on a machine with a CUDA toolkit and no GPU (imported by "
        "NNCF and OpenVINO); nothing here builds CUDA extensions",
    ),
    (
        "py.warnings",
        r"FutureWarning: `torch\.jit\.trace(_method)?` is deprecated",
        "OpenVINO's converter traces the model with torch.jit; the converted model is checked "
        "against torch by the fidelity gate and export parity",
    ),
    (
        "py.warnings",
        r"TracerWarning: ",
        "torch.jit's tracer on constant shapes (fixed tile size); the traced graph is checked",
    ),
    (
        "py.warnings",
        r"You are using the legacy TorchScript-based ONNX exporter|"
        r"torch\.onnx\.dynamo_export is deprecated",
        "torch.onnx's notice about its exporters; edgepath checks the exported graph itself",
    ),
)

_SHOW_THIRD_PARTY = True


class KnownChatter(logging.Filter):
    """Drops the records that ``KNOWN`` lists (for loggers and handlers alike)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """False for a known-harmless record."""
        msg = record.getMessage()
        return not any(
            record.name == name and re.search(pattern, msg) for name, pattern, _ in KNOWN
        )


def install(verbose: int) -> None:
    """Hide ``KNOWN`` chatter and third-party progress when ``verbose`` is 0 (after logging is
    configured: the root logger's handlers get the filter). ``verbose`` > 0 hides nothing."""
    global _SHOW_THIRD_PARTY
    _SHOW_THIRD_PARTY = verbose > 0
    if verbose > 0:
        return
    chatter = KnownChatter()
    logging.captureWarnings(True)
    for handler in logging.getLogger().handlers:
        handler.addFilter(chatter)
    for name in {n for n, _, _ in KNOWN if n != "root"}:
        logging.getLogger(name).addFilter(chatter)  # loggers with handlers of their own too


def showing_third_party() -> bool:
    """Whether third-party output is shown (``-v``, or any library use outside the CLI)."""
    return _SHOW_THIRD_PARTY


@contextlib.contextmanager
def third_party_output() -> Iterator[None]:
    """Around a third-party call that prints (NNCF's and ONNX Runtime's progress): its stdout
    goes to stderr (``--json`` keeps stdout clean), or nowhere at the CLI's default verbosity.
    Logging and warnings are not affected (handlers keep their own streams)."""
    if _SHOW_THIRD_PARTY:
        with contextlib.redirect_stdout(sys.stderr):
            yield
        return
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        yield
