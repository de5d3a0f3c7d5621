"""Fidelity: with Fooocus' extras neutral, our engine draws what diffusers' SDXL pipeline draws.

Neutral means sharpness 0, adaptive CFG at or above the CFG scale, ADM scalers 1.0, one prompt
workload (no styles) and a non-empty negative prompt. Both sides load the same tiny checkpoint
through their own single-file loaders, use the same initial noise (Fooocus': CPU ``randn``
after ``torch.manual_seed(seed)``) and the same step count.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fooocus_core.engine import Engine
from fooocus_core.sampling.schedules import DiscreteSchedule
from fooocus_core.task import GenerationTask
from tests.oracle import diffusers_config_dir

PROMPT = "a red circle on a blue background"
NEGATIVE = "blurry, low quality"
SEED = 1234
SIZE = 128
STEPS = 20
CFG = 5.0


@pytest.fixture(scope="module")
def engine(tiny_engine: Engine) -> Engine:
    return tiny_engine


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory, tiny_sdxl_checkpoint: Path) -> object:
    from diffusers import StableDiffusionXLPipeline

    config = diffusers_config_dir(tmp_path_factory.mktemp("diffusers"))
    pipe = StableDiffusionXLPipeline.from_single_file(
        str(tiny_sdxl_checkpoint), config=str(config), local_files_only=True
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def neutral_task(sampler: str, scheduler: str) -> GenerationTask:
    return GenerationTask(
        prompt=PROMPT,
        negative_prompt=NEGATIVE,
        styles=[],
        base_model="tiny.safetensors",
        aspect_ratio=f"{SIZE}*{SIZE}",
        overwrite_step=STEPS,
        seed=SEED,
        guidance_scale=CFG,
        adaptive_cfg=30.0,
        sharpness=0.0,
        adm_scaler_positive=1.0,
        adm_scaler_negative=1.0,
        adm_scaler_end=0.0,
        sampler=sampler,
        scheduler=scheduler,
        save_metadata_to_images=False,
        disable_preview=True,
    )


def ours(engine: Engine, sampler: str, scheduler: str) -> np.ndarray:
    result = engine.generate(neutral_task(sampler, scheduler))
    return np.asarray(Image.open(result.images[0].path).convert("RGB")).astype(np.int16)


def diffusers_image(pipe: object, scheduler: object) -> np.ndarray:
    """diffusers' image for the same seed; its start latent matches Fooocus' noise scaling.

    Fooocus starts a full-denoise run at ``noise * sqrt(1 + sigma_max^2)`` in x-space. The
    pipeline multiplies ``latents`` by the scheduler's ``init_noise_sigma``: sigma_max for Euler
    with trailing spacing (x-space), so the noise is pre-scaled by the ratio; 1.0 for
    DPM-Solver, which works in the variance-preserving space where unit noise already is
    ``noise * sqrt(1 + sigma_max^2)`` divided by ``sqrt(1 + sigma_max^2)``.
    """
    pipe.scheduler = scheduler
    sigma_max = DiscreteSchedule().sigma_max
    noise = torch.randn(
        (1, 4, SIZE // 8, SIZE // 8),
        generator=torch.Generator("cpu").manual_seed(SEED),
        dtype=torch.float32,
    )
    init_sigma = float(scheduler.init_noise_sigma)
    scale = 1.0 if init_sigma == 1.0 else math.sqrt(1.0 + sigma_max**2) / init_sigma
    image = pipe(
        prompt=PROMPT,
        negative_prompt=NEGATIVE,
        guidance_scale=CFG,
        num_inference_steps=STEPS,
        height=SIZE,
        width=SIZE,
        latents=noise * scale,
        output_type="np",
    ).images[0]
    return (image * 255.0).round().astype(np.int16)


def scheduler_config(pipe: object) -> dict[str, object]:
    return dict(pipe.scheduler.config)


def test_euler_simple_matches_diffusers_euler_trailing(engine: Engine, pipeline: object) -> None:
    from diffusers import EulerDiscreteScheduler

    scheduler = EulerDiscreteScheduler.from_config(
        scheduler_config(pipeline), timestep_spacing="trailing"
    )
    expected = diffusers_image(pipeline, scheduler)
    actual = ours(engine, "euler", "simple")
    assert actual.shape == expected.shape == (SIZE, SIZE, 3)
    assert np.abs(actual - expected).max() <= 1  # within 1/255 per pixel
    assert expected.std() > 5  # the image is not flat, so the comparison means something


def test_dpmpp_2m_karras_close_to_diffusers_dpm_solver(engine: Engine, pipeline: object) -> None:
    """Measured on this tiny model: max difference 1/255, mean 0.000 (docs/BENCHMARKS.md)."""
    from diffusers import DPMSolverMultistepScheduler

    scheduler = DPMSolverMultistepScheduler.from_config(
        scheduler_config(pipeline),
        algorithm_type="dpmsolver++",
        solver_order=2,
        use_karras_sigmas=True,
        final_sigmas_type="zero",
        lower_order_final=True,
    )
    expected = diffusers_image(pipeline, scheduler)
    actual = ours(engine, "dpmpp_2m", "karras")
    difference = np.abs(actual - expected)
    print(f"dpmpp_2m/karras vs diffusers: max {difference.max()}, mean {difference.mean():.3f}")
    assert difference.max() <= 1
    assert difference.mean() < 0.01


def test_sharpness_changes_the_image(engine: Engine) -> None:
    """The neutral settings really are what makes the match: sharpness moves pixels."""
    plain = ours(engine, "euler", "simple")
    task = neutral_task("euler", "simple")
    task.sharpness = 30.0
    result = engine.generate(task)
    sharp = np.asarray(Image.open(result.images[0].path).convert("RGB")).astype(np.int16)
    assert np.abs(sharp - plain).max() > 0
