"""Model schedules and sigma schedulers (fooocus_core.sampling.schedules)."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import DDIMScheduler, EulerDiscreteScheduler, LCMScheduler

from fooocus_core.sampling.schedules import (
    AYS_SDXL_SIGMAS,
    SCHEDULER_NAMES,
    DiscreteSchedule,
    DistilledSchedule,
    LCMSchedule,
    make_sigmas,
    model_schedule_for,
)

SDXL_BETAS = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
}
# diffusers 0.42 + numpy 2 warn inside EulerDiscreteScheduler; not ours.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)
IMPLEMENTED = [name for name in SCHEDULER_NAMES if name != "edm_playground_v2.5"]


@pytest.fixture(scope="module")
def sdxl() -> DiscreteSchedule:
    return DiscreteSchedule()


def timesteps_of(schedule: DiscreteSchedule, sigmas: torch.Tensor) -> list[int]:
    return [int(t) for t in schedule.timestep(sigmas)]


def test_scheduler_names_in_fooocus_order() -> None:
    assert SCHEDULER_NAMES == (
        "normal",
        "karras",
        "exponential",
        "sgm_uniform",
        "simple",
        "ddim_uniform",
        "lcm",
        "turbo",
        "align_your_steps",
        "tcd",
        "edm_playground_v2.5",
    )


def test_sdxl_sigma_range_matches_spec(sdxl: DiscreteSchedule) -> None:
    assert sdxl.sigmas.dtype == torch.float32 and sdxl.sigmas.shape == (1000,)
    assert sdxl.sigma_min == pytest.approx(0.029167, abs=1e-6)
    assert sdxl.sigma_max == pytest.approx(14.614641, abs=1e-6)
    assert torch.all(sdxl.sigmas[1:] > sdxl.sigmas[:-1])


def test_sigma_table_matches_diffusers(sdxl: DiscreteSchedule) -> None:
    reference = EulerDiscreteScheduler(**SDXL_BETAS)
    acp = reference.alphas_cumprod
    expected = ((1 - acp) / acp).sqrt()
    torch.testing.assert_close(sdxl.sigmas, expected, rtol=2e-5, atol=0)


def test_timestep_and_sigma_are_inverse_on_the_grid(sdxl: DiscreteSchedule) -> None:
    grid = torch.arange(1000, dtype=torch.float32)
    assert torch.equal(sdxl.timestep(sdxl.sigma(grid)), grid)
    # nearest in log-sigma, and log-linear interpolation in between
    mid = sdxl.sigma(torch.tensor(500.5))
    assert float(mid) == pytest.approx(math.sqrt(float(sdxl.sigmas[500] * sdxl.sigmas[501])))
    assert float(sdxl.timestep(mid * 0.9999)) == 500.0
    assert sdxl.timestep(torch.tensor([[1.0, 2.0]])).shape == (1, 2)


def test_karras_30_reference_numbers(sdxl: DiscreteSchedule) -> None:
    sigmas = make_sigmas("karras", sdxl, 30)
    assert sigmas.shape == (31,) and sigmas.dtype == torch.float32
    expected_head = [14.6146, 12.6606, 10.9349, 9.4149]
    expected_tail = [0.0564, 0.0409, 0.0292, 0.0]
    assert sigmas[:4].tolist() == pytest.approx(expected_head, abs=1e-4)
    assert sigmas[-4:].tolist() == pytest.approx(expected_tail, abs=1e-4)
    timesteps = timesteps_of(sdxl, sigmas[:-1])
    assert timesteps[:5] == [999, 975, 949, 923, 894]
    assert timesteps[-5:] == [11, 6, 3, 1, 0]
    # spec §14: with adm_scaler_end 0.3 the emphasized ADM is used for the first 10 steps
    assert sum(t > 699.3 for t in timesteps) == 10


def test_karras_matches_diffusers(sdxl: DiscreteSchedule) -> None:
    reference = EulerDiscreteScheduler(**SDXL_BETAS, use_karras_sigmas=True)
    reference.set_timesteps(30)
    # diffusers accumulates ᾱ in float32 (we use float64): sigma_min differs by ~1e-5 relative
    torch.testing.assert_close(make_sigmas("karras", sdxl, 30), reference.sigmas, rtol=3e-5, atol=0)


@pytest.mark.parametrize(
    ("steps", "denoise", "count", "first"),
    [
        (18, 0.382, 19, 0.569),  # Speed + Upscale: 18 of a 47-step schedule
        (30, 0.5, 31, 1.212),  # Speed + Vary (Subtle): 31 sigmas of a 60-step schedule
        (30, 0.85, 31, 7.755),  # Speed + Vary (Strong): 35-step schedule
    ],
)
def test_denoise_truncation_reference_cases(
    sdxl: DiscreteSchedule, steps: int, denoise: float, count: int, first: float
) -> None:
    sigmas = make_sigmas("karras", sdxl, steps, denoise)
    assert len(sigmas) == count
    assert float(sigmas[0]) == pytest.approx(first, abs=1e-3)
    full = make_sigmas("karras", sdxl, int(steps / denoise))
    assert torch.equal(sigmas, full[-count:])


def test_denoise_near_one_is_full_schedule(sdxl: DiscreteSchedule) -> None:
    assert torch.equal(make_sigmas("karras", sdxl, 30, 0.99995), make_sigmas("karras", sdxl, 30))


@pytest.mark.parametrize("scheduler", IMPLEMENTED)
@pytest.mark.parametrize("steps", [1, 2, 4, 8, 30, 60])
def test_every_scheduler_gives_steps_plus_one_decreasing_sigmas(
    sdxl: DiscreteSchedule, scheduler: str, steps: int
) -> None:
    for denoise in (1.0, 0.6):
        sigmas = make_sigmas(scheduler, sdxl, steps, denoise)
        assert sigmas.shape == (steps + 1,)
        assert sigmas.dtype == torch.float32
        assert float(sigmas[-1]) == 0.0
        assert torch.all(sigmas[:-1] > 0)
        assert torch.all(sigmas[1:] < sigmas[:-1]), (scheduler, steps, sigmas)
        assert float(sigmas[0]) <= sdxl.sigma_max * (1 + 1e-6)


def test_discard_penultimate(sdxl: DiscreteSchedule) -> None:
    sigmas = make_sigmas("karras", sdxl, 30, discard_penultimate=True)
    longer = make_sigmas("karras", sdxl, 31)
    assert torch.equal(sigmas, torch.cat([longer[:-2], longer[-1:]]))
    vary = make_sigmas("karras", sdxl, 30, 0.5, discard_penultimate=True)
    longer = make_sigmas("karras", sdxl, 61)
    assert torch.equal(vary, torch.cat([longer[:-2], longer[-1:]])[-31:])


def test_normal_and_sgm_uniform(sdxl: DiscreteSchedule) -> None:
    normal = make_sigmas("normal", sdxl, 10)
    assert float(normal[0]) == pytest.approx(sdxl.sigma_max)
    assert float(normal[-2]) == pytest.approx(sdxl.sigma_min)
    expected_t = torch.linspace(999, 0, 10)
    torch.testing.assert_close(normal[:-1], sdxl.sigma(expected_t))
    sgm = make_sigmas("sgm_uniform", sdxl, 10)
    torch.testing.assert_close(sgm[:-1], sdxl.sigma(torch.linspace(999, 0, 11)[:-1]))


def test_exponential_is_log_linear(sdxl: DiscreteSchedule) -> None:
    logs = make_sigmas("exponential", sdxl, 12)[:-1].double().log()
    steps = logs[1:] - logs[:-1]
    torch.testing.assert_close(steps, steps.mean().expand_as(steps), rtol=1e-5, atol=1e-6)
    assert float(logs[-1].exp()) == pytest.approx(sdxl.sigma_min, rel=1e-6)


@pytest.mark.parametrize("steps", [4, 5, 8, 10, 20, 25, 30, 40, 50, 60])
def test_simple_visits_diffusers_trailing_timesteps(sdxl: DiscreteSchedule, steps: int) -> None:
    """``simple`` = every (1000/n)-th sigma from the top, index ``999 − floor(k·1000/n)``.

    diffusers' "trailing" spacing rounds ``k·1000/n`` instead of flooring it, so the two visit
    the same timesteps whenever n divides 1000, and otherwise differ by at most one timestep
    (e.g. n = 30: 932 vs our 933).
    """
    reference = EulerDiscreteScheduler(**SDXL_BETAS, timestep_spacing="trailing")
    reference.set_timesteps(steps)
    theirs = [int(t) for t in reference.timesteps]
    ours = timesteps_of(sdxl, make_sigmas("simple", sdxl, steps)[:-1])
    if 1000 % steps == 0:
        assert ours == theirs
        torch.testing.assert_close(make_sigmas("simple", sdxl, steps), reference.sigmas)
    else:
        assert max(abs(a - b) for a, b in zip(ours, theirs, strict=True)) == 1
    assert ours == [999 - math.floor(k * 1000 / steps) for k in range(steps)]


@pytest.mark.parametrize("steps", [10, 20, 30, 60])
def test_ddim_uniform_is_ddim_leading_spacing(sdxl: DiscreteSchedule, steps: int) -> None:
    reference = DDIMScheduler(**SDXL_BETAS, timestep_spacing="leading", steps_offset=1)
    reference.set_timesteps(steps)
    ours = timesteps_of(sdxl, make_sigmas("ddim_uniform", sdxl, steps)[:-1])
    assert ours == [int(t) for t in reference.timesteps]


def test_turbo(sdxl: DiscreteSchedule) -> None:
    four = make_sigmas("turbo", sdxl, 4)
    assert timesteps_of(sdxl, four[:-1]) == [999, 899, 799, 699]
    torch.testing.assert_close(make_sigmas("turbo", sdxl, 10), make_sigmas("simple", sdxl, 10))
    assert torch.equal(make_sigmas("turbo", sdxl, 30), make_sigmas("simple", sdxl, 30))


def test_align_your_steps(sdxl: DiscreteSchedule) -> None:
    ten = make_sigmas("align_your_steps", sdxl, 10)
    assert ten[:-1].tolist() == pytest.approx(AYS_SDXL_SIGMAS[:-1], rel=1e-6)
    assert float(ten[-1]) == 0.0
    twenty = make_sigmas("align_your_steps", sdxl, 20)
    # 21 points log-linearly interpolated: the original levels sit on every second point
    assert twenty[:-1:2].tolist() == pytest.approx(AYS_SDXL_SIGMAS[:-1], rel=1e-5)
    geometric = math.sqrt(AYS_SDXL_SIGMAS[0] * AYS_SDXL_SIGMAS[1])
    assert float(twenty[1]) == pytest.approx(geometric, rel=1e-5)


def test_distilled_schedule_table() -> None:
    full = DiscreteSchedule()
    lcm = LCMSchedule()
    assert lcm.sigmas.shape == (50,)
    for x in range(50):
        assert float(lcm.sigmas[49 - x]) == float(full.sigmas[999 - 20 * x])
    assert lcm.sigma_max == full.sigma_max
    assert float(lcm.timestep(torch.tensor(lcm.sigma_max))) == 999.0
    assert float(lcm.timestep(torch.tensor(lcm.sigma_min))) == 19.0
    assert float(lcm.timestep(full.sigmas[500])) in {499.0, 519.0}
    grid = torch.arange(19, 1000, 20, dtype=torch.float32)
    assert torch.equal(lcm.timestep(lcm.sigma(grid)), grid)
    torch.testing.assert_close(lcm.sigma(grid), full.sigma(grid))


@pytest.mark.parametrize("scheduler", ["lcm", "tcd"])
def test_lcm_and_tcd_are_sgm_uniform_over_the_distilled_schedule(
    sdxl: DiscreteSchedule, scheduler: str
) -> None:
    sigmas = make_sigmas(scheduler, sdxl, 8)
    distilled = DistilledSchedule()
    expected = distilled.sigma(torch.linspace(999, 19, 9)[:-1])
    torch.testing.assert_close(sigmas[:-1], expected)
    assert torch.equal(make_sigmas(scheduler, LCMSchedule(), 8), sigmas)


def test_lcm_output_transform_matches_diffusers_boundary_condition() -> None:
    lcm = LCMSchedule()
    reference = LCMScheduler(**SDXL_BETAS)
    x = torch.randn(2, 4, 3, 3, generator=torch.Generator().manual_seed(0)) * 5
    eps = torch.randn(2, 4, 3, 3, generator=torch.Generator().manual_seed(1))
    for t in (19, 259, 999):
        sigma = lcm.sigma(torch.tensor(float(t)))
        c_skip, c_out = reference.get_scalings_for_boundary_condition_discrete(torch.tensor(t))
        ours_skip, ours_out = lcm.boundary_coefficients(sigma)
        assert float(ours_skip) == pytest.approx(float(c_skip), rel=1e-5)
        assert float(ours_out) == pytest.approx(float(c_out), rel=1e-6)
        expected = c_out * (x - sigma * eps) + c_skip * x
        torch.testing.assert_close(lcm.calculate_denoised(sigma, eps, x), expected)
    # per-sample sigmas broadcast over the batch
    sigmas = torch.stack([lcm.sigma(torch.tensor(19.0)), lcm.sigma(torch.tensor(999.0))])
    batched = lcm.calculate_denoised(sigmas, eps, x)
    torch.testing.assert_close(batched[1:], lcm.calculate_denoised(sigmas[1], eps[1:], x[1:]))


def test_plain_eps_output(sdxl: DiscreteSchedule) -> None:
    x, eps = torch.ones(1, 4, 2, 2), torch.full((1, 4, 2, 2), 0.5)
    torch.testing.assert_close(sdxl.calculate_denoised(torch.tensor(2.0), eps, x), x - 1.0)


def test_model_schedule_for() -> None:
    assert type(model_schedule_for("karras")) is DiscreteSchedule
    assert type(model_schedule_for("lcm")) is LCMSchedule
    assert type(model_schedule_for("tcd")) is DistilledSchedule
    with pytest.raises(NotImplementedError, match="EDM"):
        model_schedule_for("edm_playground_v2.5")


def test_edm_playground_not_implemented(sdxl: DiscreteSchedule) -> None:
    with pytest.raises(NotImplementedError, match="Playground"):
        make_sigmas("edm_playground_v2.5", sdxl, 30)


def test_invalid_arguments(sdxl: DiscreteSchedule) -> None:
    with pytest.raises(ValueError, match="karras, exponential"):
        make_sigmas("karras2", sdxl, 30)
    with pytest.raises(ValueError, match="steps"):
        make_sigmas("karras", sdxl, 0)
    for denoise in (0.0, -0.5, 1.5):
        with pytest.raises(ValueError, match="denoise"):
            make_sigmas("karras", sdxl, 30, denoise)
