"""Noise sources for the stochastic samplers.

Both classes implement the ``NoiseSampler`` protocol of :mod:`.samplers`: called with
``(sigma, sigma_next)`` they return unit-variance Gaussian noise shaped like the latent.

* :class:`BrownianTreeNoiseSampler` samples increments of one fixed Brownian path W(σ)
  (torchsde's Brownian tree, Li et al. 2020, "Scalable Gradients for Stochastic Differential
  Equations"). The noise for a step is ``(W(σ_next) − W(σ)) / sqrt(|σ_next − σ|)``, so it
  depends only on the seed and on the two noise levels, not on how many steps were taken or in
  which order: the same seed gives consistent images across step counts, and a refiner pass
  that continues the same sigma range continues the same path (Fooocus' "noise preserved").
  This is what the SDE samplers (``dpmpp_sde``, ``dpmpp_2m_sde``, ``dpmpp_3m_sde`` and their
  ``_gpu`` twins) are meant to get.
* :class:`SeededNoiseSampler` draws fresh i.i.d. noise from a seeded CPU generator on every
  call, which is what ancestral-type samplers (``euler_ancestral``, ``ddpm``, ``lcm``,
  ``restart``...) expect.

Both generate on the CPU in float32 by default, so results are bit-identical across processes
and machines for a given seed, and then move the noise to the latent's device and dtype.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torchsde
from torch import Tensor

__all__ = ["BrownianTreeNoiseSampler", "SeededNoiseSampler"]

# torchsde quantises every query time of a tree to this many decimals (its default tol 1e-6);
# we round the same way so clamping and the variance normalisation match what it samples.
_TREE_TOL = 1e-6
_TREE_DIGITS = 6


def _as_float(value: Tensor | float) -> float:
    return float(value.item()) if isinstance(value, Tensor) else float(value)


class BrownianTreeNoiseSampler:
    """Unit-variance increments of a seeded Brownian motion indexed by sigma.

    Args:
        x: a tensor shaped like the latent (only its shape, device and dtype are used).
        sigma_min: lower end of the sigma range that will be queried (Fooocus: the smallest
            sigma > 0 of the schedule actually sampled).
        sigma_max: upper end of the range (the largest sigma of that schedule).
        seed: entropy of the tree; an ``int`` drives one tree for the whole batch, a sequence
            of ints (one per batch element) drives one tree per sample, so that each image of a
            batch is reproducible on its own.
        cpu: build the tree on the CPU (default; bit-identical across processes and machines
            for a given torch/torchsde version). ``False`` builds
            it on ``x.device``, which is faster on a GPU but ties the noise to that device
            (Fooocus' ``*_gpu`` samplers do this).

    Query times are clamped into ``[sigma_min, sigma_max]`` and quantised to 1e-6 (torchsde's
    resolution); an interval that is empty at that resolution yields zero noise.
    """

    def __init__(
        self,
        x: Tensor,
        sigma_min: Tensor | float,
        sigma_max: Tensor | float,
        seed: int | Sequence[int],
        cpu: bool = True,
    ) -> None:
        t0, t1 = (
            round(t, _TREE_DIGITS) for t in sorted((_as_float(sigma_min), _as_float(sigma_max)))
        )
        if not t0 > 0.0:
            raise ValueError(f"sigma_min must be > 0, got {t0}")
        if t1 <= t0:
            # A one-step schedule has a single positive sigma: any positive-width tree works and
            # the sampler never queries it (no noise is added on the step that reaches 0).
            t1 = round(t0 + 1e-3, _TREE_DIGITS)
        self._t0, self._t1 = t0, t1
        self._shape = x.shape
        self._out_device, self._out_dtype = x.device, x.dtype
        device = torch.device("cpu") if cpu else x.device
        batched = not isinstance(seed, int)
        seeds = list(seed) if batched else [seed]
        if batched and len(seeds) != x.shape[0]:
            raise ValueError(f"got {len(seeds)} seeds for a batch of {x.shape[0]}")
        w0_shape = x.shape[1:] if batched else x.shape
        w0 = torch.zeros(w0_shape, device=device, dtype=torch.float32)
        self._batched = batched
        self._trees = [
            torchsde.BrownianTree(t0, w0, t1, entropy=int(s), tol=_TREE_TOL) for s in seeds
        ]

    @classmethod
    def from_sigmas(
        cls, x: Tensor, sigmas: Tensor, seed: int | Sequence[int], cpu: bool = True
    ) -> BrownianTreeNoiseSampler:
        """Tree spanning a schedule: smallest sigma > 0 to largest sigma (Fooocus' rule)."""
        positive = sigmas[sigmas > 0]
        if positive.numel() == 0:
            raise ValueError("the schedule has no positive sigma")
        return cls(x, positive.min(), positive.max(), seed, cpu=cpu)

    def _clamp(self, t: float) -> float:
        return min(max(round(t, _TREE_DIGITS), self._t0), self._t1)

    def __call__(self, sigma: Tensor | float, sigma_next: Tensor | float) -> Tensor:
        """Return ``(W(sigma_next) − W(sigma)) / sqrt(|sigma_next − sigma|)``."""
        ta = self._clamp(_as_float(sigma))
        tb = self._clamp(_as_float(sigma_next))
        lo, hi = (ta, tb) if ta <= tb else (tb, ta)
        if hi <= lo:
            return torch.zeros(self._shape, device=self._out_device, dtype=self._out_dtype)
        sign = 1.0 if tb >= ta else -1.0
        increments = [tree(lo, hi) for tree in self._trees]
        w = torch.stack(increments) if self._batched else increments[0]
        noise = w * (sign / (hi - lo) ** 0.5)
        return noise.to(device=self._out_device, dtype=self._out_dtype)


class SeededNoiseSampler:
    """Fresh standard-normal noise per call from a seeded CPU ``torch.Generator``.

    The sigma arguments are ignored: every call advances the generator. Same seed and same
    sequence of calls give bit-identical noise in any process.
    """

    def __init__(self, x: Tensor, seed: int) -> None:
        self._shape = x.shape
        self._device, self._dtype = x.device, x.dtype
        self._generator = torch.Generator(device="cpu")
        self._generator.manual_seed(int(seed))

    def __call__(self, sigma: Tensor | float, sigma_next: Tensor | float) -> Tensor:
        noise = torch.randn(self._shape, generator=self._generator, dtype=torch.float32)
        return noise.to(device=self._device, dtype=self._dtype)
