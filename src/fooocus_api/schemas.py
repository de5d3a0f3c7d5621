"""Request and response bodies as msgspec Structs (FooocusAPI's names, defaults and ranges).

Unknown fields are ignored (old clients send them). Fields whose default comes from a preset in
FooocusAPI are ``UNSET`` here: :mod:`fooocus_api.mapping` fills them from the request's preset,
else the global preset, so a caller can ask for any value explicitly.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

Performance = Literal["Quality", "Speed", "Extreme Speed", "Lightning", "Hyper-SD"]
UpscaleOrVaryMethod = Literal[
    "Disabled",
    "Vary (Subtle)",
    "Vary (Strong)",
    "Upscale (1.5x)",
    "Upscale (2x)",
    "Upscale (Fast 2x)",
    "Upscale (Custom)",
]
OutpaintSide = Literal["Left", "Right", "Top", "Bottom"]
ControlNetType = Literal["ImagePrompt", "FaceSwap", "PyraCanny", "CPDS"]
OutputFormat = Literal["png", "jpeg", "jpg", "webp"]
TaskStatus = Literal["pending", "running", "finished", "stop", "failed"]

Unit = Annotated[float, Meta(ge=0.0, le=1.0)]
ErodeDilate = Annotated[int, Meta(ge=-64, le=64)]
#: An input image: http(s) URL, base64, or data URL; null/""/"None" = no image.
ImageInput = str | None


class Lora(msgspec.Struct, kw_only=True):
    """One LoRA slot."""

    enabled: bool = True
    model_name: str = "None"
    weight: Annotated[float, Meta(ge=-2.0, le=2.0)] = 0.5


class ImagePrompt(msgspec.Struct, kw_only=True):
    """One image-prompt / ControlNet slot."""

    cn_img: ImageInput = None
    cn_stop: Unit = 0.6
    cn_weight: Annotated[float, Meta(ge=0.0, le=2.0)] = 0.6
    cn_type: ControlNetType = "ImagePrompt"


class EnhanceCtrlNets(msgspec.Struct, kw_only=True):
    """One enhance tab (accepted; enhancing comes in a later issue)."""

    enhance_enabled: bool = False
    enhance_mask_dino_prompt: str = ""
    enhance_prompt: str = ""
    enhance_negative_prompt: str = ""
    enhance_mask_model: str = "sam"
    enhance_mask_cloth_category: str = "full"
    enhance_mask_sam_model: str = "vit_b"
    enhance_mask_text_threshold: Unit = 0.25
    enhance_mask_box_threshold: Unit = 0.3
    enhance_mask_sam_max_detections: Annotated[int, Meta(ge=0, le=10)] = 0
    enhance_inpaint_disable_initial_latent: bool = False
    enhance_inpaint_engine: str = "v2.6"
    enhance_inpaint_strength: Unit = 1.0
    enhance_inpaint_respective_field: Unit = 0.618
    enhance_inpaint_erode_or_dilate: ErodeDilate = 0
    enhance_mask_invert: bool = False


def _default_controlnets() -> list[ImagePrompt]:
    return [ImagePrompt()]


class CommonRequest(msgspec.Struct, kw_only=True):
    """Body of ``POST /v1/engine/generate/``: every Fooocus parameter plus the API's own."""

    # --- text to image (UNSET = from the preset) ---
    prompt: str | UnsetType = UNSET
    negative_prompt: str | UnsetType = UNSET
    style_selections: list[str] | UnsetType = UNSET
    performance_selection: Performance | UnsetType = UNSET
    aspect_ratios_selection: str | UnsetType = UNSET
    image_number: Annotated[int, Meta(ge=1, le=32)] = 1
    output_format: OutputFormat = "png"
    #: -1 (or null, or out of range) = random.
    image_seed: int | None = -1
    read_wildcards_in_order: bool = False
    sharpness: Annotated[float, Meta(ge=0.0, le=30.0)] | UnsetType = UNSET
    guidance_scale: Annotated[float, Meta(ge=1.0, le=30.0)] | UnsetType = UNSET
    base_model_name: str | UnsetType = UNSET
    refiner_model_name: str | UnsetType = UNSET
    refiner_switch: Annotated[float, Meta(ge=0.1, le=1.0)] | UnsetType = UNSET
    loras: list[Lora] | UnsetType = UNSET
    # --- image inputs ---
    input_image_checkbox: bool = True
    current_tab: str = "uov"
    uov_method: UpscaleOrVaryMethod = "Disabled"
    upscale_multiple: Annotated[float, Meta(ge=1.0, le=5.0)] = 1.0
    uov_input_image: ImageInput = "None"
    outpaint_selections: list[OutpaintSide] = []
    outpaint_distance: list[int] = msgspec.field(default_factory=lambda: [0, 0, 0, 0])
    inpaint_input_image: ImageInput = "None"
    inpaint_additional_prompt: str = ""
    inpaint_mask_image_upload: ImageInput = "None"
    inpaint_advanced_masking_checkbox: bool = False
    invert_mask_checkbox: bool = False
    inpaint_erode_or_dilate: ErodeDilate = 0
    inpaint_engine: Literal["None", "v1", "v2.5", "v2.6"] = "v2.6"
    inpaint_strength: Unit = 1.0
    inpaint_respective_field: Unit = 0.618
    inpaint_disable_initial_latent: bool = False
    controlnet_image: list[ImagePrompt] = msgspec.field(default_factory=_default_controlnets)
    mixing_image_prompt_and_vary_upscale: bool = False
    mixing_image_prompt_and_inpaint: bool = False
    enhance_input_image: ImageInput = "None"
    enhance_checkbox: bool = False
    enhance_uov_method: UpscaleOrVaryMethod = "Disabled"
    enhance_uov_processing_order: str = "Before First Enhancement"
    enhance_uov_prompt_type: str = "Original Prompts"
    enhance_ctrls: list[EnhanceCtrlNets] = []
    save_final_enhanced_image_only: bool = False
    # --- advanced ---
    disable_preview: bool = False
    disable_intermediate_results: bool = False
    disable_seed_increment: bool = False
    black_out_nsfw: bool = False
    adm_scaler_positive: Annotated[float, Meta(ge=0.0, le=3.0)] = 1.5
    adm_scaler_negative: Annotated[float, Meta(ge=0.0, le=3.0)] = 0.8
    adm_scaler_end: Unit = 0.3
    adaptive_cfg: Annotated[float, Meta(ge=1.0, le=30.0)] | UnsetType = UNSET
    clip_skip: Annotated[int, Meta(ge=1, le=12)] | UnsetType = UNSET
    sampler_name: str | UnsetType = UNSET
    scheduler_name: str | UnsetType = UNSET
    vae_name: str | UnsetType = UNSET
    overwrite_step: int | UnsetType = UNSET
    overwrite_switch: float | UnsetType = UNSET
    overwrite_width: Annotated[int, Meta(ge=-1, le=2048)] = -1
    overwrite_height: Annotated[int, Meta(ge=-1, le=2048)] = -1
    overwrite_vary_strength: Annotated[float, Meta(ge=-1.0, le=1.0)] = -1.0
    overwrite_upscale_strength: Annotated[float, Meta(ge=-1.0, le=1.0)] = -1.0
    debugging_cn_preprocessor: bool = False
    skipping_cn_preprocessor: bool = False
    canny_low_threshold: Annotated[int, Meta(ge=1, le=255)] = 64
    canny_high_threshold: Annotated[int, Meta(ge=1, le=255)] = 128
    refiner_swap_method: Literal["joint", "separate", "vae"] = "joint"
    controlnet_softness: Unit = 0.25
    freeu_enabled: bool = False
    freeu_b1: float = 1.01
    freeu_b2: float = 1.02
    freeu_s1: float = 0.99
    freeu_s2: float = 0.95
    debugging_inpaint_preprocessor: bool = False
    save_metadata_to_images: bool = True
    metadata_scheme: Literal["fooocus", "a1111"] = "fooocus"
    debugging_dino: bool = False
    dino_erode_or_dilate: ErodeDilate = 0
    debugging_enhance_masks_checkbox: bool = False
    generate_image_grid: bool = False
    # --- API only ---
    #: Base name of the output files (``{save_name}-{index}.{ext}``); a plain name, no path.
    save_name: str | None = None
    #: Preset merged under the request (``initial`` = the global preset only).
    preset: str = "initial"
    stream_output: bool = False
    #: Accepted, no effect (as in FooocusAPI).
    require_base64: bool = False
    async_process: bool = False
    webhook_url: str | None = ""


