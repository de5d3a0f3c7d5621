"""Classifier-free guidance as Fooocus does it: sharpness and adaptive CFG.

All quantities are in x-space (``x = x0 + sigma * eps``): ``e = x - x0`` is the sigma-scaled noise
prediction. ``progress`` is ``1 - t / 999`` for the discrete timestep ``t`` (0 at the first step).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

_KERNEL = 13
_SIGMA_SPACE = 3.0
_SIGMA_COLOR = 3.0


def _gaussian_window(size: int, sigma: float, device: torch.device) -> torch.Tensor:
    offsets = torch.arange(size, dtype=torch.float32, device=device) - size // 2
    window = torch.exp(-(offsets**2) / (2.0 * sigma**2))
    return window / window.sum()


def joint_bilateral_blur(values: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
    """Joint bilateral filter (Tomasi & Manduchi 1998) of ``values`` steered by ``guide``.

    13x13 window with reflect padding, spatial Gaussian sigma 3 and range kernel
    ``exp(-0.5 * d^2 / 3^2)`` where ``d`` is the L1 distance of the guide's channels.
    """
    if values.device.type == "cpu":
        return _bilateral_by_offsets(values, guide)
    return _bilateral_by_unfold(values, guide)


def _bilateral_by_unfold(values: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
    """All 169 neighbours at once: few large kernels, the fast form on a GPU."""
    b, c, h, w = values.shape
    pad = _KERNEL // 2
    taps = _KERNEL * _KERNEL

    def neighbours(t: torch.Tensor) -> torch.Tensor:
        padded = F.pad(t, (pad, pad, pad, pad), mode="reflect")
        return F.unfold(padded, _KERNEL).view(b, t.shape[1], taps, h * w)

    guide_n = neighbours(guide)
    centre = guide.reshape(b, guide.shape[1], 1, h * w)
    distance_sq = (guide_n - centre).abs().sum(dim=1).square()  # [b, taps, hw]
    window = _gaussian_window(_KERNEL, _SIGMA_SPACE, values.device)
    spatial = torch.outer(window, window).reshape(1, taps, 1)
    weights = torch.exp(-0.5 * distance_sq / _SIGMA_COLOR**2) * spatial
    blurred = (neighbours(values) * weights.unsqueeze(1)).sum(dim=2) / weights.sum(
        dim=1, keepdim=True
    )
    return blurred.view(b, c, h, w)


def _bilateral_by_offsets(values: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
    """One neighbour offset at a time, accumulating in place: about 4x faster on a CPU, where
    materialising all neighbours costs more memory traffic than the arithmetic.
    """
    b, _c, h, w = values.shape
    pad = _KERNEL // 2
    padded_values = F.pad(values, (pad, pad, pad, pad), mode="reflect")
    padded_guide = F.pad(guide, (pad, pad, pad, pad), mode="reflect")
    window = _gaussian_window(_KERNEL, _SIGMA_SPACE, values.device).tolist()
    numerator = torch.zeros_like(values)
    denominator = values.new_zeros(b, 1, h, w)
    for dy in range(_KERNEL):
        for dx in range(_KERNEL):
            neighbour = padded_guide[:, :, dy : dy + h, dx : dx + w]
            distance = (neighbour - guide).abs_().sum(dim=1, keepdim=True)
            weight = distance.square_().mul_(-0.5 / _SIGMA_COLOR**2).exp_()
            weight.mul_(window[dy] * window[dx])
            numerator.addcmul_(padded_values[:, :, dy : dy + h, dx : dx + w], weight)
            denominator.add_(weight)
    return numerator.div_(denominator)


def sharpen_positive(e_pos: torch.Tensor, x0_pos: torch.Tensor, alpha: float) -> torch.Tensor:
    """Blend the positive noise with its edge-preserving blur (Fooocus' sharpness)."""
    if alpha == 0.0:
        return e_pos
    dims = tuple(range(1, x0_pos.ndim))
    guide = (x0_pos - x0_pos.mean(dim=dims, keepdim=True)) / (
        x0_pos.std(dim=dims, keepdim=True) + 1e-5
    )
    degraded = joint_bilateral_blur(e_pos, guide)
    return alpha * degraded + (1.0 - alpha) * e_pos


def sharpness_alpha(sharpness: float, progress: float) -> float:
    """Weight of the blurred positive noise: ``0.001 * sharpness * progress``."""
    return 0.001 * sharpness * progress


def guide(
    x: torch.Tensor,
    x0_pos: torch.Tensor,
    x0_neg: torch.Tensor,
    *,
    cfg: float,
    adaptive_cfg: float,
    sharpness: float,
    progress: float,
) -> torch.Tensor:
    """The guided denoised estimate from the positive and negative predictions."""
    e_pos = sharpen_positive(x - x0_pos, x0_pos, sharpness_alpha(sharpness, progress))
    e_neg = x - x0_neg
    e = e_neg + cfg * (e_pos - e_neg)
    if cfg > adaptive_cfg:
        mimic = e_neg + adaptive_cfg * (e_pos - e_neg)
        e = progress * e + (1.0 - progress) * mimic
    return x - e


def is_unit_cfg(cfg: float) -> bool:
    """cfg == 1 means no negative pass at all (Fooocus compares with a 1e-4 tolerance)."""
    return math.isclose(cfg, 1.0, abs_tol=1e-4)
