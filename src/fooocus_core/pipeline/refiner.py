"""Fooocus' refiner: a second UNet that takes over the last steps (spec §3.5).

The refiner is an SDXL refiner checkpoint or an SDXL base checkpoint; it uses the base model's
text encoders and VAE. Its conditioning is converted from the base's:

* SDXL refiner: only the CLIP-G part (the last ``hidden_G`` features of the ``[L | G]`` token
  conditioning), the same pooled vector, and the refiner's size conditioning
  ``[h, w, crop_top=0, crop_left=0, aesthetic]`` with aesthetic score 6.0 for the positive and
  2.5 for the negative branch (h, w = latent size × 8);
* SDXL base used as refiner: unchanged (the base's ADM scaling included).

Swap methods, with ``switch`` the step where the refiner takes over:

* ``joint``: one sampler run; after the model call of step ``switch`` (so the base evaluates
  steps 0..switch inclusive) the denoiser switches to the refiner; the sampler's history and the
  image's Brownian tree continue.
* ``separate``: the base samples ``sigmas[0..switch]`` (not fully denoised), then a new sampler
  run with the second model continues from ``sigmas[switch]`` without new noise; the history
  restarts, the noise source (Brownian tree or seeded draws) continues.
* ``vae``: the base samples steps ``[0, switch)`` with the last sigma set to 0 (fully denoised),
  recording the guided noise prediction ``eps`` of each model call. The second run samples
  ``1.4 × sigmas[switch:]`` from that latent re-noised with noise of seed + 1 whose channel mean
  is replaced by the last recorded eps' channel mean.

Without a refiner, ``separate`` and ``vae`` still run their two passes, the base model taking
the refiner's place (Fooocus: "use base model to refine itself").
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Final, Literal

import torch
from torch import Tensor, nn

from fooocus_core.models.checkpoint import CheckpointKind
from fooocus_core.pipeline.denoiser import BranchConditioning
from fooocus_core.pipeline.passes import SamplerPass
from fooocus_core.sampling.samplers import Denoiser, NoiseSampler

SwapMethod = Literal["joint", "separate", "vae"]
SWAP_METHODS: Final[tuple[str, ...]] = ("joint", "separate", "vae")
#: Aesthetic scores of the SDXL refiner's size conditioning.
AESTHETIC_POSITIVE: Final = 6.0
AESTHETIC_NEGATIVE: Final = 2.5
#: The "vae" swap's second run starts this much higher on the schedule.
VAE_SWAP_SIGMA_FACTOR: Final = 1.4
#: Size-conditioning numbers of the SDXL refiner: h, w, crop top, crop left, aesthetic score.
REFINER_TIME_IDS: Final = 5


class RefinerMismatch(ValueError):
    """The refiner's UNet cannot take the conditioning of the base model's text encoders."""


@dataclass(frozen=True)
class Refiner:
    """A refiner UNet and how it is conditioned.

    ``clip_g_only``: an SDXL refiner checkpoint (CLIP-G tokens, aesthetic size conditioning);
    False for an SDXL base used as refiner. ``clip_g_width``: the width of the CLIP-G part at the
    end of the base's ``[L | G]`` token conditioning (the base's second text encoder's width).
    """

    unet: nn.Module
    clip_g_only: bool
    clip_g_width: int

    @classmethod
    def of_kind(cls, unet: nn.Module, kind: CheckpointKind, clip_g_width: int) -> Refiner:
        """A refiner from its checkpoint kind (SDXL refiner, or an SDXL base)."""
        return cls(unet, kind is CheckpointKind.SDXL_REFINER, clip_g_width)

    def check_fits(self, token_width: int, pooled_width: int) -> None:
        """Raise :class:`RefinerMismatch` unless the UNet takes the converted conditioning."""
        config = self.unet.config
        tokens = self.clip_g_width if self.clip_g_only else token_width
        if int(config.cross_attention_dim) != tokens:
            raise RefinerMismatch(
                f"the refiner attends to {config.cross_attention_dim}-wide text tokens, but the "
                f"base model's text encoders give {tokens}; it does not belong to this base model"
            )
        if self.clip_g_only:
            expected = pooled_width + REFINER_TIME_IDS * int(config.addition_time_embed_dim)
            if int(config.projection_class_embeddings_input_dim) != expected:
                raise RefinerMismatch(
                    f"the refiner's size conditioning takes "
                    f"{config.projection_class_embeddings_input_dim} numbers, the base model's "
                    f"pooled text vector and the refiner's size ids give {expected}"
                )


def refiner_time_ids(width: int, height: int, aesthetic: float) -> Tensor:
    """The SDXL refiner's size conditioning ``[h, w, 0, 0, aesthetic]``."""
    return torch.tensor([height, width, 0, 0, aesthetic], dtype=torch.float32)


