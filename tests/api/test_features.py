"""GET /v1/engines/features and GET /v1/engines/presets/{name} (what a WebUI builds its form
from)."""

from __future__ import annotations

import httpx

from fooocus_api.features import ASPECT_RATIOS
from fooocus_core import SAMPLER_NAMES, SCHEDULER_NAMES
from tests.api.conftest import fast


def test_features(client: httpx.Client) -> None:
    body = client.get("/v1/engines/features").json()
    # no image-input mode runs yet: a client shows no tab for them
    assert body["image_inputs"] == {
        "upscale_vary": False,
        "inpaint_outpaint": False,
        "image_prompt": False,
        "enhance": False,
    }
    assert body["describe_image"] is False
    assert body["performances"][:2] == ["Quality", "Speed"]
    assert body["output_formats"] == ["png", "jpeg", "webp"]
    assert body["samplers"] == list(SAMPLER_NAMES) and body["schedulers"] == list(SCHEDULER_NAMES)
    assert "Vary (Subtle)" in body["uov_methods"]


def test_features_match_what_the_server_runs(client: httpx.Client) -> None:
    # each reported-unavailable image mode is refused (501), naming its field
    tiny_png = (
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElF"
        "TkSuQmCC"
    )
    r = client.post(
        "/v1/engine/generate/",
        json=fast(uov_input_image=tiny_png, uov_method="Vary (Subtle)"),
    )
    assert r.status_code == 501 and r.json()["field"] == "uov_input_image"


def test_preset_defaults(client: httpx.Client) -> None:
    initial = client.get("/v1/engines/presets/initial").json()
    default = client.get("/v1/engines/presets/default").json()
    assert initial == default  # the server's global preset is "default" here
    assert initial["name"] == "default"
    assert initial["base_model_name"] == "juggernautXL_v8Rundiffusion.safetensors"
    assert initial["guidance_scale"] == 4.0  # default_cfg_scale → guidance_scale
    assert initial["style_selections"] == ["Fooocus V2", "Fooocus Enhance", "Fooocus Sharp"]
    assert initial["aspect_ratios_selection"] == "1152*896"
    assert initial["available_aspect_ratios"] == list(ASPECT_RATIOS)
    assert initial["loras"][0] == {
        "enabled": True,
        "model_name": "sd_xl_offset_example-lora_1.0.safetensors",
        "weight": 0.1,
    }
    assert len(initial["loras"]) == initial["max_lora_number"] == 5
    assert initial["downloads"] == {}  # the test server has downloads off
    anime = client.get("/v1/engines/presets/anime").json()
    assert anime["name"] == "anime" and anime["base_model_name"] != initial["base_model_name"]
    missing = client.get("/v1/engines/presets/nope")
    assert missing.status_code == 404 and "not found" in missing.json()["detail"]
    assert client.get("/v1/engines/presets/..%2F..%2Fetc").status_code == 404


def test_preset_defaults_are_what_an_unset_request_gets(client: httpx.Client) -> None:
    """Sending the preset's values explicitly gives the same task as leaving them out."""
    preset = client.get("/v1/engines/presets/initial").json()
    explicit = {
        k: preset[k]
        for k in ("guidance_scale", "sharpness", "adaptive_cfg", "clip_skip", "refiner_switch")
    }
    a = client.post("/v1/engine/generate/", json=fast(async_process=True)).json()
    b = client.post("/v1/engine/generate/", json=fast(async_process=True, **explicit)).json()
    for key in explicit:
        assert a["req_params"][key] == b["req_params"][key] == preset[key]
