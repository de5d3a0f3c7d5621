"""FreeU V2 (Si et al. 2023, "FreeU: Free Lunch in Diffusion U-Net") as Fooocus applies it.

FreeU re-weights the two inputs of every UNet decoder (up-block) layer just before they are
concatenated: the *backbone* features ``h`` coming up the decoder and the *skip* features from the
matching encoder layer. Fooocus uses ComfyUI's "FreeU_V2" variant (spec §3.6), not the V1 that
diffusers' ``enable_freeu`` implements:

* the scales are chosen by the channel count of ``h``: ``4 * model_channels`` → ``(b1, s1)``,
  ``2 * model_channels`` → ``(b2, s2)``, any other width → untouched;
* backbone: the first half of ``h``'s channels is multiplied by ``(b - 1) * m + 1``, where ``m``
  is the channel mean of ``h`` min-max normalised over each sample's spatial positions;
* skip: the centred spectrum (FFT, shift) is multiplied by ``s`` on its central
  ``2 * threshold`` square (threshold 1: the lowest frequencies), transformed back, real part.

In diffusers each decoder resnet receives ``cat([h, skip])``, so FreeU is a forward pre-hook on
the up-block resnets that splits the input at ``h``'s channel count (known from the block
structure), re-weights both parts and concatenates them again. :func:`freeu_applied` installs
the hooks for one run and always removes them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

#: Half-width of the low-frequency square of the skip spectrum that is scaled.
FOURIER_THRESHOLD = 1


@dataclass(frozen=True)
class FreeUParams:
    """Backbone factors ``b1``, ``b2`` and skip factors ``s1``, ``s2`` (Fooocus' defaults)."""

    b1: float = 1.01
    b2: float = 1.02
    s1: float = 0.99
    s2: float = 0.95

    def as_tuple(self) -> tuple[float, float, float, float]:
        """``(b1, b2, s1, s2)``, the order Fooocus' metadata writes."""
        return (self.b1, self.b2, self.s1, self.s2)


def normalised_channel_mean(h: Tensor) -> Tensor:
    """The channel mean of ``h`` ``[B, C, H, W]`` min-max normalised per sample: ``[B, 1, H, W]``.

    A sample whose channel mean is constant over its positions gets 0 (the formula divides by
    zero there).
    """
    mean = h.mean(dim=1, keepdim=True)
    flat = mean.flatten(start_dim=1)
    low = flat.min(dim=1).values.view(-1, 1, 1, 1)
    high = flat.max(dim=1).values.view(-1, 1, 1, 1)
    span = high - low
    normalised = (mean - low) / torch.where(span > 0, span, torch.ones_like(span))
    return torch.where(span > 0, normalised, torch.zeros_like(normalised))


def backbone_factor(h: Tensor, b: float) -> Tensor:
    """``(b - 1) * m + 1`` with ``m`` from :func:`normalised_channel_mean`: ``[B, 1, H, W]``."""
    return (b - 1.0) * normalised_channel_mean(h) + 1.0


def scale_backbone(h: Tensor, b: float) -> Tensor:
    """``h`` with its first half of channels multiplied by :func:`backbone_factor`."""
    half = h.shape[1] // 2
    scaled = h[:, :half] * backbone_factor(h, b)
    return torch.cat([scaled, h[:, half:]], dim=1)


def fourier_mask(
    height: int, width: int, scale: float, threshold: int = FOURIER_THRESHOLD
) -> Tensor:
    """Multiplier of a centred (``fftshift``-ed) spectrum: 1, except ``scale`` on the
    ``2 * threshold`` square around the zero frequency (rows and columns ``n//2 - threshold``
    to ``n//2 + threshold - 1``, cut at the border).
    """
    mask = torch.ones(height, width)
    row, col = height // 2, width // 2
    mask[max(0, row - threshold) : row + threshold, max(0, col - threshold) : col + threshold] = (
        scale
    )
    return mask


def fourier_filter(x: Tensor, scale: float, threshold: int = FOURIER_THRESHOLD) -> Tensor:
    """Scale the lowest spatial frequencies of ``x`` ``[B, C, H, W]`` by ``scale``.

    FFT over (H, W) in float32, shift the zero frequency to the centre, multiply by
    :func:`fourier_mask`, undo the shift, inverse FFT, keep the real part, back to ``x``'s dtype.
    """
    spectrum = torch.fft.fftshift(torch.fft.fftn(x.float(), dim=(-2, -1)), dim=(-2, -1))
    mask = fourier_mask(x.shape[-2], x.shape[-1], scale, threshold).to(x.device)
    spectrum = torch.fft.ifftshift(spectrum * mask, dim=(-2, -1))
    return torch.fft.ifftn(spectrum, dim=(-2, -1)).real.to(x.dtype)


def apply_freeu(h: Tensor, skip: Tensor, b: float, s: float) -> tuple[Tensor, Tensor]:
    """FreeU V2 on one decoder layer's inputs: scaled backbone, filtered skip."""
    return scale_backbone(h, b), fourier_filter(skip, s)


def scales_for(
    channels: int, model_channels: int, params: FreeUParams
) -> tuple[float, float] | None:
    """``(b, s)`` for a backbone of ``channels`` width, or None where FreeU leaves it alone."""
    if channels == 4 * model_channels:
        return params.b1, params.s1
    if channels == 2 * model_channels:
        return params.b2, params.s2
    return None


def decoder_resnets(unet: nn.Module) -> list[tuple[nn.Module, int]]:
    """Every up-block resnet of a diffusers UNet with the channel count of its backbone input.

    A decoder resnet's input is ``cat([h, skip])``. ``h`` comes from the previous resnet of the
    same block, or for a block's first resnet from the previous block (the mid block before the
    first); upsamplers keep the channel count.
    """
    found: list[tuple[nn.Module, int]] = []
    channels = int(unet.mid_block.resnets[-1].out_channels)
    for block in unet.up_blocks:
        for resnet in block.resnets:
            found.append((resnet, channels))
            channels = int(resnet.out_channels)
    return found


def _pre_hook(h_channels: int, b: float, s: float) -> Any:
    def hook(
        _module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        if args:
            joined, rest = args[0], args[1:]
        else:
            joined, rest = kwargs.pop("input_tensor"), ()
        h, skip = apply_freeu(joined[:, :h_channels], joined[:, h_channels:], b, s)
        return (torch.cat([h, skip], dim=1), *rest), kwargs

    return hook


@contextmanager
def freeu_applied(unet: nn.Module, params: FreeUParams | None) -> Iterator[None]:
    """Apply FreeU V2 to ``unet`` inside the ``with`` block (nothing when ``params`` is None).

    The pre-hooks are removed on exit, also when sampling raises (cancel, errors).
    """
    if params is None:
        yield
        return
    model_channels = int(unet.config.block_out_channels[0])
    handles = []
    try:
        for resnet, h_channels in decoder_resnets(unet):
            scales = scales_for(h_channels, model_channels, params)
            if scales is not None:
                hook = _pre_hook(h_channels, *scales)
                handles.append(resnet.register_forward_pre_hook(hook, with_kwargs=True))
        yield
    finally:
        for handle in handles:
            handle.remove()
