"""Find teacher weights (local file or folder, Hugging Face cache, Hub) and read checkpoints.

Resolution order for a card's weights, first hit wins:

1. ``--weights PATH`` / ``weights=`` (a file, or a folder holding the card's files);
2. the card's ``weights.env_var``, else ``$EDGEPATH_WEIGHTS_<NAME>`` (``uni2-h`` ->
   ``EDGEPATH_WEIGHTS_UNI2_H``), same forms;
3. the Hugging Face cache (``$HF_HOME`` / ``$HF_HUB_CACHE``), no network;
4. a Hub download, only when the files are in none of the above and ``$HF_HUB_OFFLINE`` /
   ``$EDGEPATH_OFFLINE`` are unset (gated repos need ``$HF_TOKEN`` or ``huggingface-cli login``).

Nothing here touches the network at import time.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgepath.errors import ConfigError, MissingWeightsError

if TYPE_CHECKING:
    import torch

    from edgepath.models.cards import TeacherCard

log = logging.getLogger(__name__)

#: File suffixes edgepath reads as checkpoints.
SUFFIXES = (".safetensors", ".bin", ".pth", ".pt", ".ckpt")
#: Containers that training scripts wrap a state dict in (``{"model": {...}}`` ...).
_CONTAINERS = ("state_dict", "model", "model_state_dict", "module", "teacher", "net")
_TRUTHY = ("1", "true", "yes", "on")


class WeightsMismatchError(ConfigError):
    """A checkpoint whose keys or shapes do not match the card's architecture."""


def env_var(card: TeacherCard) -> str:
    """The environment variable that points at this card's weights."""
    if card.weights.env_var:
        return card.weights.env_var
    return "EDGEPATH_WEIGHTS_" + re.sub(r"[^A-Za-z0-9]", "_", card.name).upper()


