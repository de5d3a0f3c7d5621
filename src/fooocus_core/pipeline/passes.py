"""One sampler pass of an image: start noise, noise sources and the step reporting.

An image is sampled in one pass (no refiner, or Fooocus' "joint" refiner swap) or two (the
"separate" and "vae" swaps, :mod:`.refiner`). Every pass starts from a latent plus scaled noise
and reports its steps with image-global indices, so progress runs 0..steps-1 over all passes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from fooocus_core.sampling.noise import BrownianTreeNoiseSampler, SeededNoiseSampler
from fooocus_core.sampling.samplers import Denoiser, NoiseSampler, sample
from fooocus_core.sampling.schedules import ModelSchedule

#: Called after each step's model call with (image-global step index, denoised x0).
PassStepHook = Callable[[int, torch.Tensor], None]


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


def uses_brownian_tree(sampler: str) -> bool:
    """SDE samplers draw from one Brownian tree per image, shared by all its passes."""
    return "sde" in sampler


def noise_sampler_for(
    sampler: str, x: torch.Tensor, sigmas: torch.Tensor, seed: int
) -> NoiseSampler:
    """SDE samplers get a Brownian tree over the schedule; ancestral ones seeded draws."""
    if uses_brownian_tree(sampler):
        positive = sigmas[sigmas > 0]
        return BrownianTreeNoiseSampler(x, float(positive.min()), float(positive.max()), seed=seed)
    return SeededNoiseSampler(x, seed=seed)


def reseeded_noise_sampler(
    sampler: str, shared: NoiseSampler, x: torch.Tensor, seed: int
) -> NoiseSampler:
    """The noise source of a pass that draws new noise with ``seed``: the image's Brownian tree
    for SDE samplers (it is global to the image), else fresh draws from ``seed``.
    """
    return shared if uses_brownian_tree(sampler) else SeededNoiseSampler(x, seed=seed)


@dataclass(frozen=True)
class SamplerPass:
    """What every pass of one image shares: the sampler, the model schedule, step reporting."""

    sampler: str
    schedule: ModelSchedule
    on_step: PassStepHook | None = None

    def start(self, latent: torch.Tensor, noise: torch.Tensor, sigma0: float) -> torch.Tensor:
        """``latent + noise * scale`` at the first sigma of a pass (see :func:`noise_scale`)."""
        scale = noise_scale(sigma0, float(self.schedule.sigma_max))
        return latent + (noise * scale).to(latent.device)

    def run(
        self,
        denoiser: Denoiser,
        x: torch.Tensor,
        sigmas: torch.Tensor,
        noise_sampler: NoiseSampler,
        first_step: int = 0,
        after_model_call: Callable[[int], None] | None = None,
    ) -> torch.Tensor:
        """Sample ``x`` (already noised to ``sigmas[0]``) down ``sigmas``.

        Step ``i`` of this pass is reported as ``first_step + i``; ``after_model_call`` gets
        that index first (the joint refiner swap hooks in there).
        """

        def callback(i: int, _x: torch.Tensor, denoised: torch.Tensor) -> None:
            step = first_step + i
            if after_model_call is not None:
                after_model_call(step)
            if self.on_step is not None:
                self.on_step(step, denoised)

        with torch.inference_mode():
            return sample(
                self.sampler,
                denoiser,
                x,
                sigmas,
                noise_sampler=noise_sampler,
                callback=callback,
                schedule=self.schedule,
            )
