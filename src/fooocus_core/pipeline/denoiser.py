"""The SDXL UNet as an x-space denoiser with Fooocus' guidance.

Karras et al. 2022 ("Elucidating the Design Space of Diffusion-Based Generative Models") write an
epsilon-prediction network as a denoiser ``D(x, sigma) = x - sigma * eps(x / sqrt(sigma^2 + 1), t)``
where ``t`` is the discrete training timestep nearest to ``sigma``. Samplers only see ``D``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from fooocus_core.pipeline import adm
from fooocus_core.pipeline.guidance import guide
from fooocus_core.sampling.schedules import ModelSchedule


@dataclass(frozen=True)
class BranchConditioning:
    """Text and size conditioning of one CFG branch (positive or negative)."""

    hidden: torch.Tensor  # [1, tokens, width]
    pooled: torch.Tensor  # [1, pooled width]
    time_ids_emphasized: torch.Tensor  # [6] (SDXL base) or [5] (SDXL refiner)
    time_ids_consistent: torch.Tensor  # [6] or [5]

    def time_ids(self, timestep: float, adm_scaler_end: float) -> torch.Tensor:
        if adm.emphasis_active(timestep, adm_scaler_end):
            return self.time_ids_emphasized
        return self.time_ids_consistent


@dataclass(frozen=True)
class GuidanceSettings:
    """Fooocus' per-step guidance parameters."""

    cfg: float
    adaptive_cfg: float
    sharpness: float
    adm_scaler_end: float


def _repeat_to(hidden: torch.Tensor, tokens: int) -> torch.Tensor:
    return hidden.repeat(1, tokens // hidden.shape[1], 1)


def pair_hidden(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Repeat the shorter token sequence so both reach the least common multiple length."""
    tokens = math.lcm(a.shape[1], b.shape[1])
    return _repeat_to(a, tokens), _repeat_to(b, tokens)


class UNetDenoiser:
    """Callable ``(x, sigma) -> denoised x0`` running one batched UNet pass per step."""

    def __init__(
        self,
        unet: torch.nn.Module,
        schedule: ModelSchedule,
        positive: BranchConditioning,
        negative: BranchConditioning | None,
        settings: GuidanceSettings,
    ) -> None:
        self.unet = unet
        self.schedule = schedule
        self.positive = positive
        self.negative = negative
        self.settings = settings
        param = next(unet.parameters())
        self.device, self.dtype = param.device, param.dtype
        branches = [positive] if negative is None else [positive, negative]
        hidden = [b.hidden for b in branches]
        if len(hidden) == 2:
            hidden = list(pair_hidden(hidden[0], hidden[1]))
        self._hidden = torch.cat(hidden).to(self.device, self.dtype)
        self._pooled = torch.cat([b.pooled for b in branches]).to(self.device, self.dtype)
        self._branches = branches
        # Both variants on the device up front: no host-to-device copy inside the step loop.
        self._time_ids = {
            emphasized: torch.stack(
                [b.time_ids_emphasized if emphasized else b.time_ids_consistent for b in branches]
            ).to(self.device, self.dtype)
            for emphasized in (True, False)
        }

    def timestep(self, sigma: torch.Tensor) -> float:
        """The discrete timestep nearest to ``sigma``."""
        return float(self.schedule.timestep(sigma))

    def progress(self, sigma: torch.Tensor) -> float:
        """``1 - t/999``: 0 at the first step, 1 at the last."""
        return 1.0 - self.timestep(sigma) / 999.0

    def predict(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """Denoised estimates for each branch, stacked on the batch axis as [pos..., neg...]."""
        sigma = sigma.to(torch.float32)
        t = self.timestep(sigma)
        n = len(self._branches)
        batch = x.shape[0]
        x_in = (x / torch.sqrt(sigma**2 + 1.0)).repeat(n, 1, 1, 1)
        time_ids = self._time_ids[adm.emphasis_active(t, self.settings.adm_scaler_end)]
        eps = self.unet(
            x_in.to(self.device, self.dtype),
            torch.full((), t, device=self.device, dtype=torch.float32),
            encoder_hidden_states=self._hidden.repeat_interleave(batch, dim=0),
            added_cond_kwargs={
                "text_embeds": self._pooled.repeat_interleave(batch, dim=0),
                "time_ids": time_ids.repeat_interleave(batch, dim=0),
            },
            return_dict=False,
        )[0].to(x.dtype)
        return self.schedule.calculate_denoised(sigma, eps, x.repeat(n, 1, 1, 1))

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            x0 = self.predict(x, sigma)
            if self.negative is None:
                return x0
            x0_pos, x0_neg = x0.chunk(2)
            s = self.settings
            return guide(
                x,
                x0_pos,
                x0_neg,
                cfg=s.cfg,
                adaptive_cfg=s.adaptive_cfg,
                sharpness=s.sharpness,
                progress=self.progress(sigma),
            )
