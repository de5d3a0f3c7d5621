"""Samplers and noise samplers (fooocus_core.sampling.samplers / .noise).

The toy problem: data ``x0 ~ N(MU, S²)`` per element. Its exact denoiser is the posterior mean
``D(x, σ) = MU + S²/(S² + σ²)·(x − MU)`` and the probability-flow ODE has the closed-form
solution ``x(σ) − MU = (x(σ0) − MU)·sqrt(S² + σ²)/sqrt(S² + σ0²)``, so ODE samplers can be
checked against the exact endpoint and SDE/ancestral samplers against the data distribution.
The same denoiser, wrapped as an ε-prediction model, drives diffusers' schedulers as oracles.
"""

from __future__ import annotations

import itertools
import math
import subprocess
import sys
from collections.abc import Callable, Iterator

import diffusers
import pytest
import torch
from diffusers.schedulers import (
    scheduling_ddpm,
    scheduling_euler_ancestral_discrete,
    scheduling_lcm,
    scheduling_tcd,
)
from torch import Tensor

import fooocus_core.sampling.samplers as samplers_module
from fooocus_core.sampling.noise import BrownianTreeNoiseSampler, SeededNoiseSampler
from fooocus_core.sampling.samplers import (
    SAMPLER_NAMES,
    SDE_SAMPLERS,
    STOCHASTIC_SAMPLERS,
    NoiseSampler,
    discards_penultimate_sigma,
    sample,
)
from fooocus_core.sampling.schedules import (
    DiscreteSchedule,
    DistilledSchedule,
    LCMSchedule,
    make_sigmas,
)

# diffusers 0.42 with numpy 2 warns inside its own schedulers; not ours.
pytestmark = [
    pytest.mark.filterwarnings(
        "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
    ),
    pytest.mark.filterwarnings("ignore:__array_wrap__ must accept context:DeprecationWarning"),
]

MU, S = 0.5, 0.8
SHAPE = (1, 4, 8, 8)
SDXL_BETAS = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
}
SCHEDULE = DiscreteSchedule()
ODE_SAMPLERS = [name for name in SAMPLER_NAMES if name not in STOCHASTIC_SAMPLERS]
ENDS_AT_SIGMA_MIN = {"dpm_fast", "dpm_adaptive"}


def gaussian_denoiser(x: Tensor, sigma: Tensor) -> Tensor:
    s2, sg2 = S * S, float(sigma) ** 2
    return MU + s2 / (s2 + sg2) * (x - MU)


def exact_ode_endpoint(x: Tensor, sigma_start: float, sigma_end: float = 0.0) -> Tensor:
    return MU + (x - MU) * math.sqrt(S * S + sigma_end**2) / math.sqrt(S * S + sigma_start**2)


def unit_noise(seed: int, shape: tuple[int, ...] = SHAPE) -> Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def sigmas_for(name: str, scheduler: str = "karras", steps: int = 30) -> Tensor:
    return make_sigmas(
        scheduler, SCHEDULE, steps, discard_penultimate=discards_penultimate_sigma(name)
    )


def noise_for(name: str, x: Tensor, sigmas: Tensor, seed: int = 7) -> NoiseSampler:
    if name in SDE_SAMPLERS:
        return BrownianTreeNoiseSampler.from_sigmas(x, sigmas, seed)
    return SeededNoiseSampler(x, seed)


def run(
    name: str,
    x: Tensor,
    sigmas: Tensor,
    *,
    seed: int = 7,
    denoiser: Callable[[Tensor, Tensor], Tensor] = gaussian_denoiser,
    callback: Callable[[int, Tensor, Tensor], None] | None = None,
) -> Tensor:
    return sample(
        name,
        denoiser,
        x,
        sigmas,
        noise_sampler=noise_for(name, x, sigmas, seed),
        callback=callback,
        schedule=SCHEDULE,
    )


def max_diff(a: Tensor, b: Tensor) -> float:
    return float((a - b).abs().max())


# --- names and arguments -------------------------------------------------------------------


def test_sampler_names_in_fooocus_order() -> None:
    assert len(SAMPLER_NAMES) == 24
    assert SAMPLER_NAMES[:4] == ("euler", "euler_ancestral", "heun", "heunpp2")
    assert SAMPLER_NAMES[-5:] == ("tcd", "restart", "ddim", "uni_pc", "uni_pc_bh2")


def test_unknown_sampler_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="euler, euler_ancestral"):
        sample("euler_a", gaussian_denoiser, torch.zeros(SHAPE), sigmas_for("euler"))


