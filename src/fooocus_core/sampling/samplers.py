"""The 24 samplers Fooocus offers, written from their papers in Karras' x-space.

Notation: ``x = x0 + σ·ε``; the *denoiser* ``D(x, σ)`` returns the model's estimate of ``x0``;
``d = (x − D)/σ`` is the probability-flow ODE derivative ``dx/dσ`` (Karras et al. 2022);
``λ = −log σ`` is the half log-SNR used by the exponential integrators (DPM-Solver, Lu et al.
2022; DPM-Solver++, Lu et al. 2022b; UniPC, Zhao et al. 2023), with step ``h = λ_next − λ``.
All scalar coefficients are computed in float64 Python floats; tensors keep ``x``'s dtype.

Entry point: :func:`sample`. Rules shared by every sampler:

* ``sigmas`` is the decreasing schedule (usually ending with 0, from
  :func:`~fooocus_core.sampling.schedules.make_sigmas`); ``x`` is already noised to
  ``sigmas[0]``. Each sigma interval ``i`` (``0 ≤ i < len(sigmas) − 1``) is one *step*.
* The denoiser receives a 0-dim float32 CPU tensor as sigma.
* **Callback rule**: ``callback(i, x_i, denoised_i)`` is called exactly once per step, in order,
  after the model call made at the start of step ``i`` (at ``σ = sigmas[i]``); ``x_i`` is the
  latent that call was evaluated on (the state *before* the step's update) and ``denoised_i``
  its x0 prediction. Samplers with extra model calls (``heun``, ``dpm_2``, ``dpmpp_sde``...)
  call it only for the first call of each step. Exceptions (cancellation) propagate and abort
  sampling. Special cases: ``dpm_fast`` makes exactly ``steps`` model calls and reports each
  one; ``dpm_adaptive`` reports step ``i`` once its adaptive integration has passed
  ``sigmas[i + 1]`` (all remaining steps at the end), with its current latent and latest
  prediction; ``restart``
  reports each of its ``steps`` Heun steps; ``uni_pc`` reports the model call made at
  ``sigmas[i]`` (inside the previous step's corrector) with the corrected latent.
* Stochastic samplers draw noise only from ``noise_sampler(sigma, sigma_next)``; it is required
  for them (:data:`STOCHASTIC_SAMPLERS`). The SDE samplers (:data:`SDE_SAMPLERS`) are meant to
  get a :class:`~fooocus_core.sampling.noise.BrownianTreeNoiseSampler`, the others a
  :class:`~fooocus_core.sampling.noise.SeededNoiseSampler` (``restart`` *must* get fresh noise:
  it re-noises the same sigma interval several times).
* ``*_gpu`` names are the same math as their plain twins (in Fooocus they only move the
  Brownian tree to the GPU); ``ddim`` is ``euler``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import torch
from numpy.polynomial import Polynomial
from torch import Tensor

from .names import SAMPLER_NAMES
from .schedules import DiscreteSchedule, ModelSchedule, karras_sigmas

__all__ = [
    "DISCARD_PENULTIMATE_SIGMA_SAMPLERS",
    "SAMPLER_NAMES",
    "SDE_SAMPLERS",
    "STOCHASTIC_SAMPLERS",
    "Denoiser",
    "NoiseSampler",
    "StepCallback",
    "discards_penultimate_sigma",
    "sample",
]

Denoiser = Callable[[Tensor, Tensor], Tensor]
StepCallback = Callable[[int, Tensor, Tensor], None]
NoiseSampler = Callable[[Tensor, Tensor], Tensor]


SDE_SAMPLERS: Final = frozenset(
    {
        "dpmpp_sde",
        "dpmpp_sde_gpu",
        "dpmpp_2m_sde",
        "dpmpp_2m_sde_gpu",
        "dpmpp_3m_sde",
        "dpmpp_3m_sde_gpu",
    }
)
STOCHASTIC_SAMPLERS: Final = SDE_SAMPLERS | frozenset(
    {"euler_ancestral", "dpm_2_ancestral", "dpmpp_2s_ancestral", "ddpm", "lcm", "tcd", "restart"}
)
DISCARD_PENULTIMATE_SIGMA_SAMPLERS: Final = frozenset(
    {"dpm_2", "dpm_2_ancestral", "uni_pc", "uni_pc_bh2"}
)

TCD_GAMMA: Final = 0.3  # Fooocus' default "eta" (TCD's gamma, Zheng et al. 2024)
LMS_ORDER: Final = 4
# dpm_adaptive error control (Fooocus' defaults)
ADAPTIVE_RTOL: Final = 0.05
ADAPTIVE_ATOL: Final = 0.0078
ADAPTIVE_H_INIT: Final = 0.05
ADAPTIVE_MAX_ATTEMPTS: Final = 2000


def discards_penultimate_sigma(name: str) -> bool:
    """Whether Fooocus builds one extra step and drops the second-to-last sigma for ``name``.

    Pass the result as ``make_sigmas(..., discard_penultimate=...)``.
    """
    _check_name(name)
    return name in DISCARD_PENULTIMATE_SIGMA_SAMPLERS


def _check_name(name: str) -> None:
    if name not in SAMPLER_NAMES:
        raise ValueError(f"unknown sampler {name!r}; valid: {', '.join(SAMPLER_NAMES)}")


@dataclass
class _Run:
    """What a sampler needs besides ``x`` and the sigmas."""

    denoiser: Denoiser
    callback: StepCallback | None
    noise_sampler: NoiseSampler | None
    schedule: ModelSchedule

    def denoise(self, x: Tensor, sigma: float) -> Tensor:
        return self.denoiser(x, torch.tensor(sigma, dtype=torch.float32))

    def report(self, i: int, x: Tensor, denoised: Tensor) -> None:
        if self.callback is not None:
            self.callback(i, x, denoised)

    def noise(self, sigma: float, sigma_next: float) -> Tensor:
        assert self.noise_sampler is not None  # checked in sample()
        return self.noise_sampler(
            torch.tensor(sigma, dtype=torch.float32), torch.tensor(sigma_next, dtype=torch.float32)
        )

    def step(self, i: int, x: Tensor, sigma: float) -> Tensor:
        """Model call at the start of step ``i``, reported through the callback."""
        denoised = self.denoise(x, sigma)
        self.report(i, x, denoised)
        return denoised


SamplerFn = Callable[[_Run, Tensor, list[float]], Tensor]


def _to_d(x: Tensor, denoised: Tensor, sigma: float) -> Tensor:
    return (x - denoised) / sigma


def _lam(sigma: float) -> float:
    return -math.log(sigma)


def _ancestral_split(sigma: float, sigma_next: float, eta: float = 1.0) -> tuple[float, float]:
    """(σ_down, σ_up) of an ancestral step: deterministic part to σ_down, then fresh noise σ_up.

    σ_up² = σ_next²(σ² − σ_next²)/σ² (the DDPM posterior variance in x-space), σ_down² =
    σ_next² − σ_up², so the marginal noise level after the step is σ_next.
    """
    if sigma_next == 0.0:
        return 0.0, 0.0
    up = min(sigma_next, eta * math.sqrt(sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2))
    return math.sqrt(sigma_next**2 - up**2), up


def _dpmpp_first_order(x: Tensor, denoised: Tensor, sigma: float, sigma_next: float) -> Tensor:
    """DPM-Solver++(1) = DDIM = Euler in x-space: ``(σ'/σ)·x + (1 − σ'/σ)·D``."""
    ratio = sigma_next / sigma
    return ratio * x + (1.0 - ratio) * denoised


# --- Karras et al. 2022 (EDM) ODE solvers -------------------------------------------------


def _euler(run: _Run, x: Tensor, sigmas: list[float]) -> Tensor:
    """Euler's method on the probability-flow ODE (Karras et al. 2022, Alg. 2 first order)."""
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = run.step(i, x, sigma)
        x = x + _to_d(x, denoised, sigma) * (sigma_next - sigma)
    return x


