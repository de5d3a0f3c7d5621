"""Presets: named bundles of generation defaults and the model files they need.

A preset is a JSON object in ``<config_dir>/presets/<name>.json`` with Fooocus' keys
(``default_model``, ``default_cfg_scale``, ``checkpoint_downloads``, ...). Loading a preset
follows Fooocus: start from ``default.json``, then let the named preset replace keys one by one
(a shallow merge: a key the preset sets replaces the whole value). Keys neither file sets take
Fooocus' built-in defaults (the field defaults below). Unknown keys are kept in ``extra``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import msgspec

from fooocus_core.config import EngineConfig
from fooocus_core.errors import EngineError
from fooocus_core.task import LoraSpec, Performance

#: ``[enabled, file name, weight]``; file ``"None"`` means an empty slot.
LoraEntry = tuple[bool, str, float]

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class PresetError(EngineError, ValueError):
    """A preset could not be loaded (bad name, bad JSON, bad values)."""


class PresetNotFound(PresetError):
    """No preset of that name; ``available`` lists the ones there are."""

    def __init__(self, name: str, folder: Path, available: list[str]) -> None:
        self.name = name
        self.folder = folder
        self.available = available
        listed = ", ".join(available) if available else "(none)"
        super().__init__(f"preset {name!r} not found in {str(folder)!r}; available: {listed}")


def _default_loras() -> list[LoraEntry]:
    return [(True, "None", 1.0) for _ in range(5)]


def _default_styles() -> list[str]:
    return ["Fooocus V2", "Fooocus Enhance", "Fooocus Sharp"]


class Preset(msgspec.Struct, kw_only=True):
    """One resolved preset. Defaults are Fooocus' built-in ones (its config.py), used for keys
    that neither ``default.json`` nor the named preset sets.
    """

    name: str = "default"
    default_model: str = "model.safetensors"
    #: Older file names of the default model, used instead when they exist and it does not.
    previous_default_models: list[str] = []
    default_refiner: str = "None"
    default_refiner_switch: float = 0.8
    default_loras: list[LoraEntry] = msgspec.field(default_factory=_default_loras)
    default_loras_min_weight: float = -2.0
    default_loras_max_weight: float = 2.0
    default_max_lora_number: int = 5
    default_cfg_scale: float = 7.0
    default_sample_sharpness: float = 2.0
    default_sampler: str = "dpmpp_2m_sde_gpu"
    default_scheduler: str = "karras"
    default_performance: Performance = "Speed"
    default_prompt: str = ""
    default_prompt_negative: str = ""
    default_styles: list[str] = msgspec.field(default_factory=_default_styles)
    #: ``"W*H"``.
    default_aspect_ratio: str = "1152*896"
    default_overwrite_step: int = -1
    default_overwrite_switch: int = -1
    default_vae: str = "Default (model)"
    default_inpaint_engine_version: str = "v2.6"
    #: Adaptive CFG ("CFG mimicking from TSNR").
    default_cfg_tsnr: float = 7.0
    default_clip_skip: int = 2
    #: ``{file name: URL}`` per model folder.
    checkpoint_downloads: dict[str, str] = {}
    embeddings_downloads: dict[str, str] = {}
    lora_downloads: dict[str, str] = {}
    vae_downloads: dict[str, str] = {}
    #: Keys this struct does not know, kept as read.
    extra: dict[str, Any] = {}

    def enabled_loras(self) -> list[LoraSpec]:
        """The filled LoRA slots (file not ``"None"``), as task LoRA specs."""
        return [
            LoraSpec(model_name=file, weight=weight, enabled=enabled)
            for enabled, file, weight in self.default_loras
            if file and file != "None"
        ]

    def task_defaults(self) -> dict[str, Any]:
        """The preset's values under :class:`~fooocus_core.task.GenerationTask` field names."""
        return {
            "base_model": self.default_model,
            "refiner_model": self.default_refiner,
            "refiner_switch": self.default_refiner_switch,
            "loras": self.enabled_loras(),
            "guidance_scale": self.default_cfg_scale,
            "sharpness": self.default_sample_sharpness,
            "sampler": self.default_sampler,
            "scheduler": self.default_scheduler,
            "performance": self.default_performance,
            "prompt": self.default_prompt,
            "negative_prompt": self.default_prompt_negative,
            "styles": list(self.default_styles),
            "aspect_ratio": self.default_aspect_ratio,
            "overwrite_step": self.default_overwrite_step,
            "overwrite_switch": self.default_overwrite_switch,
            "vae": self.default_vae,
            "adaptive_cfg": self.default_cfg_tsnr,
            "clip_skip": self.default_clip_skip,
        }


_FIELDS = frozenset(Preset.__struct_fields__) - {"name", "extra"}


def presets_dir(config: EngineConfig) -> Path:
    """The folder holding the preset JSON files."""
    return config.config_path / "presets"


def list_presets(config: EngineConfig) -> list[str]:
    """Names of the available presets (file stems), sorted."""
    folder = presets_dir(config)
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.json") if p.is_file() and _NAME_RE.match(p.stem))


def _normalize_loras(value: Any) -> Any:
    """Accept ``[enabled, file, weight]`` triples and ``[file, weight]`` pairs."""
    if not isinstance(value, list):
        return value
    out: list[Any] = []
    for entry in value:
        if isinstance(entry, list | tuple) and len(entry) == 2:
            out.append([True, entry[0], entry[1]])
        else:
            out.append(entry)
    return out


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise PresetError(f"cannot read preset file {str(path)!r}: {exc}") from exc
    if not isinstance(data, dict):
        raise PresetError(f"preset file {str(path)!r} must hold a JSON object")
    return data


def preset_from_dict(name: str, data: dict[str, Any]) -> Preset:
    """Build a :class:`Preset` from already-merged JSON data (unknown keys go to ``extra``)."""
    known = {key: value for key, value in data.items() if key in _FIELDS}
    extra = {key: value for key, value in data.items() if key not in _FIELDS}
    if "default_loras" in known:
        known["default_loras"] = _normalize_loras(known["default_loras"])
    if "default_max_lora_number" not in known and isinstance(known.get("default_loras"), list):
        known["default_max_lora_number"] = len(known["default_loras"]) or 5
    known["name"] = name
    known["extra"] = extra
    try:
        return msgspec.convert(known, Preset, strict=False)
    except msgspec.ValidationError as exc:
        raise PresetError(f"invalid preset {name!r}: {exc}") from exc


def load_preset(config: EngineConfig, name: str | None = None) -> Preset:
    """Load preset ``name`` (default: ``config.preset``) merged over ``default.json``."""
    name = config.preset if name is None else name
    folder = presets_dir(config)
    if not isinstance(name, str) or not _NAME_RE.match(name) or ".." in name:
        raise PresetNotFound(str(name), folder, list_presets(config))
    path = folder / f"{name}.json"
    if not path.is_file():
        raise PresetNotFound(name, folder, list_presets(config))
    merged: dict[str, Any] = {}
    default_path = folder / "default.json"
    if default_path.is_file():
        merged.update(_read_json(default_path))
    if path != default_path:
        merged.update(_read_json(path))
    return preset_from_dict(name, merged)
