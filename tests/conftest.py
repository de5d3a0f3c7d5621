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
