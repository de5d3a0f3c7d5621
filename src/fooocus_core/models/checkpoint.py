"""Reading checkpoint files and telling what they hold.

:func:`read_state_dict` reads ``.safetensors`` (with its metadata) and pickled ``.ckpt`` /
``.pth`` / ``.bin`` files (``weights_only``: no code runs). :func:`detect_kind` tells an SDXL base,
an SDXL refiner, Playground v2.5, SD 1.5 / 2.x and "not a checkpoint" apart from the key names.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from fooocus_core.errors import EngineError
from fooocus_core.models import keys as K


class CheckpointError(EngineError):
    """A model file cannot be used (unreadable, wrong kind, keys that do not fit)."""


class ModelFileNotFound(FileNotFoundError):
    """A model file does not exist; the message names the file and the folder to put it in."""

    def __init__(
        self, path: str | os.PathLike[str], folder: str | os.PathLike[str] | None = None
    ) -> None:
        self.path = Path(path)
        self.folder = Path(folder) if folder is not None else self.path.parent
        super().__init__(
            f"model file {self.path.name!r} not found: put it in the folder {str(self.folder)!r} "
            f"(looked for {str(self.path)!r})"
        )


class CheckpointKind(enum.Enum):
    """What a checkpoint holds, decided from its keys."""

    SDXL_BASE = "sdxl_base"
    SDXL_REFINER = "sdxl_refiner"
    #: Playground v2.5: SDXL base architecture, EDM schedule and its own latent statistics.
    PLAYGROUND_V25 = "playground_v25"
    SD15 = "sd15"
    SD2 = "sd2"
    UNKNOWN = "unknown"

    @property
    def description(self) -> str:
        return _DESCRIPTIONS[self]


_DESCRIPTIONS = {
    CheckpointKind.SDXL_BASE: "an SDXL base model",
    CheckpointKind.SDXL_REFINER: "an SDXL refiner model",
    CheckpointKind.PLAYGROUND_V25: "a Playground v2.5 model (SDXL architecture)",
    CheckpointKind.SD15: "a Stable Diffusion 1.x model",
    CheckpointKind.SD2: "a Stable Diffusion 2.x model",
    CheckpointKind.UNKNOWN: "not a Stable Diffusion checkpoint",
}

#: Kinds that load as a base model.
BASE_KINDS = frozenset({CheckpointKind.SDXL_BASE, CheckpointKind.PLAYGROUND_V25})
#: Kinds whose UNet can serve as refiner.
REFINER_KINDS = frozenset(
    {CheckpointKind.SDXL_REFINER, CheckpointKind.SDXL_BASE, CheckpointKind.PLAYGROUND_V25}
)


class UnsupportedCheckpoint(CheckpointError):
    """The file is a checkpoint of a kind that cannot be used where it was asked for."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        kind: CheckpointKind,
        supported: Iterable[CheckpointKind],
        role: str,
    ) -> None:
        self.path = Path(path)
        self.kind = kind
        self.supported = sorted(supported, key=lambda k: k.value)
        names = ", ".join(k.description for k in self.supported)
        super().__init__(
            f"{self.path.name!r} is {kind.description} and cannot be used as {role}; "
            f"supported: {names}"
        )


_TORCH_SUFFIXES = (".ckpt", ".pth", ".pt", ".bin")


def read_state_dict(
    path: str | os.PathLike[str], prefixes: Sequence[str] | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read all tensors of a model file on the CPU, plus its metadata (safetensors only).

    ``prefixes`` keeps only the keys starting with one of them (safetensors files then read
    nothing else). A top-level ``state_dict`` entry of a pickled file is unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileNotFound(path)
    keep = tuple(prefixes) if prefixes is not None else None
    if path.suffix.lower() == ".safetensors":
        try:
            with safe_open(str(path), framework="pt", device="cpu") as handle:
                metadata = dict(handle.metadata() or {})
                names = [k for k in handle.keys() if keep is None or k.startswith(keep)]  # noqa: SIM118
                tensors = {key: handle.get_tensor(key) for key in names}
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"cannot read {path.name!r} as safetensors: {exc}") from exc
        return tensors, metadata
    if path.suffix.lower() not in _TORCH_SUFFIXES:
        raise CheckpointError(
            f"cannot read {path.name!r}: expected one of .safetensors, {', '.join(_TORCH_SUFFIXES)}"
        )
    data = _torch_load(path)
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict):
        raise CheckpointError(f"{path.name!r} does not hold a state dict")
    tensors = {
        str(k): v
        for k, v in data.items()
        if isinstance(v, torch.Tensor) and (keep is None or str(k).startswith(keep))
    }
    return tensors, {}


def _torch_load(path: Path) -> object:
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):  # legacy (non-zip) files cannot be memory-mapped
                raise
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors come in many types
        raise CheckpointError(f"cannot read {path.name!r} as a PyTorch checkpoint: {exc}") from exc


def list_keys(path: str | os.PathLike[str]) -> list[str]:
    """The tensor names in a model file (cheap for safetensors: reads only the header)."""
    path = Path(path)
    if path.suffix.lower() == ".safetensors" and path.is_file():
        try:
            with safe_open(str(path), framework="pt", device="cpu") as handle:
                return list(handle.keys())
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"cannot read {path.name!r} as safetensors: {exc}") from exc
    return list(read_state_dict(path)[0])


def detect_kind(
    keys: Collection[str], shapes: dict[str, tuple[int, ...]] | None = None
) -> CheckpointKind:
    """What a checkpoint is, from its key names (and, when the text-encoder keys are absent, the
    ``label_emb`` input size in ``shapes``: 2816 = SDXL base, 2560 = refiner).
    """
    keyset = keys if isinstance(keys, set | frozenset | dict) else set(keys)
    has_unet = any(k.startswith(K.UNET_PREFIX) for k in keyset)
    if not has_unet:
        return CheckpointKind.UNKNOWN
    label = K.UNET_PREFIX + "label_emb.0.0.weight"
    if label in keyset:
        if "edm_mean" in keyset or "edm_std" in keyset:
            return CheckpointKind.PLAYGROUND_V25
        has_l = any(k.startswith(K.CLIP_L_PREFIX) for k in keyset)
        has_g = any(k.startswith(K.CLIP_G_PREFIX) for k in keyset)
        has_g0 = any(k.startswith(K.REFINER_CLIP_G_PREFIX) for k in keyset)
        if has_g0 and not has_g and not has_l:
            return CheckpointKind.SDXL_REFINER
        if has_l or has_g:
            return CheckpointKind.SDXL_BASE
        in_features = (shapes or {}).get(label, (0, 0))[-1]
        if in_features == 2560:
            return CheckpointKind.SDXL_REFINER
        return CheckpointKind.SDXL_BASE
    if any(k.startswith("cond_stage_model.model.") for k in keyset):
        return CheckpointKind.SD2
    return CheckpointKind.SD15
