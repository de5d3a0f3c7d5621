"""Shared test fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

# Two cores on CI machines: keep torch from oversubscribing them.
torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tiny_sdxl_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight SDXL base checkpoint (seed 0, original single-file layout), written
    once per session; load it with ``fooocus_core.models.loader.load_sdxl``.
    """
    from fooocus_core.models.tiny import write_tiny_checkpoint

    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny_sdxl") / "tiny_sdxl.safetensors")


@pytest.fixture(scope="session")
def tiny_models_dir(tmp_path_factory: pytest.TempPathFactory, tiny_sdxl_checkpoint: Path) -> Path:
    """A models folder whose only file is ``checkpoints/tiny.safetensors`` (do not add files:
    tests that need more models make their own folder).
    """
    models = tmp_path_factory.mktemp("models")
    (models / "checkpoints").mkdir()
    (models / "checkpoints" / "tiny.safetensors").symlink_to(tiny_sdxl_checkpoint)
    return models


@pytest.fixture(scope="module")
def tiny_engine(tiny_models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> object:
    """An engine on :func:`tiny_models_dir` writing to a fresh outputs folder, on the CPU."""
    from fooocus_core.config import EngineConfig
    from fooocus_core.engine import Engine

    outputs = tmp_path_factory.mktemp("outputs")
    return Engine(
        EngineConfig(models_dir=str(tiny_models_dir), output_dir=str(outputs), device="cpu")
    )
