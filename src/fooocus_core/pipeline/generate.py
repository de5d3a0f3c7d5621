"""Text-to-image for one image: conditioning, initial noise, the sampler run and VAE decode."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from fooocus_core.pipeline import adm
from fooocus_core.pipeline.denoiser import BranchConditioning, GuidanceSettings, UNetDenoiser
from fooocus_core.prompts.encode import Conditioning
from fooocus_core.sampling.noise import BrownianTreeNoiseSampler, SeededNoiseSampler
from fooocus_core.sampling.samplers import NoiseSampler, discards_penultimate_sigma, sample
from fooocus_core.sampling.schedules import ModelSchedule, make_sigmas, model_schedule_for

#: Called after every sampling step with (step index, steps, denoised x0 in sampler space).
StepHook = Callable[[int, int, torch.Tensor], None]


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


def branch(cond: Conditioning, width: int, height: int, scaler: float) -> BranchConditioning:
    """Attach the SDXL size conditioning of one branch to its text conditioning."""
    emphasized, consistent = adm.time_ids(width, height, scaler)
    return BranchConditioning(cond.cond, cond.pooled, emphasized, consistent)


def initial_noise(seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Fooocus' initial noise: ``torch.manual_seed(seed)`` then ``randn`` on the CPU in float32.

    Drawn on the CPU so the same seed gives the same image on any device.
    """
    generator = torch.Generator("cpu").manual_seed(seed)
    return torch.randn(shape, generator=generator, dtype=torch.float32)


def noise_scale(sigma0: float, sigma_max: float) -> float:
    """Start at ``noise * sqrt(1 + sigma0^2)`` at full denoise, else ``noise * sigma0``."""
    if math.isclose(sigma0, sigma_max, rel_tol=1e-5) or sigma0 > sigma_max:
        return math.sqrt(1.0 + sigma0**2)
    return sigma0


def noise_sampler_for(
    sampler: str, x: torch.Tensor, sigmas: torch.Tensor, seed: int
) -> NoiseSampler:
    """SDE samplers get a Brownian tree over the schedule; ancestral ones seeded draws."""
    if "sde" in sampler:
        positive = sigmas[sigmas > 0]
        return BrownianTreeNoiseSampler(x, float(positive.min()), float(positive.max()), seed=seed)
    return SeededNoiseSampler(x, seed=seed)


def sample_latent(
    unet: torch.nn.Module,
    base_schedule: ModelSchedule,
    positive: Conditioning,
    negative: Conditioning | None,
    job: ImageJob,
    on_step: StepHook | None = None,
) -> torch.Tensor:
    """Run the sampler from pure noise; returns the final latent in sampler space.

    Sampler space is the VAE latent times the VAE's scaling factor (0.13025 for SDXL).
    """
    schedule = model_schedule_for(job.scheduler, base_schedule)
    settings = GuidanceSettings(
        cfg=job.cfg,
        adaptive_cfg=job.adaptive_cfg,
        sharpness=job.sharpness,
        adm_scaler_end=job.adm_scaler_end,
    )
    denoiser = UNetDenoiser(
        unet,
        schedule,
        branch(positive, job.width, job.height, job.adm_scaler_positive),
        None
        if negative is None
        else branch(negative, job.width, job.height, job.adm_scaler_negative),
        settings,
    )
    sigmas = make_sigmas(
        job.scheduler,
        schedule,
        job.steps,
        discard_penultimate=discards_penultimate_sigma(job.sampler),
    )
    noise = initial_noise(job.seed, (1, 4, job.height // 8, job.width // 8))
    device = next(unet.parameters()).device
    x = (noise * noise_scale(float(sigmas[0]), float(schedule.sigma_max))).to(device)
    sigmas = sigmas.to(device)

    def callback(step: int, _x: torch.Tensor, denoised: torch.Tensor) -> None:
        if on_step is not None:
            on_step(step, job.steps, denoised)

    with torch.inference_mode():
        latent = sample(
            job.sampler,
            denoiser,
            x,
            sigmas,
            noise_sampler=noise_sampler_for(job.sampler, x, sigmas, job.seed),
            callback=callback,
            schedule=schedule,
        )
    return latent


def decode(vae: torch.nn.Module, latent: torch.Tensor) -> Image.Image:
    """VAE-decode one sampler-space latent to an RGB image."""
    param = next(vae.parameters())
    latent = latent / vae.config.scaling_factor
    with torch.inference_mode():
        pixels = vae.decode(latent.to(param.device, param.dtype), return_dict=False)[0]
    pixels = ((pixels.float() + 1.0) / 2.0).clamp(0.0, 1.0)
    array = (pixels[0].permute(1, 2, 0).cpu().numpy() * 255.0).round().astype(np.uint8)
    return Image.fromarray(array, "RGB")
