"""The starter model's drawn data, its pixel measurement and a short end-to-end training run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from fooocus_core.config import SHIPPED_CONFIG_DIR, EngineConfig
from fooocus_core.engine import Engine
from fooocus_core.models import keys as K
from fooocus_core.models.checkpoint import CheckpointKind
from fooocus_core.models.loader import CONFIG_METADATA_KEY, load_sdxl
from fooocus_core.models.tiny import TINY_CONFIGS
from fooocus_core.starter import train as starter_train
from fooocus_core.starter.data import (
    BACKGROUNDS,
    COLOURS,
    SHAPES,
    SIZE_RANGE,
    Scene,
    all_prompts,
    combinations,
    draw,
    draw_batch,
)
from fooocus_core.starter.measure import measure, score
from fooocus_core.task import GenerationTask

SHORT_RUN = [
    "--image-size", "64",
    "--vae-steps", "12",
    "--vae-batch", "4",
    "--rescale-images", "64",
    "--cache-images", "64",
    "--unet-steps", "24",
    "--unet-batch", "8",
    "--warmup-steps", "4",
    "--log-every", "6",
    "--threads", "1",
]  # fmt: skip


def test_prompts_cover_every_allowed_combination_once() -> None:
    combos = combinations()
    assert len(combos) == 69 == len(set(all_prompts()))
    assert all(COLOURS[c] != BACKGROUNDS[b] for _, c, b in combos)
    assert {s for s, _, _ in combos} == set(SHAPES)
    assert "a red circle on a blue background" in all_prompts()
    assert "a blue square on a blue background" not in all_prompts()


@pytest.mark.parametrize("size", [32, 64, 128])
def test_drawn_scenes_have_their_size_colours_and_position(size: int) -> None:
    images, scenes = draw_batch(3, 200, size)
    assert images.shape == (200, size, size, 3) and images.dtype == np.uint8
    for image, scene in zip(images, scenes, strict=True):
        assert (
            scene.colour != scene.background
            or COLOURS[scene.colour] != BACKGROUNDS[scene.background]
        )
        assert COLOURS[scene.colour] != BACKGROUNDS[scene.background]
        lo, hi = SIZE_RANGE
        assert lo * size <= scene.size <= hi * size
        half = scene.size / 2
        assert half <= scene.centre_x <= size - half and half <= scene.centre_y <= size - half
        corner = tuple(int(v) for v in image[0, 0])
        assert corner == BACKGROUNDS[scene.background]
        # The shape's centre (inside even a triangle: half-way down) has the foreground colour.
        y, x = int(scene.centre_y + scene.size / 4), int(scene.centre_x)
        assert tuple(int(v) for v in image[y, x]) == COLOURS[scene.colour]
    # Anti-aliased: some pixels lie between the two colours.
    assert len(np.unique(images[0].reshape(-1, 3), axis=0)) > 2


def test_drawing_is_deterministic_per_seed() -> None:
    a, scenes_a = draw_batch(11, 16, 64)
    b, scenes_b = draw_batch(11, 16, 64)
    c, _ = draw_batch(12, 16, 64)
    assert np.array_equal(a, b) and scenes_a == scenes_b
    assert not np.array_equal(a, c)


def test_measurement_is_right_on_every_drawn_image() -> None:
    for size, seed in [(64, 0), (32, 1), (128, 2)]:
        images, scenes = draw_batch(seed, 300 if size < 128 else 100, size)
        rates = score(list(images), scenes)
        assert (rates.colour, rates.background, rates.shape, rates.all_three) == (1, 1, 1, 1)


def test_measurement_of_each_shape_and_an_empty_image() -> None:
    for shape in SHAPES:
        m = measure(draw(Scene(shape, "orange", "gray", 30.0, 32.0, 32.0), 64))
        assert (m.shape, m.colour, m.background) == (shape, "orange", "gray")
    empty = np.full((64, 64, 3), BACKGROUNDS["white"], dtype=np.uint8)
    m = measure(empty)
    assert (m.background, m.colour, m.shape) == ("white", None, None)


def test_latent_rescale_keeps_reconstructions_and_gives_unit_spread() -> None:
    settings = starter_train.TrainSettings(seed=5, rescale_images=64)
    vae = starter_train.build_vae(settings)
    x = starter_train.to_pixels(draw_batch(99, 8, 64)[0])
    with torch.no_grad():
        before = vae.decode(vae.encode(x).latent_dist.mean).sample
        starter_train.rescale_latents(vae, settings, lambda _line: None)
        latent = vae.encode(starter_train.to_pixels(draw_batch(98, 64, 64)[0])).latent_dist.mean
        after = vae.decode(vae.encode(x).latent_dist.mean).sample
    assert torch.allclose(before, after, atol=1e-4)
    scaled = latent * vae.config.scaling_factor
    assert scaled.mean(dim=(0, 2, 3)).abs().max() < 0.1
    assert (scaled.std(dim=(0, 2, 3)) - 1).abs().max() < 0.1


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint from a short run of the console entry point."""
    out = tmp_path_factory.mktemp("starter") / "checkpoints" / "starter.safetensors"
    assert starter_train.main([*SHORT_RUN, "--out", str(out)]) == 0
    return out


def test_short_run_writes_an_fp16_sdxl_file_with_its_command(trained: Path) -> None:
    path = trained
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
        names = list(handle.keys())
        dtypes = {handle.get_slice(name).get_dtype() for name in names}
    assert dtypes == {"F16"}
    prefixes = (K.UNET_PREFIX, K.VAE_PREFIX, K.CLIP_L_PREFIX, K.CLIP_G_PREFIX)
    assert all(name.startswith(prefixes) for name in names)
    assert all(any(name.startswith(p) for name in names) for p in prefixes)
    assert json.loads(metadata[CONFIG_METADATA_KEY]) == json.loads(json.dumps(TINY_CONFIGS))
    record = json.loads(metadata[starter_train.SETTINGS_METADATA_KEY])
    assert record["command"].startswith("fooocus-train-starter ")
    assert "--unet-steps 24" in record["command"]
    assert record["settings"]["unet_steps"] == 24 and record["settings"]["kl_weight"] == 1e-7
    assert record["settings"]["seed"] == 0


def test_short_run_loads_like_a_real_checkpoint_and_generates(
    trained: Path, tmp_path: Path
) -> None:
    path = trained
    models = load_sdxl(path, SHIPPED_CONFIG_DIR, device="cpu")
    assert models.kind is CheckpointKind.SDXL_BASE
    assert models.vae.config.scaling_factor == pytest.approx(0.13025)
    engine = Engine(
        EngineConfig(models_dir=str(path.parent.parent), output_dir=str(tmp_path), device="cpu")
    )
    task = GenerationTask(
        prompt="a red circle on a blue background",
        negative_prompt="",
        styles=[],
        base_model="starter.safetensors",
        aspect_ratio="64*64",
        overwrite_step=3,
        seed=1,
        sampler="euler",
        scheduler="normal",
        guidance_scale=4.0,
    )
    result = engine.generate(task)
    image = np.asarray(Image.open(result.images[0].path).convert("RGB"))
    assert image.shape == (64, 64, 3)
    assert measure(image).background in BACKGROUNDS
