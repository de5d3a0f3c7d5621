"""Request → engine task: FooocusAPI's preset merge (bugs fixed) and field renaming.

Merge rule: a field the request sets wins; a field it leaves out comes from the request's
``preset`` when one is named (``initial`` = none), else from the global preset. Unlike
FooocusAPI, "left out" is tracked explicitly (a caller can ask for a value equal to the
global default), the preset's CFG goes to ``guidance_scale`` (not ``adaptive_cfg``), its
adaptive CFG to ``adaptive_cfg``, and its LoRAs apply when the request names none.
"""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import UNSET

from fooocus_api.schemas import CommonRequest
from fooocus_core import GenerationTask, LoraSpec, Preset

#: Request field → GenerationTask field, for fields the preset can fill.
PRESET_FIELDS: dict[str, str] = {
    "prompt": "prompt",
    "negative_prompt": "negative_prompt",
    "style_selections": "styles",
    "performance_selection": "performance",
    "aspect_ratios_selection": "aspect_ratio",
    "sharpness": "sharpness",
    "guidance_scale": "guidance_scale",
    "base_model_name": "base_model",
    "refiner_model_name": "refiner_model",
    "refiner_switch": "refiner_switch",
    "adaptive_cfg": "adaptive_cfg",
    "clip_skip": "clip_skip",
    "sampler_name": "sampler",
    "scheduler_name": "scheduler",
    "vae_name": "vae",
    "overwrite_step": "overwrite_step",
    "overwrite_switch": "overwrite_switch",
}

#: Fields copied unchanged (same name on both sides).
SAME_FIELDS: tuple[str, ...] = (
    "image_number",
    "output_format",
    "read_wildcards_in_order",
    "adm_scaler_positive",
    "adm_scaler_negative",
    "adm_scaler_end",
    "overwrite_width",
    "overwrite_height",
    "refiner_swap_method",
    "freeu_enabled",
    "freeu_b1",
    "freeu_b2",
    "freeu_s1",
    "freeu_s2",
    "disable_preview",
    "disable_seed_increment",
    "black_out_nsfw",
    "save_metadata_to_images",
    "metadata_scheme",
    "save_name",
)

#: GenerationTask field → request field (to name the request field in errors).
TASK_TO_REQUEST: dict[str, str] = {
    **{task: req for req, task in PRESET_FIELDS.items()},
    **{name: name for name in SAME_FIELDS},
    "seed": "image_seed",
    "loras": "loras",
}

#: Image-input fields (base64 is not stored in the record).
IMAGE_FIELDS: tuple[str, ...] = (
    "uov_input_image",
    "inpaint_input_image",
    "inpaint_mask_image_upload",
    "enhance_input_image",
)

NO_PRESET = ("", "initial", None)


def request_preset_name(request: CommonRequest) -> str | None:
    """The preset the request names, or None for the global one."""
    return None if request.preset in NO_PRESET else request.preset


def effective_loras(request: CommonRequest, preset: Preset) -> list[LoraSpec]:
    """The request's LoRAs (enabled, not "None"), or the preset's when the request sets none."""
    if request.loras is UNSET:
        return [lora for lora in preset.enabled_loras() if lora.enabled]
    return [
        LoraSpec(model_name=lora.model_name, weight=lora.weight, enabled=True)
        for lora in request.loras
        if lora.enabled and lora.model_name and lora.model_name != "None"
    ]


def build_task(request: CommonRequest, preset: Preset, *, single_image: bool) -> GenerationTask:
    """The engine task for ``request`` with unset fields taken from ``preset``."""
    defaults = preset.task_defaults()
    values: dict[str, Any] = {}
    for req_name, task_name in PRESET_FIELDS.items():
        value = getattr(request, req_name)
        values[task_name] = defaults[task_name] if value is UNSET else value
    values["overwrite_switch"] = int(values["overwrite_switch"])
    for name in SAME_FIELDS:
        values[name] = getattr(request, name)
    values["styles"] = list(values["styles"])
    values["seed"] = -1 if request.image_seed is None else request.image_seed
    values["loras"] = effective_loras(request, preset)
    if single_image:
        values["image_number"] = 1
    return GenerationTask(**values)


def _redact_image(value: str | None) -> str | None:
    if not value or value in ("None", "none", "null"):
        return value
    if value.startswith(("http://", "https://")):
        return value
    return f"<image: {len(value)} characters of base64>"


def record_params(request: CommonRequest, task: GenerationTask) -> dict[str, Any]:
    """What the record's ``req_params`` shows: the request with preset values filled in,
    the resolved task values, LoRAs as objects and base64 images replaced by a note.
    """
    params: dict[str, Any] = msgspec.to_builtins(request)
    for req_name, task_name in PRESET_FIELDS.items():
        params[req_name] = msgspec.to_builtins(getattr(task, task_name))
    params["loras"] = [msgspec.to_builtins(lora) for lora in task.loras]
    params["image_number"] = task.image_number
    for name in IMAGE_FIELDS:
        params[name] = _redact_image(params.get(name))
    for slot in params.get("controlnet_image", []):
        slot["cn_img"] = _redact_image(slot.get("cn_img"))
    return params