@pytest.mark.parametrize("name", sorted(STOCHASTIC_SAMPLERS))
def test_stochastic_samplers_require_a_noise_sampler(name: str) -> None:
    with pytest.raises(ValueError, match="noise_sampler"):
        sample(name, gaussian_denoiser, torch.zeros(SHAPE), sigmas_for(name))


def test_bad_sigmas_are_rejected() -> None:
    x = torch.zeros(SHAPE)
    with pytest.raises(ValueError, match="non-increasing"):
        sample("euler", gaussian_denoiser, x, torch.tensor([1.0, 2.0, 0.0]))
    with pytest.raises(ValueError, match="last sigma"):
        sample("euler", gaussian_denoiser, x, torch.tensor([1.0, 0.0, 0.0]))
    assert sample("euler", gaussian_denoiser, x, torch.tensor([1.0])) is x


def test_discard_penultimate_samplers() -> None:
    assert {n for n in SAMPLER_NAMES if discards_penultimate_sigma(n)} == {
        "dpm_2",
        "dpm_2_ancestral",
        "uni_pc",
        "uni_pc_bh2",
    }


# --- every sampler: shape, finiteness, callbacks, determinism ------------------------------


@pytest.mark.parametrize("name", SAMPLER_NAMES)
@pytest.mark.parametrize(
    ("scheduler", "steps"), [("karras", 30), ("normal", 8), ("sgm_uniform", 4), ("simple", 2)]
)
def test_every_sampler_runs_with_one_callback_per_step(
    name: str, scheduler: str, steps: int
) -> None:
    sigmas = sigmas_for(name, scheduler, steps)
    x = unit_noise(1) * sigmas[0]
    seen: list[int] = []

    def callback(i: int, x_i: Tensor, denoised: Tensor) -> None:
        assert x_i.shape == SHAPE and denoised.shape == SHAPE
        seen.append(i)

    out = run(name, x, sigmas, callback=callback)
    assert out.shape == SHAPE and out.dtype == x.dtype
    assert torch.isfinite(out).all()
    assert seen == list(range(steps))


@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_constant_denoiser_converges_to_its_x0(name: str) -> None:
    """With a point-mass data set every sampler must land on that point.

    The ones that stop at σ_min (dpm_fast, dpm_adaptive, as in Fooocus) keep σ_min·ε ≈ 0.03·ε.
    """
    target = unit_noise(2)
    sigmas = sigmas_for(name, "karras", 30)
    x = target + unit_noise(3) * sigmas[0]
    out = run(name, x, sigmas, denoiser=lambda x_, sigma: target)
    tolerance = 0.15 if name in ENDS_AT_SIGMA_MIN else 1e-4
    assert max_diff(out, target) < tolerance


# Max error against the exact ODE endpoint, 30 Karras steps (measured value in the comment).
ODE_TOLERANCE = {
    "euler": 0.25,  # 0.17 (first order)
    "ddim": 0.25,  # = euler
    "heunpp2": 0.25,  # 0.15 (its look-ahead weights are σ/3σ0: nearly Euler)
    "heun": 0.03,  # 0.015
    "dpm_2": 0.01,  # 0.005
    "lms": 0.01,  # 0.005
    "dpm_fast": 0.01,  # 0.0025
    "dpm_adaptive": 0.15,  # 0.10 (rtol 0.05 relative to |x| up to 40)
    "dpmpp_2m": 0.03,  # 0.015
    "uni_pc": 0.01,  # 0.0044
    "uni_pc_bh2": 0.01,  # 0.0046
}


@pytest.mark.parametrize("name", ODE_SAMPLERS)
def test_ode_samplers_approach_the_exact_solution(name: str) -> None:
    sigmas = sigmas_for(name)
    x = unit_noise(1) * sigmas[0]
    end = float(sigmas[-2]) if name in ENDS_AT_SIGMA_MIN else 0.0
    exact = exact_ode_endpoint(x, float(sigmas[0]), end)
    assert max_diff(run(name, x, sigmas), exact) < ODE_TOLERANCE[name]


@pytest.mark.parametrize(
    ("name", "low", "high"),
    [
        ("euler", 1.8, 2.2),  # first order
        ("heun", 4.0, 7.0),  # second order
        ("dpmpp_2m", 4.0, 7.0),
        ("lms", 7.0, 16.0),  # ≥ third order (fourth-order multistep, low-order start)
    ],
)
def test_convergence_order(name: str, low: float, high: float) -> None:
    errors = []
    for steps in (10, 20, 40):
        sigmas = sigmas_for(name, steps=steps)
        x = unit_noise(1) * sigmas[0]
        errors.append(max_diff(run(name, x, sigmas), exact_ode_endpoint(x, float(sigmas[0]))))
    assert low < errors[0] / errors[1] < high
    assert low < errors[1] / errors[2] < high


