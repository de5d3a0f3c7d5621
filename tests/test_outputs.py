"""Saving images, metadata rendering and round trips, and model hashing."""

from __future__ import annotations

import hashlib
import json
import os
import re
from datetime import datetime
from pathlib import Path

import pytest
from PIL import Image

import fooocus_core.hashing as hashing
from fooocus_core.config import EngineConfig
from fooocus_core.metadata import (
    SOFTWARE,
    ImageParameters,
    LoraInfo,
    a1111_metadata,
    a1111_quote,
    a1111_sampler_name,
    decode_user_comment,
    encode_user_comment,
    fooocus_metadata,
    render_metadata,
)
from fooocus_core.outputs import read_metadata, sanitize_save_name, save_image

NOW = datetime(2024, 5, 6, 7, 8, 9)


def _params(**changes: object) -> ImageParameters:
    values: dict[str, object] = {
        "prompt": "a cat, on a mat",
        "negative_prompt": "blurry",
        "prompt_expansion": "a cat, on a mat, highly detailed",
        "styles": ["Fooocus V2", "Fooocus Enhance"],
        "performance": "Speed",
        "steps": 30,
        "width": 1152,
        "height": 896,
        "guidance_scale": 4.0,
        "sharpness": 2.0,
        "base_model": "sdxl/juggernautXL_v8Rundiffusion.safetensors",
        "base_model_hash": "aeb7e9e689",
        "sampler": "dpmpp_2m_sde_gpu",
        "scheduler": "karras",
        "seed": 1234567890123,
        "loras": [LoraInfo("sd_xl_offset_example-lora_1.0.safetensors", 0.1, "4852686128")],
        "full_prompt": ["a cat, on a mat", "a cat, on a mat, highly detailed"],
        "full_negative_prompt": ["blurry", "(worst quality)"],
    }
    values.update(changes)
    return ImageParameters(**values)  # type: ignore[arg-type]


def _image(mode: str = "RGB") -> Image.Image:
    image = Image.new(mode, (24, 16), (200, 30, 90) if mode == "RGB" else (200, 30, 90, 128))
    image.putpixel((3, 3), (0, 255, 0) if mode == "RGB" else (0, 255, 0, 255))
    return image


# --- metadata rendering ----------------------------------------------------------------------


def test_fooocus_metadata_keys_and_formats() -> None:
    data = json.loads(fooocus_metadata(_params()))
    assert data["resolution"] == "(1152, 896)"
    assert data["adm_guidance"] == "(1.5, 0.8, 0.3)"
    assert data["styles"] == "['Fooocus V2', 'Fooocus Enhance']"
    assert data["seed"] == "1234567890123"
    assert data["base_model"] == "juggernautXL_v8Rundiffusion"
    assert data["refiner_model"] == "None" and "refiner_model_hash" not in data
    assert data["vae"] == "Default (model)"
    assert data["loras"] == [["sd_xl_offset_example-lora_1.0", 0.1, "4852686128"]]
    assert data["lora_combined_1"] == "sd_xl_offset_example-lora_1.0 : 0.1"
    assert data["clip_skip"] == 2
    assert data["full_prompt"] == ["a cat, on a mat", "a cat, on a mat, highly detailed"]
    for absent in (
        "adaptive_cfg",
        "freeu",
        "refiner_swap_method",
        "overwrite_switch",
        "created_by",
    ):
        assert absent not in data
    text = fooocus_metadata(_params())
    assert list(json.loads(text)) == sorted(json.loads(text))
    assert fooocus_metadata({"b": 1, "a": 2}) == '{"a": 2, "b": 1}'


def test_fooocus_metadata_optional_keys() -> None:
    params = _params(
        refiner_model="ref.safetensors",
        refiner_model_hash="0123456789",
        overwrite_switch=20,
        refiner_swap_method="separate",
        adaptive_cfg=5.0,
        clip_skip=1,
        freeu=(1.01, 1.02, 0.99, 0.95),
        created_by="me",
        vae="vae/pony_vae.safetensors",
    )
    data = params.to_fooocus_dict()
    assert data["refiner_model"] == "ref" and data["refiner_model_hash"] == "0123456789"
    assert data["overwrite_switch"] == 20
    assert data["refiner_swap_method"] == "separate"
    assert data["adaptive_cfg"] == 5.0
    assert "clip_skip" not in data
    assert data["freeu"] == "(1.01, 1.02, 0.99, 0.95)"
    assert data["created_by"] == "me"
    assert data["vae"] == "pony_vae"


