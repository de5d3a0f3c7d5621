"""Keeps the loaded base model (and refiner) and swaps them when the task asks for others.

One instance serves the single GPU worker thread; it is not thread-safe. Switching models frees
the old one first (references dropped, ``gc.collect()``, CUDA cache emptied), so two SDXL
models never sit in memory together.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass
from pathlib import Path

import torch

from fooocus_core.config import EngineConfig
from fooocus_core.models.folders import resolve_model
from fooocus_core.models.loader import (
    DEFAULT_VAE,
    ModelDtypes,
    RefinerModels,
    SDXLModels,
    load_refiner,
    load_sdxl,
)


@dataclass(frozen=True)
class _FileId:
    """A file as of its last load: a replaced file (new mtime or size) counts as changed."""

    path: Path
    mtime_ns: int
    size: int

    @classmethod
    def of(cls, path: Path) -> _FileId:
        stat = path.stat()
        return cls(path.resolve(), stat.st_mtime_ns, stat.st_size)


class ModelManager:
    """Caches one base model and one refiner, loaded from the configured model folders."""

    def __init__(
        self,
        config: EngineConfig,
        device: torch.device | str = "cpu",
        dtype: ModelDtypes | torch.dtype | None = None,
    ) -> None:
        self.config = config
        self.device = torch.device(device)
        self.dtype = dtype
        self._base: SDXLModels | None = None
        self._base_id: tuple[_FileId, _FileId | None] | None = None
        self._refiner: RefinerModels | None = None
        self._refiner_id: _FileId | None = None

    def get_base(self, checkpoint_name: str, vae_name: str = DEFAULT_VAE) -> SDXLModels:
        """The base model ``checkpoint_name`` (relative to the checkpoints folder, sub-folders
        allowed) with VAE ``vae_name`` (relative to the vae folder, or "Default (model)" for the
        checkpoint's own); cached while neither changes.
        """
        path = resolve_model(self.config, "checkpoints", checkpoint_name)
        vae_path = None
        if vae_name and vae_name != DEFAULT_VAE:
            vae_path = resolve_model(self.config, "vae", vae_name)
        key = (_FileId.of(path), _FileId.of(vae_path) if vae_path is not None else None)
        if self._base is not None and self._base_id == key:
            return self._base
        self.unload_base()
        self._base = load_sdxl(
            path, self.config.config_path, device=self.device, dtype=self.dtype, vae_path=vae_path
        )
        self._base_id = key
        return self._base

    def get_refiner(self, refiner_name: str) -> RefinerModels:
        """The refiner UNet ``refiner_name`` (relative to the checkpoints folder); cached."""
        path = resolve_model(self.config, "checkpoints", refiner_name)
        key = _FileId.of(path)
        if self._refiner is not None and self._refiner_id == key:
            return self._refiner
        self.unload_refiner()
        unet_dtype = self.dtype.unet if isinstance(self.dtype, ModelDtypes) else self.dtype
        self._refiner = load_refiner(
            path, self.config.config_path, device=self.device, dtype=unet_dtype
        )
        self._refiner_id = key
        return self._refiner

    @property
    def base(self) -> SDXLModels | None:
        """The cached base model, if any."""
        return self._base

    @property
    def refiner(self) -> RefinerModels | None:
        """The cached refiner, if any."""
        return self._refiner

    def unload_base(self) -> None:
        """Drop the cached base model and free its memory."""
        if self._base is not None:
            self._base = None
            self._base_id = None
            self._free()

    def unload_refiner(self) -> None:
        """Drop the cached refiner and free its memory."""
        if self._refiner is not None:
            self._refiner = None
            self._refiner_id = None
            self._free()

    def unload_all(self) -> None:
        """Drop every cached model."""
        self.unload_base()
        self.unload_refiner()

    def _free(self) -> None:
        gc.collect()
        if self.device.type == "cuda" and torch.cuda.is_available():
            torch.cuda.empty_cache()
