"""One way from a model reference to something that runs: ``resolve(ref) -> ModelHandle``.

A reference is an artifact folder (any kind), a teacher card (name, ``.toml`` path or
``TeacherCard``), or a student name, optionally at another input resolution (``vit-s14@2.0``).
Every stage (bench, embed, quantize, export, distill's teachers, the runtime) resolves through
here, so a reference means the same everywhere, and every stage names a model by the same
identity hash (``ModelHandle.sha256``, defined once in ``identity_sha256``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgepath.errors import ConfigError

if TYPE_CHECKING:
    from edgepath.models.cards import EncoderSpec, TeacherCard
    from edgepath.models.encoder import Encoder

log = logging.getLogger(__name__)

SOURCES = ("artifact", "teacher", "student")


def identity_sha256(weights_sha256: str, spec: EncoderSpec) -> str:
    """The model identity: what changes its output, i.e. its weights and its spec.

    SHA-256 of the weights' hash and the spec (architecture, input size, mpp, mean/std, token
    layout, embedding definition) as canonical JSON. Feature files record it as the model hash,
    and child artifacts (quantized, export) as their parent's ``sha256``: the same model gives
    the same identity in both, and editing a manifest's mpp or mean gives another.
    """
    from edgepath.cards import to_dict

    spec_json = json.dumps(to_dict(spec), sort_keys=True, separators=(",", ":"))
    text = f"edgepath-model-v1;weights={weights_sha256};spec={spec_json}"
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class ModelHandle:
    """A resolved model: what it is, where it came from, and its identity.

    Attributes:
        ref: What the user passed.
        name: Display name (``vit-s14@2.0``, ``uni2-h``, an artifact's ``name``).
        source: ``artifact``, ``teacher`` or ``student``.
        spec: The encoder spec (input tile px and mpp included).
        weights_sha256: Hash of the weights alone (weight files, or the tensors of random ones).
        random_weights: Seeded random weights (bare students, stand-ins, ``random_weights=True``).
        stand_in: A stand-in teacher (or an artifact distilled from one).
        folder: The artifact folder (artifacts only).
        manifest: Its manifest (artifacts only).
        files: The weight files read (teachers, students with weights) or listed (artifacts).
    """

    ref: str
    name: str
    source: str
    spec: EncoderSpec
    weights_sha256: str
    random_weights: bool = False
    stand_in: bool = False
    folder: Path | None = None
    manifest: dict[str, Any] = field(default_factory=dict)
    files: tuple[str, ...] = ()
    _encoder: Encoder | None = field(default=None, repr=False)

    @functools.cached_property
    def sha256(self) -> str:
        """The identity (``identity_sha256`` of the weights and the spec)."""
        return identity_sha256(self.weights_sha256, self.spec)

    @property
    def mpp(self) -> float:
        """The model's input resolution, µm/px."""
        return float(self.spec.input.mpp)

    @property
    def tile_px(self) -> int:
        """The model's tile size."""
        return int(self.spec.input.tile_px)

    @property
    def label(self) -> str:
        """The model's id in feature files and reports."""
        if self.folder is not None:
            return f"{self.name} ({self.manifest.get('kind')}: {self.folder.name})"
        return f"{self.name} (random weights)" if self.random_weights else self.name

    @property
    def has_torch_weights(self) -> bool:
        """True when the torch engine can run it (not for ONNX / IR / plan-only artifacts)."""
        if self.folder is None:
            return True
        weights = str(self.manifest.get("files", {}).get("weights", ""))
        return weights.endswith(".safetensors") and (self.folder / weights).is_file()

    @functools.cached_property
    def encoder(self) -> Encoder | None:
        """The torch ``Encoder`` (loaded on first use for artifacts; None when it has none)."""
        if self._encoder is not None:
            return self._encoder
        if not self.has_torch_weights:
            return None
        from edgepath.models.artifact import load_encoder

        assert self.folder is not None
        return load_encoder(self.folder)

    def require_encoder(self) -> Encoder:
        """The torch ``Encoder``, or an ``ArtifactError`` naming the folder."""
        from edgepath.errors import ArtifactError

        enc = self.encoder
        if enc is None:
            raise ArtifactError(
                f"{self.folder}: no torch weights in this artifact (engine "
                f"{self.manifest.get('engine')}); run it through its engine instead"
            )
        return enc


def resolve(
    ref: str | os.PathLike[str] | TeacherCard,
    *,
    weights: str | os.PathLike[str] | None = None,
    random_weights: bool = False,
) -> ModelHandle:
    """Any model edgepath knows, resolved.

    Args:
        ref: An artifact folder, a teacher card name / ``.toml`` path / ``TeacherCard``, or a
            student name with an optional input mpp (``vit-s14``, ``vit-s14@2.0``; seeded
            random weights unless ``weights`` is given).
        weights: Checkpoint for a teacher or a student name (not for artifacts).
        random_weights: Seeded random weights for a teacher (architecture checks, speed runs).

    Raises:
        ArtifactError: A folder that is not an artifact, or a broken one.
        ConfigError: A name that is no card or student, or a bad ``@MPP``.
        MissingWeightsError: A teacher's weights are not found offline.
    """
    from edgepath.models import artifact
    from edgepath.models.cards import TeacherCard
    from edgepath.models.loading import as_card
    from edgepath.models.students import STUDENTS

    if isinstance(ref, TeacherCard):
        return _teacher(ref, str(ref.name), weights=weights, random_weights=random_weights)
    text = os.fspath(ref)
    path = Path(text)
    if path.is_dir() and artifact.is_artifact(path):
        return _artifact(text, path)
    name, at, mpp = text.partition("@")
    if name in STUDENTS:
        return _student(text, name, mpp if at else None, weights=weights)
    if at and not path.exists():
        raise ConfigError(f"'{text}': @MPP is only for student names ({', '.join(STUDENTS)})")
    if path.is_dir():
        artifact.read_manifest(path)  # raises the "not an artifact" message
    try:
        card = as_card(text)
    except ConfigError as exc:
        if text.endswith(".toml"):
            raise
        raise ConfigError(
            f"'{text}' is not an artifact folder, a teacher card or a student name "
            f"({', '.join(STUDENTS)}); {exc}"
        ) from None
    return _teacher(card, text, weights=weights, random_weights=random_weights)


def _artifact(ref: str, folder: Path) -> ModelHandle:
    from edgepath.models import artifact

    manifest = artifact.read_manifest(folder)
    return ModelHandle(
        ref=ref,
        name=str(manifest.get("name", folder.name)),
        source="artifact",
        spec=artifact.manifest_spec(folder, manifest),
        weights_sha256=artifact.model_files_sha256(folder, manifest),
        random_weights=bool(manifest.get("random_weights", False)),
        stand_in=bool(manifest.get("stand_in", False)),
        folder=folder,
        manifest=manifest,
        files=tuple(str(folder / f) for f in manifest.get("files", {}).values()),
    )


def _student(
    ref: str, name: str, mpp: str | None, *, weights: str | os.PathLike[str] | None
) -> ModelHandle:
    from edgepath.models.loading import (
        files_sha256,
        load_state,
        random_encoder,
        seed_for,
        state_sha256,
        student_input,
    )
    from edgepath.models.students import student_spec

    try:
        overrides = {"mpp": float(mpp)} if mpp is not None else {}
    except ValueError:
        raise ConfigError(f"'{ref}': the part after @ must be an mpp, e.g. vit-s14@2.0") from None
    spec = student_spec(name, input=student_input(**overrides))
    enc = random_encoder(spec, seed=seed_for(name))
    common = {"ref": ref, "name": ref, "source": "student", "spec": spec, "_encoder": enc}
    if weights is None:
        return ModelHandle(**common, weights_sha256=state_sha256(enc), random_weights=True)
    from edgepath.models.weights import read_checkpoint, resolve_local

    paths = resolve_local(weights)
    load_state(enc.backbone, read_checkpoint(paths), source=str(weights), what=f"student '{name}'")
    return ModelHandle(
        **common, weights_sha256=files_sha256(paths), files=tuple(str(p) for p in paths)
    )


def _teacher(
    card: TeacherCard,
    ref: str,
    *,
    weights: str | os.PathLike[str] | None,
    random_weights: bool,
) -> ModelHandle:
    from edgepath.models.loading import load_teacher_weights

    enc, random, sha, paths = load_teacher_weights(
        card, weights=weights, random_weights=random_weights
    )
    return ModelHandle(
        ref=ref,
        name=card.name,
        source="teacher",
        spec=card.spec,
        weights_sha256=sha,
        random_weights=random,
        stand_in=card.stand_in,
        files=tuple(str(p) for p in paths),
        _encoder=enc,
    )