def test_a1111_sampler_names() -> None:
    assert a1111_sampler_name("dpmpp_2m_sde_gpu", "karras") == "DPM++ 2M SDE Karras"
    assert a1111_sampler_name("euler_ancestral", "karras") == "Euler a"
    assert a1111_sampler_name("dpmpp_2m", "normal") == "DPM++ 2M"
    assert a1111_sampler_name("heunpp2", "karras") == "heunpp2 Karras"
    assert a1111_sampler_name("uni_pc", "karras") == "UniPC"


def test_a1111_quote() -> None:
    assert a1111_quote("plain") == "plain"
    assert a1111_quote("a, b") == '"a, b"'
    assert a1111_quote('say: "hi"') == '"say: \\"hi\\""'
    assert a1111_quote("x\ny") == '"x\\ny"'


def test_a1111_metadata_text() -> None:
    text = a1111_metadata(_params())
    lines = text.split("\n")
    assert lines[0] == "a cat, on a mat, a cat, on a mat, highly detailed"
    assert lines[1] == "Negative prompt: blurry, (worst quality)"
    params = lines[2]
    assert params.startswith(
        "Steps: 30, Sampler: DPM++ 2M SDE Karras, Seed: 1234567890123, Size: 1152x896, "
        'CFG scale: 4.0, Sharpness: 2.0, ADM Guidance: "(1.5, 0.8, 0.3)", '
        "Model: juggernautXL_v8Rundiffusion, Model hash: aeb7e9e689, Performance: Speed, "
        'Scheduler: karras, VAE: Default (model), Raw prompt: "a cat, on a mat", '
        "Raw negative prompt: blurry, Clip skip: 2, "
    )
    assert 'Lora hashes: "sd_xl_offset_example-lora_1.0: 4852686128"' in params
    assert 'Lora weights: "sd_xl_offset_example-lora_1.0: 0.1"' in params
    assert "Refiner" not in params and "User" not in params
    assert len(lines) == 3
    with_refiner = a1111_metadata(
        _params(refiner_model="r.safetensors", refiner_model_hash="abc", created_by="me", loras=[])
    )
    assert "Refiner: r, Refiner hash: abc" in with_refiner
    assert with_refiner.endswith(", User: me")
    assert "Lora" not in with_refiner
    no_negative = a1111_metadata(_params(negative_prompt="", full_negative_prompt=[]))
    assert "Negative prompt" not in no_negative


def test_render_metadata_dispatch() -> None:
    params = _params(metadata_scheme="a1111")
    assert render_metadata(params) == a1111_metadata(params)
    assert render_metadata(params, "fooocus") == fooocus_metadata(params)
    with pytest.raises(ValueError):
        render_metadata(params, "xmp")


def test_user_comment_encoding() -> None:
    assert encode_user_comment("ascii only") == "ascii only"
    encoded = encode_user_comment("猫, café")
    assert isinstance(encoded, bytes) and encoded.startswith(b"UNICODE\x00")
    assert decode_user_comment(encoded) == "猫, café"
    assert decode_user_comment(b"ASCII\x00\x00\x00hello") == "hello"
    assert decode_user_comment(b"\x00" * 8 + "hé".encode()) == "hé"


# --- saving and reading back -----------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["png", "jpeg", "jpg", "webp"])
@pytest.mark.parametrize("scheme", ["fooocus", "a1111"])
def test_metadata_round_trip(tmp_path: Path, fmt: str, scheme: str) -> None:
    params = _params(prompt="猫 on a mat, café", metadata_scheme=scheme)
    text = render_metadata(params)
    path = save_image(_image(), tmp_path, fmt, text, scheme, now=NOW)
    assert path.parent == tmp_path / "2024-05-06"
    assert path.suffix == "." + fmt
    assert read_metadata(path) == (text, scheme)
    with Image.open(path) as image:
        assert image.size == (24, 16)
        assert image.format == {"png": "PNG", "jpeg": "JPEG", "jpg": "JPEG", "webp": "WEBP"}[fmt]
        if fmt != "png":
            assert image.getexif().get(0x0131) == SOFTWARE
        else:
            assert image.getpixel((3, 3)) == (0, 255, 0)  # lossless


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_no_metadata(tmp_path: Path, fmt: str) -> None:
    path = save_image(_image(), tmp_path, fmt, None, now=NOW)
    assert read_metadata(path) is None
    with Image.open(path) as image:
        assert "parameters" not in image.info
        assert dict(image.getexif()) == {}


