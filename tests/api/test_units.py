"""Pure functions: preset merge, Accept parsing, CLI port rule, output-name checks."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from fooocus_api.cli import api_port, parse_settings
from fooocus_api.files import output_file
from fooocus_api.http import accept_image, split_field
from fooocus_api.mapping import build_task
from fooocus_api.schemas import CommonRequest
from fooocus_core.presets import Preset


def _preset() -> Preset:
    return Preset(
        name="p",
        default_model="preset_model.safetensors",
        default_cfg_scale=9.0,
        default_cfg_tsnr=5.0,
        default_sampler="euler",
        default_loras=[(True, "preset_lora.safetensors", 0.4), (True, "None", 1.0)],
        default_styles=["Fooocus Sharp"],
        default_aspect_ratio="896*1152",
    )


def test_preset_fills_only_unset_fields() -> None:
    task = build_task(CommonRequest(), _preset(), single_image=False)
    # FooocusAPI's bugs fixed: cfg → guidance_scale (not adaptive_cfg), preset LoRAs apply
    assert task.guidance_scale == 9.0 and task.adaptive_cfg == 5.0
    assert [(lora.model_name, lora.weight) for lora in task.loras] == [
        ("preset_lora.safetensors", 0.4)
    ]
    assert task.base_model == "preset_model.safetensors" and task.sampler == "euler"
    assert task.styles == ["Fooocus Sharp"] and task.aspect_ratio == "896*1152"
    # an explicit value wins even when it equals the global default
    explicit = msgspec.json.decode(
        b'{"guidance_scale": 4.0, "loras": [], "style_selections": [], "image_seed": null}',
        type=CommonRequest,
    )
    task = build_task(explicit, _preset(), single_image=True)
    assert task.guidance_scale == 4.0 and task.loras == [] and task.styles == []
    assert task.seed == -1 and task.image_number == 1


def test_disabled_and_none_loras_dropped() -> None:
    req = msgspec.convert(
        {
            "loras": [
                {"model_name": "a", "enabled": False},
                {"model_name": "None"},
                {"model_name": "b", "weight": -1.5},
            ]
        },
        CommonRequest,
    )
    task = build_task(req, _preset(), single_image=False)
    assert [(lora.model_name, lora.weight) for lora in task.loras] == [("b", -1.5)]


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("*/*", None),
        ("application/json", None),
        ("image/png", "png"),
        ("IMAGE/JPG", "jpg"),
        ("image/jpeg; q=0.9", "jpeg"),
        ("image/webp, */*", "webp"),
        ("image/avif", "png"),
        ("text/html, image/png", None),
    ],
)
def test_accept_image(header: str | None, expected: str | None) -> None:
    assert accept_image(header) == expected


def test_api_port_rule() -> None:
    assert api_port(None, {}) == 7866
    assert api_port(8000, {}) == 8001
    assert api_port(8000, {"API_PORT": "9000"}) == 9000
    s = parse_settings(["--listen", "--port", "7000", "--always-high-vram"], {})
    assert s.host == "0.0.0.0" and s.port == 7001 and s.queue_size == 100
    s = parse_settings(["--apikey", "k", "--queue-size", "3", "--models-dir", "/m"], {})
    assert s.apikey == "k" and s.queue_size == 3 and s.engine.models_dir == "/m"
    assert parse_settings([], {}).host == "127.0.0.1"


def test_split_field() -> None:
    assert split_field("loras[0].weight") == ["loras", 0, "weight"]
    assert split_field("prompt") == ["prompt"]


def test_output_file_checks(tmp_path: Path) -> None:
    (tmp_path / "2024-01-01").mkdir()
    good = tmp_path / "2024-01-01" / "a.png"
    good.write_bytes(b"x")
    (tmp_path / "2024-01-01" / "log.html").write_text("x")
    assert output_file(tmp_path, "2024-01-01", "a.png") == good.resolve()
    assert output_file(tmp_path, "2024-01-01", "log.html") is None
    assert output_file(tmp_path, "..", "a.png") is None
    assert output_file(tmp_path, "2024-01-01", "../a.png") is None
    assert output_file(tmp_path, ".hidden", "a.png") is None