class ControlRequest(msgspec.Struct, kw_only=True):
    """JSON body of ``POST /v1/engine/control`` (query parameters work too)."""

    action: str | None = None
    task_id: str | None = None


class DescribeImageRequest(msgspec.Struct, kw_only=True):
    """JSON body of ``POST /v1/tools/describe-image``."""

    image: str
    image_type: Literal["Photo", "Anime"] = "Photo"


class DescribeImageResponse(msgspec.Struct, kw_only=True):
    describe: str


class RecordResponse(msgspec.Struct, kw_only=True):
    """A task record: FooocusAPI's columns plus ``error``, ``seeds``, ``queue_position``."""

    id: int
    task_id: str
    req_params: dict[str, Any]
    in_queue_mills: int
    start_mills: int | None
    finish_mills: int | None
    task_status: TaskStatus
    progress: float
    preview: str | None
    webhook_url: str | None
    #: Output image URLs, in order.
    result: list[str]
    #: Seed of each result image (same order as ``result``).
    seeds: list[int] = []
    #: Why the task failed (status ``failed``), else null.
    error: str | None = None
    #: Notes from the engine (skipped images, features not applied).
    messages: list[str] = []
    #: 0 = next to run; only for pending tasks.
    queue_position: int | None = None


class TasksResponse(msgspec.Struct, kw_only=True):
    history: list[RecordResponse]
    current: list[RecordResponse]
    pending: list[RecordResponse]