def _euler_ancestral(run: _Run, x: Tensor, sigmas: list[float]) -> Tensor:
    """Euler step to σ_down plus fresh noise σ_up (ancestral sampling, Song et al. 2021)."""
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = run.step(i, x, sigma)
        down, up = _ancestral_split(sigma, sigma_next)
        x = x + _to_d(x, denoised, sigma) * (down - sigma)
        if sigma_next > 0.0:
            x = x + run.noise(sigma, sigma_next) * up
    return x


def _heun(run: _Run, x: Tensor, sigmas: list[float]) -> Tensor:
    """Heun's 2nd-order method (Karras et al. 2022, Alg. 1); Euler on the step to σ = 0."""
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = run.step(i, x, sigma)
        d = _to_d(x, denoised, sigma)
        dt = sigma_next - sigma
        if sigma_next == 0.0:
            x = x + d * dt
            continue
        x_euler = x + d * dt
        d_next = _to_d(x_euler, run.denoise(x_euler, sigma_next), sigma_next)
        x = x + (d + d_next) * (dt / 2)
    return x


def _heunpp2(run: _Run, x: Tensor, sigmas: list[float]) -> Tensor:
    """Heun++ (Fooocus/ComfyUI ``heunpp2``): a 3-stage Euler/Heun blend.

    Each step takes the Euler derivative ``d1`` at σ_i and, looking ahead, ``d2`` at σ_{i+1}
    (after an Euler step) and ``d3`` at σ_{i+2} (after a second Euler step), and moves with
    ``w1·d1 + w2·d2 + w3·d3`` where ``w2 = σ_{i+1}/(3σ_0)``, ``w3 = σ_{i+2}/(3σ_0)``,
    ``w1 = 1 − w2 − w3``. With only one look-ahead point left it uses two derivatives with
    ``w2 = σ_{i+1}/(2σ_0)``; the last step is Euler.
    """
    n = len(sigmas) - 1
    for i in range(n):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = run.step(i, x, sigma)
        d = _to_d(x, denoised, sigma)
        dt = sigma_next - sigma
        if i + 1 == n:
            x = x + d * dt
            continue
        x2 = x + d * dt
        d2 = _to_d(x2, run.denoise(x2, sigma_next), sigma_next)
        if i + 2 == n:
            w2 = sigma_next / (2 * sigmas[0])
            x = x + (d * (1 - w2) + d2 * w2) * dt
            continue
        sigma_after = sigmas[i + 2]
        x3 = x2 + d2 * (sigma_after - sigma_next)
        d3 = _to_d(x3, run.denoise(x3, sigma_after), sigma_after)
        w2 = sigma_next / (3 * sigmas[0])
        w3 = sigma_after / (3 * sigmas[0])
        x = x + (d * (1 - w2 - w3) + d2 * w2 + d3 * w3) * dt
    return x


