"""The typed generation task and what the engine hands back.

Field names and defaults follow Fooocus' parameters (the stock ``default`` preset); the API maps
its request fields onto these. Validation of names against the installed models, samplers and
styles happens in the engine, which knows what exists.
"""

from __future__ import annotations

from typing import Literal

import msgspec

Performance = Literal["Quality", "Speed", "Extreme Speed", "Lightning", "Hyper-SD"]
OutputFormat = Literal["png", "jpeg", "jpg", "webp"]
MetadataScheme = Literal["fooocus", "a1111"]
RefinerSwapMethod = Literal["joint", "separate", "vae"]

#: Sampling steps per performance mode (Fooocus' flags.Performance).
PERFORMANCE_STEPS: dict[str, int] = {
    "Quality": 60,
    "Speed": 30,
    "Extreme Speed": 8,
    "Lightning": 4,
    "Hyper-SD": 4,
}

#: Largest seed + 1; image i uses (seed + i) mod MAX_SEED.
MAX_SEED = 2**63


class LoraSpec(msgspec.Struct, kw_only=True, frozen=True):
    """One LoRA to apply: a file name under the loras folder and its weight."""

    model_name: str
    weight: float = 1.0
    enabled: bool = True


class GenerationTask(msgspec.Struct, kw_only=True):
    """Everything one generation call needs, as Fooocus' named parameters."""

    prompt: str = ""
    negative_prompt: str = ""
    styles: list[str] = msgspec.field(
        default_factory=lambda: ["Fooocus V2", "Fooocus Enhance", "Fooocus Sharp"]
    )
    performance: Performance = "Speed"
    #: ``"W*H"`` or ``"W×H"`` (any size, multiples of 8 are used).
    aspect_ratio: str = "1152*896"
    image_number: int = 1
    output_format: OutputFormat = "png"
    #: -1 = random.
    seed: int = -1
    read_wildcards_in_order: bool = False
    sharpness: float = 2.0
    guidance_scale: float = 4.0
    base_model: str = "juggernautXL_v8Rundiffusion.safetensors"
    refiner_model: str = "None"
    refiner_switch: float = 0.5
    loras: list[LoraSpec] = msgspec.field(default_factory=list)
    sampler: str = "dpmpp_2m_sde_gpu"
    scheduler: str = "karras"
    vae: str = "Default (model)"
    clip_skip: int = 2
    adaptive_cfg: float = 7.0
    adm_scaler_positive: float = 1.5
    adm_scaler_negative: float = 0.8
    adm_scaler_end: float = 0.3
    overwrite_step: int = -1
    overwrite_switch: int = -1
    overwrite_width: int = -1
    overwrite_height: int = -1
    refiner_swap_method: RefinerSwapMethod = "joint"
    freeu_enabled: bool = False
    freeu_b1: float = 1.01
    freeu_b2: float = 1.02
    freeu_s1: float = 0.99
    freeu_s2: float = 0.95
    disable_preview: bool = False
    disable_seed_increment: bool = False
    black_out_nsfw: bool = False
    save_metadata_to_images: bool = True
    metadata_scheme: MetadataScheme = "fooocus"
    #: Optional base name for saved files (``{save_name}-{index}.{ext}``), never a path.
    save_name: str | None = None


class Progress(msgspec.Struct, kw_only=True):
    """One progress report: percent done, a message, and optionally a preview image."""

    percent: int
    message: str
    #: Encoded preview (JPEG bytes) of the current denoised estimate, if previews are on.
    preview: bytes | None = None
    step: int = 0
    total_steps: int = 0
    image_index: int = 0
    image_count: int = 0


class GeneratedImage(msgspec.Struct, kw_only=True):
    """One saved output image."""

    path: str
    seed: int
    width: int
    height: int
    #: The Fooocus-scheme metadata of this image (parameters, full prompts, hashes).
    metadata: dict[str, object] = {}


class GenerationResult(msgspec.Struct, kw_only=True):
    """What :meth:`Engine.generate` returns."""

    images: list[GeneratedImage]
    #: True when the task was stopped before all images were made.
    stopped: bool = False
    #: Notes for the user (skipped features, fallbacks), in the order they happened.
    messages: list[str] = []
