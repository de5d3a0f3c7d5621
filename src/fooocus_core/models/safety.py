"""The NSFW censor behind ``black_out_nsfw`` (spec §7, §1.7).

diffusers' ``StableDiffusionSafetyChecker`` (CLIP ViT-L/14 vision tower, 768 projection, 17
concept and 3 special-care embeddings with thresholds) built offline from the shipped
``config/safety_checker/config.json`` and fed by a ``CLIPImageProcessor`` configured from the
shipped ``config/safety_checker/preprocessor_config.json`` (resize 224 bicubic, center crop 224,
CLIP mean/std). The weights are the user's ``stable-diffusion-safety-checker.bin`` (a pickled
state dict of the Hugging Face model, read with ``weights_only``) or a ``.safetensors`` file of
the same tensors in the ``safety_checker`` model folder. A safetensors file may carry config
overrides in its ``fooocus_core.configs`` metadata under ``"safety_checker"`` (the tiny test
model uses this), like the checkpoints do.

Flagged images are replaced by all-black images of the same size and mode.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from fooocus_core.config import SHIPPED_CONFIG_DIR
from fooocus_core.models.checkpoint import CheckpointError, ModelFileNotFound, read_state_dict
from fooocus_core.models.loader import check_fits, empty_weights, load_config

if TYPE_CHECKING:
    from fooocus_core.config import EngineConfig

#: The file Fooocus downloads into the ``safety_checker`` folder.
SAFETY_CHECKER_FILE = "stable-diffusion-safety-checker.bin"
SAFETY_CHECKER_URL = (
    "https://huggingface.co/mashb1t/misc/resolve/main/stable-diffusion-safety-checker.bin"
)
#: File names tried in the folder, in order.
SAFETY_CHECKER_FILES: tuple[str, ...] = (
    SAFETY_CHECKER_FILE,
    "stable-diffusion-safety-checker.safetensors",
)
#: Sub-folder of the shipped config folder holding ``config.json`` and the preprocessor config.
CONFIG_SUBDIR = "safety_checker"
#: Key of this model in a file's ``fooocus_core.configs`` metadata.
METADATA_COMPONENT = "safety_checker"
#: Images per forward pass.
BATCH_SIZE = 8

_VISION_OLD = "vision_model.vision_model."
_VISION_NEW = "vision_model."


class SafetyCheckerMissing(ModelFileNotFound):
    """The safety checker weights are missing; the message names the file, folder and URL."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.path = self.folder / SAFETY_CHECKER_FILE
        self.url = SAFETY_CHECKER_URL
        FileNotFoundError.__init__(
            self,
            f"black_out_nsfw needs the safety checker {SAFETY_CHECKER_FILE!r}: download "
            f"{SAFETY_CHECKER_URL} and put it in the folder {str(self.folder)!r}",
        )


def find_safety_checker(folder: str | os.PathLike[str]) -> Path:
    """The weights file in ``folder``; raises :class:`SafetyCheckerMissing` when absent."""
    folder = Path(folder)
    for name in SAFETY_CHECKER_FILES:
        if (folder / name).is_file():
            return folder / name
    raise SafetyCheckerMissing(folder)


