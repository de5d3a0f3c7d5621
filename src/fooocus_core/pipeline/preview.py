"""Cheap previews of the denoised latent during sampling."""

from __future__ import annotations

import io

import torch
from PIL import Image

# Linear map from SDXL's 4 latent channels to RGB in [-1, 1] (a least-squares fit of the VAE).
_SDXL_LATENT_RGB = torch.tensor(
    [
        [0.3651, 0.4232, 0.4341],
        [-0.2533, -0.0042, 0.1068],
        [0.1076, 0.1111, -0.0362],
        [-0.3165, -0.2492, -0.2188],
    ]
)
_SDXL_LATENT_RGB_BIAS = torch.tensor([0.1084, -0.0175, -0.0011])


def latent_to_rgb(latent: torch.Tensor) -> Image.Image:
    """Approximate RGB image (1/8 of the final size) of the first latent in a batch."""
    z = latent[0].detach().to("cpu", torch.float32)
    if z.shape[0] != 4:
        z = z[:4]
    rgb = torch.einsum("chw,cr->rhw", z, _SDXL_LATENT_RGB) + _SDXL_LATENT_RGB_BIAS[:, None, None]
    pixels = ((rgb + 1.0) * 127.5).clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(pixels, "RGB")


def encode_preview(image: Image.Image, max_side: int = 256) -> bytes:
    """JPEG bytes of a preview, upscaled (nearest) so its longer side is at most ``max_side``."""
    scale = max(1, max_side // max(image.size))
    if scale > 1:
        image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=80)
    return buffer.getvalue()
