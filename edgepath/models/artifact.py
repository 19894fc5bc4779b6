"""Artifact folders: weights + ``edgepath.json``, the manifest every stage reads and writes.

Manifest keys other stages rely on (see docs/design.md):

- ``format_version``, ``edgepath_version``, ``created``
- ``kind``: ``student`` | ``quantized`` | ``export``
- ``name``: a human label; ``spec``: the ``EncoderSpec`` (architecture, input, tokens, embedding)
- ``input`` {``tile_px``, ``mpp``, ``mean``, ``std``} and ``embedding`` {``definition``, ``dim``}
  (copies of ``spec``'s, at top level for users and other tools)
- ``precision`` (fp32 | fp16 | int8 | fp8-e4m3 | …), ``engine`` (torch | onnxruntime | openvino |
  tensorrt), ``files`` {role: file name}
- ``parent`` {``path``, ``sha256``: the parent's identity, ``edgepath.models.resolver``}, ``card`` / ``recipe`` / ``preset`` used
- ``fidelity`` {``cosine``, ``centered_cosine``, ``knn10_agreement``, ``n_tiles``, ``against``}
- ``status``: ``ok`` or ``failed`` (a gate that did not pass: never to be used as a good model)
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgepath import __version__
from edgepath.cards import from_dict, to_dict
from edgepath.errors import ArtifactError
from edgepath.io import atomic_path, sha256_file, write_json_atomic
from edgepath.models.cards import EncoderSpec

if TYPE_CHECKING:
    from edgepath.models.encoder import Encoder

MANIFEST = "edgepath.json"
FORMAT_VERSION = 1
KINDS = ("student", "quantized", "export")
WEIGHTS = "model.safetensors"

#: File roles that do not change the model's output (a distilled student's training heads and
#: resolved recipe, a bundle's scripts, a timm export's config and model card): not model files for the engines, not in the identity.
NON_MODEL_ROLES = frozenset(
    {
        "heads",
        "recipe",
        "tiles",
        "reference",
        "build_script",
        "verify",
        "config",
        "log",
        "model_card",
    }
)


def is_artifact(path: str | Path) -> bool:
    """True if ``path`` is a folder holding a manifest."""
    return (Path(path) / MANIFEST).is_file()


def spec_to_dict(spec: EncoderSpec) -> dict[str, Any]:
    """An ``EncoderSpec`` as JSON-able data."""
    return to_dict(spec)


def spec_from_dict(data: dict[str, Any], *, source: Path) -> EncoderSpec:
    """Parse an ``EncoderSpec`` from a manifest's ``spec`` table (strict)."""
    return from_dict(EncoderSpec, data, source=source, prefix="spec.")


def new_manifest(kind: str, spec: EncoderSpec, **fields: Any) -> dict[str, Any]:
    """A manifest with the required keys filled from ``spec``; ``fields`` add or override."""
    if kind not in KINDS:
        raise ArtifactError(f"unknown artifact kind '{kind}'; expected one of {KINDS}")
    s = spec_to_dict(spec)
    manifest: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "edgepath_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "kind": kind,
        "name": fields.pop("name", spec.architecture.name),
        "spec": s,
        "input": s["input"],
        "embedding": s["embedding"],
        "precision": "fp32",
        "engine": "torch",
        "files": {},
        "status": "ok",
    }
    manifest.update(fields)
    return manifest


