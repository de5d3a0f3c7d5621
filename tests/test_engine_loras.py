"""LoRAs and the accelerated performance modes through the engine's entry point."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fooocus_core.config import EngineConfig
from fooocus_core.engine import Engine
from fooocus_core.errors import InvalidTask
from fooocus_core.metadata import read_metadata
from fooocus_core.task import GenerationTask, LoraSpec, Progress
from tests.tiny_lora import write_kohya_lora


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory, tiny_sdxl_checkpoint: Path) -> Path:
    models = tmp_path_factory.mktemp("models")
    (models / "checkpoints").mkdir()
    (models / "checkpoints" / "tiny.safetensors").symlink_to(tiny_sdxl_checkpoint)
    write_kohya_lora(models / "loras" / "style" / "ink.safetensors", seed=1)
    for name in ("sdxl_lcm_lora", "sdxl_lightning_4step_lora", "sdxl_hyper_sd_4step_lora"):
        write_kohya_lora(models / "loras" / f"{name}.safetensors", seed=2)
    return models


@pytest.fixture(scope="module")
def engine(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Engine:
    config = EngineConfig(
        models_dir=str(models_dir),
        output_dir=str(tmp_path_factory.mktemp("out")),
        device="cpu",
        disable_preset_download=True,
    )
    return Engine(config)


def task(**changes: object) -> GenerationTask:
    values: dict[str, object] = {
        "prompt": "a red circle",
        "negative_prompt": "blurry",
        "styles": [],
        "base_model": "tiny.safetensors",
        "aspect_ratio": "64*64",
        "overwrite_step": 3,
        "seed": 9,
        "sampler": "euler",
        "scheduler": "karras",
    }
    values.update(changes)
    return GenerationTask(**values)


def image_of(engine: Engine, **changes: object) -> np.ndarray:
    result = engine.generate(task(**changes))
    return np.asarray(Image.open(result.images[0].path).convert("RGB")).astype(np.int16)


def test_lora_changes_the_image_and_is_undone_afterwards(engine: Engine) -> None:
    plain = image_of(engine)
    styled = image_of(engine, loras=[LoraSpec(model_name="style/ink.safetensors", weight=1.0)])
    assert np.abs(styled - plain).max() > 0
    assert np.array_equal(image_of(engine), plain)  # the next task gets the plain model
    zero = image_of(engine, loras=[LoraSpec(model_name="style/ink.safetensors", weight=0.0)])
    assert np.array_equal(zero, plain)


def test_disabled_and_none_loras_are_ignored(engine: Engine) -> None:
    plain = image_of(engine)
    loras = [
        LoraSpec(model_name="style/ink.safetensors", weight=1.0, enabled=False),
        LoraSpec(model_name="None", weight=1.0),
    ]
    assert np.array_equal(image_of(engine, loras=loras), plain)


def test_prompt_lora_tag_is_applied_and_recorded(engine: Engine) -> None:
    tagged = engine.generate(task(prompt="a red circle <lora:ink:0.7>"))
    by_field = engine.generate(
        task(loras=[LoraSpec(model_name="style/ink.safetensors", weight=0.7)])
    )
    first = np.asarray(Image.open(tagged.images[0].path))
    assert np.array_equal(first, np.asarray(Image.open(by_field.images[0].path)))
    data = json.loads(read_metadata(tagged.images[0].path)[0])
    assert data["lora_combined_1"] == "ink : 0.7"
    assert data["prompt"] == "a red circle"


def test_unknown_prompt_lora_is_noted(engine: Engine) -> None:
    result = engine.generate(task(prompt="a circle <lora:nowhere:1>"))
    assert any("'nowhere'" in message for message in result.messages)


def test_missing_lora_file_is_refused_naming_the_entry(engine: Engine) -> None:
    with pytest.raises(InvalidTask) as error:
        engine.validate(task(loras=[LoraSpec(model_name="gone.safetensors")]))
    assert error.value.field == "loras[0].model_name"
    assert "gone.safetensors" in error.value.message


@pytest.mark.parametrize(
    ("performance", "steps", "sampler", "scheduler"),
    [
        ("Extreme Speed", 8, "lcm", "lcm"),
        ("Lightning", 4, "euler", "sgm_uniform"),
        ("Hyper-SD", 4, "dpmpp_sde_gpu", "karras"),
    ],
)
def test_performance_modes_run_with_their_lora_and_settings(
    engine: Engine, performance: str, steps: int, sampler: str, scheduler: str
) -> None:
    reports: list[Progress] = []
    result = engine.generate(
        task(performance=performance, overwrite_step=-1, sharpness=10.0, guidance_scale=7.0),
        on_progress=reports.append,
    )
    assert f"Sampling step {steps}/{steps}, image 1/1 ..." in [r.message for r in reports]
    data = json.loads(read_metadata(result.images[0].path)[0])
    assert (data["performance"], data["steps"]) == (performance, steps)
    assert (data["sampler"], data["scheduler"]) == (sampler, scheduler)
    assert (data["guidance_scale"], data["sharpness"]) == (1.0, 0.0)
    assert any(key.startswith("lora_combined") for key in data)


def test_performance_lora_missing_with_downloads_off(tmp_path: Path, models_dir: Path) -> None:
    models = tmp_path / "models"
    (models / "checkpoints").mkdir(parents=True)
    (models / "checkpoints" / "tiny.safetensors").symlink_to(
        models_dir / "checkpoints" / "tiny.safetensors"
    )
    engine = Engine(
        EngineConfig(models_dir=str(models), output_dir=str(tmp_path), disable_preset_download=True)
    )
    with pytest.raises(InvalidTask) as error:
        engine.validate(task(performance="Lightning"))
    assert error.value.field == "performance"
    assert "sdxl_lightning_4step_lora.safetensors" in error.value.message
    assert "https://huggingface.co/mashb1t/misc/resolve/main/" in error.value.message


def test_fooocus_v2_without_its_files_is_skipped_with_a_note(engine: Engine) -> None:
    result = engine.generate(task(styles=["Fooocus V2"]))
    assert len(result.images) == 1
    assert any(message.startswith("Fooocus V2 skipped") for message in result.messages)


def test_black_out_nsfw_without_the_model_is_a_clear_error(engine: Engine) -> None:
    with pytest.raises(InvalidTask) as error:
        engine.validate(task(black_out_nsfw=True))
    assert error.value.field == "black_out_nsfw"
    assert "stable-diffusion-safety-checker.bin" in error.value.message
