"""Model folders: listing, safe name resolution, folder creation."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from fooocus_core.config import MODEL_FOLDERS, EngineConfig
from fooocus_core.models.folders import (
    STARTER_MODEL,
    ModelFileMissing,
    ensure_folders,
    list_models,
    resolve_model,
)


def _touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")


@pytest.fixture
def config(tmp_path: Path) -> EngineConfig:
    return EngineConfig(models_dir=str(tmp_path / "models"), output_dir=str(tmp_path / "out"))


def test_list_models_recursive_sorted_filtered(config: EngineConfig) -> None:
    root = config.folder("checkpoints")
    for name in [
        "b.safetensors",
        "a.ckpt",
        "sub/deep/c.pth",
        "sub/d.bin",
        "sub/e.SAFETENSORS",
        "notes.txt",
        "partial.safetensors.part",
        ".hidden.safetensors",
        ".cache/x.safetensors",
    ]:
        _touch(root / name)
    (root / "dir.safetensors").mkdir()
    files = ["a.ckpt", "b.safetensors", "sub/d.bin", "sub/deep/c.pth", "sub/e.SAFETENSORS"]
    assert list_models(config, "checkpoints", builtin=False) == files
    # the built-in starter model comes after the folder's files
    assert list_models(config, "checkpoints") == [*files, STARTER_MODEL]


def test_builtin_starter_model(config: EngineConfig, tmp_path: Path) -> None:
    shipped = config.config_path / "starter" / STARTER_MODEL
    assert shipped.is_file()
    assert resolve_model(config, "checkpoints", STARTER_MODEL) == shipped
    assert list_models(config, "loras") == []  # built-ins are checkpoints only
    # a file of the same name in the checkpoints folder takes precedence
    own = tmp_path / "models" / "checkpoints" / STARTER_MODEL
    _touch(own)
    assert resolve_model(config, "checkpoints", STARTER_MODEL) == own
    assert list_models(config, "checkpoints") == [STARTER_MODEL]
    # without the shipped file (another config folder) there is no built-in model
    elsewhere = msgspec.structs.replace(config, config_dir=str(tmp_path / "config"))
    own.unlink()
    assert list_models(elsewhere, "checkpoints") == []
    with pytest.raises(ModelFileMissing):
        resolve_model(elsewhere, "checkpoints", STARTER_MODEL)


def test_list_models_missing_folder(config: EngineConfig) -> None:
    assert list_models(config, "loras") == []


def test_list_models_unknown_kind(config: EngineConfig) -> None:
    with pytest.raises(ValueError):
        list_models(config, "nonsense")


def test_per_folder_override(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    _touch(elsewhere / "x.safetensors")
    _touch(tmp_path / "models" / "loras" / "y.safetensors")
    config = EngineConfig(
        models_dir=str(tmp_path / "models"), model_folders={"loras": str(elsewhere)}
    )
    assert list_models(config, "loras") == ["x.safetensors"]
    assert resolve_model(config, "loras", "x.safetensors") == elsewhere / "x.safetensors"


def test_resolve_model(config: EngineConfig) -> None:
    root = config.folder("checkpoints")
    _touch(root / "sdxl" / "m.safetensors")
    assert resolve_model(config, "checkpoints", "sdxl/m.safetensors") == root / "sdxl/m.safetensors"


@pytest.mark.parametrize(
    "name",
    [
        "../secret.safetensors",
        "a/../../b.safetensors",
        "/etc/passwd",
        "C:/x.ckpt",
        "a\\b.ckpt",
        "",
        "x\x00y",
    ],
)
def test_resolve_refuses_escaping_names(config: EngineConfig, name: str) -> None:
    _touch(config.folder("checkpoints").parent / "secret.safetensors")
    with pytest.raises(ValueError):
        resolve_model(config, "checkpoints", name)


def test_resolve_missing_names_file_and_folder(config: EngineConfig) -> None:
    with pytest.raises(ModelFileMissing) as info:
        resolve_model(config, "vae", "pony_vae.safetensors")
    err = info.value
    assert isinstance(err, FileNotFoundError)
    assert err.name == "pony_vae.safetensors"
    assert err.kind == "vae"
    assert err.folder == config.folder("vae")
    assert str(err) == (
        f"vae model 'pony_vae.safetensors' was not found; put the file 'pony_vae.safetensors' "
        f"in the folder {str(config.folder('vae'))!r} (the 'vae' model folder)"
    )


def test_ensure_folders(config: EngineConfig) -> None:
    folders = ensure_folders(config)
    assert len(folders) == len(MODEL_FOLDERS)
    assert all(folder.is_dir() for folder in folders)
    assert Path(config.output_dir).is_dir()
    ensure_folders(config)  # idempotent
