"""Model folders: list the model files of a kind, resolve a model name safely, create folders.

A model *name* is a path relative to its kind's folder with ``/`` separators (e.g.
``"sdxl/juggernautXL_v8Rundiffusion.safetensors"``). Names never leave their folder: absolute
paths, drive letters, backslashes and ``..`` parts are refused.

Built-in checkpoints (the starter model the project trains and ships in ``config/starter/``)
are listed under reserved names beside the files of the checkpoints folder; a file of the same
name in that folder takes precedence.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from fooocus_core.config import MODEL_FOLDERS, MODEL_SUFFIXES, EngineConfig
from fooocus_core.errors import EngineError

#: File name of the starter model: the SDXL architecture at tiny widths, trained by
#: ``fooocus-train-starter`` on drawn shapes at 64x64 and shipped with the project.
STARTER_MODEL = "starter_sdxl_64.safetensors"

#: Built-in model files by kind: reserved name → path under the shipped config folder.
BUILTIN_MODELS: dict[str, dict[str, str]] = {
    "checkpoints": {STARTER_MODEL: f"starter/{STARTER_MODEL}"},
}


class ModelFileMissing(EngineError, FileNotFoundError):
    """A model file is not where it should be; says which file and which folder to put it in."""

    def __init__(self, name: str, kind: str, folder: Path) -> None:
        self.name = name
        self.kind = kind
        self.folder = folder
        super().__init__(
            f"{kind} model {name!r} was not found; put the file {name!r} in the folder "
            f"{str(folder)!r} (the {kind!r} model folder)"
        )


def builtin_models(config: EngineConfig, kind: str) -> dict[str, Path]:
    """The built-in model files of ``kind`` that are present: reserved name → path."""
    found: dict[str, Path] = {}
    for name, relative in BUILTIN_MODELS.get(kind, {}).items():
        path = config.config_path / relative
        if path.is_file():
            found[name] = path
    return found


def list_models(config: EngineConfig, kind: str, *, builtin: bool = True) -> list[str]:
    """All model files of ``kind``: recursive, relative ``/``-separated names, sorted, then the
    built-in ones not shadowed by a file of the same name (unless ``builtin`` is false).

    Only files ending in one of :data:`MODEL_SUFFIXES` (case-insensitive) count; hidden files and
    folders (starting with ``.``) are skipped. A missing folder lists no files. Symlinked folders
    are followed (each real folder is visited once).
    """
    names = _folder_files(config.folder(kind))
    if builtin:
        present = set(names)
        names += [name for name in builtin_models(config, kind) if name not in present]
    return names


def _folder_files(root: Path) -> list[str]:
    if not root.is_dir():
        return []
    names: list[str] = []
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        rel_dir = Path(dirpath).relative_to(root)
        for filename in filenames:
            if filename.startswith(".") or not filename.lower().endswith(MODEL_SUFFIXES):
                continue
            if not os.path.isfile(os.path.join(dirpath, filename)):
                continue
            names.append((rel_dir / filename).as_posix())
    return sorted(names)


def check_model_name(name: str) -> PurePosixPath:
    """Validate a model name and return it as a relative path; ValueError if it escapes."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError("model name must be a non-empty string")
    if "\x00" in name or "\\" in name:
        raise ValueError(f"invalid model name {name!r}: use '/' as separator, no NUL bytes")
    path = PurePosixPath(name)
    if path.is_absolute() or (len(name) >= 2 and name[1] == ":"):
        raise ValueError(f"invalid model name {name!r}: absolute paths are not allowed")
    if any(part == ".." for part in path.parts):
        raise ValueError(f"invalid model name {name!r}: '..' is not allowed")
    return path


def resolve_model(config: EngineConfig, kind: str, name: str) -> Path:
    """The path of model ``name`` of ``kind`` (a file in its folder, else a built-in file);
    ValueError if the name escapes its folder, :class:`ModelFileMissing` if there is no file.
    """
    relative = check_model_name(name)
    folder = config.folder(kind)
    path = folder.joinpath(*relative.parts)
    if path.is_file():
        return path
    builtin = builtin_models(config, kind).get(name)
    if builtin is None:
        raise ModelFileMissing(name, kind, folder)
    return builtin


def ensure_folders(config: EngineConfig) -> list[Path]:
    """Create every model folder (and the output folder) if missing; return the model folders."""
    folders = [config.folder(kind) for kind in MODEL_FOLDERS]
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
    Path(config.output_dir).mkdir(parents=True, exist_ok=True)
    return folders
