"""Model noise schedules ("model sampling") and the sigma schedulers Fooocus offers.

Notation (Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative
Models"): a noisy latent is ``x = x0 + σ·ε``. A *model schedule* says which noise levels a model
was trained on and how a sigma maps to the timestep the UNet is conditioned on; a *scheduler*
picks the decreasing list of sigmas (ending with 0) that a sampler walks through.

Model schedules:

* :class:`DiscreteSchedule` – SDXL's 1000-step "scaled linear" DDPM schedule (Ho et al. 2020):
  ``β = linspace(√0.00085, √0.012, 1000)²``, ``ᾱ = cumprod(1 − β)``, ``σ = √((1 − ᾱ)/ᾱ)``.
* :class:`DistilledSchedule` – the 50 sigmas a latent-consistency-distilled model was trained
  on (every 20th training timestep, ``σ_valid[k] = σ[20k + 19]``), used with the TCD LoRA.
* :class:`LCMSchedule` – the same 50 sigmas plus the consistency-model output parametrisation
  of LCM (Luo et al. 2023, "Latent Consistency Models"), used with the LCM LoRA
  (Fooocus' "Extreme Speed").

A continuous EDM schedule (Playground v2.5) can be added as another :class:`ModelSchedule`
subclass; :func:`make_sigmas` raises :class:`NotImplementedError` for it for now.

Schedulers (:data:`SCHEDULER_NAMES`, Fooocus' order) – see :func:`make_sigmas`.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Final

import numpy as np
import torch
from torch import Tensor

from .names import SCHEDULER_NAMES

__all__ = [
    "AYS_SDXL_SIGMAS",
    "SCHEDULER_NAMES",
    "DiscreteSchedule",
    "DistilledSchedule",
    "LCMSchedule",
    "ModelSchedule",
    "karras_sigmas",
    "make_sigmas",
    "model_schedule_for",
]


KARRAS_RHO: Final = 7.0

# Align Your Steps (Sabour et al. 2024) optimised 10-step noise levels for SDXL, as listed in
# the spec (§9.5); the ends are SDXL's sigma_max / sigma_min.
AYS_SDXL_SIGMAS: Final[tuple[float, ...]] = (
    14.6146,
    6.318,
    3.768,
    2.181,
    1.341,
    0.862,
    0.555,
    0.380,
    0.233,
    0.111,
    0.0292,
)

TURBO_MAX_STEPS: Final = 10


def _broadcast_to(value: Tensor, x: Tensor) -> Tensor:
    """Reshape a scalar or per-batch ``[B]`` tensor so it broadcasts against ``x``.

    A 0-dim CPU tensor stays on the CPU: torch broadcasts it against any device without the
    blocking host-to-device copy a move would cost every step.
    """
    if value.ndim == 0 and value.device.type == "cpu":
        return value.to(dtype=x.dtype)
    value = value.to(device=x.device, dtype=x.dtype)
    if value.ndim == 0:
        return value
    return value.reshape(value.shape + (1,) * (x.ndim - value.ndim))


class ModelSchedule(ABC):
    """How a model maps noise levels (sigmas) to its timestep conditioning and output."""

    @property
    @abstractmethod
    def sigma_min(self) -> float:
        """Smallest noise level the model was trained on."""

    @property
    @abstractmethod
    def sigma_max(self) -> float:
        """Largest noise level the model was trained on."""

    @abstractmethod
    def timestep(self, sigma: Tensor) -> Tensor:
        """The timestep (float tensor, same shape) the UNet is conditioned on at ``sigma``."""

    @abstractmethod
    def sigma(self, timestep: Tensor) -> Tensor:
        """Inverse of :meth:`timestep`, interpolating between the trained timesteps."""

    def calculate_denoised(self, sigma: Tensor, model_output: Tensor, x: Tensor) -> Tensor:
        """Turn the UNet's ε prediction into the denoised ``x0`` (x-space, ``x = x0 + σ·ε``).

        ``sigma`` is a scalar or a ``[B]`` tensor; ``x`` is the unscaled noisy latent (the UNet
        itself is fed ``x / sqrt(σ² + 1)``).
        """
        return x - _broadcast_to(sigma, x) * model_output


class DiscreteSchedule(ModelSchedule):
    """SDXL's discrete DDPM schedule (scaled-linear betas, 1000 timesteps).

    ``sigmas`` holds the noise level of every trained timestep, ascending (float32; computed in
    float64 first). :meth:`timestep` returns the nearest trained timestep in log-sigma,
    :meth:`sigma` interpolates log-linearly between integer timesteps.
    """

    def __init__(
        self,
        beta_start: float = 0.00085,
        beta_end: float = 0.012,
        num_timesteps: int = 1000,
    ) -> None:
        betas = (
            torch.linspace(
                math.sqrt(beta_start), math.sqrt(beta_end), num_timesteps, dtype=torch.float64
            )
            ** 2
        )
        alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        self.beta_start, self.beta_end = beta_start, beta_end
        self.num_timesteps = num_timesteps
        self._train_sigmas = ((1.0 - alphas_cumprod) / alphas_cumprod).sqrt().float()
        self._set_table(self._train_sigmas, skip=1)

    def _set_table(self, sigmas: Tensor, skip: int) -> None:
        self._sigmas = sigmas
        self._log_sigmas = sigmas.log()
        self._skip = skip

    @property
    def sigmas(self) -> Tensor:
        """Noise levels of the timesteps this schedule samples from, ascending."""
        return self._sigmas

    @property
    def train_sigmas(self) -> Tensor:
        """Noise level of each of the ``num_timesteps`` training timesteps, ascending."""
        return self._train_sigmas

    @property
    def alphas_cumprod(self) -> Tensor:
        """``ᾱ`` of each training timestep (``1 / (1 + σ²)``)."""
        return 1.0 / (1.0 + self._train_sigmas.double() ** 2)

    @property
    def sigma_min(self) -> float:
        return float(self._sigmas[0])

    @property
    def sigma_max(self) -> float:
        return float(self._sigmas[-1])

    def timestep(self, sigma: Tensor) -> Tensor:
        sigma = torch.as_tensor(sigma)
        log_sigma = sigma.to(torch.float32).log().reshape(-1, 1)
        table = self._log_sigmas.to(sigma.device).reshape(1, -1)
        index = (log_sigma - table).abs().argmin(dim=1)
        steps = index * self._skip + (self._skip - 1)
        return steps.to(torch.float32).reshape(sigma.shape)

    def sigma(self, timestep: Tensor) -> Tensor:
        timestep = torch.as_tensor(timestep, dtype=torch.float32)
        last = len(self._sigmas) - 1
        position = ((timestep - (self._skip - 1)) / self._skip).clamp(0, last)
        low, high = position.floor().long(), position.ceil().long()
        weight = position - position.floor()
        table = self._log_sigmas.to(timestep.device)
        log_sigma = (1 - weight) * table[low] + weight * table[high]
        return log_sigma.exp()


class DistilledSchedule(DiscreteSchedule):
    """The ``original_steps`` (50) sigmas a consistency-distilled SDXL model is trained on.

    ``σ_valid[49 − x] = σ[999 − 20x]``; :meth:`timestep` returns ``nearest index·20 + 19``.
    Output parametrisation stays plain ε-prediction (what Fooocus uses for TCD).
    """

    def __init__(
        self,
        beta_start: float = 0.00085,
        beta_end: float = 0.012,
        num_timesteps: int = 1000,
        original_steps: int = 50,
    ) -> None:
        super().__init__(beta_start, beta_end, num_timesteps)
        skip = num_timesteps // original_steps
        self._set_table(self.train_sigmas[skip - 1 :: skip].clone(), skip=skip)

    @classmethod
    def from_discrete(cls, base: DiscreteSchedule) -> DistilledSchedule:
        """The distilled schedule of a model whose full schedule is ``base``."""
        if isinstance(base, cls):
            return base
        return cls(base.beta_start, base.beta_end, base.num_timesteps)


class LCMSchedule(DistilledSchedule):
    """Distilled schedule with LCM's consistency-model output (Luo et al. 2023, eq. 8/9).

    ``x0 = c_out·(x − σ·ε) + c_skip·x`` with ``ts = 10·timestep(σ)``,
    ``c_skip = σ_data² / (ts² + σ_data²)``, ``c_out = ts / sqrt(ts² + σ_data²)``, σ_data = 0.5.
    """

    SIGMA_DATA: Final = 0.5
    TIMESTEP_SCALING: Final = 10.0

    def boundary_coefficients(self, sigma: Tensor) -> tuple[Tensor, Tensor]:
        """``(c_skip, c_out)`` at ``sigma`` (same shape as ``sigma``, float32)."""
        scaled = self.timestep(sigma) * self.TIMESTEP_SCALING
        data_var = self.SIGMA_DATA**2
        c_skip = data_var / (scaled**2 + data_var)
        c_out = scaled / (scaled**2 + data_var).sqrt()
        return c_skip, c_out

    def calculate_denoised(self, sigma: Tensor, model_output: Tensor, x: Tensor) -> Tensor:
        """LCM's ``x0 = c_out·(x − σ·ε) + c_skip·x`` (``sigma`` scalar or ``[B]``)."""
        sigma = torch.as_tensor(sigma)
        c_skip, c_out = self.boundary_coefficients(sigma)
        x0 = x - _broadcast_to(sigma, x) * model_output
        return _broadcast_to(c_out, x) * x0 + _broadcast_to(c_skip, x) * x


