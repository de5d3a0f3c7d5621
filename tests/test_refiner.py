"""The refiner (spec §3.5): swap methods, conditioning conversion, engine integration."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from fooocus_core.config import EngineConfig
from fooocus_core.engine import Engine
from fooocus_core.errors import InvalidTask
from fooocus_core.metadata import read_metadata
from fooocus_core.models.checkpoint import CheckpointKind
from fooocus_core.models.tiny import build_tiny_refiner, write_tiny_checkpoint
from fooocus_core.pipeline.cancel import CancelToken
from fooocus_core.pipeline.denoiser import BranchConditioning
from fooocus_core.pipeline.passes import SamplerPass, initial_noise, noise_scale
from fooocus_core.pipeline.refiner import (
    Refiner,
    RefinerMismatch,
    mean_matched_noise,
    refiner_branch,
    sample_joint,
    sample_separate,
    sample_vae,
)
from fooocus_core.sampling.schedules import DiscreteSchedule, make_sigmas
from fooocus_core.task import GenerationTask, Progress

SD15_KEYS = {
    "model.diffusion_model.input_blocks.0.0.weight": torch.zeros(1),
    "cond_stage_model.transformer.text_model.final_layer_norm.weight": torch.zeros(1),
}

# --- the swap methods with stand-in denoisers -----------------------------------------------------


class Recorder:
    """A denoiser ``D(x, sigma) = factor * x`` that logs its calls."""

    def __init__(self, name: str, log: list[tuple[str, float, torch.Tensor]], factor: float):
        self.name, self.log, self.factor = name, log, factor

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        self.log.append((self.name, float(sigma), x.clone()))
        return x * self.factor


@pytest.fixture
def setup() -> tuple[SamplerPass, list[int], torch.Tensor, list, Recorder, Recorder]:
    schedule = DiscreteSchedule()
    steps: list[int] = []
    run = SamplerPass("euler", schedule, lambda step, _denoised: steps.append(step))
    sigmas = make_sigmas("karras", schedule, 6)
    log: list[tuple[str, float, torch.Tensor]] = []
    return run, steps, sigmas, log, Recorder("base", log, 0.5), Recorder("refiner", log, 0.25)


def _calls(log: list) -> list[tuple[str, float]]:
    return [(name, round(sigma, 4)) for name, sigma, _ in log]


def test_joint_swaps_after_the_model_call_of_step_switch(setup) -> None:
    run, steps, sigmas, log, base, refiner = setup
    noise = initial_noise(0, (1, 4, 2, 2))
    x = run.start(torch.zeros(1, 4, 2, 2), noise, float(sigmas[0]))
    sample_joint(run, base, refiner, x, sigmas, 2, lambda a, b: noise)
    s = [round(float(v), 4) for v in sigmas]
    assert _calls(log) == [("base", v) for v in s[:3]] + [("refiner", v) for v in s[3:6]]
    assert steps == [0, 1, 2, 3, 4, 5]


def test_separate_continues_the_latent_without_new_noise(setup) -> None:
    run, steps, sigmas, log, base, refiner = setup
    latent, noise = torch.zeros(1, 4, 2, 2), initial_noise(0, (1, 4, 2, 2))
    sample_separate(run, base, refiner, latent, noise, sigmas, 2, lambda a, b: noise)
    s = [round(float(v), 4) for v in sigmas]
    assert _calls(log) == [("base", v) for v in s[:2]] + [("refiner", v) for v in s[2:6]]
    assert steps == [0, 1, 2, 3, 4, 5]
    # Euler with D = x/2: x_next = x + (x - x/2) / sigma * (sigma_next - sigma).
    x = latent + noise * noise_scale(float(sigmas[0]), DiscreteSchedule().sigma_max)
    for i in range(2):
        x = x + 0.5 * x / sigmas[i] * (sigmas[i + 1] - sigmas[i])
    torch.testing.assert_close(log[2][2], x)


def test_vae_denoises_fully_then_renoises_mean_matched(setup) -> None:
    run, steps, sigmas, log, base, refiner = setup
    latent, noise = torch.zeros(1, 4, 2, 2), initial_noise(0, (1, 4, 2, 2))
    noise2 = initial_noise(1, (1, 4, 2, 2))
    sample_vae(
        run, base, refiner, latent, noise, sigmas, noise2, sigmas, 2, (lambda a, b: noise,) * 2
    )
    s = [round(float(v), 4) for v in sigmas]
    assert _calls(log) == [("base", v) for v in s[:2]] + [
        ("refiner", round(1.4 * float(v), 4)) for v in sigmas[2:6]
    ]
    assert steps == [0, 1, 2, 3, 4, 5]
    # The base's second (last) step goes to sigma 0: Euler lands on D(x) = x/2.
    x_last = log[1][2]
    denoised = 0.5 * x_last
    eps = (x_last - denoised) / sigmas[1]
    scale = noise_scale(1.4 * float(sigmas[2]), DiscreteSchedule().sigma_max)
    renoise = (log[2][2] - denoised) / scale
    torch.testing.assert_close(renoise.mean(1), eps.mean(1))
    torch.testing.assert_close(renoise - renoise.mean(1, True), noise2 - noise2.mean(1, True))


@pytest.mark.parametrize("method", ["joint", "separate", "vae"])
def test_switch_at_the_last_step_leaves_the_refiner_out(setup, method: str) -> None:
    run, steps, sigmas, log, base, refiner = setup
    latent, noise = torch.zeros(1, 4, 2, 2), initial_noise(0, (1, 4, 2, 2))
    samplers = (lambda a, b: noise,) * 2
    if method == "joint":
        x = run.start(latent, noise, float(sigmas[0]))
        out = sample_joint(run, base, refiner, x, sigmas, 6, samplers[0])
    elif method == "separate":
        out = sample_separate(run, base, refiner, latent, noise, sigmas, 9, samplers[0])
    else:
        out = sample_vae(run, base, refiner, latent, noise, sigmas, noise, sigmas, 6, samplers)
    assert [name for name, _ in _calls(log)] == ["base"] * 6
    assert steps == [0, 1, 2, 3, 4, 5]
    torch.testing.assert_close(out, 0.5 * log[-1][2])  # the last step lands on D(x) = x/2


def test_mean_matched_noise() -> None:
    noise = torch.randn(1, 4, 3, 3)
    eps = torch.randn(1, 4, 3, 3)
    out = mean_matched_noise(noise, eps)
    torch.testing.assert_close(out.mean(1), eps.mean(1))
    torch.testing.assert_close(
        out - noise, (eps.mean(1) - noise.mean(1)).unsqueeze(1).expand_as(out)
    )


def test_refiner_branch_keeps_the_clip_g_part_and_aesthetic_ids() -> None:
    hidden = torch.arange(2 * 5 * 12, dtype=torch.float32).view(2, 5, 12)  # L 4 + G 8 wide
    pooled = torch.ones(2, 3)
    base = BranchConditioning(hidden, pooled, torch.zeros(6), torch.ones(6))
    refiner = Refiner(torch.nn.Linear(1, 1), clip_g_only=True, clip_g_width=8)
    converted = refiner_branch(refiner, base, width=1152, height=896, aesthetic=2.5)
    assert torch.equal(converted.hidden, hidden[..., 4:])
    assert converted.pooled is pooled
    assert converted.time_ids(999.0, 0.3).tolist() == [896, 1152, 0, 0, 2.5]
    assert converted.time_ids(0.0, 0.3).tolist() == [896, 1152, 0, 0, 2.5]
    as_base = Refiner(torch.nn.Linear(1, 1), clip_g_only=False, clip_g_width=8)
    assert refiner_branch(as_base, base, 1152, 896, 6.0) is base


def test_refiner_that_does_not_fit_is_refused() -> None:
    tiny = build_tiny_refiner()
    refiner = Refiner.of_kind(tiny.unet, CheckpointKind.SDXL_REFINER, clip_g_width=64)
    refiner.check_fits(token_width=96, pooled_width=32)
    with pytest.raises(RefinerMismatch, match="64-wide"):
        Refiner.of_kind(tiny.unet, CheckpointKind.SDXL_REFINER, 1280).check_fits(2048, 1280)
    with pytest.raises(RefinerMismatch, match="size conditioning"):
        refiner.check_fits(token_width=96, pooled_width=40)


# --- through the engine -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory, tiny_sdxl_checkpoint: Path) -> Path:
    models = tmp_path_factory.mktemp("models")
    checkpoints = models / "checkpoints"
    checkpoints.mkdir()
    (checkpoints / "tiny.safetensors").symlink_to(tiny_sdxl_checkpoint)
    (checkpoints / "same.safetensors").symlink_to(tiny_sdxl_checkpoint)
    write_tiny_checkpoint(checkpoints / "refiner.safetensors", kind="refiner", seed=1)
    write_tiny_checkpoint(checkpoints / "base2.safetensors", seed=2)
    save_file(SD15_KEYS, str(checkpoints / "sd15.safetensors"))
    torch.save({"state_dict": SD15_KEYS}, checkpoints / "sd15.ckpt")
    return models


@pytest.fixture(scope="module")
def engine(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Engine:
    outputs = tmp_path_factory.mktemp("outputs")
    return Engine(EngineConfig(models_dir=str(models_dir), output_dir=str(outputs), device="cpu"))


def task(**changes: object) -> GenerationTask:
    values: dict[str, object] = {
        "prompt": "a red circle",
        "negative_prompt": "blurry",
        "styles": [],
        "base_model": "tiny.safetensors",
        "refiner_model": "refiner.safetensors",
        "refiner_switch": 0.5,
        "aspect_ratio": "64*64",
        "overwrite_step": 4,
        "seed": 42,
        "sampler": "dpmpp_2m_sde_gpu",
        "scheduler": "karras",
    }
    values.update(changes)
    return GenerationTask(**values)


def pixels(path: str) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(np.int16)


class Calls:
    """Logs, in order, which UNet ran (with its inputs) and which step was reported."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.inputs: dict[str, list[dict[str, object]]] = {"B": [], "R": []}

    def watch(self, unet: torch.nn.Module, name: str) -> torch.utils.hooks.RemovableHandle:
        def hook(_module, _args, kwargs):
            self.events.append(name)
            self.inputs[name].append(kwargs)

        return unet.register_forward_pre_hook(hook, with_kwargs=True)

    def progress(self, report: Progress) -> None:
        if report.message.startswith("Sampling step"):
            self.events.append(f"s{report.step}")


