"""Saving output images: ``<output_dir>/YYYY-MM-DD/<name>.<ext>`` with embedded metadata.

Default names are ``YYYY-MM-DD_HH-MM-SS_<16 random hex digits>`` (from :mod:`secrets`, so a
file name cannot be guessed from the time). A caller-chosen ``save_name`` gives
``<save_name>-<index>``. Files are created exclusively: nothing is ever overwritten (a taken name
gets ``_1``, ``_2``, ... appended).

Formats: ``png`` → ``.png``; ``jpeg`` → ``.jpeg``; ``jpg`` → JPEG data with a ``.jpg`` extension
(the extension follows the request); ``webp`` → ``.webp`` (lossy). Metadata, when given, goes
into PNG text chunks ``parameters`` and ``fooocus_scheme``, or for JPEG/WEBP into EXIF
UserComment (text), Software (``fooocus-api <version>``) and MakerNote (scheme).
"""

from __future__ import annotations

import os
import re
import secrets
from datetime import datetime
from pathlib import Path

from PIL import Image, PngImagePlugin

from fooocus_core.metadata import (
    PNG_PARAMETERS_KEY,
    PNG_SCHEME_KEY,
    SCHEMES,
    build_exif,
    read_metadata,
)

__all__ = ["FORMATS", "read_metadata", "sanitize_save_name", "save_image"]

#: Requested format → (PIL format, file extension).
FORMATS: dict[str, tuple[str, str]] = {
    "png": ("PNG", "png"),
    "jpeg": ("JPEG", "jpeg"),
    "jpg": ("JPEG", "jpg"),
    "webp": ("WEBP", "webp"),
}
_MAX_NAME = 120
_BAD_NAME_CHARS = re.compile(r"[\x00-\x1f\x7f/\\:*?\"<>|]")


def sanitize_save_name(save_name: str) -> str:
    """Check a caller-chosen base name: a plain file name, no path parts.

    Surrounding whitespace is dropped; ValueError for an empty name, ``.``/``..``, a leading
    dot, path separators, control characters, characters Windows forbids, or over 120 chars.
    """
    name = save_name.strip()
    if not name:
        raise ValueError("save_name must not be empty")
    if name in {".", ".."} or ".." in name or name.startswith("."):
        raise ValueError(f"invalid save_name {save_name!r}: no '..' or leading '.'")
    if _BAD_NAME_CHARS.search(name):
        raise ValueError(
            f"invalid save_name {save_name!r}: path separators, control characters and "
            "':*?\"<>|' are not allowed"
        )
    if len(name) > _MAX_NAME:
        raise ValueError(f"save_name is longer than {_MAX_NAME} characters")
    return name


def _encode_options(
    pil_format: str, image: Image.Image, metadata_text: str | None, scheme: str
) -> tuple[Image.Image, dict[str, object]]:
    """The image to encode (converted if the format needs it) and PIL's save options."""
    options: dict[str, object] = {}
    if pil_format == "PNG":
        if metadata_text is not None:
            info = PngImagePlugin.PngInfo()
            info.add_text(PNG_PARAMETERS_KEY, metadata_text)
            info.add_text(PNG_SCHEME_KEY, scheme)
            options["pnginfo"] = info
        return image, options
    exif = build_exif(metadata_text, scheme)
    if pil_format == "JPEG":
        if image.mode not in ("RGB", "L"):
            image = image.convert("RGB")
        options = {"quality": 95, "optimize": True, "progressive": True}
    else:
        if image.mode not in ("RGB", "RGBA"):
            image = image.convert("RGB")
        options = {"quality": 95, "lossless": False}
    if metadata_text is not None:
        options["exif"] = exif
    return image, options


def save_image(
    image: Image.Image,
    output_dir: str | os.PathLike[str],
    fmt: str,
    metadata_text: str | None,
    scheme: str = "fooocus",
    *,
    save_name: str | None = None,
    index: int = 0,
    now: datetime | None = None,
) -> Path:
    """Save ``image`` under ``output_dir/YYYY-MM-DD/`` and return its path.

    ``metadata_text`` None saves no metadata. ``now`` (default: local time) sets the date
    folder and the time in default names. ``save_name`` (sanitised, see
    :func:`sanitize_save_name`) gives ``{save_name}-{index}.{ext}``. Never overwrites a file.
    """
    key = fmt.lower().lstrip(".")
    if key not in FORMATS:
        raise ValueError(f"unknown output format {fmt!r}; expected one of {sorted(FORMATS)}")
    if scheme not in SCHEMES:
        raise ValueError(f"unknown metadata scheme {scheme!r}; expected one of {SCHEMES}")
    pil_format, ext = FORMATS[key]
    now = now or datetime.now()
    folder = Path(output_dir) / now.strftime("%Y-%m-%d")
    folder.mkdir(parents=True, exist_ok=True)
    base = f"{sanitize_save_name(save_name)}-{index}" if save_name is not None else None
    image, options = _encode_options(pil_format, image, metadata_text, scheme)
    for attempt in range(1000):
        if base is None:
            stem = f"{now.strftime('%Y-%m-%d_%H-%M-%S')}_{secrets.token_hex(8)}"
        else:
            stem = base if attempt == 0 else f"{base}_{attempt}"
        path = folder / f"{stem}.{ext}"
        try:
            handle = open(path, "xb")  # noqa: SIM115 - closed below, removed on failure
        except FileExistsError:
            continue
        try:
            with handle:
                image.save(handle, format=pil_format, **options)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return path
    raise FileExistsError(f"no free file name for {base or 'image'} in {str(folder)!r}")
