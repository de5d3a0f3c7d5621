"""Output files: safe lookup under the outputs folder, Accept-header conversion, deletion."""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

from PIL import Image

from fooocus_api.http import IMAGE_TYPES

SUFFIXES = frozenset({"png", "jpg", "jpeg", "webp"})
_NAME_RE = re.compile(r"^[^/\\\x00-\x1f]+$")


def output_file(root: Path, folder: str, name: str) -> Path | None:
    """The file ``root/folder/name`` if it is a servable image inside ``root``, else None.

    Refused: empty or dot-leading parts, separators, control characters, other suffixes, and
    anything whose real path (symlinks resolved) is outside ``root``.
    """
    for part in (folder, name):
        if not part or part.startswith(".") or not _NAME_RE.match(part):
            return None
    if name.rsplit(".", 1)[-1].lower() not in SUFFIXES:
        return None
    real_root = Path(os.path.realpath(root))
    path = Path(os.path.realpath(real_root / folder / name))
    if not path.is_relative_to(real_root) or not path.is_file():
        return None
    return path


def media_type(path: Path) -> str:
    suffix = path.suffix.lower().lstrip(".")
    return IMAGE_TYPES[suffix][1] if suffix in IMAGE_TYPES else "application/octet-stream"


def convert(path: Path, subtype: str) -> bytes:
    """The image at ``path`` encoded as ``subtype`` (png/jpeg/jpg/webp); the file's own bytes
    (metadata kept) when it is stored in that format already. Blocking."""
    if same_format(path, subtype):
        return path.read_bytes()
    pil_format = IMAGE_TYPES[subtype][0]
    with Image.open(path) as image:
        image.load()
        if pil_format == "JPEG" and image.mode not in ("RGB", "L"):
            image = image.convert("RGB")
        out = io.BytesIO()
        options = {"quality": 95} if pil_format in ("JPEG", "WEBP") else {}
        image.save(out, format=pil_format, **options)
        return out.getvalue()


def same_format(path: Path, subtype: str) -> bool:
    """True when the file is already stored in the requested format."""
    suffix = path.suffix.lower().lstrip(".")
    return suffix in IMAGE_TYPES and IMAGE_TYPES[suffix][0] == IMAGE_TYPES[subtype][0]


def delete_outputs(root: Path, files: list[str]) -> int:
    """Delete output files (relative paths); returns how many were removed. Blocking."""
    removed = 0
    real_root = Path(os.path.realpath(root))
    for rel in files:
        parts = rel.split("/")
        if len(parts) != 2:
            continue
        path = output_file(real_root, parts[0], parts[1])
        if path is not None:
            path.unlink(missing_ok=True)
            removed += 1
    return removed