def load_safety_config(
    config_dir: str | os.PathLike[str] = SHIPPED_CONFIG_DIR,
    *overrides: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """``<config_dir>/safety_checker/config.json`` with ``overrides`` merged in order
    (top-level keys replace, as for the checkpoint configs).
    """
    return load_config(config_dir, CONFIG_SUBDIR, "", *overrides)


def load_image_processor(config_dir: str | os.PathLike[str] = SHIPPED_CONFIG_DIR) -> Any:
    """The CLIP image processor from ``<config_dir>/safety_checker/preprocessor_config.json``.

    The PIL implementation is used (as Fooocus' transformers 4 did), not the torchvision one.
    """
    path = Path(config_dir) / CONFIG_SUBDIR / "preprocessor_config.json"
    try:
        settings = json.loads(path.read_text("utf-8"))
    except FileNotFoundError as exc:
        raise CheckpointError(f"shipped preprocessor config {str(path)!r} is missing") from exc
    try:
        from transformers import CLIPImageProcessorPil as Processor
    except ImportError:  # transformers 4: CLIPImageProcessor is the PIL one
        from transformers import CLIPImageProcessor as Processor
    return Processor.from_dict(settings)


def _rename(key: str, expected: Mapping[str, Any]) -> str:
    """A file key under the model's name (transformers >= 5.6 dropped one ``vision_model.``)."""
    if key in expected:
        return key
    if key.startswith(_VISION_OLD):
        alt = _VISION_NEW + key[len(_VISION_OLD) :]
    elif key.startswith(_VISION_NEW):
        alt = _VISION_OLD + key[len(_VISION_NEW) :]
    else:
        return key
    return alt if alt in expected else key


def build_safety_checker(config: Mapping[str, Any], state_dict: Mapping[str, torch.Tensor]) -> Any:
    """A ``StableDiffusionSafetyChecker`` for ``config`` holding ``state_dict`` (CPU, as stored).

    Parameters are created empty and the file's tensors assigned; names and shapes must fit.
    """
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig

    with empty_weights():
        model = StableDiffusionSafetyChecker(CLIPConfig.from_dict(dict(config)))
    expected = model.state_dict()
    renamed: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        name = _rename(key, expected)
        if name not in expected and name.endswith("position_ids"):
            continue  # a buffer older transformers saved; the model makes its own
        renamed[name] = value
    check_fits(model, renamed, "the safety checker file (against its config)")
    model.load_state_dict(renamed, strict=True, assign=True)
    empty = [n for n, p in model.named_parameters() if p.device.type == "meta"]
    if empty:
        raise CheckpointError(f"safety checker parameters left without weights: {empty[:5]}")
    model.requires_grad_(False)
    model.eval()
    return model


def _black(image: Image.Image) -> Image.Image:
    """An all-black image of ``image``'s size and mode (opaque when the mode has alpha)."""
    color: Any = 0
    if image.mode in ("RGBA", "LA"):
        color = (0, 0, 0, 255) if image.mode == "RGBA" else (0, 255)
    elif len(image.getbands()) > 1:
        color = (0,) * len(image.getbands())
    return Image.new(image.mode, image.size, color)


class SafetyChecker:
    """Flags NSFW images and blacks them out; thread-safe (one forward pass at a time)."""

    def __init__(self, model: Any, processor: Any) -> None:
        self.model = model
        self.processor = processor
        self._lock = threading.Lock()

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        device: torch.device | str = "cpu",
        dtype: torch.dtype | None = None,
        *,
        config_dir: str | os.PathLike[str] = SHIPPED_CONFIG_DIR,
        config_overrides: Mapping[str, Any] | None = None,
    ) -> SafetyChecker:
        """Load the weights file ``path`` (``.bin``/``.pth`` pickle or ``.safetensors``).

        The config is the shipped one, then the file's ``fooocus_core.configs`` metadata entry
        ``"safety_checker"``, then ``config_overrides``. fp16 on CUDA, fp32 elsewhere by default.
        """
        from fooocus_core.models.loader import config_overrides as metadata_overrides

        path = Path(path)
        if not path.is_file():
            raise SafetyCheckerMissing(path.parent)
        state_dict, metadata = read_state_dict(path)
        config = load_safety_config(
            config_dir, metadata_overrides(metadata).get(METADATA_COMPONENT), config_overrides
        )
        model = build_safety_checker(config, state_dict)
        device = torch.device(device)
        if dtype is None:
            dtype = torch.float16 if device.type == "cuda" else torch.float32
        model.to(device=device, dtype=dtype)
        return cls(model, load_image_processor(config_dir))

    @classmethod
    def from_config(cls, config: EngineConfig, device: torch.device | str = "cpu") -> SafetyChecker:
        """Load from ``config``'s safety_checker folder.

        Raises :class:`SafetyCheckerMissing` when the file is not there.
        """
        path = find_safety_checker(config.folder("safety_checker"))
        return cls.load(path, device, config_dir=config.config_path)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def check(self, images: Sequence[Image.Image]) -> list[bool]:
        """For each image, whether the checker flags it as NSFW."""
        flags: list[bool] = []
        with self._lock, torch.inference_mode():
            for start in range(0, len(images), BATCH_SIZE):
                batch = [image.convert("RGB") for image in images[start : start + BATCH_SIZE]]
                pixels = self.processor(batch, return_tensors="pt")["pixel_values"]
                pixels = pixels.to(device=self.device, dtype=self.dtype)
                placeholders = [np.zeros(1, dtype=np.uint8) for _ in batch]
                _, flagged = self.model(clip_input=pixels, images=placeholders)
                flags += [bool(f) for f in flagged]
        return flags

    def censor(self, images: Sequence[Image.Image]) -> list[Image.Image]:
        """The images with every flagged one replaced by an all-black image of its size."""
        flags = self.check(images)
        return [_black(image) if flag else image for image, flag in zip(images, flags, strict=True)]
