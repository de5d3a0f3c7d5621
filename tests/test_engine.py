"""The engine through its public entry point, on the tiny checkpoint."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fooocus_core import STARTER_MODEL
from fooocus_core.config import EngineConfig
from fooocus_core.engine import Engine
from fooocus_core.errors import InvalidTask
from fooocus_core.metadata import read_metadata
from fooocus_core.pipeline.cancel import CancelToken
from fooocus_core.pipeline.generate import ImageJob, sample_latent
from fooocus_core.prompts.encode import Conditioning
from fooocus_core.sampling.samplers import SAMPLER_NAMES
from fooocus_core.sampling.schedules import SCHEDULER_NAMES, DiscreteSchedule
from fooocus_core.task import GenerationTask, Progress

RUNNABLE_SCHEDULERS = [name for name in SCHEDULER_NAMES if name != "edm_playground_v2.5"]


@pytest.fixture(scope="module")
def models_dir(tiny_models_dir: Path) -> Path:
    return tiny_models_dir


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
        "sampler": "euler",
        "scheduler": "karras",
    }
    values.update(changes)
    return GenerationTask(**values)


def pixels(path: str) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_generate_saves_images_with_seeds_and_metadata(engine: Engine) -> None:
    result = engine.generate(task(image_number=2, seed=7, metadata_scheme="fooocus"))
    assert [image.seed for image in result.images] == [7, 8]
    assert not result.stopped
    for image in result.images:
        path = Path(image.path)
        assert path.is_file() and path.suffix == ".png"
        assert path.parent.name.count("-") == 2  # outputs/YYYY-MM-DD/
        assert (image.width, image.height) == (64, 64)
        text, scheme = read_metadata(path)
        data = json.loads(text)
        assert scheme == "fooocus"
        assert data["seed"] == str(image.seed)
        assert data["sampler"] == "euler" and data["base_model"] == "tiny"
        assert len(data["base_model_hash"]) == 10
    assert not np.array_equal(pixels(result.images[0].path), pixels(result.images[1].path))


def test_same_seed_same_image_and_seed_increment_off(engine: Engine) -> None:
    first = engine.generate(task(seed=3))
    again = engine.generate(task(seed=3, image_number=2, disable_seed_increment=True))
    assert [image.seed for image in again.images] == [3, 3]
    reference = pixels(first.images[0].path)
    for image in again.images:
        assert np.array_equal(pixels(image.path), reference)


def test_random_seed_when_minus_one(engine: Engine) -> None:
    seeds = {engine.generate(task(seed=-1)).images[0].seed for _ in range(2)}
    assert len(seeds) == 2
    assert all(0 <= seed < 2**63 for seed in seeds)


def test_seed_wraps_modulo_2_63(engine: Engine) -> None:
    result = engine.generate(task(seed=2**63 - 1, image_number=2))
    assert [image.seed for image in result.images] == [2**63 - 1, 0]


def test_progress_is_monotonic_with_previews(engine: Engine) -> None:
    reports: list[Progress] = []
    engine.generate(task(image_number=2), on_progress=reports.append)
    percents = [report.percent for report in reports]
    assert percents == sorted(percents) and percents[-1] == 100
    steps = [report for report in reports if report.message.startswith("Sampling step")]
    assert len(steps) == 8
    assert steps[0].message == "Sampling step 1/4, image 1/2 ..."
    assert all(report.preview and report.preview[:2] == b"\xff\xd8" for report in steps)


def test_disable_preview_sends_none(engine: Engine) -> None:
    reports: list[Progress] = []
    engine.generate(task(disable_preview=True), on_progress=reports.append)
    assert all(report.preview is None for report in reports)


def test_skip_ends_only_the_current_image(engine: Engine) -> None:
    cancel = CancelToken()

    def on_progress(progress: Progress) -> None:
        if progress.message == "Sampling step 2/4, image 1/3 ...":
            cancel.skip()

    result = engine.generate(task(image_number=3, seed=10), on_progress, cancel)
    assert [image.seed for image in result.images] == [11, 12]
    assert not result.stopped
    assert "Image 1/3 skipped." in result.messages


def test_stop_keeps_finished_images(engine: Engine) -> None:
    cancel = CancelToken()

    def on_progress(progress: Progress) -> None:
        if progress.message == "Sampling step 2/4, image 2/3 ...":
            cancel.stop()

    result = engine.generate(task(image_number=3, seed=20), on_progress, cancel)
    assert [image.seed for image in result.images] == [20]
    assert result.stopped


def test_missing_checkpoint_is_a_clear_error(engine: Engine, models_dir: Path) -> None:
    with pytest.raises(InvalidTask) as error:
        engine.generate(task(base_model="not_installed.safetensors"))
    assert error.value.field == "base_model"
    assert "not_installed.safetensors" in str(error.value)
    assert str(models_dir / "checkpoints") in str(error.value)


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("sampler", "euler_b", "dpmpp_2m_sde_gpu"),
        ("scheduler", "kerras", "karras"),
        ("styles", ["Fooocus Sharp", "No Such Style"], "No Such Style"),
        ("aspect_ratio", "wide", "W*H"),
        ("base_model", "../outside.safetensors", ".."),
        ("guidance_scale", 40.0, "between 1 and 30"),
    ],
)
def test_invalid_fields_are_named(engine: Engine, field: str, value: object, expected: str) -> None:
    with pytest.raises(InvalidTask) as error:
        engine.validate(task(**{field: value}))
    assert error.value.field == field
    assert expected in error.value.message


def test_unit_cfg_needs_no_negative_and_runs(engine: Engine) -> None:
    result = engine.generate(task(guidance_scale=1.0))
    assert len(result.images) == 1


def test_styles_and_jpeg_output(engine: Engine) -> None:
    result = engine.generate(
        task(styles=["Fooocus Enhance", "Fooocus Sharp"], output_format="jpeg", seed=5)
    )
    image = result.images[0]
    assert image.path.endswith(".jpeg")
    assert len(image.metadata["full_prompt"]) == 2
    assert Image.open(image.path).format == "JPEG"


def test_listings(engine: Engine) -> None:
    assert engine.list_models() == ["tiny.safetensors", STARTER_MODEL]
    assert engine.list_models(builtin=False) == ["tiny.safetensors"]
    assert engine.list_loras() == []
    styles = engine.list_styles()
    assert styles[:2] == ["Fooocus V2", "Random Style"] and "Fooocus Sharp" in styles
    assert {"default", "anime", "realistic", "lcm", "lightning", "sai"} <= set(
        engine.list_presets()
    )


# --- every sampler and scheduler on the real (tiny) UNet ------------------------------------


@pytest.fixture(scope="module")
def conditioning(engine: Engine) -> tuple[object, Conditioning, Conditioning]:
    models = engine._models.get_base("tiny.safetensors")
    encoder = engine._encoder_for(models)
    return models, encoder.encode(["a red circle"], 1), encoder.encode(["blurry"], 1)


def _job(sampler: str, scheduler: str) -> ImageJob:
    return ImageJob(
        seed=1,
        width=64,
        height=64,
        steps=4,
        sampler=sampler,
        scheduler=scheduler,
        cfg=4.0,
        adaptive_cfg=7.0,
        sharpness=2.0,
        adm_scaler_positive=1.5,
        adm_scaler_negative=0.8,
        adm_scaler_end=0.3,
    )


@pytest.mark.parametrize("sampler", SAMPLER_NAMES)
def test_every_sampler_gives_finite_latents(
    conditioning: tuple[object, Conditioning, Conditioning], sampler: str
) -> None:
    models, positive, negative = conditioning
    steps: list[int] = []
    latent = sample_latent(
        models.unet,
        DiscreteSchedule(),
        positive,
        negative,
        _job(sampler, "karras"),
        lambda step, total, denoised: steps.append(step),
    )
    assert latent.shape == (1, 4, 8, 8)
    assert torch.isfinite(latent).all()
    assert steps == [0, 1, 2, 3]


@pytest.mark.parametrize("scheduler", RUNNABLE_SCHEDULERS)
def test_every_scheduler_gives_finite_latents(
    conditioning: tuple[object, Conditioning, Conditioning], scheduler: str
) -> None:
    models, positive, negative = conditioning
    sampler = "lcm" if scheduler in ("lcm", "tcd") else "euler"
    latent = sample_latent(
        models.unet, DiscreteSchedule(), positive, negative, _job(sampler, scheduler)
    )
    assert torch.isfinite(latent).all()


# --- reproducibility across processes -------------------------------------------------------

_CHILD = """
import sys
from fooocus_core.config import EngineConfig
from fooocus_core.engine import Engine
from fooocus_core.task import GenerationTask
engine = Engine(EngineConfig(models_dir=sys.argv[1], output_dir=sys.argv[2], device="cpu"))
task = GenerationTask(prompt="a red circle", negative_prompt="blurry", styles=[],
    base_model="tiny.safetensors", aspect_ratio="64*64", overwrite_step=4, seed=99,
    sampler=sys.argv[3], scheduler="karras")