def model_schedule_for(scheduler: str, base: DiscreteSchedule | None = None) -> ModelSchedule:
    """The model schedule Fooocus patches in for a scheduler name (spec §1.5 step 7).

    ``lcm`` → :class:`LCMSchedule`, ``tcd`` → :class:`DistilledSchedule`, every other scheduler
    keeps the model's own discrete schedule (``base``, default SDXL's).
    """
    _check_scheduler(scheduler)
    base = base if base is not None else DiscreteSchedule()
    if scheduler == "edm_playground_v2.5":
        raise NotImplementedError(_EDM_MESSAGE)
    if scheduler == "lcm":
        return LCMSchedule(base.beta_start, base.beta_end, base.num_timesteps)
    if scheduler == "tcd":
        return DistilledSchedule.from_discrete(base)
    return base


_EDM_MESSAGE: Final = (
    "scheduler 'edm_playground_v2.5' needs Playground v2.5's continuous EDM model schedule "
    "(sigma 0.002..120, sigma_data 0.5), which is not implemented yet"
)


def _check_scheduler(name: str) -> None:
    if name not in SCHEDULER_NAMES:
        raise ValueError(f"unknown scheduler {name!r}; valid: {', '.join(SCHEDULER_NAMES)}")


def _append_zero(sigmas: Tensor) -> Tensor:
    return torch.cat([sigmas.to(torch.float32), sigmas.new_zeros(1, dtype=torch.float32)])