def test_rgba_to_jpeg(tmp_path: Path) -> None:
    path = save_image(_image("RGBA"), tmp_path, "jpeg", "x", "a1111", now=NOW)
    with Image.open(path) as image:
        assert image.mode == "RGB"


def test_default_names_unique_and_unguessable(tmp_path: Path) -> None:
    paths = [save_image(_image(), tmp_path, "png", None, now=NOW) for _ in range(5)]
    assert len(set(paths)) == 5
    for path in paths:
        assert re.fullmatch(r"2024-05-06_07-08-09_[0-9a-f]{16}\.png", path.name)


def test_save_name_and_never_overwrite(tmp_path: Path) -> None:
    first = save_image(_image(), tmp_path, "png", None, save_name="  my pic ", index=2, now=NOW)
    assert first.name == "my pic-2.png"
    second = save_image(_image(), tmp_path, "png", None, save_name="my pic", index=2, now=NOW)
    assert second.name == "my pic-2_1.png"
    assert first.exists() and second.exists()


@pytest.mark.parametrize(
    "bad", ["", "   ", "..", "../x", "a/b", "a\\b", ".hidden", "x\x00", "a:b", "x" * 200, "a..b"]
)
def test_save_name_rejected(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ValueError):
        sanitize_save_name(bad)
    with pytest.raises(ValueError):
        save_image(_image(), tmp_path, "png", None, save_name=bad, now=NOW)
    assert not any(tmp_path.rglob("*.png"))


def test_bad_format_and_scheme(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        save_image(_image(), tmp_path, "gif", None)
    with pytest.raises(ValueError):
        save_image(_image(), tmp_path, "png", "x", "xmp")


def test_read_metadata_guesses_scheme(tmp_path: Path) -> None:
    image = _image()
    path = tmp_path / "foreign.png"
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", '{"prompt": "x"}')
    image.save(path, pnginfo=info)
    assert read_metadata(path) == ('{"prompt": "x"}', "fooocus")


# --- hashing ---------------------------------------------------------------------------------


def test_model_hash_matches_hashlib_and_is_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = os.urandom(3 * (1 << 20) + 17)  # several chunks
    model = tmp_path / "checkpoints" / "m.safetensors"
    model.parent.mkdir(parents=True)
    model.write_bytes(data)
    expected = hashlib.sha256(data).hexdigest()
    assert hashing.sha256_file(model) == expected

    calls: list[str] = []
    real = hashing.sha256_file

    def counting(path: str | os.PathLike[str], chunk_size: int = 1 << 20) -> str:
        calls.append(str(path))
        return real(path, chunk_size)

    monkeypatch.setattr(hashing, "sha256_file", counting)
    cache = hashing.hash_cache_for(EngineConfig(models_dir=str(tmp_path)))
    assert cache.short_hash(model) == expected[:10]
    assert cache.short_hash(model) == expected[:10]
    assert len(calls) == 1

    # The cache file is JSON lines in the models dir; a fresh cache reads it instead of hashing.
    cache_file = tmp_path / "hash_cache.txt"
    lines = cache_file.read_text().splitlines()
    assert json.loads(lines[0])["sha256"] == expected
    fresh = hashing.HashCache(cache_file)
    assert fresh.short_hash(model) == expected[:10]
    assert len(calls) == 1

    # A changed file is hashed again.
    model.write_bytes(data + b"!")
    stat = model.stat()
    os.utime(model, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert fresh.sha256(model) == hashlib.sha256(data + b"!").hexdigest()
    assert len(calls) == 2


def test_hash_cache_ignores_bad_lines(tmp_path: Path) -> None:
    model = tmp_path / "m.bin"
    model.write_bytes(b"abc")
    cache_file = tmp_path / "hash_cache.txt"
    cache_file.write_text('not json\n{"path": 1}\n')
    cache = hashing.HashCache(cache_file)
    assert cache.short_hash(model) == hashlib.sha256(b"abc").hexdigest()[:10]
    assert hashing.HashCache(None).sha256(model) == hashlib.sha256(b"abc").hexdigest()
