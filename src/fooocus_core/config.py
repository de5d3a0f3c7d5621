"""Engine configuration: where models, outputs and shipped configs live, and how to run.

Configuration flows in from one place: :func:`load_engine_config` merges, in rising order of
precedence, the built-in defaults, a JSON config file, environment variables and explicit
overrides (the command line). Nothing in the engine reads the environment on its own.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

#: Fooocus' model sub-folders, each overridable on its own.
MODEL_FOLDERS: tuple[str, ...] = (
    "checkpoints",
    "loras",
    "vae",
    "embeddings",
    "upscale_models",
    "controlnet",
    "clip_vision",
    "inpaint",
    "prompt_expansion",
    "vae_approx",
    "safety_checker",
)

#: File suffixes that count as model files in listings.
MODEL_SUFFIXES: tuple[str, ...] = (".safetensors", ".ckpt", ".pth", ".bin")

#: The repository's shipped ``config/`` folder (model configs, tokenizer, presets, styles).
SHIPPED_CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"

#: Environment variables read by :func:`load_engine_config`, and the field each one sets.
ENV_VARS: dict[str, str] = {
    "FOOOCUS_MODELS_DIR": "models_dir",
    "FOOOCUS_OUTPUT_DIR": "output_dir",
    "FOOOCUS_PRESET": "preset",
    "FOOOCUS_USER_STYLES_DIR": "user_styles_dir",
    "FOOOCUS_WILDCARDS_DIR": "wildcards_dir",
    "FOOOCUS_DEVICE": "device",
    "FOOOCUS_CONFIG_DIR": "config_dir",
    "HF_MIRROR": "hf_mirror",
}


class EngineConfig(msgspec.Struct, kw_only=True, frozen=True):
    """Everything the engine needs to know about its environment."""

    models_dir: str = "models"
    #: Per-folder overrides, e.g. ``{"checkpoints": "/data/sdxl"}``; others live under models_dir.
    model_folders: dict[str, str] = {}
    output_dir: str = "outputs"
    #: Shipped configuration (model configs, tokenizer, presets, styles, wildcards).
    config_dir: str = str(SHIPPED_CONFIG_DIR)
    user_styles_dir: str | None = None
    wildcards_dir: str | None = None
    preset: str = "default"
    disable_preset_download: bool = False
    #: "auto" picks CUDA when available, else CPU.
    device: str = "auto"
    #: Replaces the ``https://huggingface.co`` prefix of download URLs.
    hf_mirror: str | None = None

    def folder(self, kind: str) -> Path:
        """The directory for one model kind (``checkpoints``, ``loras``, ...)."""
        if kind not in MODEL_FOLDERS:
            raise ValueError(f"unknown model folder {kind!r}; expected one of {MODEL_FOLDERS}")
        override = self.model_folders.get(kind)
        return Path(override) if override else Path(self.models_dir) / kind

    @property
    def config_path(self) -> Path:
        return Path(self.config_dir)


def load_engine_config(
    config_file: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> EngineConfig:
    """Build the engine configuration from defaults < file < environment < overrides.

    ``env`` is the environment to read (pass ``os.environ`` explicitly); ``overrides`` holds
    values given on the command line, where ``None`` means "not given". Environment variables
    ``FOOOCUS_PATH_<FOLDER>`` (e.g. ``FOOOCUS_PATH_CHECKPOINTS``) override single model folders.
    """
    values: dict[str, Any] = {}
    folders: dict[str, str] = {}
    if config_file is not None:
        data = json.loads(Path(config_file).read_text("utf-8"))
        if not isinstance(data, dict):
            raise ValueError(f"config file {config_file} must hold a JSON object")
        folders.update(data.pop("model_folders", {}) or {})
        values.update(data)
    for name, value in (env or {}).items():
        if name in ENV_VARS and value:
            values[ENV_VARS[name]] = value
        elif name.startswith("FOOOCUS_PATH_") and value:
            folders[name.removeprefix("FOOOCUS_PATH_").lower()] = value
    for name, value in (overrides or {}).items():
        if value is None:
            continue
        if name == "model_folders":
            folders.update(value)
        else:
            values[name] = value
    unknown = set(folders) - set(MODEL_FOLDERS)
    if unknown:
        raise ValueError(f"unknown model folder(s) {sorted(unknown)}; expected {MODEL_FOLDERS}")
    values["model_folders"] = folders
    try:
        return msgspec.convert(values, EngineConfig, strict=False)
    except msgspec.ValidationError as exc:
        raise ValueError(f"invalid engine configuration: {exc}") from exc
