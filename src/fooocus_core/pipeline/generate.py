"""Text-to-image for one image: conditioning, initial noise, the sampler passes and VAE decode."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from fooocus_core.pipeline import adm
from fooocus_core.pipeline.denoiser import BranchConditioning, GuidanceSettings, UNetDenoiser
from fooocus_core.pipeline.freeu import FreeUParams, freeu_applied
from fooocus_core.pipeline.passes import (
    SamplerPass,
    initial_noise,
    noise_sampler_for,
    noise_scale,
    reseeded_noise_sampler,
)
from fooocus_core.pipeline.refiner import (
    AESTHETIC_NEGATIVE,
    AESTHETIC_POSITIVE,
    Refiner,
    SwapMethod,
    refiner_branch,
    sample_joint,
    sample_separate,
    sample_vae,
)
from fooocus_core.prompts.encode import Conditioning
from fooocus_core.sampling.samplers import discards_penultimate_sigma
from fooocus_core.sampling.schedules import ModelSchedule, make_sigmas, model_schedule_for

__all__ = [
    "ImageJob",
    "StepHook",
    "branch",
    "decode",
    "initial_noise",
    "noise_sampler_for",
    "noise_scale",
    "sample_latent",
]

#: Called after every sampling step with (step index, steps, denoised x0 in sampler space).
StepHook = Callable[[int, int, torch.Tensor], None]

#: Samplers for which Fooocus' own sigma computation (used for the "vae" swap's second run)
#: drops the penultimate sigma; the sampler path also drops it for ``uni_pc``.
_VAE_PASS_DISCARDS_PENULTIMATE = frozenset({"dpm_2", "dpm_2_ancestral"})


@dataclass(frozen=True)
class ImageJob:
    """What one image needs beyond the models."""

    seed: int
    width: int
    height: int
    steps: int
    sampler: str
    scheduler: str
    cfg: float
    adaptive_cfg: float
    sharpness: float
    adm_scaler_positive: float
    adm_scaler_negative: float
    adm_scaler_end: float
    #: Step where the refiner takes over (None: ``steps``, no swap).
    switch: int | None = None
    refiner_swap_method: SwapMethod = "joint"
    #: FreeU V2 on the base UNet, or None for off.
    freeu: FreeUParams | None = None


def branch(cond: Conditioning, width: int, height: int, scaler: float) -> BranchConditioning:
    """Attach the SDXL size conditioning of one branch to its text conditioning."""
    emphasized, consistent = adm.time_ids(width, height, scaler)
    return BranchConditioning(cond.cond, cond.pooled, emphasized, consistent)


def _denoisers(
    unet: torch.nn.Module,
    schedule: ModelSchedule,
    positive: Conditioning,
    negative: Conditioning | None,
    job: ImageJob,
    refiner: Refiner | None,
) -> tuple[UNetDenoiser, UNetDenoiser | None]:
    """The base model's denoiser and, with a refiner, the refiner's (converted conditioning)."""
    settings = GuidanceSettings(
        cfg=job.cfg,
        adaptive_cfg=job.adaptive_cfg,
        sharpness=job.sharpness,
        adm_scaler_end=job.adm_scaler_end,
    )
    pos = branch(positive, job.width, job.height, job.adm_scaler_positive)
    neg = None
    if negative is not None:
        neg = branch(negative, job.width, job.height, job.adm_scaler_negative)
    base = UNetDenoiser(unet, schedule, pos, neg, settings)
    if refiner is None:
        return base, None
    refiner.check_fits(pos.hidden.shape[-1], pos.pooled.shape[-1])
    second = UNetDenoiser(
        refiner.unet,
        schedule,
        refiner_branch(refiner, pos, job.width, job.height, AESTHETIC_POSITIVE),
        None
        if neg is None
        else refiner_branch(refiner, neg, job.width, job.height, AESTHETIC_NEGATIVE),
        settings,
    )
    return base, second


def _sigmas(job: ImageJob, schedule: ModelSchedule, discard_penultimate: bool) -> torch.Tensor:
    return make_sigmas(job.scheduler, schedule, job.steps, discard_penultimate=discard_penultimate)


def sample_latent(
    unet: torch.nn.Module,
    base_schedule: ModelSchedule,
    positive: Conditioning,
    negative: Conditioning | None,
    job: ImageJob,
    on_step: StepHook | None = None,
    refiner: Refiner | None = None,
) -> torch.Tensor:
    """Sample from pure noise with the base model (and the refiner, if any, per
    ``job.refiner_swap_method``); returns the final latent in sampler space.

    Sampler space is the VAE latent times the VAE's scaling factor (0.13025 for SDXL). Steps are
    reported 0..steps-1 across all passes. FreeU, when set, applies to the base UNet only, for
    this call only.
    """
    schedule = model_schedule_for(job.scheduler, base_schedule)
    base, second = _denoisers(unet, schedule, positive, negative, job, refiner)
    device = next(unet.parameters()).device
    sigmas = _sigmas(job, schedule, discards_penultimate_sigma(job.sampler)).to(device)
    shape = (1, 4, job.height // 8, job.width // 8)
    noise = initial_noise(job.seed, shape)
    latent = torch.zeros(shape, device=device)
    noise_sampler = noise_sampler_for(job.sampler, latent, sigmas, job.seed)

    def report(step: int, denoised: torch.Tensor) -> None:
        if on_step is not None:
            on_step(step, job.steps, denoised)

    run = SamplerPass(job.sampler, schedule, report)
    switch = job.steps if job.switch is None else job.switch
    method = job.refiner_swap_method
    with freeu_applied(unet, job.freeu):
        if method == "joint":
            x = run.start(latent, noise, float(sigmas[0]))
            return sample_joint(run, base, second, x, sigmas, switch, noise_sampler)
        if method == "separate":
            return sample_separate(
                run, base, second or base, latent, noise, sigmas, switch, noise_sampler
            )
        if method == "vae":
            # Fooocus recomputes the second run's schedule without the sampler-path rule.
            vae_sigmas = _sigmas(job, schedule, job.sampler in _VAE_PASS_DISCARDS_PENULTIMATE)
            reseeded = reseeded_noise_sampler(job.sampler, noise_sampler, latent, job.seed + 1)
            return sample_vae(
                run,
                base,
                second or base,
                latent,
                noise,
                sigmas,
                initial_noise(job.seed + 1, shape),
                vae_sigmas.to(device),
                switch,
                (noise_sampler, reseeded),
            )
    raise ValueError(f"unknown refiner swap method {method!r}")


def decode(vae: torch.nn.Module, latent: torch.Tensor) -> Image.Image:
    """VAE-decode one sampler-space latent to an RGB image."""
    param = next(vae.parameters())
    latent = latent / vae.config.scaling_factor
    with torch.inference_mode():
        pixels = vae.decode(latent.to(param.device, param.dtype), return_dict=False)[0]
    pixels = ((pixels.float() + 1.0) / 2.0).clamp(0.0, 1.0)
    array = (pixels[0].permute(1, 2, 0).cpu().numpy() * 255.0).round().astype(np.uint8)
    return Image.fromarray(array, "RGB")
