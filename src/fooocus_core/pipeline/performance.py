"""Fooocus' accelerated performance modes: their LoRA and the settings they force.

Extreme Speed (LCM), Lightning and Hyper-SD run a distilled few-step sampler: each loads its
LoRA, fixes sampler and scheduler, and turns off what only makes sense for full-length
sampling (CFG, sharpness, adaptive CFG, ADM emphasis, the refiner).
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from fooocus_core.task import GenerationTask, LoraSpec


@dataclass(frozen=True)
class PerformanceMode:
    """The LoRA file of a performance mode and the sampler settings it forces."""

    lora: str
    lora_weight: float
    url: str
    sampler: str
    scheduler: str


PERFORMANCE_MODES: dict[str, PerformanceMode] = {
    "Extreme Speed": PerformanceMode(
        lora="sdxl_lcm_lora.safetensors",
        lora_weight=1.0,
        url="https://huggingface.co/lllyasviel/misc/resolve/main/sdxl_lcm_lora.safetensors",
        sampler="lcm",
        scheduler="lcm",
    ),
    "Lightning": PerformanceMode(
        lora="sdxl_lightning_4step_lora.safetensors",
        lora_weight=1.0,
        url="https://huggingface.co/mashb1t/misc/resolve/main/sdxl_lightning_4step_lora.safetensors",
        sampler="euler",
        scheduler="sgm_uniform",
    ),
    "Hyper-SD": PerformanceMode(
        lora="sdxl_hyper_sd_4step_lora.safetensors",
        lora_weight=0.8,
        url="https://huggingface.co/mashb1t/misc/resolve/main/sdxl_hyper_sd_4step_lora.safetensors",
        sampler="dpmpp_sde_gpu",
        scheduler="karras",
    ),
}


def performance_mode(task: GenerationTask) -> PerformanceMode | None:
    """The accelerated mode ``task`` asks for, if any."""
    return PERFORMANCE_MODES.get(task.performance)


def performance_lora(task: GenerationTask) -> LoraSpec | None:
    """The LoRA the task's performance mode adds after the user's LoRAs, if any."""
    mode = performance_mode(task)
    return None if mode is None else LoraSpec(model_name=mode.lora, weight=mode.lora_weight)


def apply_performance(task: GenerationTask) -> GenerationTask:
    """A copy of ``task`` with its performance mode's settings forced (unchanged if none)."""
    mode = performance_mode(task)
    if mode is None:
        return task
    return msgspec.structs.replace(
        task,
        sampler=mode.sampler,
        scheduler=mode.scheduler,
        guidance_scale=1.0,
        sharpness=0.0,
        adaptive_cfg=1.0,
        adm_scaler_positive=1.0,
        adm_scaler_negative=1.0,
        adm_scaler_end=0.0,
        refiner_model="None",
        refiner_switch=1.0,
    )
