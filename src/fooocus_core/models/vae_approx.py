"""The small convolutional "VAE approximation" used for sampling previews.

Fooocus ships it as ``vae_approx/xlvaeapp.pth`` (SDXL latents): the latent is upsampled x2
(nearest), padded by 11 pixels, then passed through eight 2-D convolutions without padding
(kernels 7, 5, then 3), each followed by a leaky ReLU with slope 0.1. Its output is an RGB image
at a quarter of the final resolution in roughly [-1, 1].
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

#: File name of the SDXL preview model in the vae_approx folder.
SDXL_VAE_APPROX_FILE = "xlvaeapp.pth"

_LAYERS: tuple[tuple[int, int, int], ...] = (
    (4, 8, 7),
    (8, 16, 5),
    (16, 32, 3),
    (32, 64, 3),
    (64, 32, 3),
    (32, 16, 3),
    (16, 8, 3),
    (8, 3, 3),
)
_PAD = 11


class VAEApprox(nn.Module):
    """Latent (4 channels) → preview RGB at twice the latent resolution."""

    def __init__(self) -> None:
        super().__init__()
        for index, (cin, cout, kernel) in enumerate(_LAYERS, start=1):
            self.add_module(f"conv{index}", nn.Conv2d(cin, cout, kernel))

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(latent, scale_factor=2.0, mode="nearest")
        x = F.pad(x, (_PAD, _PAD, _PAD, _PAD))
        for index in range(1, len(_LAYERS) + 1):
            x = F.leaky_relu(getattr(self, f"conv{index}")(x), 0.1)
        return x


def load_vae_approx(path: str | Path, device: torch.device | str = "cpu") -> VAEApprox:
    """Load the preview model from a ``.pth``/``.safetensors`` file (float32, eval mode)."""
    from fooocus_core.models.checkpoint import read_state_dict

    state, _metadata = read_state_dict(Path(path))
    model = VAEApprox()
    model.load_state_dict({key: value.float() for key, value in state.items()})
    return model.to(device).eval()