def _log_midpoint(a: float, b: float) -> float:
    return math.exp((math.log(a) + math.log(b)) / 2)


def _dpm2_update(run: _Run, x: Tensor, d: Tensor, sigma: float, target: float) -> Tensor:
    """Midpoint (in log σ) second-order step from σ to ``target`` (Karras et al. 2022's DPM2)."""
    sigma_mid = _log_midpoint(sigma, target)
    x_mid = x + d * (sigma_mid - sigma)
    d_mid = _to_d(x_mid, run.denoise(x_mid, sigma_mid), sigma_mid)
    return x + d_mid * (target - sigma)


def _dpm_2(run: _Run, x: Tensor, sigmas: list[float]) -> Tensor:
    """DPM-Solver-2-style midpoint method of Karras et al. 2022 (Euler on the step to 0)."""
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = run.step(i, x, sigma)
        d = _to_d(x, denoised, sigma)
        if sigma_next == 0.0:
            x = x + d * (sigma_next - sigma)
        else:
            x = _dpm2_update(run, x, d, sigma, sigma_next)
    return x


def _dpm_2_ancestral(run: _Run, x: Tensor, sigmas: list[float]) -> Tensor:
    """DPM2 step to σ_down, then fresh noise σ_up."""
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = run.step(i, x, sigma)
        d = _to_d(x, denoised, sigma)
        down, up = _ancestral_split(sigma, sigma_next)
        # σ_down = 0 only on the step to σ = 0: Euler there, as in dpm_2
        x = x - d * sigma if down == 0.0 else _dpm2_update(run, x, d, sigma, down)
        if sigma_next > 0.0:
            x = x + run.noise(sigma, sigma_next) * up
    return x


def _lms_coefficients(sigmas: list[float], i: int, order: int) -> list[float]:
    """∫ over [σ_i, σ_{i+1}] of the Lagrange basis polynomials on σ_i, σ_{i−1}, … (exact)."""
    nodes = [sigmas[i - j] for j in range(order)]
    coefficients = []
    for j, node in enumerate(nodes):
        basis = Polynomial([1.0])
        for k, other in enumerate(nodes):
            if k != j:
                basis = basis * Polynomial([-other, 1.0]) / (node - other)
        antiderivative = basis.integ()
        coefficients.append(float(antiderivative(sigmas[i + 1]) - antiderivative(sigmas[i])))
    return coefficients


def _lms(run: _Run, x: Tensor, sigmas: list[float]) -> Tensor:
    """Linear multistep (Adams–Bashforth in σ, order 4) on the ODE derivatives ``d``."""
    history: list[Tensor] = []
    for i in range(len(sigmas) - 1):
        denoised = run.step(i, x, sigmas[i])
        history.insert(0, _to_d(x, denoised, sigmas[i]))
        del history[LMS_ORDER:]
        coefficients = _lms_coefficients(sigmas, i, len(history))
        x = x + sum(
            (c * d for c, d in zip(coefficients, history, strict=True)), torch.zeros_like(x)
        )
    return x


# --- DPM-Solver (Lu et al. 2022), noise prediction, for dpm_fast / dpm_adaptive ------------


class _DPMSolver:
    """Single-step DPM-Solver-1/2/3 updates in λ, with ε = (x − D)/σ and σ(λ) = e^−λ.

    ``on_eval(x, denoised)`` is called after every model evaluation (to count/report them).
    Stage evaluations are cached per step so the 2nd- and 3rd-order updates share them.
    """

    def __init__(self, run: _Run, on_eval: Callable[[Tensor, Tensor], None]) -> None:
        self._run = run
        self._on_eval = on_eval
        self._cache: dict[str, Tensor] = {}

    def new_step(self) -> None:
        self._cache = {}

    def eps(self, key: str, x: Tensor, lam: float) -> Tensor:
        if key not in self._cache:
            sigma = math.exp(-lam)
            denoised = self._run.denoise(x, sigma)
            self._on_eval(x, denoised)
            self._cache[key] = _to_d(x, denoised, sigma)
        return self._cache[key]

    def order1(self, x: Tensor, lam: float, lam_next: float) -> Tensor:
        h = lam_next - lam
        return x - math.exp(-lam_next) * math.expm1(h) * self.eps("eps", x, lam)

    def order2(self, x: Tensor, lam: float, lam_next: float, r1: float = 0.5) -> Tensor:
        h = lam_next - lam
        eps = self.eps("eps", x, lam)
        lam_1 = lam + r1 * h
        u1 = x - math.exp(-lam_1) * math.expm1(r1 * h) * eps
        eps_1 = self.eps(f"eps_r{r1}", u1, lam_1)
        sigma_next = math.exp(-lam_next)
        return (
            x
            - sigma_next * math.expm1(h) * eps
            - sigma_next / (2 * r1) * math.expm1(h) * (eps_1 - eps)
        )

    def order3(self, x: Tensor, lam: float, lam_next: float) -> Tensor:
        r1, r2 = 1 / 3, 2 / 3
        h = lam_next - lam
        eps = self.eps("eps", x, lam)
        lam_1, lam_2 = lam + r1 * h, lam + r2 * h
        u1 = x - math.exp(-lam_1) * math.expm1(r1 * h) * eps
        eps_1 = self.eps(f"eps_r{r1}", u1, lam_1)
        sigma_2 = math.exp(-lam_2)
        u2 = (
            x
            - sigma_2 * math.expm1(r2 * h) * eps
            - sigma_2 * (r2 / r1) * (math.expm1(r2 * h) / (r2 * h) - 1) * (eps_1 - eps)
        )
        eps_2 = self.eps(f"eps_r{r2}", u2, lam_2)
        sigma_next = math.exp(-lam_next)
        return (
            x
            - sigma_next * math.expm1(h) * eps
            - sigma_next / r2 * (math.expm1(h) / h - 1) * (eps_2 - eps)
        )


