"""OpenVINO IR export: ``model.xml`` + ``model.bin`` from ONNX (float, FP16-compressed or INT8 QDQ)."""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

from edgepath.errors import ArtifactError, require

log = logging.getLogger(__name__)


def export_openvino(onnx_path: str | Path, xml_path: str | Path, *, fp16: bool = False) -> Path:
    """Convert an ONNX file to OpenVINO IR.

    ``openvino.save_model`` compresses weights to FP16 unless told otherwise; float exports pass
    ``compress_to_fp16=False`` explicitly so that an FP32 artifact stays FP32 on disk. A QDQ
    (INT8) ONNX converts into an IR whose FakeQuantize ops OpenVINO executes in INT8.

    Args:
        onnx_path: The source ONNX file (opset ≥ 17, dynamic batch).
        xml_path: The ``.xml`` to write; the ``.bin`` goes beside it (both written atomically).
        fp16: Store weights as FP16 (half the size; CPUs decompress them and compute in FP32).

    Returns:
        The ``.xml`` path.
    """
    ov = require("openvino", "openvino", purpose="OpenVINO IR export")
    onnx_path, xml_path = Path(onnx_path), Path(xml_path)
    if not onnx_path.is_file():
        raise ArtifactError(f"{onnx_path}: ONNX file not found")
    model = ov.convert_model(str(onnx_path))
    xml_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=xml_path.parent, prefix=".ov-") as tmp:
        tmp_xml = Path(tmp) / xml_path.name
        ov.save_model(model, str(tmp_xml), compress_to_fp16=fp16)
        # bin first, then xml: a reader that sees the xml always finds its weights
        shutil.move(str(tmp_xml.with_suffix(".bin")), xml_path.with_suffix(".bin"))
        shutil.move(str(tmp_xml), xml_path)
    log.info("wrote %s (%s weights)", xml_path, "fp16" if fp16 else "original-precision")
    return xml_path


def copy_ir(xml_path: str | Path, dest_xml: str | Path) -> Path:
    """Copy an IR (``.xml`` + ``.bin``) from a quantized artifact."""
    src, dst = Path(xml_path), Path(dest_xml)
    if not src.with_suffix(".bin").is_file():
        raise ArtifactError(f"{src.with_suffix('.bin')}: IR weights missing beside {src.name}")
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src.with_suffix(".bin"), dst.with_suffix(".bin"))
    shutil.copyfile(src, dst)
    return dst
