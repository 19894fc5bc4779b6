"""TOML cards: find them by name or path, parse them into frozen dataclasses, fail with file + key.

Cards are *data* (the timm ``PretrainedCfg`` idea, as TOML): teacher cards in ``teachers/``,
student architectures in ``students/``, distillation recipes in ``distill/``, quantization
presets in ``quantize/`` and export targets in ``export/``. Each kind has one schema, a frozen dataclass that lives next to the code that uses
it; this module only finds, parses and validates.

Search order for a card named ``NAME`` of kind ``KIND``:

1. an existing path (``./my-teacher.toml``) is read as is;
2. each folder of ``--cards-dir`` / ``$EDGEPATH_CARDS`` (``os.pathsep``-separated), as
   ``DIR/KIND/NAME.toml`` (or ``DIR/NAME.toml``): user cards, no need to touch the install;
3. the shipped cards: ``edgepath/_cards/KIND`` in a wheel, ``<checkout>/KIND`` in a source tree.

Test-only cards (the ``vit-test14`` student, the ``int8-generic-broken`` preset) live in
``tests/cards/`` with the same layout; the tests add that folder to ``$EDGEPATH_CARDS``, so no
user listing shows them and the wheel does not carry them.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import os
import sys
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from edgepath.errors import ConfigError

log = logging.getLogger(__name__)

ENV_VAR = "EDGEPATH_CARDS"

#: Card kind -> "module:Class" of its schema, imported lazily (no registry filled by imports).
KINDS: dict[str, str] = {
    "teachers": "edgepath.models.cards:TeacherCard",
    "students": "edgepath.models.students:StudentArch",
    "distill": "edgepath.distill.recipe:RecipeCard",
    "export": "edgepath.export.targets:ExportTarget",
    "quantize": "edgepath.quantize.presets:QuantizePreset",
}

_extra_dirs: list[Path] = []

T = TypeVar("T")


def add_cards_dir(path: str | os.PathLike[str]) -> None:
    """Add a user folder of cards (same layout as the shipped ones) searched before the shipped."""
    p = Path(path).expanduser()
    if not p.is_dir():
        raise ConfigError(
            f"{p}: cards folder does not exist; pass an existing folder to --cards-dir"
        )
    if p not in _extra_dirs:
        _extra_dirs.insert(0, p)


def shipped_dir(kind: str) -> Path:
    """Folder of the shipped cards of ``kind``: inside the wheel, else the source checkout."""
    pkg = Path(__file__).resolve().parent
    wheel = pkg / "_cards" / kind
    if wheel.is_dir():
        return wheel
    return pkg.parent / kind


def user_dirs() -> list[Path]:
    """User card folders from ``--cards-dir`` then ``$EDGEPATH_CARDS``."""
    dirs = list(_extra_dirs)
    for part in os.environ.get(ENV_VAR, "").split(os.pathsep):
        if part.strip():
            dirs.append(Path(part).expanduser())
    return dirs


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ConfigError(f"unknown card kind '{kind}'; expected one of: {', '.join(KINDS)}")


def card_paths(kind: str) -> dict[str, Path]:
    """All cards of ``kind`` by name; user cards shadow shipped cards of the same name."""
    _check_kind(kind)
    found: dict[str, Path] = {}
    folders = [shipped_dir(kind)]
    for d in reversed(user_dirs()):
        folders.extend([d, d / kind])
    for folder in folders:
        if folder.is_dir():
            for p in sorted(folder.glob("*.toml")):
                if folder != shipped_dir(kind) and not _looks_like(kind, p):
                    continue
                found[p.stem] = p
    return dict(sorted(found.items()))


def _looks_like(kind: str, path: Path) -> bool:
    """A user-folder card at top level belongs to ``kind`` if its ``kind`` key says so."""
    if path.parent.name == kind:
        return True
    try:
        return _read_toml(path).get("kind") == kind.rstrip("s")
    except ConfigError:
        return False


def resolve(kind: str, name_or_path: str | os.PathLike[str]) -> Path:
    """Path of a card given by name or path; a clear error lists what exists."""
    _check_kind(kind)
    p = Path(name_or_path)
    if p.suffix == ".toml" or p.exists():
        if not p.is_file():
            raise ConfigError(f"{p}: card file not found; pass a .toml file or a card name")
        return p
    paths = card_paths(kind)
    if str(name_or_path) in paths:
        return paths[str(name_or_path)]
    known = ", ".join(paths) or "none"
    raise ConfigError(
        f"no {kind} card named '{name_or_path}'; known: {known} "
        f"(add your own with --cards-dir or ${ENV_VAR})"
    )


def infer_kind(path: str | os.PathLike[str]) -> str:
    """The kind of a card file given by path: its folder name, its ``kind`` key, or its keys.

    A card outside a kind folder without a ``kind`` key is matched to the schema whose required
    keys it has and whose fields cover most of its top-level keys.
    """
    p = Path(path)
    if p.parent.name in KINDS:
        return p.parent.name
    table = _read_toml(p)
    declared = table.get("kind")
    if isinstance(declared, str):
        for kind in KINDS:
            if declared in (kind, kind.rstrip("s")):
                return kind
    best, best_score = None, -1.0
    for kind in KINDS:
        fields = {f.name: f for f in dataclasses.fields(schema(kind))}
        required = {
            n
            for n, f in fields.items()
            if f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
            and n != "name"
        }
        keys = set(table) - {"name", "kind"}
        score = len(keys & set(fields)) / max(len(keys), 1) + len(required & keys) / max(
            len(required), 1
        )
        if score > best_score:
            best, best_score = kind, score
    return best or next(iter(KINDS))


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: card file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc}); fix the syntax") from None


def schema(kind: str) -> type:
    """The frozen dataclass schema of a card kind."""
    _check_kind(kind)
    module, _, cls = KINDS[kind].partition(":")
    return getattr(importlib.import_module(module), cls)


def load(kind: str, name_or_path: str | os.PathLike[str]) -> Any:
    """Load and validate one card into its frozen dataclass (``card.name`` is the file stem)."""
    path = resolve(kind, name_or_path)
    data = _read_toml(path)
    data.pop("kind", None)
    data.setdefault("name", path.stem)
    card = from_dict(schema(kind), data, source=path)
    validate = getattr(card, "validate", None)
    if callable(validate):
        try:
            validate()
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None
    return card


def load_all(kind: str) -> Iterator[Any]:
    """Load every card of ``kind`` (used by ``cards list`` and the test of shipped cards)."""
    for path in card_paths(kind).values():
        yield load(kind, path)


def raw(kind: str, name_or_path: str | os.PathLike[str]) -> tuple[Path, dict[str, Any]]:
    """The card's path and raw TOML table, for ``cards show``."""
    path = resolve(kind, name_or_path)
    return path, _read_toml(path)