def _positive_range(sigmas: list[float]) -> tuple[float, float]:
    positive = [s for s in sigmas if s > 0.0]
    return min(positive), max(positive)


def _dpm_fast(run: _Run, x: Tensor, sigmas: list[float]) -> Tensor:
    """DPM-Solver-fast (Lu et al. 2022, §3.4): ``steps`` model calls, uniform in λ.

    Between λ(σ_max) and λ(σ_min) (first sigma, last nonzero sigma; the intermediate sigmas
    are ignored) it takes K = steps//3 + 1 equal steps in λ: all of order 3 except the end,
    which is orders (2, 1) when ``steps`` is a multiple of 3 and one step of order
    ``steps % 3`` otherwise. The result is at σ_min, not denoised to 0 (as in Fooocus).
    """
    steps = len(sigmas) - 1
    sigma_min, sigma_max = _positive_range(sigmas)
    if sigma_min >= sigma_max:  # a single noise level: nothing to integrate in λ
        return _euler(run, x, sigmas)
    calls = 0

    def on_eval(x_eval: Tensor, denoised: Tensor) -> None:
        nonlocal calls
        run.report(calls, x_eval, denoised)
        calls += 1

    solver = _DPMSolver(run, on_eval)
    k = steps // 3 + 1
    orders = [3] * (k - 2) + [2, 1] if steps % 3 == 0 else [3] * (k - 1) + [steps % 3]
    lams = np.linspace(_lam(sigma_max), _lam(sigma_min), len(orders) + 1).tolist()
    updates = {1: solver.order1, 2: solver.order2, 3: solver.order3}
    for j, order in enumerate(orders):
        solver.new_step()
        x = updates[order](x, lams[j], lams[j + 1])
    return x


@dataclass
class _StepSizeController:
    """Integral step-size controller with a soft limiter (Söderlind & Wang 2006).

    New step ``h·κ(ε⁻¹ᐟᵏ)`` with ``κ(u) = 1 + atan(u − 1)``; a step is accepted when that factor
    is at least ``accept_safety`` (0.81 = 0.9², i.e. error about ≤ 1).
    """

    h: float
    order: float
    accept_safety: float = 0.81

    def propose(self, error: float) -> bool:
        factor = (1.0 / (error + 1e-8)) ** (1.0 / self.order)
        factor = 1.0 + math.atan(factor - 1.0)
        self.h *= factor
        return factor >= self.accept_safety


def _dpm_adaptive(run: _Run, x: Tensor, sigmas: list[float]) -> Tensor:
    """Adaptive-step DPM-Solver-23 (Lu et al. 2022, Appendix: DPM-Solver-adaptive).

    Integrates from σ_max to σ_min (first sigma, last nonzero sigma) with embedded orders 2 and
    3 (shared evaluations), rtol 0.05, atol 0.0078, h_init 0.05; the step error is the RMS of
    ``(x_3 − x_2)/max(atol, rtol·max(|x_2|, |x_prev|))``. Result at σ_min (as in Fooocus).
    """
    sigma_min, sigma_max = _positive_range(sigmas)
    if sigma_min >= sigma_max:  # a single noise level: nothing to integrate in λ
        return _euler(run, x, sigmas)
    rtol, atol, lam_end = ADAPTIVE_RTOL, ADAPTIVE_ATOL, _lam(sigma_min)
    n = len(sigmas) - 1
    latest: Tensor | None = None

    def on_eval(x_eval: Tensor, denoised: Tensor) -> None:
        nonlocal latest
        latest = denoised

    reported = 0

    def report_until(sigma: float, x_now: Tensor, final: bool) -> None:
        nonlocal reported
        while reported < n and (final or sigmas[reported + 1] >= sigma * (1 - 1e-6)):
            assert latest is not None
            run.report(reported, x_now, latest)
            reported += 1

    solver = _DPMSolver(run, on_eval)
    controller = _StepSizeController(h=ADAPTIVE_H_INIT, order=3)
    lam = _lam(sigma_max)
    x_prev = x
    attempts = 0
    while lam < lam_end - 1e-5:
        attempts += 1
        if attempts > ADAPTIVE_MAX_ATTEMPTS:
            raise RuntimeError(f"dpm_adaptive: no convergence in {ADAPTIVE_MAX_ATTEMPTS} attempts")
        solver.new_step()
        lam_next = min(lam_end, lam + controller.h)
        x_low = solver.order2(x, lam, lam_next, r1=1 / 3)
        x_high = solver.order3(x, lam, lam_next)
        scale = torch.clamp(rtol * torch.maximum(x_low.abs(), x_prev.abs()), min=atol)
        error = float(torch.linalg.vector_norm((x_low - x_high) / scale)) / math.sqrt(x.numel())
        if not math.isfinite(error):
            raise FloatingPointError("dpm_adaptive: the model produced non-finite values")
        if controller.propose(error):
            x_prev, x, lam = x_low, x_high, lam_next
            report_until(math.exp(-lam), x, final=False)
    report_until(0.0, x, final=True)
    return x