@pytest.fixture
def calls(engine: Engine, request: pytest.FixtureRequest) -> Iterator[Calls]:
    refiner_name = getattr(request, "param", "refiner.safetensors")
    recorder = Calls()
    handles = [
        recorder.watch(engine._models.get_base("tiny.safetensors").unet, "B"),
        recorder.watch(engine._models.get_refiner(refiner_name).unet, "R"),
    ]
    yield recorder
    for handle in handles:
        handle.remove()


def test_joint_base_runs_through_step_switch_then_the_refiner(engine: Engine, calls: Calls) -> None:
    result = engine.generate(task(), on_progress=calls.progress)
    assert calls.events == ["B", "s1", "B", "s2", "B", "s3", "R", "s4"]
    plain = engine.generate(task(refiner_model="None"))
    assert np.abs(pixels(result.images[0].path) - pixels(plain.images[0].path)).max() > 0
    data = result.images[0].metadata
    assert data["refiner_model"] == "refiner" and data["refiner_switch"] == 0.5
    assert len(data["refiner_model_hash"]) == 10
    assert "refiner_swap_method" not in data and "overwrite_switch" not in data


def test_overwrite_switch_wins(engine: Engine, calls: Calls) -> None:
    result = engine.generate(task(overwrite_switch=1), on_progress=calls.progress)
    assert calls.events == ["B", "s1", "B", "s2", "R", "s3", "R", "s4"]
    assert result.images[0].metadata["overwrite_switch"] == 1