# ----------------------------------------------------------------------------------------------
# dict -> frozen dataclass, with the file, the dotted key and what was expected in every error


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in get_args(tp))
    if origin in (list, tuple, dict):
        args = get_args(tp)
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return f"list of {_type_name(args[0])}"
        if origin is tuple:
            return f"list of {len(args)} ({', '.join(_type_name(a) for a in args)})"
        if origin is dict:
            return f"table of {_type_name(args[1])}"
        return f"list of {_type_name(args[0])}"
    if dataclasses.is_dataclass(tp):
        return "table"
    if tp is type(None):
        return "nothing"
    return getattr(tp, "__name__", str(tp))


def _convert(tp: Any, value: Any, *, source: Path, key: str) -> Any:
    def bad() -> ConfigError:
        shown = repr(value) if not isinstance(value, dict) else "a table"
        return ConfigError(f"{source}: key '{key}' is {shown}, expected {_type_name(tp)}")

    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        for arg in args:
            try:
                return _convert(arg, value, source=source, key=key)
            except ConfigError:
                continue
        raise bad()
    if tp is type(None):
        raise bad()
    if origin is Literal:
        if value in get_args(tp):
            return value
        raise bad()
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise bad()
        return from_dict(tp, value, source=source, prefix=f"{key}.")
    if origin is list or origin is tuple:
        if not isinstance(value, list | tuple):
            raise bad()
        args = get_args(tp)
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            if len(value) != len(args):
                raise bad()
            return tuple(
                _convert(a, v, source=source, key=f"{key}[{i}]")
                for i, (a, v) in enumerate(zip(args, value, strict=True))
            )
        inner = args[0] if args else Any
        items = [_convert(inner, v, source=source, key=f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise bad()
        _, vt = get_args(tp) or (str, Any)
        return {str(k): _convert(vt, v, source=source, key=f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise bad()
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise bad()
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise bad()
    if tp is str:
        if isinstance(value, str):
            return value
        raise bad()
    if isinstance(value, tp):
        return value
    raise bad()


def from_dict(cls: type[T], data: dict[str, Any], *, source: Path, prefix: str = "") -> T:
    """Build the frozen dataclass ``cls`` from a TOML table, strictly.

    Args:
        cls: A dataclass type; nested dataclass fields are parsed from sub-tables.
        data: The TOML table.
        source: The card file, named in every error.
        prefix: Dotted key prefix for nested tables.

    Raises:
        ConfigError: On an unknown key, a missing key, or a value of the wrong type.
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{source}: unknown key '{prefix}{unknown[0]}'; expected one of: "
            f"{', '.join(prefix + k for k in fields)}"
        )
    kwargs: dict[str, Any] = {}
    for name, field in fields.items():
        key = prefix + name
        if name not in data:
            required = (
                field.default is dataclasses.MISSING
                and field.default_factory is dataclasses.MISSING
            )
            if required:
                raise ConfigError(
                    f"{source}: missing key '{key}' (expected {_type_name(hints[name])})"
                )
            continue
        kwargs[name] = _convert(hints[name], data[name], source=source, key=key)
    return cls(**kwargs)


def to_dict(card: Any) -> dict[str, Any]:
    """A card dataclass as plain JSON-able data (tuples become lists)."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, list | tuple):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(card)