print(engine.generate(task).images[0].path)
"""


@pytest.mark.parametrize("sampler", ["dpmpp_2m_sde_gpu", "euler_ancestral"])
def test_seed_reproduces_across_processes(models_dir: Path, tmp_path: Path, sampler: str) -> None:
    """Stochastic samplers included: Brownian-tree and ancestral noise come from the seed."""
    paths = []
    for run in range(2):
        out = tmp_path / f"run{run}"
        done = subprocess.run(
            [sys.executable, "-c", _CHILD, str(models_dir), str(out), sampler],
            capture_output=True,
            text=True,
            check=True,
        )
        paths.append(done.stdout.strip().splitlines()[-1])
    assert np.array_equal(pixels(paths[0]), pixels(paths[1]))


# --- previews ---------------------------------------------------------------------------------


def test_previews_use_the_vae_approx_model_when_present(
    tmp_path: Path, tiny_sdxl_checkpoint: Path
) -> None:
    """A VAE-approx file whose last layer outputs a constant colour shows in the previews."""
    from fooocus_core.models.vae_approx import VAEApprox

    models = tmp_path / "models"
    (models / "checkpoints").mkdir(parents=True)
    (models / "checkpoints" / "tiny.safetensors").symlink_to(tiny_sdxl_checkpoint)
    (models / "vae_approx").mkdir()
    approx = VAEApprox()
    with torch.no_grad():
        for parameter in approx.parameters():
            parameter.zero_()
        approx.conv8.bias.copy_(torch.tensor([1.0, -1.0, 0.0]))
    torch.save(approx.state_dict(), models / "vae_approx" / "xlvaeapp.pth")
    engine = Engine(EngineConfig(models_dir=str(models), output_dir=str(tmp_path / "out")))
    reports: list[Progress] = []
    engine.generate(task(aspect_ratio="128*64"), on_progress=reports.append)
    previews = [Image.open(io.BytesIO(r.preview)) for r in reports if r.preview]
    assert len(previews) == 4
    assert previews[0].size == (32, 16)  # a quarter of 128x64
    colour = np.asarray(previews[-1].convert("RGB")).reshape(-1, 3).mean(axis=0)
    assert np.allclose(colour, [255, 115, 127], atol=3)  # leaky ReLU(-1) = -0.1


def test_linear_previews_are_a_quarter_of_the_size(engine: Engine) -> None:
    reports: list[Progress] = []
    engine.generate(task(aspect_ratio="128*64"), on_progress=reports.append)
    preview = next(Image.open(io.BytesIO(r.preview)) for r in reports if r.preview)
    assert preview.size == (32, 16)


# --- Fooocus' guidance fields reach the sampler and the metadata ------------------------------


def test_guidance_fields_reach_the_sampler_and_the_metadata(engine: Engine) -> None:
    def image(**changes: object) -> tuple[np.ndarray, dict[str, object]]:
        result = engine.generate(task(guidance_scale=10.0, seed=9, disable_preview=True, **changes))
        return pixels(result.images[0].path).astype(np.int16), result.images[0].metadata

    plain, data = image()
    assert data["sharpness"] == 2.0 and data["adm_guidance"] == "(1.5, 0.8, 0.3)"
    assert "adaptive_cfg" not in data  # the default 7 is not written
    for changes in ({"adaptive_cfg": 3.0}, {"adm_scaler_positive": 2.0}, {"sharpness": 30.0}):
        changed, data = image(**changes)
        assert np.abs(changed - plain).max() > 0, changes
    assert data["sharpness"] == 30.0
    _, data = image(adaptive_cfg=3.0, adm_scaler_negative=0.5, adm_scaler_end=0.2)
    assert data["adaptive_cfg"] == 3.0 and data["adm_guidance"] == "(1.5, 0.5, 0.2)"
    # Scalers 1.0 make the emphasized size conditioning the consistent one: "end" is moot.
    neutral = {"adm_scaler_positive": 1.0, "adm_scaler_negative": 1.0}
    assert np.array_equal(
        image(adm_scaler_end=0.0, **neutral)[0], image(adm_scaler_end=1.0, **neutral)[0]
    )
