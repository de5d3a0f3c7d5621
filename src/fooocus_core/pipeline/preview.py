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


def _to_image(rgb: torch.Tensor) -> Image.Image:
    """[3, H, W] in [-1, 1] → PIL RGB."""
    pixels = ((rgb.float() + 1.0) * 127.5).clamp(0, 255).to(torch.uint8)
    return Image.fromarray(pixels.permute(1, 2, 0).cpu().numpy(), "RGB")


def latent_to_rgb(latent: torch.Tensor) -> Image.Image:
    """Approximate RGB image of the first latent in a batch, at the latent's size."""
    z = latent[0].detach().to("cpu", torch.float32)
    if z.shape[0] != 4:
        z = z[:4]
    rgb = torch.einsum("chw,cr->rhw", z, _SDXL_LATENT_RGB) + _SDXL_LATENT_RGB_BIAS[:, None, None]
    return _to_image(rgb)


def encode_preview(image: Image.Image) -> bytes:
    """JPEG bytes of a preview image."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


class Previewer:
    """Turns the denoised latent of a step into preview JPEG bytes.

    Previews are a quarter of the final size: from the VAE-approximation network when one is
    given, else from the linear latent-to-RGB map upscaled x2.
    """

    def __init__(self, approx: torch.nn.Module | None = None) -> None:
        self.approx = approx

    def __call__(self, denoised: torch.Tensor) -> bytes:
        if self.approx is None:
            image = latent_to_rgb(denoised)
            return encode_preview(image.resize((image.width * 2, image.height * 2), Image.NEAREST))
        param = next(self.approx.parameters())
        with torch.inference_mode():
            rgb = self.approx(denoised[:1].to(param.device, param.dtype))[0]
        return encode_preview(_to_image(rgb))
