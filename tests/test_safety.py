"""The NSFW censor (spec §7) with a tiny random-weight StableDiffusionSafetyChecker.

The test builds a tiny checker, computes the projected embedding of one image with it and sets
every concept embedding to that embedding with a threshold between the other image's cosine and
1: the first image is flagged, the other is not, deterministically. The weights are saved the way
users have them (a pickled state dict with the original ``vision_model.vision_model.`` names) and
as safetensors carrying the tiny config in its metadata, and loaded through
:meth:`SafetyChecker.load`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers.pipelines.stable_diffusion.safety_checker import (
    StableDiffusionSafetyChecker,
    cosine_distance,
)
from PIL import Image
from safetensors.torch import save_file
from transformers import CLIPConfig

from fooocus_core.config import SHIPPED_CONFIG_DIR, EngineConfig
from fooocus_core.models.checkpoint import CheckpointError
from fooocus_core.models.safety import (
    SAFETY_CHECKER_FILE,
    SAFETY_CHECKER_URL,
    SafetyChecker,
    SafetyCheckerMissing,
    load_image_processor,
    load_safety_config,
)

TINY = {
    "projection_dim": 16,
    "vision_config": {
        "hidden_size": 32,
        "intermediate_size": 37,
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
        "patch_size": 32,
        "image_size": 224,
        "hidden_act": "quick_gelu",
    },
}


def _images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8))
    x = np.linspace(0, 255, 160)[None, :].repeat(120, 0)
    y = np.linspace(0, 255, 120)[:, None].repeat(160, 1)
    gradient = Image.fromarray(np.stack([x, y, 255 - x], -1).astype(np.uint8))
    return [noise, gradient, noise.copy()]


@pytest.fixture(scope="module")
def tiny_state() -> dict[str, torch.Tensor]:
    """A tiny checker's state dict whose concepts flag image 0 (and its copy), not image 1."""
    torch.manual_seed(0)
    model = StableDiffusionSafetyChecker(
        CLIPConfig.from_dict(load_safety_config(SHIPPED_CONFIG_DIR, TINY))
    )
    model.eval()
    images = _images()
    pixels = load_image_processor()(images[:2], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        embeds = model.visual_projection(model.vision_model(pixels)[1])
        cos = float(cosine_distance(embeds[1:2], embeds[0:1])[0, 0])
        assert cos < 0.99, f"the two test images must embed differently ({cos})"
        model.concept_embeds.copy_(embeds[0].expand_as(model.concept_embeds))
        model.concept_embeds_weights.fill_((1.0 + cos) / 2)
        model.special_care_embeds_weights.fill_(2.0)  # never hit
    return {k: v.clone() for k, v in model.state_dict().items()}


def _original_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The Hugging Face file's names: ``vision_model.vision_model.*`` plus ``position_ids``."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith("vision_model.") and not key.startswith("vision_model.vision_model."):
            key = "vision_model." + key
        out[key] = value
    out["vision_model.vision_model.embeddings.position_ids"] = torch.arange(50)[None]
    return out


def test_shipped_configs() -> None:
    config = CLIPConfig.from_dict(load_safety_config())
    vision = config.vision_config
    assert (vision.hidden_size, vision.num_hidden_layers, vision.patch_size) == (1024, 24, 14)
    assert config.projection_dim == 768 and vision.hidden_act == "quick_gelu"
    processor = load_image_processor()
    out = processor([Image.new("RGB", (300, 200), (255, 0, 0))], return_tensors="pt")
    pixels = out["pixel_values"]
    assert pixels.shape == (1, 3, 224, 224)
    # red channel of pure red: (1 - mean) / std, blue: (0 - mean) / std
    torch.testing.assert_close(pixels[0, 0, 0, 0].item(), (1 - 0.48145466) / 0.26862954)
    torch.testing.assert_close(pixels[0, 2, 0, 0].item(), -0.40821073 / 0.27577711)


def test_pickled_file_flags_and_blacks_out(
    tiny_state: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    path = tmp_path / SAFETY_CHECKER_FILE
    torch.save(_original_names(tiny_state), path)
    checker = SafetyChecker.load(path, config_overrides=TINY)
    images = _images()
    assert checker.check(images) == [True, False, True]
    censored = checker.censor(images)
    assert censored[1] is images[1]
    for index in (0, 2):
        assert censored[index].size == images[index].size
        assert censored[index].mode == "RGB"
        assert not np.asarray(censored[index]).any()
    # RGBA and grayscale inputs: black of the same mode, opaque
    rgba = checker.censor([images[0].convert("RGBA")])[0]
    assert rgba.mode == "RGBA" and rgba.getpixel((0, 0)) == (0, 0, 0, 255)
    assert checker.censor([]) == []


def test_safetensors_with_config_metadata(
    tiny_state: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    path = tmp_path / "stable-diffusion-safety-checker.safetensors"
    save_file(
        {k: v.contiguous() for k, v in tiny_state.items()},
        str(path),
        metadata={"fooocus_core.configs": json.dumps({"safety_checker": TINY})},
    )
    config = EngineConfig(
        models_dir=str(tmp_path / "models"), model_folders={"safety_checker": str(tmp_path)}
    )
    checker = SafetyChecker.from_config(config)
    assert checker.check(_images()) == [True, False, True]
    assert checker.dtype == torch.float32


def test_missing_file_names_file_folder_and_url(tmp_path: Path) -> None:
    config = EngineConfig(models_dir=str(tmp_path))
    with pytest.raises(SafetyCheckerMissing) as info:
        SafetyChecker.from_config(config)
    message = str(info.value)
    assert SAFETY_CHECKER_FILE in message and SAFETY_CHECKER_URL in message
    assert str(tmp_path / "safety_checker") in message
    assert isinstance(info.value, FileNotFoundError)


def test_wrong_file_is_refused(tiny_state: dict[str, torch.Tensor], tmp_path: Path) -> None:
    path = tmp_path / SAFETY_CHECKER_FILE
    state = dict(tiny_state)
    del state["visual_projection.weight"]
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="visual_projection"):
        SafetyChecker.load(path, config_overrides=TINY)
