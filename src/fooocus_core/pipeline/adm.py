"""SDXL size ("ADM") conditioning with Fooocus' positive/negative scaling.

SDXL conditions on ``[h_orig, w_orig, crop_top, crop_left, h_target, w_target]``. Fooocus keeps two
versions per branch: an *emphasized* one whose original size is the generation size times a
scaler (1.5 for the positive, 0.8 for the negative by default) and a *consistent* one whose
original size equals the target size, and switches from the first to the second once the
discrete timestep drops to ``999 * (1 - adm_scaler_end)`` or below.
"""

from __future__ import annotations

import torch


def round_to_64(value: float) -> int:
    """Nearest multiple of 64 (SDXL's target size bucket)."""
    return round(value / 64.0) * 64


def time_ids(width: int, height: int, scaler: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The (emphasized, consistent) SDXL time ids for one branch at this generation size."""
    target_h, target_w = round_to_64(height), round_to_64(width)
    emphasized = [int(height * scaler), int(width * scaler), 0, 0, target_h, target_w]
    consistent = [target_h, target_w, 0, 0, target_h, target_w]
    return (
        torch.tensor(emphasized, dtype=torch.float32),
        torch.tensor(consistent, dtype=torch.float32),
    )


def emphasis_active(timestep: float, adm_scaler_end: float) -> bool:
    """Whether the emphasized size conditioning applies at this discrete timestep."""
    return timestep > 999.0 * (1.0 - adm_scaler_end)