def test_refiner_conditioning_is_clip_g_with_aesthetic_ids(engine: Engine, calls: Calls) -> None:
    engine.generate(task(refiner_switch=0.25), on_progress=calls.progress)
    base, refiner = calls.inputs["B"][-1], calls.inputs["R"][0]
    models = engine._models.get_base("tiny.safetensors")
    g_width = models.text_encoder_2.config.hidden_size
    hidden = refiner["encoder_hidden_states"]
    assert hidden.shape[-1] == g_width == 64
    assert torch.equal(hidden, base["encoder_hidden_states"][..., -g_width:])
    added, base_added = refiner["added_cond_kwargs"], base["added_cond_kwargs"]
    assert torch.equal(added["text_embeds"], base_added["text_embeds"])
    assert added["time_ids"].tolist() == [[64, 64, 0, 0, 6.0], [64, 64, 0, 0, 2.5]]
    config = engine._models.get_refiner("refiner.safetensors").unet.config
    embed_inputs = added["text_embeds"].shape[-1] + added["time_ids"].shape[-1] * 8
    assert embed_inputs == config.projection_class_embeddings_input_dim == 72
    assert base_added["time_ids"].shape == (2, 6)


def test_unit_cfg_refiner_has_one_branch(engine: Engine, calls: Calls) -> None:
    engine.generate(task(guidance_scale=1.0), on_progress=calls.progress)
    assert calls.inputs["R"][0]["added_cond_kwargs"]["time_ids"].tolist() == [[64, 64, 0, 0, 6.0]]


