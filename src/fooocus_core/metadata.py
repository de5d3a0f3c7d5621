"""Image metadata: one typed record of what made an image, rendered in Fooocus' two schemes.

* ``fooocus``: a JSON object with sorted keys (Fooocus' key names and value formats).
* ``a1111``: Stable Diffusion web UI's plain-text "parameters" format.

Also the encodings used to embed the text in files (PNG text chunks, EXIF tags) and
:func:`read_metadata`, which reads them back.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from importlib import metadata as _dist_metadata
from pathlib import PurePath
from typing import Any, Literal

import msgspec
from PIL import Image

MetadataScheme = Literal["fooocus", "a1111"]
SCHEMES: tuple[str, ...] = ("fooocus", "a1111")

#: Our distribution name, written as EXIF "Software".
SOFTWARE_NAME = "fooocus-api"
try:
    __version__ = _dist_metadata.version(SOFTWARE_NAME)
except _dist_metadata.PackageNotFoundError:  # running from a source tree
    __version__ = "0.1.0"
#: EXIF ``Software`` value.
SOFTWARE = f"{SOFTWARE_NAME} {__version__}"
#: Default ``version`` entry of the metadata.
DEFAULT_VERSION = f"{SOFTWARE_NAME} v{__version__}"

#: PNG text chunk keys.
PNG_PARAMETERS_KEY = "parameters"
PNG_SCHEME_KEY = "fooocus_scheme"
#: EXIF tags.
EXIF_USER_COMMENT = 0x9286
EXIF_SOFTWARE = 0x0131
EXIF_MAKER_NOTE = 0x927C

#: Adaptive CFG default; the value is recorded only when it differs.
DEFAULT_ADAPTIVE_CFG = 7.0
DEFAULT_VAE = "Default (model)"

#: Our sampler names → A1111's.
A1111_SAMPLER_NAMES: dict[str, str] = {
    "euler": "Euler",
    "euler_ancestral": "Euler a",
    "heun": "Heun",
    "dpm_2": "DPM2",
    "dpm_2_ancestral": "DPM2 a",
    "lms": "LMS",
    "dpm_fast": "DPM fast",
    "dpm_adaptive": "DPM adaptive",
    "dpmpp_2s_ancestral": "DPM++ 2S a",
    "dpmpp_sde": "DPM++ SDE",
    "dpmpp_sde_gpu": "DPM++ SDE",
    "dpmpp_2m": "DPM++ 2M",
    "dpmpp_2m_sde": "DPM++ 2M SDE",
    "dpmpp_2m_sde_gpu": "DPM++ 2M SDE",
    "lcm": "LCM",
    "tcd": "TCD",
    "restart": "Restart",
    "ddim": "DDIM",
    "uni_pc": "UniPC",
}
#: Samplers that never get the " Karras" suffix.
_NO_KARRAS_SUFFIX = frozenset(
    {"euler", "euler_ancestral", "heun", "dpm_fast", "dpm_adaptive", "ddim", "uni_pc"}
)


class LoraInfo(msgspec.Struct, frozen=True):
    """One applied LoRA: file name (stem is recorded), weight, short hash."""

    name: str
    weight: float
    hash: str = ""


class ImageParameters(msgspec.Struct, kw_only=True):
    """Everything the metadata of one image records; the pipeline fills one per image.

    Model, VAE and LoRA names may be file names (with sub-folders); the metadata records stems.
    """

    prompt: str
    negative_prompt: str = ""
    prompt_expansion: str = ""
    styles: list[str] = []
    performance: str = "Speed"
    steps: int
    width: int
    height: int
    guidance_scale: float
    sharpness: float
    adm_guidance: tuple[float, float, float] = (1.5, 0.8, 0.3)
    base_model: str
    base_model_hash: str = ""
    refiner_model: str = "None"
    refiner_model_hash: str = ""
    refiner_switch: float = 0.5
    sampler: str
    scheduler: str
    vae: str = DEFAULT_VAE
    seed: int
    loras: list[LoraInfo] = []
    #: Positive / negative workloads actually encoded (styles applied, expansion included).
    full_prompt: list[str] = []
    full_negative_prompt: list[str] = []
    clip_skip: int = 2
    adaptive_cfg: float = DEFAULT_ADAPTIVE_CFG
    #: ``(b1, b2, s1, s2)`` when FreeU is on.
    freeu: tuple[float, float, float, float] | None = None
    overwrite_switch: int = -1
    refiner_swap_method: str = "joint"
    metadata_scheme: MetadataScheme = "fooocus"
    created_by: str = ""
    version: str = DEFAULT_VERSION

    @property
    def has_refiner(self) -> bool:
        return bool(self.refiner_model) and self.refiner_model != "None"

    def to_fooocus_dict(self) -> dict[str, Any]:
        """The Fooocus-scheme dictionary (Fooocus' keys and value formats)."""
        d: dict[str, Any] = {
            "prompt": self.prompt,
            "negative_prompt": self.negative_prompt,
            "prompt_expansion": self.prompt_expansion,
            "styles": str(list(self.styles)),
            "performance": self.performance,
            "steps": self.steps,
            "resolution": str((self.width, self.height)),
            "guidance_scale": self.guidance_scale,
            "sharpness": self.sharpness,
            "adm_guidance": str(tuple(self.adm_guidance)),
            "base_model": _stem(self.base_model),
            "refiner_model": _stem(self.refiner_model) if self.has_refiner else "None",
            "refiner_switch": self.refiner_switch,
            "sampler": self.sampler,
            "scheduler": self.scheduler,
            "vae": _vae_name(self.vae),
            "seed": str(self.seed),
            "metadata_scheme": self.metadata_scheme,
            "version": self.version,
            "full_prompt": list(self.full_prompt),
            "full_negative_prompt": list(self.full_negative_prompt),
            "base_model_hash": self.base_model_hash,
            "loras": [[_stem(lora.name), lora.weight, lora.hash] for lora in self.loras],
        }
        if self.has_refiner:
            d["refiner_model_hash"] = self.refiner_model_hash
            if self.overwrite_switch > 0:
                d["overwrite_switch"] = self.overwrite_switch
        if self.refiner_swap_method != "joint":
            d["refiner_swap_method"] = self.refiner_swap_method
        if self.adaptive_cfg != DEFAULT_ADAPTIVE_CFG:
            d["adaptive_cfg"] = self.adaptive_cfg
        if self.clip_skip > 1:
            d["clip_skip"] = self.clip_skip
        if self.freeu is not None:
            d["freeu"] = str(tuple(self.freeu))
        for number, lora in enumerate(self.loras, start=1):
            d[f"lora_combined_{number}"] = f"{_stem(lora.name)} : {lora.weight}"
        if self.created_by:
            d["created_by"] = self.created_by
        return d


def _stem(name: str) -> str:
    return PurePath(name.replace("\\", "/")).stem if name else name


def _vae_name(vae: str) -> str:
    return vae if not vae or vae == DEFAULT_VAE else _stem(vae)


def fooocus_metadata(params: ImageParameters | Mapping[str, Any]) -> str:
    """Fooocus-scheme text: JSON with sorted keys (ASCII-escaped, as Python's json does)."""
    data = params.to_fooocus_dict() if isinstance(params, ImageParameters) else dict(params)
    return json.dumps(data, sort_keys=True)


def a1111_sampler_name(sampler: str, scheduler: str) -> str:
    """A1111's sampler label: mapped name, plus " Karras" for karras-scheduled samplers."""
    name = A1111_SAMPLER_NAMES.get(sampler, sampler)
    if scheduler == "karras" and sampler not in _NO_KARRAS_SUFFIX:
        name += " Karras"
    return name


def a1111_quote(value: object) -> str:
    """A value as A1111 writes it: JSON-quoted when it holds ``,``, a newline or ``:``."""
    text = str(value)
    if "," in text or "\n" in text or ":" in text:
        return json.dumps(text, ensure_ascii=False)
    return text


def a1111_metadata(params: ImageParameters) -> str:
    """A1111-scheme text: prompt line, ``Negative prompt:`` line, then ``Key: value`` pairs."""
    entries: list[tuple[str, object]] = [
        ("Steps", params.steps),
        ("Sampler", a1111_sampler_name(params.sampler, params.scheduler)),
        ("Seed", params.seed),
        ("Size", f"{params.width}x{params.height}"),
        ("CFG scale", params.guidance_scale),
        ("Sharpness", params.sharpness),
        ("ADM Guidance", str(tuple(params.adm_guidance))),
        ("Model", _stem(params.base_model)),
        ("Model hash", params.base_model_hash),
        ("Performance", params.performance),
        ("Scheduler", params.scheduler),
        ("VAE", _vae_name(params.vae)),
        ("Raw prompt", params.prompt),
        ("Raw negative prompt", params.negative_prompt),
    ]
    if params.has_refiner:
        entries.append(("Refiner", _stem(params.refiner_model)))
        entries.append(("Refiner hash", params.refiner_model_hash))
    if params.adaptive_cfg != DEFAULT_ADAPTIVE_CFG:
        entries.append(("Adaptive CFG", params.adaptive_cfg))
    if params.clip_skip > 1:
        entries.append(("Clip skip", params.clip_skip))
    if params.has_refiner and params.overwrite_switch > 0:
        entries.append(("Overwrite Switch", params.overwrite_switch))
    if params.refiner_swap_method != "joint":
        entries.append(("Refiner Swap Method", params.refiner_swap_method))
    if params.freeu is not None:
        entries.append(("FreeU", str(tuple(params.freeu))))
    if params.loras:
        hashes = ", ".join(f"{_stem(lora.name)}: {lora.hash}" for lora in params.loras)
        weights = ", ".join(f"{_stem(lora.name)}: {lora.weight}" for lora in params.loras)
        entries.append(("Lora hashes", hashes))
        entries.append(("Lora weights", weights))
    entries.append(("Version", params.version))
    if params.created_by:
        entries.append(("User", params.created_by))
    text = ", ".join(f"{key}: {a1111_quote(value)}" for key, value in entries)
    positive = ", ".join(params.full_prompt) if params.full_prompt else params.prompt
    negatives = params.full_negative_prompt or (
        [params.negative_prompt] if params.negative_prompt else []
    )
    negative_line = f"\nNegative prompt: {', '.join(negatives)}" if negatives else ""
    return f"{positive}{negative_line}\n{text}"


def render_metadata(params: ImageParameters, scheme: str | None = None) -> str:
    """Render ``params`` in ``scheme`` (default: ``params.metadata_scheme``)."""
    scheme = scheme or params.metadata_scheme
    if scheme == "fooocus":
        return fooocus_metadata(params)
    if scheme == "a1111":
        return a1111_metadata(params)
    raise ValueError(f"unknown metadata scheme {scheme!r}; expected one of {SCHEMES}")


# --- embedding -------------------------------------------------------------------------------

_EXIF_UNICODE = b"UNICODE\x00"
_EXIF_ASCII = b"ASCII\x00\x00\x00"


def encode_user_comment(text: str) -> str | bytes:
    """EXIF UserComment value: ASCII text as is (as Fooocus writes it); other text as the EXIF
    ``UNICODE`` form (8-byte code, then UTF-16 in the file's big-endian order), as A1111 does.
    """
    if text.isascii():
        return text
    return _EXIF_UNICODE + text.encode("utf-16-be")


def decode_user_comment(value: object) -> str | None:
    """Inverse of :func:`encode_user_comment`; also accepts the ``ASCII`` and blank codes."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if not isinstance(value, bytes | bytearray):
        return str(value)
    raw = bytes(value)
    if raw.startswith(_EXIF_UNICODE):
        body = raw[len(_EXIF_UNICODE) :]
        if body.startswith((b"\xff\xfe", b"\xfe\xff")):
            return body.decode("utf-16", errors="replace")
        return body.decode("utf-16-be", errors="replace")
    if raw.startswith(_EXIF_ASCII):
        return raw[len(_EXIF_ASCII) :].decode("ascii", errors="replace")
    if raw.startswith(b"\x00" * 8):
        raw = raw[8:]
    return raw.decode("utf-8", errors="replace").rstrip("\x00")


def build_exif(metadata_text: str | None, scheme: str | None) -> Image.Exif:
    """EXIF for JPEG/WEBP: UserComment = text, Software = us, MakerNote = scheme.
    Empty when there is no metadata.
    """
    exif = Image.Exif()
    if metadata_text is None:
        return exif
    exif[EXIF_USER_COMMENT] = encode_user_comment(metadata_text)
    exif[EXIF_SOFTWARE] = SOFTWARE
    exif[EXIF_MAKER_NOTE] = scheme or "fooocus"
    return exif


def _guess_scheme(text: str) -> str:
    try:
        return "fooocus" if isinstance(json.loads(text), dict) else "a1111"
    except ValueError:
        return "a1111"


def read_metadata(path: str | os.PathLike[str]) -> tuple[str, str] | None:
    """The embedded ``(metadata text, scheme)`` of an image file, or None when it has none.

    Reads PNG text chunks ``parameters``/``fooocus_scheme`` or EXIF UserComment/MakerNote. An
    unknown or absent scheme is guessed: a JSON object is ``fooocus``, anything else ``a1111``.
    """
    with Image.open(path) as image:
        text: str | None
        scheme: object
        if image.format == "PNG":
            raw_text = image.info.get(PNG_PARAMETERS_KEY)
            text = raw_text if isinstance(raw_text, str) else decode_user_comment(raw_text)
            scheme = image.info.get(PNG_SCHEME_KEY)
        else:
            exif = image.getexif()
            text = decode_user_comment(exif.get(EXIF_USER_COMMENT))
            scheme = exif.get(EXIF_MAKER_NOTE)
    if text is None:
        return None
    if isinstance(scheme, bytes):
        scheme = scheme.decode("ascii", errors="replace").rstrip("\x00")
    if scheme not in SCHEMES:
        scheme = _guess_scheme(text)
    return text, str(scheme)