class TaskEvent(msgspec.Struct, kw_only=True):
    """One SSE event: FooocusAPI's progress JSON plus ``task_id`` and ``status``."""

    task_id: str
    status: TaskStatus
    progress: float
    preview: str | None = None
    message: str = ""
    images: list[str] = []
    seeds: list[int] = []
    error: str | None = None
    queue_position: int | None = None


class AllModelsResponse(msgspec.Struct, kw_only=True):
    model_filenames: list[str]
    lora_filenames: list[str]
    vae_filenames: list[str] = []
    presets: list[str] = []
    #: The checkpoint that requests naming none run with (the configured default model, or
    #: what stands in for it when it is missing).
    default_model: str | None = None
    #: True when the built-in starter model stands in for a missing default model.
    starter_fallback: bool = False
    #: What is not as configured, and how to fix it (None when all is as configured).
    notice: str | None = None


class MessageResponse(msgspec.Struct, kw_only=True):
    message: str


class ErrorDetail(msgspec.Struct, kw_only=True):
    """One error, FastAPI-shaped (``loc`` = ``["body", field, ...]``)."""

    loc: list[str | int]
    msg: str
    type: str


class ErrorResponse(msgspec.Struct, kw_only=True):
    """Every error body: ``detail`` (list for validation errors, else a string)."""

    detail: list[ErrorDetail] | str
    field: str | None = None


class HealthResponse(msgspec.Struct, kw_only=True):
    status: str


class ReadinessResponse(msgspec.Struct, kw_only=True):
    ready: bool
    engine_loaded: bool
    worker_alive: bool
    loaded_model: str | None
    queue_length: int
    running_task: str | None


class TicketResponse(msgspec.Struct, kw_only=True):
    """A short-lived single-use ticket for ``GET /tasks/{task_id}/events?ticket=...``."""

    ticket: str
    expires_in: int


class ImageInputFeatures(msgspec.Struct, kw_only=True):
    """Which image-input modes this server runs (a WebUI shows a tab for each one that does)."""

    #: ``uov_input_image`` with an upscale or vary method.
    upscale_vary: bool = False
    #: ``inpaint_input_image`` (+ mask), ``outpaint_selections``.
    inpaint_outpaint: bool = False
    #: ``controlnet_image`` (image prompt, PyraCanny, CPDS, FaceSwap).
    image_prompt: bool = False
    #: ``enhance_checkbox`` with ``enhance_input_image``.
    enhance: bool = False


class FeaturesResponse(msgspec.Struct, kw_only=True):
    """``GET /v1/engines/features``: what this server runs and the choices of enumerated fields."""

    image_inputs: ImageInputFeatures
    describe_image: bool
    performances: list[str]
    samplers: list[str]
    schedulers: list[str]
    output_formats: list[str]
    uov_methods: list[str]


class PresetResponse(msgspec.Struct, kw_only=True):
    """``GET /v1/engines/presets/{name}``: a preset's defaults under the request's field names
    (``initial`` = the server's global preset)."""

    name: str
    prompt: str
    negative_prompt: str
    style_selections: list[str]
    performance_selection: str
    aspect_ratios_selection: str
    sharpness: float
    guidance_scale: float
    base_model_name: str
    refiner_model_name: str
    refiner_switch: float
    #: Every LoRA slot of the preset (``"None"`` = empty slot).
    loras: list[Lora]
    adaptive_cfg: float
    clip_skip: int
    sampler_name: str
    scheduler_name: str
    vae_name: str
    overwrite_step: int
    overwrite_switch: float
    #: Aspect ratios to offer (``"W*H"``).
    available_aspect_ratios: list[str]
    max_lora_number: int
    lora_min_weight: float
    lora_max_weight: float
    #: Files the preset can download on first use, per model folder.
    downloads: dict[str, list[str]]