def write_manifest(folder: str | Path, manifest: dict[str, Any]) -> Path:
    """Write ``edgepath.json`` atomically into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / MANIFEST
    write_json_atomic(path, manifest)
    return path


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """Read and check an artifact's manifest.

    Raises:
        ArtifactError: No manifest, unreadable JSON, or missing required keys.
    """
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        raise ArtifactError(
            f"{folder}: not an edgepath artifact (no {MANIFEST}); pass a folder written by "
            "edgepath distill/quantize/export, a teacher card name, or a student name"
        )
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ArtifactError(
            f"{path}: unreadable manifest ({exc}); re-create the artifact"
        ) from None
    for key in ("format_version", "kind", "spec", "precision"):
        if key not in manifest:
            raise ArtifactError(f"{path}: manifest has no '{key}'; re-create the artifact")
    for key in ("input", "embedding"):  # top-level copies of the spec's, for other tools
        if key in manifest and manifest[key] != manifest["spec"].get(key):
            raise ArtifactError(
                f"{path}: '{key}' ({manifest[key]}) disagrees with 'spec.{key}' "
                f"({manifest['spec'].get(key)}); the manifest was edited by hand: restore it, or "
                "re-create the artifact with the spec it should have"
            )
    if manifest["format_version"] > FORMAT_VERSION:
        raise ArtifactError(
            f"{path}: manifest format {manifest['format_version']} is newer than this edgepath "
            f"understands ({FORMAT_VERSION}); upgrade edgepath"
        )
    return manifest


def require_ok(folder: str | Path, manifest: dict[str, Any], *, action: str) -> None:
    """Refuse an artifact whose gate failed: it is never to be used as a model.

    Args:
        folder: The artifact folder (named in the message).
        manifest: Its manifest.
        action: What was about to happen, e.g. ``"export"``, ``"run"``.
    """
    status = manifest.get("status", "ok")
    if status != "ok":
        raise ArtifactError(
            f"{folder}: artifact status is '{status}' (its gate failed); refusing to {action} a "
            "model that did not pass: re-quantize with another preset or --accuracy-control"
        )


def manifest_spec(folder: str | Path, manifest: dict[str, Any] | None = None) -> EncoderSpec:
    """The ``EncoderSpec`` stored in an artifact's manifest."""
    manifest = manifest if manifest is not None else read_manifest(folder)
    return spec_from_dict(manifest["spec"], source=Path(folder) / MANIFEST)


def model_files_sha256(folder: str | Path, manifest: dict[str, Any] | None = None) -> str:
    """SHA-256 over the artifact's model files (every role but ``NON_MODEL_ROLES``, by role).

    Weights, graphs, IR and engine plans count; bundle folders count file by file. This is the
    weights part of the model identity (``edgepath.models.resolver.identity_sha256``).
    """
    folder = Path(folder)
    manifest = manifest if manifest is not None else read_manifest(folder)
    roles = {k: v for k, v in manifest.get("files", {}).items() if k not in NON_MODEL_ROLES}
    if not roles:
        raise ArtifactError(f"{folder}: manifest lists no model files; re-create the artifact")
    h = hashlib.sha256()
    for role, name in sorted(roles.items()):
        p = folder / str(name)
        if p.is_file():
            h.update(f"{role}={sha256_file(p)};".encode())
        elif p.is_dir():  # bundle folders
            for q in sorted(x for x in p.rglob("*") if x.is_file()):
                h.update(f"{role}/{q.relative_to(p).as_posix()}={sha256_file(q)};".encode())
        else:  # e.g. a Jetson bundle's plan, built later on the device: its absence counts
            h.update(f"{role}=absent;".encode())
    return h.hexdigest()


def save_encoder(
    folder: str | Path, encoder: Encoder, *, kind: str = "student", **fields: Any
) -> dict[str, Any]:
    """Save a torch ``Encoder`` as an artifact: ``model.safetensors`` + manifest (both atomic).

    Returns:
        The manifest written.
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in encoder.backbone.state_dict().items()}
    with atomic_path(folder / WEIGHTS, suffix=".safetensors") as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})
    manifest = new_manifest(kind, encoder.spec, **fields)
    manifest["files"] = {**manifest.get("files", {}), "weights": WEIGHTS}
    manifest["sha256"] = sha256_file(folder / WEIGHTS)
    write_manifest(folder, manifest)
    return manifest


def load_encoder(folder: str | Path) -> Encoder:
    """Rebuild a torch ``Encoder`` from a student artifact (strict key matching)."""
    from safetensors.torch import load_file

    from edgepath.models.encoder import build_encoder

    folder = Path(folder)
    manifest = read_manifest(folder)
    weights = manifest.get("files", {}).get("weights")
    if not weights or not (folder / weights).is_file() or not weights.endswith(".safetensors"):
        raise ArtifactError(
            f"{folder}: no torch weights in this artifact (kind {manifest['kind']}, engine "
            f"{manifest.get('engine')}); run it through its engine instead"
        )
    encoder = build_encoder(manifest_spec(folder, manifest))
    state = load_file(str(folder / weights))
    result = encoder.backbone.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ArtifactError(
            f"{folder / weights}: weights do not match the manifest's architecture "
            f"(missing {len(result.missing_keys)}, unexpected {len(result.unexpected_keys)}, e.g. "
            f"{(result.missing_keys or result.unexpected_keys)[0]}); re-create the artifact"
        )
    return encoder.eval()