def karras_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float = KARRAS_RHO) -> Tensor:
    """Karras et al. 2022 eq. 5: n sigmas evenly spaced in ``σ^(1/ρ)``, then 0."""
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return _append_zero((hi + ramp * (lo - hi)) ** rho)


def _exponential(schedule: DiscreteSchedule, n: int) -> Tensor:
    logs = torch.linspace(
        math.log(schedule.sigma_max), math.log(schedule.sigma_min), n, dtype=torch.float64
    )
    return _append_zero(logs.exp())


def _uniform_timesteps(schedule: DiscreteSchedule, n: int, sgm: bool) -> Tensor:
    start = schedule.timestep(torch.tensor(schedule.sigma_max))
    end = schedule.timestep(torch.tensor(schedule.sigma_min))
    timesteps = (
        torch.linspace(float(start), float(end), n + 1)[:-1]
        if sgm
        else torch.linspace(float(start), float(end), n)
    )
    return _append_zero(schedule.sigma(timesteps))


def _simple(schedule: DiscreteSchedule, n: int) -> Tensor:
    table = schedule.sigmas
    stride = len(table) / n
    picks = [float(table[-(1 + int(k * stride))]) for k in range(n)]
    return _append_zero(torch.tensor(picks, dtype=torch.float64))


def _ddim_uniform(schedule: DiscreteSchedule, n: int) -> Tensor:
    table = schedule.sigmas
    stride = max(len(table) // n, 1)
    indices = [min(1 + stride * k, len(table) - 1) for k in reversed(range(n))]
    return _append_zero(table[indices])


def _turbo(schedule: DiscreteSchedule, n: int) -> Tensor:
    if n > TURBO_MAX_STEPS:
        return _simple(schedule, n)
    top = schedule.num_timesteps - 1
    stride = schedule.num_timesteps // TURBO_MAX_STEPS
    timesteps = torch.tensor([top - stride * k for k in range(n)], dtype=torch.float32)
    return _append_zero(schedule.sigma(timesteps))


def _align_your_steps(n: int) -> Tensor:
    levels = np.array(AYS_SDXL_SIGMAS, dtype=np.float64)
    if n + 1 != len(levels):
        known = np.linspace(0, 1, len(levels))
        wanted = np.linspace(0, 1, n + 1)
        levels = np.exp(np.interp(wanted, known, np.log(levels[::-1])))[::-1]
    sigmas = torch.tensor(levels.copy(), dtype=torch.float32)
    sigmas[-1] = 0.0
    return sigmas


def _full_schedule(scheduler: str, schedule: ModelSchedule, n: int) -> Tensor:
    if scheduler == "edm_playground_v2.5":
        raise NotImplementedError(_EDM_MESSAGE)
    if scheduler == "karras":
        return karras_sigmas(n, schedule.sigma_min, schedule.sigma_max)
    if scheduler == "align_your_steps":
        return _align_your_steps(n)
    if not isinstance(schedule, DiscreteSchedule):
        raise NotImplementedError(f"scheduler {scheduler!r} needs a discrete model schedule")
    if scheduler in ("lcm", "tcd"):
        distilled = DistilledSchedule.from_discrete(schedule)
        return _uniform_timesteps(distilled, n, sgm=True)
    builders = {
        "normal": lambda: _uniform_timesteps(schedule, n, sgm=False),
        "sgm_uniform": lambda: _uniform_timesteps(schedule, n, sgm=True),
        "exponential": lambda: _exponential(schedule, n),
        "simple": lambda: _simple(schedule, n),
        "ddim_uniform": lambda: _ddim_uniform(schedule, n),
        "turbo": lambda: _turbo(schedule, n),
    }
    return builders[scheduler]()


def make_sigmas(
    scheduler: str,
    schedule: ModelSchedule,
    steps: int,
    denoise: float = 1.0,
    *,
    discard_penultimate: bool = False,
) -> Tensor:
    """Return the ``steps + 1`` decreasing sigmas (float32, last one 0) a sampler walks.

    Schedulers (``n`` = number of steps, ``t(σ)``/``σ(t)`` = the model schedule's maps):

    * ``karras`` – Karras et al. 2022 eq. 5, ρ = 7, between the schedule's σ_min and σ_max.
    * ``exponential`` – evenly spaced in log σ between σ_max and σ_min.
    * ``normal`` – ``σ(linspace(t(σ_max), t(σ_min), n))``.
    * ``sgm_uniform`` – ``σ(linspace(t(σ_max), t(σ_min), n + 1)[:-1])`` (never reaches σ_min).
    * ``simple`` – every ``(T/n)``-th trained sigma from the top (index ``T−1−floor(k·T/n)``).
    * ``ddim_uniform`` – trained timesteps ``1 + k·(T//n)``, k < n, descending (DDIM's uniform
      spacing, Song et al. 2021, = diffusers' "leading" spacing with offset 1). Fooocus walks
      the stride all the way up to T and so samples *more* than n steps whenever T//n does not
      divide T−1 evenly (e.g. 31 steps for 30); we keep exactly n steps (same sigmas as Fooocus
      from the bottom up).
    * ``turbo`` – SD-Turbo's timesteps 999, 899, … (100 apart). Only defined up to 10 steps;
      beyond that it becomes ``simple`` (which equals turbo at exactly 10 steps).
    * ``align_your_steps`` – Sabour et al. 2024's SDXL levels, log-linearly interpolated to
      ``n + 1`` points, last one set to 0.
    * ``lcm`` / ``tcd`` – ``sgm_uniform`` over the 50-sigma :class:`DistilledSchedule` (the
      pipeline must also use :func:`model_schedule_for` for the model).
    * ``edm_playground_v2.5`` – not implemented yet (:class:`NotImplementedError`).

    Fooocus quirk, deliberately *not* replicated: Fooocus' sampler accepts only ComfyUI's own
    scheduler names, so ``turbo`` and ``align_your_steps`` silently sample with ``normal``
    (only its Brownian-tree range uses the real schedule). We sample the schedule the user
    asked for, which is why people pick them; images therefore differ from Fooocus for these
    two names.

    ``denoise < 1`` (img2img): build ``int(steps / denoise)`` steps and keep the last
    ``steps + 1`` sigmas (Fooocus/ComfyUI; denoise above 0.9999 counts as 1).
    ``discard_penultimate`` builds one step more and drops the second-to-last sigma, which
    Fooocus does for ``dpm_2``, ``dpm_2_ancestral``, ``uni_pc`` and ``uni_pc_bh2`` (see
    :func:`fooocus_core.sampling.samplers.discards_penultimate_sigma`).
    """
    _check_scheduler(scheduler)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if not 0.0 < denoise <= 1.0:
        raise ValueError(f"denoise must be in (0, 1], got {denoise}")
    total = steps if denoise > 0.9999 else int(steps / denoise)
    if discard_penultimate:
        sigmas = _full_schedule(scheduler, schedule, total + 1)
        sigmas = torch.cat([sigmas[:-2], sigmas[-1:]])
    else:
        sigmas = _full_schedule(scheduler, schedule, total)
    return sigmas[-(steps + 1) :].clone()