def offline() -> bool:
    """True when downloads are forbidden (``$HF_HUB_OFFLINE`` or ``$EDGEPATH_OFFLINE``)."""
    return any(
        os.environ.get(v, "").strip().lower() in _TRUTHY
        for v in ("HF_HUB_OFFLINE", "EDGEPATH_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


#: The two names timm's Hub loader tries; a card naming one also accepts the other.
_HUB_TWINS = {"model.safetensors": "pytorch_model.bin", "pytorch_model.bin": "model.safetensors"}


def _candidates(card: TeacherCard) -> list[tuple[str, ...]]:
    """The card's file list, then its timm Hub twin (``model.safetensors`` <-> ``.bin``)."""
    files = tuple(card.weights.files)
    out = [files]
    if len(files) == 1 and files[0] in _HUB_TWINS:
        out.append((_HUB_TWINS[files[0]],))
    return out


def _expected(card: TeacherCard) -> str:
    files = ", ".join(card.weights.files)
    where = f" from hf:{card.weights.hf_repo}" if card.weights.hf_repo else ""
    return f"{files}{where}"


def _files_in_folder(folder: Path, card: TeacherCard | None) -> list[Path]:
    """The checkpoint files of ``card`` inside ``folder`` (or the only checkpoint set there)."""
    if card is not None:
        for files in _candidates(card):
            named = [folder / f for f in files]
            if all(p.is_file() for p in named):
                return named
            # the card's files one level down (e.g. a snapshot folder copied as is)
            for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
                nested = [sub / f for f in files]
                if all(p.is_file() for p in nested):
                    return nested
    index = sorted(folder.glob("*.safetensors.index.json")) + sorted(
        folder.glob("*.bin.index.json")
    )
    if index:
        shards = json.loads(index[0].read_text()).get("weight_map", {}).values()
        return [folder / s for s in sorted(set(shards))]
    found = sorted(p for p in folder.iterdir() if p.suffix in SUFFIXES and p.is_file())
    safet = [p for p in found if p.suffix == ".safetensors"]
    found = safet or found  # prefer safetensors when a folder has both formats
    if len(found) == 1:
        return found
    what = f"{card.name}'s files ({', '.join(card.weights.files)})" if card else "one checkpoint"
    listing = ", ".join(p.name for p in found) or "no checkpoint files"
    raise MissingWeightsError(
        f"{folder}: expected {what} here, found {listing}; pass the checkpoint file itself"
    )


def resolve_local(path: str | os.PathLike[str], card: TeacherCard | None = None) -> list[Path]:
    """Checkpoint file(s) for a user-given file or folder."""
    p = Path(path).expanduser()
    if p.is_file():
        if p.suffix not in SUFFIXES and not p.name.endswith(".index.json"):
            raise MissingWeightsError(
                f"{p}: not a checkpoint ({', '.join(SUFFIXES)}); pass a weights file or folder"
            )
        if p.name.endswith(".index.json"):
            return _files_in_folder(p.parent, None)
        return [p]
    if p.is_dir():
        return _files_in_folder(p, card)
    raise MissingWeightsError(f"{p}: no such weights file or folder; check the path")


def _cache_dir() -> str | None:
    """The Hub cache, read from the environment now (huggingface_hub reads it at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return str(Path(os.environ["HF_HOME"]) / "hub")
    return None


def _from_cache(card: TeacherCard) -> list[Path] | None:
    from huggingface_hub import try_to_load_from_cache

    cache = _cache_dir()
    for files in _candidates(card):
        hits = [try_to_load_from_cache(card.weights.hf_repo, f, cache_dir=cache) for f in files]
        if all(isinstance(h, str) for h in hits):
            return [Path(h) for h in hits]
    return None


def _download(card: TeacherCard) -> list[Path]:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    repo = card.weights.hf_repo
    files, *twin = _candidates(card)
    paths = []
    for f in files:
        log.info("downloading %s from hf:%s", f, repo)
        try:
            paths.append(Path(hf_hub_download(repo, f, cache_dir=_cache_dir())))
        except EntryNotFoundError:
            if twin:  # the repo holds the other timm Hub name
                log.info("%s not in hf:%s; trying %s", f, repo, twin[0][0])
                return [Path(hf_hub_download(repo, twin[0][0], cache_dir=_cache_dir()))]
            raise MissingWeightsError(
                f"teacher '{card.name}': hf:{repo} has no {f}; fix weights.files in the card "
                f"or pass --weights PATH"
            ) from None
        except GatedRepoError:
            raise MissingWeightsError(
                f"teacher '{card.name}': hf:{repo} is gated; accept its terms at "
                f"https://huggingface.co/{repo} and set $HF_TOKEN (or huggingface-cli login), "
                f"or pass --weights PATH / ${env_var(card)}"
            ) from None
        except (RepositoryNotFoundError, LocalEntryNotFoundError, HfHubHTTPError, OSError) as exc:
            raise MissingWeightsError(
                f"teacher '{card.name}': cannot download {f} from hf:{repo} "
                f"({type(exc).__name__}); pass --weights PATH (file or folder) or set "
                f"${env_var(card)}"
            ) from None
    return paths


def locate(card: TeacherCard, weights: str | os.PathLike[str] | None = None) -> list[Path]:
    """The checkpoint file(s) of ``card``, following the resolution order of this module.

    Raises:
        MissingWeightsError: Nothing found and no download allowed or possible; the message
            names the card, the files expected and the flag / environment variable to set.
    """
    if weights is not None:
        return resolve_local(weights, card)
    var = env_var(card)
    if os.environ.get(var):
        log.info("weights of %s from $%s", card.name, var)
        return resolve_local(os.environ[var], card)
    if card.weights.hf_repo:
        cached = _from_cache(card)
        if cached:
            log.info("weights of %s from the Hugging Face cache", card.name)
            return cached
        if not offline():
            return _download(card)
    why = "offline ($HF_HUB_OFFLINE is set)" if offline() else "and the card names no Hub repo"
    raise MissingWeightsError(
        f"teacher '{card.name}': no weights found {why}; expected {_expected(card)}; "
        f"pass --weights PATH (file or folder) or set ${var}"
        + (", or download them into the Hugging Face cache" if card.weights.hf_repo else "")
    )


# ----------------------------------------------------------------------------------------------
# reading and matching checkpoints


def read_checkpoint(paths: list[Path]) -> dict[str, torch.Tensor]:
    """Read one or several (sharded) checkpoint files into one flat state dict on the CPU."""

    state: dict[str, Any] = {}
    for p in paths:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            try:
                part: Any = load_file(str(p))
            except Exception as exc:  # SafetensorError: truncated or not safetensors
                raise MissingWeightsError(
                    f"{p}: not a readable safetensors file ({str(exc)[:160]}); "
                    "re-download it or pass another checkpoint"
                ) from None
        else:
            part = _torch_load(p)
        state.update(_unwrap(part, p))
    return state


def _torch_load(path: Path) -> Any:
    """``torch.load`` with ``weights_only=True`` (never runs pickled code), mmap when possible."""
    import pickle

    import torch

    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc) and "zip" not in str(exc):
                raise
            return torch.load(path, map_location="cpu", weights_only=True)  # legacy format
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if found is None:
            raise MissingWeightsError(
                f"{path}: cannot read as a torch checkpoint (not a pickle/zip state dict); "
                "pass a safetensors, .bin or .pth state dict"
            ) from None
        raise MissingWeightsError(
            f"{path}: holds Python objects besides tensors ({found.group(1)}), which edgepath "
            "does not unpickle; re-save the state dict alone (torch.save(ckpt['model'], …)) "
            "or as safetensors"
        ) from None
    except Exception as exc:
        raise MissingWeightsError(
            f"{path}: cannot read as a torch checkpoint ({type(exc).__name__}: "
            f"{str(exc)[:160]}); pass a safetensors, .bin or .pth state dict"
        ) from None


def _unwrap(obj: Any, path: Path) -> dict[str, Any]:
    """Descend into ``{"model": {...}}``-style containers until the tensors."""
    import torch

    while isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        inner = next((obj[k] for k in _CONTAINERS if isinstance(obj.get(k), dict)), None)
        if inner is None:
            raise MissingWeightsError(
                f"{path}: no state dict inside (top-level keys: {', '.join(map(str, obj))[:200]})"
                "; pass a file that holds the model's tensors"
            )
        obj = inner
    if not isinstance(obj, dict):
        raise MissingWeightsError(f"{path}: holds a {type(obj).__name__}, not a state dict")
    return {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}


#: Wrapper prefixes tried, besides the card's own ``weights.strip_prefix``.
PREFIXES = (
    "",
    "module.",
    "model.",
    "backbone.",
    "encoder.",
    "trunk.",
    "module.backbone.",
    "model.backbone.",
    "teacher.backbone.",
    "student.backbone.",
    "visual.trunk.",
    "module.visual.trunk.",
    "vision_model.",
)


def strip_prefix(
    state: dict[str, Any], expected: set[str], *, prefix: str = ""
) -> tuple[dict[str, Any], str]:
    """Pick the wrapper prefix under which most keys match ``expected`` and strip it.

    Keys outside the chosen prefix (a DINO head next to ``backbone.``) are dropped and logged.

    Returns:
        The stripped state dict and the prefix used.
    """
    best, best_hits = "", -1
    for cand in dict.fromkeys((prefix, *PREFIXES)):
        hits = sum(1 for k in state if k.startswith(cand) and k[len(cand) :] in expected)
        if hits > best_hits:
            best, best_hits = cand, hits
    if not best:
        return state, ""
    kept = {k[len(best) :]: v for k, v in state.items() if k.startswith(best)}
    dropped = len(state) - len(kept)
    if dropped:
        log.info("ignored %d keys outside '%s'", dropped, best)
    return kept, best


def match_report(
    state: dict[str, Any], reference: dict[str, Any]
) -> tuple[list[str], list[str], list[str]]:
    """Missing keys, unexpected keys and shape mismatches of ``state`` against ``reference``."""
    missing = sorted(set(reference) - set(state))
    unexpected = sorted(set(state) - set(reference))
    shapes = sorted(
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(reference[k].shape)}"
        for k in set(state) & set(reference)
        if tuple(state[k].shape) != tuple(reference[k].shape)
    )
    return missing, unexpected, shapes


def summary(missing: list[str], unexpected: list[str], shapes: list[str], *, show: int = 4) -> str:
    """One readable line: counts and the first few names of each kind of mismatch."""

    def part(label: str, items: list[str]) -> str:
        more = f", … {len(items) - show} more" if len(items) > show else ""
        return f"{len(items)} {label} ({', '.join(items[:show])}{more})"

    parts = [
        part(label, items)
        for label, items in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("shape mismatches", shapes),
        )
        if items
    ]
    return "; ".join(parts) or "all keys match"
