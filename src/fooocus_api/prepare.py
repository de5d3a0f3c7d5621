"""Checking a generate request before it is queued, and fetching preset files before it runs.

:func:`prepare_request` runs in a worker thread (it reads preset files and lists model
folders): it merges the preset, builds the engine task and lets the engine validate it, so an
unknown model, sampler or style is refused before anything is recorded. A model file that is
missing but that the preset can download is accepted; :func:`ensure_task_files` downloads it
in the GPU thread just before the task runs (through the engine).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from msgspec import UNSET

from fooocus_api.default_model import DefaultModels
from fooocus_api.http import RequestError
from fooocus_api.mapping import TASK_TO_REQUEST, build_task, record_params, request_preset_name
from fooocus_api.schemas import CommonRequest
from fooocus_api.worker import EngineLike
from fooocus_core import (
    STARTER_MODEL,
    STARTER_PRESET,
    EngineConfig,
    GenerationTask,
    InvalidTask,
    LoraSpec,
    Preset,
    PresetError,
)

DEFAULT_VAE = "Default (model)"


@dataclass
class Prepared:
    """A checked request: the engine task, what the record shows, and the preset used."""

    task: GenerationTask
    req_params: dict[str, Any]
    preset_name: str | None
    notes: list[str]


def _downloadable(preset: Preset, kind: str, name: str, config: EngineConfig) -> bool:
    if config.disable_preset_download:
        return False
    table = {
        "checkpoints": preset.checkpoint_downloads,
        "loras": preset.lora_downloads,
        "vae": preset.vae_downloads,
    }[kind]
    return name in table


def load_preset(engine: EngineLike, name: str | None) -> Preset:
    """The request's preset, else the global one; 422 naming ``preset`` if unknown."""
    try:
        return engine.preset(name)
    except PresetError as exc:
        raise RequestError(422, str(exc), "preset") from None


def prepare_request(
    engine: EngineLike,
    config: EngineConfig,
    request: CommonRequest,
    models: DefaultModels,
    *,
    single_image: bool,
) -> Prepared:
    """Merge presets, build the task and validate it; raises :class:`RequestError`.

    A request that runs its preset's default model gets the checkpoint ``models`` chooses.
    Whenever the starter model runs (chosen so, or named), the ``starter`` preset fills the
    fields the request leaves out: the model only draws at its own size and settings.
    """
    name = request_preset_name(request)
    preset = load_preset(engine, name)
    notes: list[str] = []
    model: str | None = None
    if request.base_model_name is UNSET or request.base_model_name == preset.default_model:
        choice = models.choose(engine, preset)
        if choice.model != preset.default_model and choice.note:
            notes.append(choice.note)
        model = choice.model
    elif request.base_model_name == STARTER_MODEL:
        model = STARTER_MODEL
    if model == STARTER_MODEL and name != STARTER_PRESET:
        name, preset = STARTER_PRESET, models.starter_preset(engine)
    task = build_task(request, preset, single_image=single_image)
    if model is not None:
        task.base_model = model
    if request.loras is UNSET:  # a preset's LoRA that is not there: skip it, as Fooocus
        task.loras = _installed_preset_loras(engine, config, preset, task, notes)
    _validate(engine, task)  # names loras[i].model_name for a request's missing LoRA
    return Prepared(task, record_params(request, task), name, notes)


def _installed_preset_loras(
    engine: EngineLike,
    config: EngineConfig,
    preset: Preset,
    task: GenerationTask,
    notes: list[str],
) -> list[LoraSpec]:
    """The preset's LoRAs that are installed or downloadable; a note for each one skipped."""
    installed = set(engine.list_loras())
    kept = []
    for lora in task.loras:
        name = lora.model_name
        if name in installed or name == "None" or _downloadable(preset, "loras", name, config):
            kept.append(lora)
        else:
            folder = str(config.folder("loras"))
            notes.append(f"preset LoRA {name!r} is not in {folder!r}; skipped")
    return kept


def _validate(engine: EngineLike, task: GenerationTask) -> None:
    """``engine.validate`` (which accepts missing files a preset can download), as a 422."""
    try:
        engine.validate(task)
    except InvalidTask as exc:
        raise RequestError(422, exc.message, TASK_TO_REQUEST.get(exc.field, exc.field)) from None


def ensure_task_files(
    engine: EngineLike,
    config: EngineConfig,
    preset_name: str | None,
    task: GenerationTask,
    say: Callable[[str], None],
    models: DefaultModels,
) -> None:
    """In the GPU thread: download the preset's files when the task needs one that is missing.

    A failed download of the base model is remembered in ``models``, so that later requests
    that name no model fall back at once instead of failing the same way.
    """
    model_missing = task.base_model not in engine.list_models()
    missing = model_missing
    if task.vae != DEFAULT_VAE and task.vae not in engine.list_vaes():
        missing = True
    loras = set(engine.list_loras())
    if any(lora.model_name not in loras for lora in task.loras):
        missing = True
    if not missing or config.disable_preset_download:
        return
    say(f"Downloading model files of preset {preset_name or config.preset!r} ...")
    try:
        engine.prepare_preset(preset_name, on_progress=lambda progress: say(progress.message))
    except Exception as exc:
        if model_missing and task.base_model not in engine.list_models():
            models.mark_failed(task.base_model, str(exc))
        raise
