"""FreeU V2 (Si et al. 2023; spec §3.6): the math on small tensors, the hooks, the engine."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fooocus_core.engine import Engine
from fooocus_core.models.tiny import build_tiny_sdxl
from fooocus_core.pipeline import freeu
from fooocus_core.pipeline.freeu import (
    FreeUParams,
    backbone_factor,
    decoder_resnets,
    fourier_filter,
    fourier_mask,
    freeu_applied,
    scale_backbone,
    scales_for,
)
from fooocus_core.task import GenerationTask

# --- the math ------------------------------------------------------------------------------------


def test_backbone_factor_is_min_max_normalised_channel_mean() -> None:
    # Channel means per position: 1, 2, 3, 5 (sample 0); constant 7 (sample 1).
    mean = torch.tensor([[1.0, 2.0], [3.0, 5.0]])
    h = torch.stack([mean + 1.0, mean - 1.0, mean + 0.5, mean - 0.5])[None]  # [1, 4, 2, 2]
    h = torch.cat([h, torch.full_like(h, 7.0)])
    factor = backbone_factor(h, 1.2)
    m = torch.tensor([[0.0, 0.25], [0.5, 1.0]])
    assert factor.shape == (2, 1, 2, 2)
    torch.testing.assert_close(factor[0, 0], 0.2 * m + 1.0)
    torch.testing.assert_close(factor[1, 0], torch.ones(2, 2))  # constant mean: left alone


def test_scale_backbone_scales_only_the_first_half_of_the_channels() -> None:
    h = torch.randn(2, 6, 4, 4, generator=torch.Generator().manual_seed(0))
    b = 1.3
    out = scale_backbone(h, b)
    mean = h.mean(dim=1, keepdim=True)
    low = mean.amin(dim=(2, 3), keepdim=True)
    high = mean.amax(dim=(2, 3), keepdim=True)
    expected = (b - 1.0) * (mean - low) / (high - low) + 1.0
    torch.testing.assert_close(out[:, :3], h[:, :3] * expected)
    assert torch.equal(out[:, 3:], h[:, 3:])


def test_fourier_mask_scales_the_central_two_by_two_frequencies() -> None:
    mask = fourier_mask(8, 6, 0.5)
    assert mask[3:5, 2:4].eq(0.5).all()
    assert mask.eq(0.5).sum() == 4 and mask.eq(1.0).sum() == 44
    assert fourier_mask(1, 1, 0.5).item() == 0.5  # cut at the border


def test_fourier_filter_scales_low_and_keeps_high_frequencies() -> None:
    size, s = 8, 0.6
    rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    constant = torch.full((1, 1, size, size), 2.5)
    checkerboard = ((-1.0) ** (rows + cols)).float()[None, None]
    torch.testing.assert_close(fourier_filter(constant, s), constant * s)
    torch.testing.assert_close(fourier_filter(checkerboard, s), checkerboard)
    # A wave of frequency 1 has its -1 half inside the window and its +1 half outside.
    wave = torch.cos(2 * math.pi * cols / size).float()[None, None]
    torch.testing.assert_close(fourier_filter(wave, s), wave * (1 + s) / 2)


def test_fourier_filter_keeps_the_dtype() -> None:
    x = torch.randn(1, 2, 4, 4).to(torch.bfloat16)
    assert fourier_filter(x, 0.9).dtype == torch.bfloat16


def test_scales_are_keyed_on_the_backbone_width() -> None:
    params = FreeUParams(1.1, 1.2, 0.9, 0.8)
    assert scales_for(1280, 320, params) == (1.1, 0.9)
    assert scales_for(640, 320, params) == (1.2, 0.8)
    assert scales_for(320, 320, params) is None


# --- the hooks on a diffusers UNet ---------------------------------------------------------------


@pytest.fixture(scope="module")
def unet() -> torch.nn.Module:
    return build_tiny_sdxl().unet


def _unet_inputs() -> tuple[tuple[torch.Tensor, ...], dict[str, object]]:
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(2, 4, 8, 8, generator=generator)
    kwargs: dict[str, object] = {
        "encoder_hidden_states": torch.randn(2, 77, 96, generator=generator),
        "added_cond_kwargs": {
            "text_embeds": torch.randn(2, 32, generator=generator),
            "time_ids": torch.tensor([[64.0, 64, 0, 0, 64, 64]] * 2),
        },
        "return_dict": False,
    }
    return (x, torch.tensor(500.0)), kwargs


def test_decoder_resnets_split_backbone_and_skip(unet: torch.nn.Module) -> None:
    found = decoder_resnets(unet)
    assert [h for _, h in found] == [64, 64, 64, 64, 64, 64, 64, 32, 32]
    for resnet, h in found:
        assert 0 < h < resnet.in_channels  # the rest is the skip


def test_hooks_see_backbone_and_skip(unet: torch.nn.Module, monkeypatch) -> None:
    seen: list[tuple[int, int, float, float]] = []
    original = freeu.apply_freeu

    def spy(h: torch.Tensor, skip: torch.Tensor, b: float, s: float):
        seen.append((h.shape[1], skip.shape[1], b, s))
        return original(h, skip, b, s)

    monkeypatch.setattr(freeu, "apply_freeu", spy)
    args, kwargs = _unet_inputs()
    with torch.no_grad(), freeu_applied(unet, FreeUParams(1.1, 1.2, 0.9, 0.8)):
        unet(*args, **kwargs)
    # model channels 32: the 64-wide backbones get (b2, s2); 128-wide ones would get (b1, s1).
    skips = [resnet.in_channels - h for resnet, h in decoder_resnets(unet)[:7]]
    assert seen == [(64, skip, 1.2, 0.8) for skip in skips]


def test_hooks_change_the_output_and_are_removed(unet: torch.nn.Module) -> None:
    args, kwargs = _unet_inputs()
    with torch.no_grad():
        plain = unet(*args, **kwargs)[0]
        with freeu_applied(unet, FreeUParams(1.1, 1.2, 0.9, 0.8)):
            assert any(r._forward_pre_hooks for r, _ in decoder_resnets(unet))
            patched = unet(*args, **kwargs)[0]
        again = unet(*args, **kwargs)[0]
    assert not torch.allclose(plain, patched)
    assert torch.equal(plain, again)
    assert not any(r._forward_pre_hooks for r, _ in decoder_resnets(unet))


def test_hooks_are_removed_when_sampling_fails(unet: torch.nn.Module) -> None:
    with pytest.raises(RuntimeError), freeu_applied(unet, FreeUParams()):
        raise RuntimeError("cancelled")
    assert not any(r._forward_pre_hooks for r, _ in decoder_resnets(unet))


def test_neutral_factors_keep_the_output(unet: torch.nn.Module) -> None:
    args, kwargs = _unet_inputs()
    with torch.no_grad():
        plain = unet(*args, **kwargs)[0]
        with freeu_applied(unet, FreeUParams(1.0, 1.0, 1.0, 1.0)):
            neutral = unet(*args, **kwargs)[0]
    torch.testing.assert_close(neutral, plain, rtol=1e-4, atol=1e-5)


# --- through the engine --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def engine(tiny_engine: Engine) -> Engine:
    return tiny_engine


def task(**changes: object) -> GenerationTask:
    values: dict[str, object] = {
        "prompt": "a red circle",
        "negative_prompt": "blurry",
        "styles": [],
        "base_model": "tiny.safetensors",
        "aspect_ratio": "64*64",
        "overwrite_step": 4,
        "seed": 42,
        "sampler": "dpmpp_2m",
        "scheduler": "karras",
        "disable_preview": True,
    }
    values.update(changes)
    return GenerationTask(**values)


def pixels(path: str) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(np.int16)


def test_engine_freeu_off_is_plain_and_on_differs(engine: Engine) -> None:
    plain = engine.generate(task())
    off = engine.generate(task(freeu_b1=1.5, freeu_b2=1.6, freeu_s1=0.2, freeu_s2=0.3))
    on = engine.generate(
        task(freeu_enabled=True, freeu_b1=1.1, freeu_b2=1.4, freeu_s1=0.9, freeu_s2=0.5)
    )
    assert np.array_equal(pixels(off.images[0].path), pixels(plain.images[0].path))
    assert np.abs(pixels(on.images[0].path) - pixels(plain.images[0].path)).max() > 0
    assert "freeu" not in plain.images[0].metadata
    assert on.images[0].metadata["freeu"] == "(1.1, 1.4, 0.9, 0.5)"
    unet = engine._models.get_base("tiny.safetensors").unet
    assert not any(r._forward_pre_hooks for r, _ in decoder_resnets(unet))


def test_engine_freeu_in_a1111_metadata(engine: Engine) -> None:
    from fooocus_core.metadata import read_metadata

    result = engine.generate(task(freeu_enabled=True, metadata_scheme="a1111"))
    text, scheme = read_metadata(Path(result.images[0].path))
    assert scheme == "a1111"
    assert "FreeU: (1.01, 1.02, 0.99, 0.95)" in text.replace('"', "")
    assert json.loads(json.dumps(result.images[0].metadata))["freeu"] == (
        "(1.01, 1.02, 0.99, 0.95)"
    )