def test_dpm_adaptive_converges_with_tighter_tolerances(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(samplers_module, "ADAPTIVE_RTOL", 5e-4)
    monkeypatch.setattr(samplers_module, "ADAPTIVE_ATOL", 1e-4)
    sigmas = sigmas_for("dpm_adaptive")
    x = unit_noise(1) * sigmas[0]
    exact = exact_ode_endpoint(x, float(sigmas[0]), float(sigmas[-2]))
    assert max_diff(run("dpm_adaptive", x, sigmas), exact) < 0.03  # measured 0.016


def test_dpm_fast_makes_exactly_steps_model_calls() -> None:
    for steps in (1, 2, 3, 4, 5, 6, 10):
        sigmas = sigmas_for("dpm_fast", steps=steps)
        calls: list[float] = []

        def denoiser(x: Tensor, sigma: Tensor, calls: list[float] = calls) -> Tensor:
            calls.append(float(sigma))
            return gaussian_denoiser(x, sigma)

        run("dpm_fast", unit_noise(1) * sigmas[0], sigmas, denoiser=denoiser)
        assert len(calls) == steps


def mixture_denoiser(x: Tensor, sigma: Tensor) -> Tensor:
    """Posterior mean for data ±1 (equal weights) blurred by N(0, 0.3²), per element."""
    spread = 0.09
    var = spread + float(sigma) ** 2
    weight_plus = torch.sigmoid(2 * x / var)  # log-ratio of the two Gaussian likelihoods
    shrink = spread / var
    return weight_plus * (1 + shrink * (x - 1)) + (1 - weight_plus) * (-1 + shrink * (x + 1))


@pytest.mark.parametrize("name", ["dpmpp_sde", "dpmpp_2m_sde", "dpmpp_3m_sde"])
def test_sde_samplers_without_noise_converge(name: str) -> None:
    """With zero noise the SDE solvers integrate dx/dλ = −2(x − D): check self-convergence.

    Non-Gaussian data (a Gaussian one is solved exactly by every first-order SDE step).
    Reference: dpmpp_2m_sde with 1000 steps (agrees with dpmpp_3m_sde at 1000 steps to 1e-4).
    Measured errors at 10/20/40/80 steps, e.g. dpmpp_3m_sde 0.27, 0.14, 0.047, 0.012.
    """
    noise = unit_noise(1).double()

    def solve(sampler: str, steps: int) -> Tensor:
        sigmas = make_sigmas("karras", SCHEDULE, steps)[:-1].double()  # stop at σ_min
        zero: NoiseSampler = lambda sigma, sigma_next: torch.zeros_like(noise)  # noqa: E731
        return sample(sampler, mixture_denoiser, noise * sigmas[0], sigmas, noise_sampler=zero)

    reference = solve("dpmpp_2m_sde", 1000)
    errors = [max_diff(solve(name, steps), reference) for steps in (10, 20, 40, 80)]
    assert all(later < earlier for earlier, later in itertools.pairwise(errors))
    assert errors[-1] < errors[1] / 4
    assert errors[-1] < 0.04


# Final-distribution check for the stochastic samplers: data std 0.8, mean 0.5.
# Measured std at 30 Karras steps in the comments; euler_ancestral/ddpm are first order and
# undershoot, TCD and LCM are consistency samplers whose re-noising is only exact for a
# consistency model, so they are checked on the mean only.
STD_RANGE = {
    "euler_ancestral": (0.66, 0.84),  # 0.71
    "ddpm": (0.66, 0.84),  # 0.71 (= euler_ancestral in x-space)
    "dpm_2_ancestral": (0.74, 0.86),  # 0.80
    "dpmpp_2s_ancestral": (0.74, 0.86),  # 0.79
    "dpmpp_sde": (0.74, 0.86),  # 0.80
    "dpmpp_sde_gpu": (0.74, 0.86),
    "dpmpp_2m_sde": (0.74, 0.86),  # 0.82
    "dpmpp_2m_sde_gpu": (0.74, 0.86),
    "dpmpp_3m_sde": (0.74, 0.86),  # 0.81
    "dpmpp_3m_sde_gpu": (0.74, 0.86),
    "restart": (0.74, 0.86),  # 0.81
    "tcd": (0.0, 10.0),
    "lcm": (0.0, 10.0),
}


@pytest.mark.parametrize("name", sorted(STOCHASTIC_SAMPLERS))
def test_stochastic_samplers_reach_the_data_distribution(name: str) -> None:
    sigmas = sigmas_for(name)
    x = unit_noise(5, (1, 4, 64, 64)) * sigmas[0]
    out = run(name, x, sigmas)
    low, high = STD_RANGE[name]
    assert abs(float(out.mean()) - MU) < 0.03
    assert low < float(out.std()) < high


@pytest.mark.parametrize("name", sorted(STOCHASTIC_SAMPLERS))
def test_stochastic_samplers_are_deterministic_per_seed(name: str) -> None:
    sigmas = sigmas_for(name)
    x = unit_noise(1) * sigmas[0]
    first = run(name, x, sigmas, seed=11)
    assert torch.equal(first, run(name, x, sigmas, seed=11))
    assert max_diff(first, run(name, x, sigmas, seed=12)) > 1e-3


@pytest.mark.parametrize(
    ("gpu", "plain"),
    [
        ("dpmpp_sde_gpu", "dpmpp_sde"),
        ("dpmpp_2m_sde_gpu", "dpmpp_2m_sde"),
        ("dpmpp_3m_sde_gpu", "dpmpp_3m_sde"),
        ("ddim", "euler"),
    ],
)
def test_aliases_are_the_same_math(gpu: str, plain: str) -> None:
    sigmas = sigmas_for(plain)
    x = unit_noise(1) * sigmas[0]
    assert torch.equal(run(gpu, x, sigmas), run(plain, x, sigmas))


def test_ddpm_is_euler_ancestral_in_x_space() -> None:
    """The DDPM posterior, rescaled to x-space, is exactly the ancestral (σ_down, σ_up) step."""
    sigmas = sigmas_for("ddpm")
    x = unit_noise(1) * sigmas[0]
    assert max_diff(run("ddpm", x, sigmas), run("euler_ancestral", x, sigmas)) < 1e-4


def test_callback_exception_aborts_sampling() -> None:
    class Cancelled(Exception):
        pass

    for name in SAMPLER_NAMES:
        sigmas = sigmas_for(name)
        calls: list[int] = []

        def denoiser(x: Tensor, sigma: Tensor, calls: list[int] = calls) -> Tensor:
            calls.append(1)
            return gaussian_denoiser(x, sigma)

        def callback(i: int, x_i: Tensor, denoised: Tensor) -> None:
            if i == 2:
                raise Cancelled

        with pytest.raises(Cancelled):
            run(name, unit_noise(1) * sigmas[0], sigmas, denoiser=denoiser, callback=callback)
        assert len(calls) <= 12, name  # stopped early (restart/heunpp2 use ≤ 3 calls a step)


def test_callback_reports_model_input_and_prediction() -> None:
    sigmas = sigmas_for("euler", steps=5)
    x = unit_noise(1) * sigmas[0]
    reports: list[tuple[Tensor, Tensor]] = []
    run("euler", x, sigmas, callback=lambda i, x_i, d: reports.append((x_i, d)))
    assert torch.equal(reports[0][0], x)
    torch.testing.assert_close(reports[0][1], gaussian_denoiser(x, sigmas[0]))


def test_restart_plan_keeps_the_step_count_and_restarts() -> None:
    for steps in (10, 20, 30, 36, 60):
        sigmas = sigmas_for("restart", steps=steps)
        plan = samplers_module._restart_plan(sigmas.tolist())
        assert len(plan) == steps
        jumps = sum(1 for (_, end), (start, _) in itertools.pairwise(plan) if start > end)
        assert jumps == (0 if steps < 20 else 1 if steps < 36 else 2)


def test_partial_schedules_work() -> None:
    """Samplers run on a slice of a schedule (refiner swap), ending above 0."""
    full = sigmas_for("euler")
    x = unit_noise(1) * full[0]
    for name in SAMPLER_NAMES:
        first = run(name, x, full[:16])
        assert torch.isfinite(first).all(), name
        assert torch.isfinite(run(name, first, full[15:])).all(), name
    first = run("dpmpp_2m", x, full[:16])
    # the first half of an ODE sampler lands near the exact point at σ_15
    assert max_diff(first, exact_ode_endpoint(x, float(full[0]), float(full[15]))) < 0.05


def test_float64_latents_stay_float64() -> None:
    sigmas = sigmas_for("dpmpp_2m_sde")
    x = (unit_noise(1) * sigmas[0]).to(torch.float64)
    out = run("dpmpp_2m_sde", x, sigmas)
    assert out.dtype == torch.float64


# --- oracles: diffusers' schedulers driven by the same model --------------------------------


def eps_model(sample_x: Tensor, sigma: float) -> Tensor:
    """ε-prediction of the toy data for an x-space sample."""
    return (sample_x - gaussian_denoiser(sample_x, torch.tensor(sigma))) / sigma


def current_sigma(scheduler: diffusers.SchedulerMixin) -> float:
    index = scheduler.step_index if scheduler.step_index is not None else 0
    return float(scheduler.sigmas[index])


def drive_x_space(
    scheduler: diffusers.SchedulerMixin,
    steps: int,
    sigma_of: Callable[[diffusers.SchedulerMixin], float] = current_sigma,
) -> tuple[Tensor, Tensor]:
    """Run an x-space (Karras-style) diffusers scheduler; returns (initial x, final x)."""
    scheduler.set_timesteps(steps)
    x = unit_noise(1) * scheduler.init_noise_sigma
    initial = x.clone()
    for t in scheduler.timesteps:
        scaled = scheduler.scale_model_input(x, t)
        sigma = sigma_of(scheduler)
        x = scheduler.step(eps_model(scaled * math.sqrt(sigma**2 + 1), sigma), t, x).prev_sample
    return initial, x


def drive_vp_space(
    scheduler: diffusers.SchedulerMixin,
    sigmas: list[float],
    noises: list[Tensor] | None = None,
    on_step: Callable[[int, Tensor], None] | None = None,
) -> Tensor:
    """Run a variance-preserving diffusers scheduler whose step i is at ``sigmas[i]``."""
    x = unit_noise(1)
    for i, t in enumerate(scheduler.timesteps):
        sigma = sigmas[i]
        x_space = x * math.sqrt(sigma**2 + 1)
        if on_step is not None:
            on_step(i, x_space)
        extra = {"variance_noise": noises[i]} if noises is not None else {}
        x = scheduler.step(eps_model(x_space, sigma), t, x, **extra).prev_sample
    return x


def x_space_start(sigmas: Tensor) -> Tensor:
    return unit_noise(1) * math.sqrt(float(sigmas[0]) ** 2 + 1)


def queue_sampler(noises: list[Tensor]) -> NoiseSampler:
    stream: Iterator[Tensor] = iter(noises)
    return lambda sigma, sigma_next: next(stream)


@pytest.mark.parametrize("steps", [10, 30])
def test_euler_simple_equals_diffusers_euler_trailing(steps: int) -> None:
    """Measured max difference 6e-7 / 5e-7 (10 / 30 steps; latents of spread ~3).

    Our own 10-step ``simple`` sigmas instead of diffusers' ones: 1.7e-6.
    """
    reference = diffusers.EulerDiscreteScheduler(**SDXL_BETAS, timestep_spacing="trailing")
    initial, expected = drive_x_space(reference, steps)
    ours = sample("euler", gaussian_denoiser, initial, reference.sigmas)
    assert max_diff(ours, expected) < 1e-5
    if steps == 10:  # 1000/10 is whole: our own `simple` schedule gives the same sigmas
        ours = sample("euler", gaussian_denoiser, initial, make_sigmas("simple", SCHEDULE, 10))
        assert max_diff(ours, expected) < 1e-4


def dpm_multistep(algorithm: str) -> diffusers.DPMSolverMultistepScheduler:
    return diffusers.DPMSolverMultistepScheduler(
        **SDXL_BETAS,
        algorithm_type=algorithm,
        solver_order=2,
        use_karras_sigmas=True,
        final_sigmas_type="zero",
    )


@pytest.mark.parametrize("steps", [10, 30])
def test_dpmpp_2m_karras_equals_diffusers(steps: int) -> None:
    """diffusers' DPMSolverMultistep (dpmsolver++, order 2, Karras, zero final sigma).

    Measured max difference 9.5e-7 (10 steps) / 1.9e-6 (30 steps): float32 rounding only (we
    keep coefficients in float64). Tolerance 1e-5 leaves 10x headroom while any formula slip
    (e.g. a wrong r or first-order step) shows up at 1e-2 or more.
    """
    reference = dpm_multistep("dpmsolver++")
    reference.set_timesteps(steps)
    sigmas = reference.sigmas
    expected = drive_vp_space(reference, sigmas.tolist())
    ours = sample("dpmpp_2m", gaussian_denoiser, x_space_start(sigmas), sigmas)
    assert max_diff(ours, expected) < 1e-5
    ours_sigmas = make_sigmas("karras", SCHEDULE, steps)
    torch.testing.assert_close(ours_sigmas, sigmas, rtol=3e-5, atol=0)


@pytest.mark.parametrize("steps", [10, 30])
def test_dpmpp_2m_sde_equals_diffusers_with_shared_noise(steps: int) -> None:
    """sde-dpmsolver++ (midpoint) with the same per-step noise: measured 9.5e-7 / 1.7e-6."""
    reference = dpm_multistep("sde-dpmsolver++")
    reference.set_timesteps(steps)
    sigmas = reference.sigmas
    noises = [unit_noise(100 + i) for i in range(steps)]
    expected = drive_vp_space(reference, sigmas.tolist(), noises)
    ours = sample(
        "dpmpp_2m_sde",
        gaussian_denoiser,
        x_space_start(sigmas),
        sigmas,
        noise_sampler=queue_sampler(noises),
    )
    assert max_diff(ours, expected) < 1e-5


def test_heun_equals_diffusers() -> None:
    """HeunDiscreteScheduler (Karras): measured 4.8e-7."""
    reference = diffusers.HeunDiscreteScheduler(**SDXL_BETAS, use_karras_sigmas=True)
    initial, expected = drive_x_space(reference, 10)
    sigmas = torch.unique_consecutive(reference.sigmas)
    assert max_diff(sample("heun", gaussian_denoiser, initial, sigmas), expected) < 1e-5


def test_lms_equals_diffusers() -> None:
    """LMSDiscreteScheduler order 4 (scipy quadrature vs our exact integrals): measured 1.5e-6."""
    reference = diffusers.LMSDiscreteScheduler(**SDXL_BETAS, use_karras_sigmas=True)
    initial, expected = drive_x_space(reference, 30)
    assert max_diff(sample("lms", gaussian_denoiser, initial, reference.sigmas), expected) < 1e-5


def test_dpm_2_equals_diffusers_kdpm2() -> None:
    """KDPM2DiscreteScheduler (log-midpoint second order): measured 9.5e-7."""
    reference = diffusers.KDPM2DiscreteScheduler(**SDXL_BETAS, use_karras_sigmas=True)

    def sigma_of(scheduler: diffusers.KDPM2DiscreteScheduler) -> float:
        if scheduler.state_in_first_order:
            return current_sigma(scheduler)
        return float(scheduler.sigmas_interpol[scheduler.step_index])

    initial, expected = drive_x_space(reference, 30, sigma_of)
    sigmas = torch.unique_consecutive(reference.sigmas)
    assert max_diff(sample("dpm_2", gaussian_denoiser, initial, sigmas), expected) < 1e-5


@pytest.mark.parametrize("variant", ["bh1", "bh2"])
@pytest.mark.parametrize("steps", [3, 4, 10, 30])
def test_uni_pc_equals_diffusers(variant: str, steps: int) -> None:
    """UniPCMultistepScheduler, order 3, x0-prediction, lower_order_final: measured ≤ 1.1e-5.

    diffusers' bh1 turns NaN on a step to exactly σ = 0 (B(h) = −∞ times 0), so, like Fooocus,
    the last sigma is set to 0.001 for the comparison.
    """
    reference = diffusers.UniPCMultistepScheduler(
        **SDXL_BETAS,
        solver_order=3,
        solver_type=variant,
        use_karras_sigmas=True,
        lower_order_final=True,
        final_sigmas_type="zero",
    )
    reference.set_timesteps(steps)
    reference.sigmas[-1] = 1e-3
    sigmas = reference.sigmas.clone()
    expected = drive_vp_space(reference, sigmas.tolist()) * math.sqrt(1 + 1e-6)
    name = "uni_pc" if variant == "bh1" else "uni_pc_bh2"
    ours = sample(name, gaussian_denoiser, x_space_start(sigmas), sigmas)
    assert max_diff(ours, expected) < 5e-5


@pytest.fixture
def shared_noise(monkeypatch: pytest.MonkeyPatch) -> list[Tensor]:
    """Make diffusers' stochastic schedulers draw from a fixed list (in call order)."""
    noises = [unit_noise(200 + i) for i in range(64)]
    stream = iter(noises)

    def fake_randn(shape: tuple[int, ...], **kwargs: object) -> Tensor:
        return next(stream)

    for module in (scheduling_ddpm, scheduling_euler_ancestral_discrete, scheduling_lcm):
        monkeypatch.setattr(module, "randn_tensor", fake_randn)
    monkeypatch.setattr(scheduling_tcd, "randn_tensor", fake_randn)
    return noises


def test_euler_ancestral_equals_diffusers(shared_noise: list[Tensor]) -> None:
    """EulerAncestralDiscreteScheduler with the same noise: measured 4.8e-7."""
    reference = diffusers.EulerAncestralDiscreteScheduler(**SDXL_BETAS, timestep_spacing="trailing")
    initial, expected = drive_x_space(reference, 10)
    ours = sample(
        "euler_ancestral",
        gaussian_denoiser,
        initial,
        reference.sigmas,
        noise_sampler=queue_sampler(shared_noise),
    )
    assert max_diff(ours, expected) < 1e-5


def discrete_sigmas(scheduler: diffusers.SchedulerMixin) -> list[float]:
    acp = scheduler.alphas_cumprod[scheduler.timesteps.long()].double()
    return [*((1 - acp) / acp).sqrt().tolist(), 0.0]


def test_ddpm_equals_diffusers(shared_noise: list[Tensor]) -> None:
    """DDPMScheduler (fixed_small variance) on trailing timesteps: measured 7.2e-7."""
    reference = diffusers.DDPMScheduler(
        **SDXL_BETAS, timestep_spacing="trailing", clip_sample=False
    )
    reference.set_timesteps(10)
    sigmas = discrete_sigmas(reference)
    expected = drive_vp_space(reference, sigmas)
    ours = sample(
        "ddpm",
        gaussian_denoiser,
        x_space_start(torch.tensor(sigmas)),
        torch.tensor(sigmas),
        noise_sampler=queue_sampler(shared_noise),
    )
    assert max_diff(ours, expected) < 1e-4


def test_lcm_equals_diffusers(shared_noise: list[Tensor]) -> None:
    """LCMScheduler vs our lcm sampler + LCMSchedule output transform: measured 4.2e-7.

    Fooocus applies the boundary condition's ``c_skip`` (≤ 7e-6 here) to the x-space latent,
    diffusers to the variance-preserving one; at these timesteps that is below float32 noise.
    """
    reference = diffusers.LCMScheduler(**SDXL_BETAS)
    reference.set_timesteps(4)
    sigmas = discrete_sigmas(reference)
    expected = drive_vp_space(reference, sigmas)
    lcm = LCMSchedule()

    def denoiser(x: Tensor, sigma: Tensor) -> Tensor:
        return lcm.calculate_denoised(sigma, eps_model(x, float(sigma)), x)

    ours = sample(
        "lcm",
        denoiser,
        x_space_start(torch.tensor(sigmas)),
        torch.tensor(sigmas),
        noise_sampler=queue_sampler(shared_noise),
        schedule=lcm,
    )
    assert max_diff(ours, expected) < 1e-4


def test_tcd_equals_diffusers_until_the_last_step(shared_noise: list[Tensor]) -> None:
    """TCDScheduler (γ = 0.3) with the same noise: every intermediate latent agrees (≤ 5.6e-6).

    The last step differs by design: diffusers (and Fooocus) return ``sqrt(ᾱ_0)·x0 +
    sqrt(1 − ᾱ_0)·ε`` (timestep 0, σ = 0.029), we return the clean x0.
    """
    reference = diffusers.TCDScheduler(**SDXL_BETAS)
    reference.set_timesteps(6)
    sigmas = discrete_sigmas(reference)
    theirs: list[Tensor] = []
    drive_vp_space(reference, sigmas, on_step=lambda i, x: theirs.append(x))
    ours: list[Tensor] = []
    final = sample(
        "tcd",
        gaussian_denoiser,
        x_space_start(torch.tensor(sigmas)),
        torch.tensor(sigmas),
        noise_sampler=queue_sampler(shared_noise),
        callback=lambda i, x, d: ours.append(x),
        schedule=DistilledSchedule(),
    )
    assert len(ours) == len(theirs) == 6
    for mine, expected in zip(ours, theirs, strict=True):
        assert max_diff(mine, expected) < 1e-4
    torch.testing.assert_close(final, gaussian_denoiser(ours[-1], torch.tensor(sigmas[-2])))


def test_dpmpp_sde_equals_diffusers_with_a_shared_brownian_tree() -> None:
    """DPMSolverSDEScheduler fed our Brownian tree: measured 7.2e-7."""
    reference = diffusers.DPMSolverSDEScheduler(**SDXL_BETAS, use_karras_sigmas=True)
    reference.set_timesteps(10)
    sigmas = torch.unique_consecutive(reference.sigmas)
    initial = unit_noise(1) * reference.init_noise_sigma
    tree = BrownianTreeNoiseSampler.from_sigmas(initial, sigmas, seed=5)
    reference.noise_sampler = tree

    def sigma_of(scheduler: diffusers.DPMSolverSDEScheduler) -> float:
        if scheduler.state_in_first_order:
            return current_sigma(scheduler)
        return float(scheduler.mid_point_sigma)

    x = initial.clone()
    for t in reference.timesteps:
        scaled = reference.scale_model_input(x, t)
        sigma = sigma_of(reference)
        eps = eps_model(scaled * math.sqrt(sigma**2 + 1), sigma)
        x = reference.step(eps, t, x).prev_sample
    ours = sample("dpmpp_sde", gaussian_denoiser, initial, sigmas, noise_sampler=tree)
    assert max_diff(ours, x) < 1e-4


# --- noise samplers ------------------------------------------------------------------------


BROWNIAN_DIGEST_SCRIPT = """
import hashlib
import torch
from fooocus_core.sampling.noise import BrownianTreeNoiseSampler
from fooocus_core.sampling.schedules import DiscreteSchedule, make_sigmas

def digest():
    sigmas = make_sigmas("karras", DiscreteSchedule(), 10)
    tree = BrownianTreeNoiseSampler.from_sigmas(torch.zeros(1, 4, 8, 8), sigmas, 3)
    draws = [tree(a, b) for a, b in zip(sigmas[:-2], sigmas[1:-1])]
    return hashlib.sha256(torch.cat(draws).numpy().tobytes()).hexdigest()
"""


def brownian_draws(seed: int) -> list[Tensor]:
    sigmas = make_sigmas("karras", SCHEDULE, 10)
    tree = BrownianTreeNoiseSampler.from_sigmas(torch.zeros(SHAPE), sigmas, seed)
    return [tree(a, b) for a, b in itertools.pairwise(sigmas[:-1])]


def test_brownian_tree_is_deterministic_per_seed() -> None:
    first, again, other = brownian_draws(3), brownian_draws(3), brownian_draws(4)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert all(max_diff(a, b) > 0.1 for a, b in zip(first, other, strict=True))


def test_brownian_tree_is_bit_identical_across_processes() -> None:
    namespace: dict[str, Callable[[], str]] = {}
    exec(BROWNIAN_DIGEST_SCRIPT, namespace)
    here = namespace["digest"]()
    result = subprocess.run(
        [sys.executable, "-c", BROWNIAN_DIGEST_SCRIPT + "\nprint(digest())"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert result.stdout.strip() == here


def test_brownian_tree_is_one_path() -> None:
    """Unit variance, query order irrelevant, increments add up (W(a,c) = W(a,b) + W(b,c))."""
    x = torch.zeros(1, 4, 32, 32)
    tree = BrownianTreeNoiseSampler(x, 0.03, 14.6, seed=1)
    late = tree(0.5, 0.1)
    whole = tree(2.0, 0.1)
    early = tree(2.0, 0.5)
    assert float(whole.std()) == pytest.approx(1.0, abs=0.05)
    combined = early * math.sqrt(1.5) + late * math.sqrt(0.4)
    torch.testing.assert_close(combined, whole * math.sqrt(1.9), rtol=1e-4, atol=1e-4)
    fresh = BrownianTreeNoiseSampler(x, 0.03, 14.6, seed=1)
    assert torch.equal(fresh(2.0, 0.1), whole)
    # the sign follows the direction of the query
    torch.testing.assert_close(tree(0.1, 2.0), -whole)


def test_brownian_tree_output_follows_the_latent() -> None:
    x = torch.zeros(2, 4, 4, 4, dtype=torch.float64)
    tree = BrownianTreeNoiseSampler(x, torch.tensor(0.03), torch.tensor(14.6), seed=[1, 2])
    noise = tree(torch.tensor(1.0), torch.tensor(0.5))
    assert noise.dtype == torch.float64 and noise.shape == x.shape
    single = BrownianTreeNoiseSampler(x[:1], 0.03, 14.6, seed=2)
    torch.testing.assert_close(noise[1:], single(1.0, 0.5))
    with pytest.raises(ValueError, match="seeds"):
        BrownianTreeNoiseSampler(x, 0.03, 14.6, seed=[1, 2, 3])


def test_brownian_tree_for_a_one_step_schedule() -> None:
    sigmas = torch.tensor([14.6, 0.0])
    tree = BrownianTreeNoiseSampler.from_sigmas(torch.zeros(SHAPE), sigmas, seed=1)
    out = sample(
        "dpmpp_2m_sde", gaussian_denoiser, unit_noise(1) * 14.6, sigmas, noise_sampler=tree
    )
    assert torch.isfinite(out).all()


def test_seeded_noise_sampler() -> None:
    x = torch.zeros(SHAPE, dtype=torch.float16)
    first, again = SeededNoiseSampler(x, 9), SeededNoiseSampler(x, 9)
    a1, a2 = first(1.0, 0.5), first(1.0, 0.5)
    assert a1.dtype == torch.float16 and a1.shape == SHAPE
    assert not torch.equal(a1, a2)  # fresh noise each call
    assert torch.equal(a1, again(1.0, 0.5)) and torch.equal(a2, again(0.3, 0.1))
    expected = torch.randn(SHAPE, generator=torch.Generator().manual_seed(9)).half()
    assert torch.equal(a1, expected)
    assert not torch.equal(a1, SeededNoiseSampler(x, 10)(1.0, 0.5))
