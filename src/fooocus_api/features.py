"""What this server offers a client such as the WebUI: features, choices and preset defaults.

``GET /v1/engines/features`` says which image-input modes run here (a WebUI shows a tab for
each available one; today none: requests using them answer 501) and lists the choices of the
request's enumerated fields. ``GET /v1/engines/presets/{name}`` gives a preset's defaults
under the request's field names, so a form can start from exactly what the server would use.

The sampler and scheduler names are Fooocus' (its ``flags.py``), part of the request contract
like the other literals in :mod:`fooocus_api.schemas`; a test checks them against the engine's.
"""

from __future__ import annotations

import typing
from typing import Any

from fooocus_api.mapping import PRESET_FIELDS
from fooocus_api.schemas import (
    FeaturesResponse,
    ImageInputFeatures,
    Lora,
    OutputFormat,
    Performance,
    PresetResponse,
    UpscaleOrVaryMethod,
)
from fooocus_core import SAMPLER_NAMES, SCHEDULER_NAMES, Preset

#: Image-input modes the engine runs. Flip one when the engine gains it (and drop its 501).
IMAGE_INPUTS = ImageInputFeatures(
    upscale_vary=False,
    inpaint_outpaint=False,
    image_prompt=False,
    enhance=False,
)

#: ``POST /v1/tools/describe-image`` works (today it answers 501).
DESCRIBE_IMAGE = False

#: Fooocus' ``available_aspect_ratios`` (a preset may replace the list).
ASPECT_RATIOS: tuple[str, ...] = (
    "704*1408",
    "704*1344",
    "768*1344",
    "768*1280",
    "832*1216",
    "832*1152",
    "896*1152",
    "896*1088",
    "960*1088",
    "960*1024",
    "1024*1024",
    "1024*960",
    "1088*960",
    "1088*896",
    "1152*896",
    "1152*832",
    "1216*832",
    "1280*768",
    "1344*768",
    "1344*704",
    "1408*704",
    "1472*704",
    "1536*640",
    "1600*640",
    "1664*576",
    "1728*576",
)


def features() -> FeaturesResponse:
    """The body of ``GET /v1/engines/features``."""
    return FeaturesResponse(
        image_inputs=IMAGE_INPUTS,
        describe_image=DESCRIBE_IMAGE,
        performances=list(typing.get_args(Performance)),
        samplers=list(SAMPLER_NAMES),
        schedulers=list(SCHEDULER_NAMES),
        output_formats=[f for f in typing.get_args(OutputFormat) if f != "jpg"],
        uov_methods=list(typing.get_args(UpscaleOrVaryMethod)),
    )


def preset_defaults(preset: Preset, downloads_enabled: bool) -> PresetResponse:
    """A preset's defaults under request field names (LoRA slots as the preset lists them);
    ``downloads`` lists the files it can fetch on first use (none when downloads are off)."""
    defaults = preset.task_defaults()
    values: dict[str, Any] = {req: defaults[task] for req, task in PRESET_FIELDS.items()}
    values["style_selections"] = list(values["style_selections"])
    values["loras"] = [
        Lora(enabled=enabled, model_name=name, weight=weight)
        for enabled, name, weight in preset.default_loras
    ]
    ratios = preset.extra.get("available_aspect_ratios")
    if not (isinstance(ratios, list) and all(isinstance(r, str) for r in ratios) and ratios):
        ratios = list(ASPECT_RATIOS)
    return PresetResponse(
        name=preset.name,
        available_aspect_ratios=[r.replace("×", "*") for r in ratios],
        max_lora_number=preset.default_max_lora_number,
        lora_min_weight=preset.default_loras_min_weight,
        lora_max_weight=preset.default_loras_max_weight,
        downloads={
            "checkpoints": sorted(preset.checkpoint_downloads),
            "loras": sorted(preset.lora_downloads),
            "vae": sorted(preset.vae_downloads),
        }
        if downloads_enabled
        else {},
        **values,
    )