# --- DPM-Solver++ family (Lu et al. 2022b), data prediction --------------------------------


def _dpmpp_2s_ancestral(run: _Run, x: Tensor, sigmas: list[float]) -> Tensor:
    """DPM-Solver++(2S) (r = 1/2) to σ_down, then fresh noise σ_up."""
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = run.step(i, x, sigma)
        down, up = _ancestral_split(sigma, sigma_next)
        if down == 0.0:
            x = x + _to_d(x, denoised, sigma) * (down - sigma)
        else:
            sigma_mid = _log_midpoint(sigma, down)
            x_mid = _dpmpp_first_order(x, denoised, sigma, sigma_mid)
            x = _dpmpp_first_order(x, run.denoise(x_mid, sigma_mid), sigma, down)
        if sigma_next > 0.0:
            x = x + run.noise(sigma, sigma_next) * up
    return x


def _dpmpp_sde(run: _Run, x: Tensor, sigmas: list[float]) -> Tensor:
    """Stochastic DPM-Solver++(2S), r = 1/2, η = 1 (the "DPM++ SDE" of k-diffusion/Fooocus).

    Stage 1 goes ancestrally from σ to the log-midpoint σ_s (first-order DPM-Solver++ to
    σ_down(σ→σ_s), then Brownian noise σ_up); stage 2 goes ancestrally from σ to σ_next using
    the midpoint prediction. Noise for both stages comes from ``noise_sampler`` on the
    intervals (σ, σ_s) and (σ, σ_next) — with a Brownian tree they are increments of one path.
    """
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = run.step(i, x, sigma)
        if sigma_next == 0.0:
            x = x + _to_d(x, denoised, sigma) * (sigma_next - sigma)
            continue
        sigma_mid = _log_midpoint(sigma, sigma_next)
        down, up = _ancestral_split(sigma, sigma_mid)
        x_mid = _dpmpp_first_order(x, denoised, sigma, down)
        x_mid = x_mid + run.noise(sigma, sigma_mid) * up
        denoised_mid = run.denoise(x_mid, sigma_mid)
        down, up = _ancestral_split(sigma, sigma_next)
        x = _dpmpp_first_order(x, denoised_mid, sigma, down)
        x = x + run.noise(sigma, sigma_next) * up
    return x


