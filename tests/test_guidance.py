"""Fooocus' guidance formulas in isolation, against the spec's numbers (section 3 and 14)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fooocus_core.pipeline import adm
from fooocus_core.pipeline.guidance import (
    _bilateral_by_offsets,
    _bilateral_by_unfold,
    _gaussian_window,
    guide,
    joint_bilateral_blur,
    sharpness_alpha,
)
from fooocus_core.sampling.schedules import DiscreteSchedule, make_sigmas


def test_sharpness_alpha_at_the_last_step() -> None:
    assert sharpness_alpha(2.0, 1.0) == 0.002
    assert abs(sharpness_alpha(30.0, 1.0) - 0.03) < 1e-12
    assert sharpness_alpha(2.0, 0.0) == 0.0


def test_bilateral_forms_agree() -> None:
    generator = torch.Generator().manual_seed(0)
    values = torch.randn(2, 4, 20, 24, generator=generator)
    guide_ = torch.randn(2, 4, 20, 24, generator=generator)
    a, b = _bilateral_by_offsets(values, guide_), _bilateral_by_unfold(values, guide_)
    assert torch.allclose(a, b, atol=1e-5)
    assert torch.equal(joint_bilateral_blur(values, guide_), a)  # the CPU form


def test_flat_guide_gives_a_plain_gaussian_blur() -> None:
    """With a constant guide every range weight is 1: a 13x13 Gaussian (sigma 3), reflect pad."""
    values = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    window = _gaussian_window(13, 3.0, torch.device("cpu"))
    kernel = torch.outer(window, window).expand(4, 1, 13, 13)
    expected = F.conv2d(F.pad(values, (6, 6, 6, 6), mode="reflect"), kernel, groups=4)
    actual = joint_bilateral_blur(values, torch.zeros_like(values))
    assert torch.allclose(actual, expected, atol=1e-5)


def test_edges_of_the_guide_are_preserved() -> None:
    step = torch.zeros(1, 4, 16, 16)
    step[..., 8:] = 10.0  # a hard vertical edge, in both values and guide
    blurred = joint_bilateral_blur(step, step)
    assert torch.allclose(blurred, step, atol=1e-3)
    plain = joint_bilateral_blur(step, torch.zeros_like(step))
    assert (plain - step).abs().max() > 1.0


def _predictions() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(2)
    return tuple(torch.randn(1, 4, 8, 8, generator=generator) for _ in range(3))


def test_neutral_extras_are_plain_cfg() -> None:
    x, x0_pos, x0_neg = _predictions()
    plain = x - ((x - x0_neg) + 7.0 * ((x - x0_pos) - (x - x0_neg)))
    for progress in (0.0, 0.4, 1.0):
        out = guide(x, x0_pos, x0_neg, cfg=7.0, adaptive_cfg=7.0, sharpness=0.0, progress=progress)
        assert torch.allclose(out, plain, atol=1e-6)


def test_adaptive_cfg_moves_from_mimicked_to_real_cfg() -> None:
    x, x0_pos, x0_neg = _predictions()

    def cfg_result(scale: float) -> torch.Tensor:
        return guide(x, x0_pos, x0_neg, cfg=scale, adaptive_cfg=30.0, sharpness=0.0, progress=0.0)

    def adaptive(progress: float) -> torch.Tensor:
        return guide(
            x, x0_pos, x0_neg, cfg=10.0, adaptive_cfg=7.0, sharpness=0.0, progress=progress
        )

    assert torch.allclose(adaptive(0.0), cfg_result(7.0), atol=1e-5)
    assert torch.allclose(adaptive(1.0), cfg_result(10.0), atol=1e-5)
    halfway = 0.5 * cfg_result(7.0) + 0.5 * cfg_result(10.0)
    assert torch.allclose(adaptive(0.5), halfway, atol=1e-5)


def test_sharpness_blends_in_the_filtered_positive_noise() -> None:
    x, x0_pos, x0_neg = _predictions()
    sharp = guide(x, x0_pos, x0_neg, cfg=4.0, adaptive_cfg=7.0, sharpness=30.0, progress=1.0)
    plain = guide(x, x0_pos, x0_neg, cfg=4.0, adaptive_cfg=7.0, sharpness=0.0, progress=1.0)
    assert 0 < (sharp - plain).abs().max() < 1.0


def test_adm_sizes_for_1152_by_896() -> None:
    positive, positive_plain = adm.time_ids(1152, 896, 1.5)
    negative, _ = adm.time_ids(1152, 896, 0.8)
    assert positive.tolist() == [1344, 1728, 0, 0, 896, 1152]
    assert negative.tolist() == [716, 921, 0, 0, 896, 1152]
    assert positive_plain.tolist() == [896, 1152, 0, 0, 896, 1152]


def test_adm_emphasis_covers_the_first_10_of_30_karras_steps() -> None:
    schedule = DiscreteSchedule()
    sigmas = make_sigmas("karras", schedule, 30)[:-1]
    active = [adm.emphasis_active(float(schedule.timestep(s)), 0.3) for s in sigmas]
    assert active == [True] * 10 + [False] * 20