@pytest.mark.parametrize("method", ["separate", "vae"])
def test_two_pass_methods_hand_over_at_switch(engine: Engine, calls: Calls, method: str) -> None:
    result = engine.generate(
        task(refiner_swap_method=method, metadata_scheme="a1111"), on_progress=calls.progress
    )
    assert calls.events == ["B", "s1", "B", "s2", "R", "s3", "R", "s4"]
    image = pixels(result.images[0].path)
    assert image.shape == (64, 64, 3) and image.std() > 0
    joint = engine.generate(task())
    assert np.abs(image - pixels(joint.images[0].path)).max() > 0
    assert result.images[0].metadata["refiner_swap_method"] == method
    text, scheme = read_metadata(Path(result.images[0].path))
    assert scheme == "a1111" and f"Refiner Swap Method: {method}" in text


@pytest.mark.parametrize(
    ("method", "sampler"),
    [("separate", "euler_ancestral"), ("vae", "euler_ancestral"), ("vae", "dpmpp_2m_sde_gpu")],
)
def test_methods_are_reproducible(engine: Engine, method: str, sampler: str) -> None:
    first = engine.generate(task(refiner_swap_method=method, sampler=sampler, seed=5))
    again = engine.generate(task(refiner_swap_method=method, sampler=sampler, seed=5))
    assert np.array_equal(pixels(first.images[0].path), pixels(again.images[0].path))


@pytest.mark.parametrize("calls", ["base2.safetensors"], indirect=True)
def test_sdxl_base_as_refiner_keeps_the_conditioning(engine: Engine, calls: Calls) -> None:
    result = engine.generate(task(refiner_model="base2.safetensors"), on_progress=calls.progress)
    assert calls.events == ["B", "s1", "B", "s2", "B", "s3", "R", "s4"]
    base, refiner = calls.inputs["B"][-1], calls.inputs["R"][0]
    assert torch.equal(refiner["encoder_hidden_states"], base["encoder_hidden_states"])
    assert refiner["encoder_hidden_states"].shape[-1] == 96
    assert refiner["added_cond_kwargs"]["time_ids"].tolist() == [[64, 64, 0, 0, 64, 64]] * 2
    assert result.images[0].metadata["refiner_model"] == "base2"