def refiner_branch(
    refiner: Refiner, base: BranchConditioning, width: int, height: int, aesthetic: float
) -> BranchConditioning:
    """The refiner's conditioning of one CFG branch, converted from the base's."""
    if not refiner.clip_g_only:
        return base
    ids = refiner_time_ids(width, height, aesthetic)
    hidden = base.hidden[..., -refiner.clip_g_width :]
    return replace(base, hidden=hidden, time_ids_emphasized=ids, time_ids_consistent=ids)


class SwitchingDenoiser:
    """Calls the base denoiser until :meth:`swap`, the refiner's after it."""

    def __init__(self, base: Denoiser, refiner: Denoiser) -> None:
        self.current = base
        self.refiner = refiner

    def swap(self) -> None:
        self.current = self.refiner

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        return self.current(x, sigma)


class EpsRecorder:
    """Wraps a denoiser, keeping the guided noise prediction ``(x - D(x, sigma)) / sigma`` of its
    latest call (on the CPU in float32).
    """

    def __init__(self, denoiser: Denoiser) -> None:
        self.denoiser = denoiser
        self.eps: Tensor | None = None

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        denoised = self.denoiser(x, sigma)
        self.eps = ((x - denoised) / sigma.to(x.device)).to("cpu", torch.float32)
        return denoised


def mean_matched_noise(noise: Tensor, eps: Tensor) -> Tensor:
    """``noise`` with its channel mean replaced by ``eps``' channel mean (per position)."""
    return noise + eps.mean(dim=1, keepdim=True) - noise.mean(dim=1, keepdim=True)


def _clamped(switch: int, sigmas: Tensor) -> int:
    return min(max(switch, 0), len(sigmas) - 1)


def sample_joint(
    run: SamplerPass,
    base: Denoiser,
    refiner: Denoiser | None,
    x: Tensor,
    sigmas: Tensor,
    switch: int,
    noise_sampler: NoiseSampler,
) -> Tensor:
    """One run; the refiner (if any) replaces the base after the model call of step ``switch``."""
    if refiner is None:
        return run.run(base, x, sigmas, noise_sampler)
    denoiser = SwitchingDenoiser(base, refiner)

    def swap_at_switch(step: int) -> None:
        if step == switch:
            denoiser.swap()

    return run.run(denoiser, x, sigmas, noise_sampler, after_model_call=swap_at_switch)


def sample_separate(
    run: SamplerPass,
    base: Denoiser,
    second: Denoiser,
    latent: Tensor,
    noise: Tensor,
    sigmas: Tensor,
    switch: int,
    noise_sampler: NoiseSampler,
) -> Tensor:
    """Base over ``sigmas[:switch + 1]``, then ``second`` over ``sigmas[switch:]`` (no new noise,
    same noise source).
    """
    switch = _clamped(switch, sigmas)
    first = sigmas[: switch + 1]
    x = run.run(base, run.start(latent, noise, float(first[0])), first, noise_sampler)
    return run.run(second, x, sigmas[switch:], noise_sampler, first_step=switch)


def sample_vae(
    run: SamplerPass,
    base: Denoiser,
    second: Denoiser,
    latent: Tensor,
    noise: Tensor,
    sigmas: Tensor,
    second_noise: Tensor,
    second_sigmas: Tensor,
    switch: int,
    noise_samplers: tuple[NoiseSampler, NoiseSampler],
) -> Tensor:
    """Base fully denoised at step ``switch``, then ``second`` from re-noised latent over
    ``1.4 × second_sigmas[switch:]`` (``second_sigmas``: the schedule as Fooocus recomputes it
    for this run) with ``second_noise`` mean-matched to the base's last eps.
    """
    switch = _clamped(switch, sigmas)
    first = sigmas[: switch + 1].clone()
    first[-1] = 0.0
    recorder = EpsRecorder(base)
    x = run.run(recorder, run.start(latent, noise, float(first[0])), first, noise_samplers[0])
    rest = second_sigmas[_clamped(switch, second_sigmas) :] * VAE_SWAP_SIGMA_FACTOR
    if recorder.eps is not None:
        second_noise = mean_matched_noise(second_noise, recorder.eps)
    start = run.start(x, second_noise, float(rest[0]))
    return run.run(second, start, rest, noise_samplers[1], first_step=switch)
