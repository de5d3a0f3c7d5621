"""Presets: merge semantics, errors, and the facts of the eight shipped presets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fooocus_core import STARTER_MODEL
from fooocus_core.config import EngineConfig
from fooocus_core.presets import (
    Preset,
    PresetError,
    PresetNotFound,
    list_presets,
    load_preset,
    preset_from_dict,
)
from fooocus_core.task import GenerationTask, LoraSpec

SHIPPED = ["anime", "default", "lcm", "lightning", "playground_v2.5", "pony_v6", "realistic", "sai"]
V2_ENHANCE_SHARP = ["Fooocus V2", "Fooocus Enhance", "Fooocus Sharp"]
JUG = "juggernautXL_v8Rundiffusion.safetensors"
OFFSET = "sd_xl_offset_example-lora_1.0.safetensors"

# name: (model, cfg, sampler, scheduler, performance, styles, ratio)
TABLE = {
    "default": (JUG, 4.0, "dpmpp_2m_sde_gpu", "karras", "Speed", V2_ENHANCE_SHARP, "1152*896"),
    "anime": (
        "animaPencilXL_v500.safetensors",
        6.0,
        "dpmpp_2m_sde_gpu",
        "karras",
        "Speed",
        ["Fooocus V2", "Fooocus Semi Realistic", "Fooocus Masterpiece"],
        "896*1152",
    ),
    "realistic": (
        "realisticStockPhoto_v20.safetensors",
        3.0,
        "dpmpp_2m_sde_gpu",
        "karras",
        "Speed",
        ["Fooocus V2", "Fooocus Photograph", "Fooocus Negative"],
        "896*1152",
    ),
    "lcm": (JUG, 4.0, "dpmpp_2m_sde_gpu", "karras", "Extreme Speed", V2_ENHANCE_SHARP, "1152*896"),
    "lightning": (
        JUG,
        4.0,
        "dpmpp_2m_sde_gpu",
        "karras",
        "Lightning",
        V2_ENHANCE_SHARP,
        "1152*896",
    ),
    "playground_v2.5": (
        "playground-v2.5-1024px-aesthetic.fp16.safetensors",
        2.0,
        "dpmpp_2m",
        "edm_playground_v2.5",
        "Speed",
        ["Fooocus V2"],
        "1024*1024",
    ),
    "pony_v6": (
        "ponyDiffusionV6XL.safetensors",
        7.0,
        "dpmpp_2m_sde_gpu",
        "karras",
        "Speed",
        ["Fooocus Pony"],
        "896*1152",
    ),
    "sai": (
        "sd_xl_base_1.0_0.9vae.safetensors",
        7.0,
        "dpmpp_2m_sde_gpu",
        "karras",
        "Speed",
        ["Fooocus V2", "Fooocus Cinematic"],
        "1152*896",
    ),
}


@pytest.fixture
def shipped() -> EngineConfig:
    return EngineConfig()


def test_list_shipped(shipped: EngineConfig) -> None:
    assert list_presets(shipped) == sorted([*SHIPPED, "starter"])


def test_starter_preset(shipped: EngineConfig) -> None:
    """The built-in starter model at its native size, settings it was measured with, nothing
    to download (the default preset's download lists are replaced, not inherited)."""
    preset = load_preset(shipped, "starter")
    assert preset.default_model == STARTER_MODEL and preset.previous_default_models == []
    assert preset.default_aspect_ratio == "64*64"
    assert (preset.default_sampler, preset.default_scheduler) == ("euler", "normal")
    assert preset.default_overwrite_step == 20 and preset.default_cfg_scale == 5.0
    assert preset.default_styles == [] and preset.enabled_loras() == []
    assert preset.default_sample_sharpness == 0.0
    assert not (preset.checkpoint_downloads or preset.lora_downloads or preset.vae_downloads)
    GenerationTask(**preset.task_defaults())


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_preset_facts(shipped: EngineConfig, name: str) -> None:
    preset = load_preset(shipped, name)
    model, cfg, sampler, scheduler, performance, styles, ratio = TABLE[name]
    assert preset.name == name
    assert preset.default_model == model
    assert preset.default_cfg_scale == cfg
    assert (preset.default_sampler, preset.default_scheduler) == (sampler, scheduler)
    assert preset.default_performance == performance
    assert preset.default_styles == styles
    assert preset.default_aspect_ratio == ratio
    assert preset.default_sample_sharpness == 2.0
    assert preset.extra == {}
    # The preset's own model is downloadable, from huggingface over https.
    assert model in preset.checkpoint_downloads
    for files in (
        preset.checkpoint_downloads,
        preset.lora_downloads,
        preset.embeddings_downloads,
        preset.vae_downloads,
    ):
        for file_name, url in files.items():
            assert url.startswith("https://huggingface.co/") and url.endswith("/" + file_name)
    # The defaults make a valid task.
    GenerationTask(**preset.task_defaults())


def test_default_preset_details(shipped: EngineConfig) -> None:
    preset = load_preset(shipped)
    assert preset.default_refiner == "None" and preset.default_refiner_switch == 0.5
    assert preset.default_loras[0] == (True, OFFSET, 0.1)
    assert preset.enabled_loras() == [LoraSpec(model_name=OFFSET, weight=0.1)]
    assert preset.checkpoint_downloads == {
        JUG: "https://huggingface.co/lllyasviel/fav_models/resolve/main/fav/" + JUG
    }
    assert preset.lora_downloads == {
        OFFSET: "https://huggingface.co/stabilityai/stable-diffusion-xl-base-1.0/resolve/main/"
        + OFFSET
    }
    assert preset.default_vae == "Default (model)"
    assert preset.default_inpaint_engine_version == "v2.6"
    assert preset.default_cfg_tsnr == 7.0 and preset.default_clip_skip == 2


def test_other_preset_details(shipped: EngineConfig) -> None:
    sai = load_preset(shipped, "sai")
    assert sai.default_refiner == "sd_xl_refiner_1.0_0.9vae.safetensors"
    assert sai.default_refiner_switch == 0.75
    assert sai.default_loras[0] == (True, OFFSET, 0.5)
    assert set(sai.checkpoint_downloads) == {
        "sd_xl_base_1.0_0.9vae.safetensors",
        "sd_xl_refiner_1.0_0.9vae.safetensors",
    }
    pony = load_preset(shipped, "pony_v6")
    assert pony.default_vae == "ponyDiffusionV6XL_vae.safetensors"
    assert "ponyDiffusionV6XL_vae.safetensors" in pony.vae_downloads
    assert pony.default_inpaint_engine_version == "None"
    realistic = load_preset(shipped, "realistic")
    assert realistic.default_loras[0] == (True, "SDXL_FILM_PHOTOGRAPHY_STYLE_V1.safetensors", 0.25)
    assert realistic.default_prompt_negative.startswith("unrealistic, saturated")
    # Presets that do not set a key inherit default.json's, not each other's.
    anime = load_preset(shipped, "anime")
    assert anime.default_vae == "Default (model)"
    assert anime.lora_downloads == {} and anime.enabled_loras() == []
    assert load_preset(shipped, "playground_v2.5").default_inpaint_engine_version == "None"
    assert load_preset(shipped, "lcm").default_inpaint_engine_version == "v2.6"
    for name in ("default", "lcm", "lightning", "anime", "realistic", "pony_v6", "playground_v2.5"):
        assert load_preset(shipped, name).default_refiner_switch == 0.5


def _config_with(tmp_path: Path, files: dict[str, object]) -> EngineConfig:
    folder = tmp_path / "presets"
    folder.mkdir()
    for name, data in files.items():
        text = data if isinstance(data, str) else json.dumps(data)
        (folder / f"{name}.json").write_text(text, encoding="utf-8")
    return EngineConfig(config_dir=str(tmp_path), preset="mine")


def test_merge_over_default_and_unknown_keys(tmp_path: Path) -> None:
    config = _config_with(
        tmp_path,
        {
            "default": {
                "default_model": "a.safetensors",
                "default_cfg_scale": 5,
                "lora_downloads": {"x.safetensors": "https://example/x"},
                "default_styles": ["S1"],
            },
            "mine": {
                "default_model": "b.safetensors",
                "lora_downloads": {},
                "default_loras": [["l.safetensors", 0.5], [False, "m.safetensors", 2]],
                "some_future_key": {"k": 1},
            },
        },
    )
    preset = load_preset(config)  # config.preset
    assert preset.name == "mine"
    assert preset.default_model == "b.safetensors"
    assert preset.default_cfg_scale == 5.0  # from default.json
    assert preset.default_styles == ["S1"]
    assert preset.lora_downloads == {}  # shallow: replaced as a whole
    assert preset.default_loras == [(True, "l.safetensors", 0.5), (False, "m.safetensors", 2.0)]
    assert preset.default_max_lora_number == 2
    assert preset.extra == {"some_future_key": {"k": 1}}
    assert preset.default_refiner_switch == 0.8  # built-in default: no file sets it
    only_default = load_preset(config, "default")
    assert only_default.default_model == "a.safetensors"


def test_missing_preset_lists_available(tmp_path: Path) -> None:
    config = _config_with(tmp_path, {"default": {}, "other": {}})
    with pytest.raises(PresetNotFound) as info:
        load_preset(config, "nope")
    assert info.value.available == ["default", "other"]
    assert "nope" in str(info.value) and "default, other" in str(info.value)
    for bad in ("../default", "a/b", ""):
        with pytest.raises(PresetNotFound):
            load_preset(config, bad)


def test_invalid_preset_files(tmp_path: Path) -> None:
    config = _config_with(
        tmp_path,
        {"default": {}, "broken": "{not json", "list": "[1]", "badval": {"default_cfg_scale": "x"}},
    )
    for name in ("broken", "list", "badval"):
        with pytest.raises(PresetError, match=name):
            load_preset(config, name)


def test_preset_struct_defaults() -> None:
    preset = preset_from_dict("x", {})
    assert preset == Preset(name="x")
    assert preset.default_model == "model.safetensors"
    assert preset.default_cfg_scale == 7.0
    assert len(preset.default_loras) == 5 and preset.enabled_loras() == []