def test_same_file_as_base_means_no_refiner(engine: Engine) -> None:
    plain = engine.generate(task(refiner_model="None"))
    assert engine._models.refiner is None
    for name in ("tiny.safetensors", "same.safetensors"):
        same = engine.generate(task(refiner_model=name))
        assert np.array_equal(pixels(same.images[0].path), pixels(plain.images[0].path))
        assert same.images[0].metadata["refiner_model"] == "None"
        assert "refiner_model_hash" not in same.images[0].metadata


@pytest.mark.parametrize("name", ["sd15.safetensors", "sd15.ckpt"])
def test_sd15_refiner_is_refused_clearly(engine: Engine, name: str) -> None:
    with pytest.raises(InvalidTask) as error:
        engine.validate(task(refiner_model=name))
    assert error.value.field == "refiner_model"
    assert name in error.value.message
    assert "SD 1.5" in error.value.message and "'None'" in error.value.message


def test_sd15_refiner_is_refused_when_loading_too(engine: Engine, monkeypatch) -> None:
    """A file that passed validation but loads as SD 1.5 (replaced meanwhile, say)."""
    monkeypatch.setattr(engine.files, "checkpoint_kind", lambda path: CheckpointKind.SDXL_REFINER)
    with pytest.raises(InvalidTask) as error:
        engine.generate(task(refiner_model="sd15.ckpt"))
    assert error.value.field == "refiner_model" and "SD 1.5" in error.value.message


def test_missing_refiner_and_bad_method_are_named(engine: Engine) -> None:
    with pytest.raises(InvalidTask) as error:
        engine.validate(task(refiner_model="nope.safetensors"))
    assert error.value.field == "refiner_model" and "nope.safetensors" in error.value.message
    with pytest.raises(InvalidTask) as error:
        engine.validate(task(refiner_swap_method="both"))
    assert error.value.field == "refiner_swap_method"


def test_skip_after_the_swap_and_next_image_refines(engine: Engine, calls: Calls) -> None:
    cancel = CancelToken()

    def on_progress(report: Progress) -> None:
        calls.progress(report)
        if report.message == "Sampling step 4/4, image 1/2 ...":
            cancel.skip()

    result = engine.generate(task(image_number=2, seed=10), on_progress, cancel)
    assert [image.seed for image in result.images] == [11]
    assert calls.events == ["B", "s1", "B", "s2", "B", "s3", "R", "s4"] * 2
    assert "Image 1/2 skipped." in result.messages


def test_stop_during_the_refiner_pass(engine: Engine) -> None:
    cancel = CancelToken()

    def on_progress(report: Progress) -> None:
        if report.message == "Sampling step 3/4, image 1/1 ...":
            cancel.stop()

    result = engine.generate(task(refiner_swap_method="vae"), on_progress, cancel)
    assert result.stopped and result.images == []


def test_progress_and_previews_continue_across_the_swap(engine: Engine) -> None:
    reports: list[Progress] = []
    engine.generate(task(refiner_swap_method="separate"), on_progress=reports.append)
    steps = [r for r in reports if r.message.startswith("Sampling step")]
    assert [r.step for r in steps] == [1, 2, 3, 4]
    assert all(r.preview and r.preview[:2] == b"\xff\xd8" for r in steps)
    percents = [r.percent for r in reports]
    assert percents == sorted(percents)


def test_refiner_is_freed_when_a_task_has_none(engine: Engine) -> None:
    engine.generate(task())
    assert engine._models.refiner is not None
    engine.generate(task(refiner_model="None"))
    assert engine._models.refiner is None


def test_fooocus_metadata_roundtrip(engine: Engine) -> None:
    result = engine.generate(task(refiner_swap_method="separate", overwrite_switch=3))
    text, scheme = read_metadata(Path(result.images[0].path))
    data = json.loads(text)
    assert scheme == "fooocus"
    assert data["refiner_model"] == "refiner" and data["overwrite_switch"] == 3
    assert data["refiner_swap_method"] == "separate"
    assert data["refiner_model_hash"] == result.images[0].metadata["refiner_model_hash"]