def _dpmpp_2m(run: _Run, x: Tensor, sigmas: list[float]) -> Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022b, Alg. 2); first order on the first step and to σ = 0."""
    previous: Tensor | None = None
    h_last = 0.0
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = run.step(i, x, sigma)
        if sigma_next == 0.0:
            x = denoised
        else:
            h = _lam(sigma_next) - _lam(sigma)
            target = denoised
            if previous is not None:
                r = h_last / h
                target = denoised * (1 + 1 / (2 * r)) - previous * (1 / (2 * r))
            x = _dpmpp_first_order(x, target, sigma, sigma_next)
            h_last = h
        previous = denoised
    return x


def _dpmpp_2m_sde(run: _Run, x: Tensor, sigmas: list[float]) -> Tensor:
    """SDE-DPM-Solver++(2M) (Lu et al. 2022b, App.), η = 1, midpoint correction.

    ``x' = (σ'/σ)e^{−h}·x + (1 − e^{−2h})·D + ½(1 − e^{−2h})·(D − D_prev)/r
    + σ'·sqrt(1 − e^{−2h})·z``, with ``r = h_prev/h``.
    """
    previous: Tensor | None = None
    h_last = 0.0
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = run.step(i, x, sigma)
        if sigma_next == 0.0:
            x = denoised
        else:
            h = _lam(sigma_next) - _lam(sigma)
            gain = -math.expm1(-2 * h)
            x = (sigma_next / sigma * math.exp(-h)) * x + gain * denoised
            if previous is not None:
                x = x + (0.5 * gain * h / h_last) * (denoised - previous)
            x = x + run.noise(sigma, sigma_next) * (sigma_next * math.sqrt(gain))
            h_last = h
        previous = denoised
    return x


def _dpmpp_3m_sde(run: _Run, x: Tensor, sigmas: list[float]) -> Tensor:
    """SDE-DPM-Solver++(3M), η = 1: 3-step multistep exponential integrator with noise.

    With ``H = 2h``, ``φ2 = (e^{−H} − 1)/H + 1``, ``φ3 = φ2/H − ½`` and the backward
    differences ``D1`` (first derivative ×h at the current point) and ``D2`` of DPM-Solver++'s
    third-order multistep update: ``x' = e^{−H}·x + (1 − e^{−H})·D + φ2·D1 − φ3·D2
    + σ'·sqrt(1 − e^{−H})·z``. Note: integrating the quadratic term exactly would weight D2 by
    ``−2φ3``; we keep the coefficient of the published DPM-Solver++ update, which is what
    Fooocus (and every common implementation) samples with.
    """
    history: list[Tensor] = []
    h_history: list[float] = []
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = run.step(i, x, sigma)
        if sigma_next == 0.0:
            x = denoised
        else:
            h = _lam(sigma_next) - _lam(sigma)
            big_h = 2 * h
            x = math.exp(-big_h) * x - math.expm1(-big_h) * denoised
            phi_2 = math.expm1(-big_h) / big_h + 1
            if len(history) >= 2:
                r0, r1 = h_history[-1] / h, h_history[-2] / h
                d1_0 = (denoised - history[-1]) / r0
                d1_1 = (history[-1] - history[-2]) / r1
                d1 = d1_0 + (d1_0 - d1_1) * (r0 / (r0 + r1))
                d2 = (d1_0 - d1_1) / (r0 + r1)
                phi_3 = phi_2 / big_h - 0.5
                x = x + phi_2 * d1 - phi_3 * d2
            elif history:
                x = x + phi_2 * (denoised - history[-1]) * (h / h_history[-1])
            x = x + run.noise(sigma, sigma_next) * (sigma_next * math.sqrt(-math.expm1(-big_h)))
            h_history.append(h)
        history.append(denoised)
        del history[:-2], h_history[:-2]
    return x


# --- Distilled / DDPM-family samplers ------------------------------------------------------


def _ddpm(run: _Run, x: Tensor, sigmas: list[float]) -> Tensor:
    """Ancestral DDPM (Ho et al. 2020, Alg. 2) between arbitrary noise levels.

    With ``ᾱ = 1/(1 + σ²)``, ``α = ᾱ/ᾱ'``: ``x'_vp = (x_vp − (1−α)/sqrt(1−ᾱ)·ε)/sqrt(α) +
    sqrt(β̃)·z``, ``β̃ = (1−α)(1−ᾱ')/(1−ᾱ)``; converted to and from x-space (``x = x_vp/sqrt(ᾱ)``).
    """
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = run.step(i, x, sigma)
        eps = _to_d(x, denoised, sigma)
        acp, acp_next = 1 / (1 + sigma**2), 1 / (1 + sigma_next**2)
        alpha = acp / acp_next
        to_x = math.sqrt(1 + sigma_next**2)  # x-space factor at σ'
        mean = (math.sqrt(acp) * x - (1 - alpha) / math.sqrt(1 - acp) * eps) / math.sqrt(alpha)
        x = mean * to_x
        if sigma_next > 0.0:
            std = math.sqrt((1 - alpha) * (1 - acp_next) / (1 - acp))
            x = x + run.noise(sigma, sigma_next) * (std * to_x)
    return x


def _lcm(run: _Run, x: Tensor, sigmas: list[float]) -> Tensor:
    """LCM multistep consistency sampling (Luo et al. 2023, Alg. 1): x0, then re-noise to σ'."""
    for i in range(len(sigmas) - 1):
        sigma_next = sigmas[i + 1]
        x = run.step(i, x, sigmas[i])
        if sigma_next > 0.0:
            x = x + run.noise(sigmas[i], sigma_next) * sigma_next
    return x


def _discrete(schedule: ModelSchedule, name: str) -> DiscreteSchedule:
    if not isinstance(schedule, DiscreteSchedule):
        raise TypeError(f"sampler {name!r} needs a discrete model schedule")
    return schedule


def _tcd(run: _Run, x: Tensor, sigmas: list[float]) -> Tensor:
    """TCD strategic stochastic sampling (Zheng et al. 2024, Alg. 4), γ = 0.3.

    Predict ``(x0, ε)`` at σ, jump deterministically to the earlier training timestep
    ``s = floor((1 − γ)·t(σ'))`` (``x_s = x0 + σ_s·ε``), then forward-diffuse from σ_s to σ'
    with fresh noise. The last step (σ' = 0) returns x0 (Fooocus/diffusers stop at timestep 0,
    i.e. keep a residual 0.029·ε).
    """
    schedule = _discrete(run.schedule, "tcd")
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = run.step(i, x, sigma)
        if sigma_next == 0.0:
            x = denoised
            continue
        t_next = float(schedule.timestep(torch.tensor(sigma_next)))
        s = math.floor((1 - TCD_GAMMA) * t_next)
        sigma_s = min(float(schedule.train_sigmas[s]), sigma_next)
        x = denoised + _to_d(x, denoised, sigma) * sigma_s
        x = x + run.noise(sigma, sigma_next) * math.sqrt(sigma_next**2 - sigma_s**2)
    return x


# --- Restart (Xu et al. 2023) --------------------------------------------------------------


def _restart_plan(sigmas: list[float]) -> list[tuple[float, float]]:
    """(σ_from, σ_to) Heun steps of Restart sampling, ``len(sigmas) − 1`` of them.

    Fooocus' default plan: below 20 steps plain Heun. Otherwise the schedule is replaced by a
    Karras schedule (same ends) with R·K fewer steps (R = 9, K = 1; from 36 steps R = steps//4,
    K = 2), and after reaching the sigma nearest 0.1 the sampler jumps back to the sigma
    nearest 2 and redoes that range K times with R Karras steps. If that plan is impossible
    (no usable restart interval, or a schedule not ending at 0) we fall back to plain Heun.
    """
    steps = len(sigmas) - 1
    plain = list(itertools.pairwise(sigmas))
    if steps < 20 or sigmas[-1] != 0.0:
        return plain
    segment, repeats = (steps // 4, 2) if steps >= 36 else (9, 1)
    base = karras_sigmas(steps - segment * repeats, sigmas[-2], sigmas[0]).tolist()
    low = int(np.argmin([abs(s - 0.1) for s in base]))
    high = int(np.argmin([abs(s - 2.0) for s in base]))
    if low == 0 or high >= low:
        return plain
    restart = karras_sigmas(segment + 1, base[low], base[high]).tolist()[:-1]
    plan: list[tuple[float, float]] = []
    for i in range(len(base) - 1):
        plan.append((base[i], base[i + 1]))
        if i + 1 == low:
            plan.extend(list(itertools.pairwise(restart)) * repeats)
    return plan if len(plan) == steps else plain


def _restart(run: _Run, x: Tensor, sigmas: list[float]) -> Tensor:
    """Restart sampling (Xu et al. 2023): Heun ODE steps with forward noise jumps."""
    last: float | None = None
    for i, (sigma, sigma_next) in enumerate(_restart_plan(sigmas)):
        if last is not None and last < sigma:
            x = x + run.noise(last, sigma) * math.sqrt(sigma**2 - last**2)
        denoised = run.step(i, x, sigma)
        d = _to_d(x, denoised, sigma)
        dt = sigma_next - sigma
        if sigma_next == 0.0:
            x = x + d * dt
        else:
            x_euler = x + d * dt
            d_next = _to_d(x_euler, run.denoise(x_euler, sigma_next), sigma_next)
            x = x + (d + d_next) * (dt / 2)
        last = sigma_next
    return x


# --- UniPC (Zhao et al. 2023), data prediction ---------------------------------------------


@dataclass
class _UniPCStep:
    """One UniPC update from the newest history point (λ_0, m_0) to λ_t."""

    lam_t: float
    history: list[tuple[float, Tensor]]  # (λ, x0 prediction), oldest first, newest last
    bh2: bool

    def __post_init__(self) -> None:
        lam_0, self.m0 = self.history[-1]
        self.h = self.lam_t - lam_0
        hh = -self.h
        self.phi_1 = math.expm1(hh)
        self.b_h = math.expm1(hh) if self.bh2 else hh
        older = self.history[:-1][::-1]  # newest first
        self.rks = [(lam - lam_0) / self.h for lam, _ in older]
        self.diffs = [(m - self.m0) / rk for (_, m), rk in zip(older, self.rks, strict=True)]
        # b_k = k!·hh·φ_{k+1}(hh)/B(h), k = 1..p, via φ_{k+1} = (φ_k − 1/k!)/hh
        p = len(self.history)
        g, factorial, self.b = self.phi_1 / hh - 1, 1, []
        for k in range(1, p + 1):
            self.b.append(g * factorial / self.b_h)
            factorial *= k + 1
            g = g / hh - 1 / factorial

    def linear_part(self, x: Tensor, sigma_ratio: float) -> Tensor:
        return sigma_ratio * x - self.phi_1 * self.m0

    def _solve(self, rks: list[float]) -> list[float]:
        size = len(rks)
        matrix = np.array([[rk**k for rk in rks] for k in range(size)], dtype=np.float64)
        return np.linalg.solve(matrix, np.array(self.b[:size], dtype=np.float64)).tolist()

    def predictor(self, x_linear: Tensor) -> Tensor:
        """UniP-p: order p from the p−1 older points."""
        if not self.diffs:
            return x_linear
        coeffs = [0.5] if len(self.diffs) == 1 else self._solve(self.rks)
        correction = sum((c * d for c, d in zip(coeffs, self.diffs, strict=True)), 0 * self.m0)
        return x_linear - self.b_h * correction

    def corrector(self, x_linear: Tensor, m_t: Tensor) -> Tensor:
        """UniC-p: order p+1 using the new model output ``m_t`` at λ_t as well."""
        coeffs = [0.5] if not self.diffs else self._solve([*self.rks, 1.0])
        terms = [*self.diffs, m_t - self.m0]
        correction = sum((c * d for c, d in zip(coeffs, terms, strict=True)), 0 * self.m0)
        return x_linear - self.b_h * correction


def _unipc(run: _Run, x: Tensor, sigmas: list[float], bh2: bool) -> Tensor:
    """UniPC multistep (Zhao et al. 2023) with B(h) = h (bh1) or e^h − 1 (bh2), order ≤ 3.

    Order = min(3, steps − 1), warm-up with lower orders, lower order on the last steps
    ("lower_order_final"); every step but the last is corrected with UniC, whose model call at
    the new point is reused by the next step (one model call per step). The final step to σ = 0
    is the first-order limit, i.e. the last x0 prediction (Fooocus stops at σ = 0.001).
    """
    n = len(sigmas) - 1
    order = max(1, min(3, n - 1))
    history: list[tuple[float, Tensor]] = [(_lam(sigmas[0]), run.step(0, x, sigmas[0]))]
    for i in range(n):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        if sigma_next == 0.0:
            return history[-1][1]
        step = i + 1
        p = step if step < order else min(order, n + 1 - step)
        update = _UniPCStep(_lam(sigma_next), history[-p:], bh2)
        x_linear = update.linear_part(x, sigma_next / sigma)
        x_pred = update.predictor(x_linear)
        if step == n:
            return x_pred
        m_t = run.denoise(x_pred, sigma_next)
        x = update.corrector(x_linear, m_t)
        run.report(step, x, m_t)
        history = [*history[-2:], (_lam(sigma_next), m_t)]
    return x


def _uni_pc(run: _Run, x: Tensor, sigmas: list[float]) -> Tensor:
    return _unipc(run, x, sigmas, bh2=False)


def _uni_pc_bh2(run: _Run, x: Tensor, sigmas: list[float]) -> Tensor:
    return _unipc(run, x, sigmas, bh2=True)


_SAMPLERS: Final[dict[str, SamplerFn]] = {
    "euler": _euler,
    "euler_ancestral": _euler_ancestral,
    "heun": _heun,
    "heunpp2": _heunpp2,
    "dpm_2": _dpm_2,
    "dpm_2_ancestral": _dpm_2_ancestral,
    "lms": _lms,
    "dpm_fast": _dpm_fast,
    "dpm_adaptive": _dpm_adaptive,
    "dpmpp_2s_ancestral": _dpmpp_2s_ancestral,
    "dpmpp_sde": _dpmpp_sde,
    "dpmpp_sde_gpu": _dpmpp_sde,
    "dpmpp_2m": _dpmpp_2m,
    "dpmpp_2m_sde": _dpmpp_2m_sde,
    "dpmpp_2m_sde_gpu": _dpmpp_2m_sde,
    "dpmpp_3m_sde": _dpmpp_3m_sde,
    "dpmpp_3m_sde_gpu": _dpmpp_3m_sde,
    "ddpm": _ddpm,
    "lcm": _lcm,
    "tcd": _tcd,
    "restart": _restart,
    "ddim": _euler,
    "uni_pc": _uni_pc,
    "uni_pc_bh2": _uni_pc_bh2,
}


def _sigma_list(sigmas: Tensor | Sequence[float]) -> list[float]:
    values = torch.as_tensor(sigmas).detach().to("cpu", torch.float64)
    if values.ndim != 1:
        raise ValueError(f"sigmas must be 1-D, got shape {tuple(values.shape)}")
    result = values.tolist()
    if any(b > a for a, b in itertools.pairwise(result)) or any(s < 0 for s in result):
        raise ValueError("sigmas must be non-negative and non-increasing")
    if 0.0 in result[:-1]:
        raise ValueError("only the last sigma may be 0")
    return result


def sample(
    name: str,
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise_sampler: NoiseSampler | None = None,
    callback: StepCallback | None = None,
    schedule: DiscreteSchedule | None = None,
) -> Tensor:
    """Run sampler ``name`` from ``x`` (noised to ``sigmas[0]``) down ``sigmas``.

    Args:
        name: one of :data:`SAMPLER_NAMES`.
        denoiser: ``(x, sigma) -> x0`` (sigma: 0-dim float32 CPU tensor).
        x: initial latent ``[B, C, H, W]``, already ``x0 + sigmas[0]·noise``.
        sigmas: decreasing noise levels (see :func:`make_sigmas`); with fewer than two entries
            ``x`` is returned unchanged.
        noise_sampler: required for :data:`STOCHASTIC_SAMPLERS`.
        callback: ``(i, x_i, denoised_i)`` once per step (see the module docstring).
        schedule: model schedule, used by ``tcd`` (trained timesteps and sigmas); defaults to
            SDXL's :class:`DiscreteSchedule`. Pass the schedule the denoiser uses.

    Returns:
        The sampled latent (x-space, same shape/dtype as ``x``).
    """
    _check_name(name)
    if name in STOCHASTIC_SAMPLERS and noise_sampler is None:
        raise ValueError(f"sampler {name!r} is stochastic and needs a noise_sampler")
    sigma_values = _sigma_list(sigmas)
    if len(sigma_values) < 2:
        return x
    run = _Run(denoiser, callback, noise_sampler, schedule or DiscreteSchedule())
    return _SAMPLERS[name](run, x, sigma_values)
