"""Load SDXL single-file checkpoints offline into diffusers / transformers models.

Models are built from the shipped config JSONs (``config/sdxl/*``, ``config/sdxl_refiner/unet``)
with their parameters on the meta device, then the converted checkpoint tensors are assigned
in place, so a 7 GB checkpoint needs its own size in memory, not twice that. A checkpoint may
carry architecture overrides in its safetensors metadata under ``fooocus_core.configs`` (a JSON
object ``{"unet": {...}, "vae": {...}, ...}`` merged over the shipped configs): the tiny test
models use this; real checkpoints do not and get the shipped SDXL configs.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from safetensors import SafetensorError, safe_open
from torch import nn
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from fooocus_core.models import keys as K
from fooocus_core.models.checkpoint import (
    BASE_KINDS,
    REFINER_KINDS,
    CheckpointError,
    CheckpointKind,
    ModelFileNotFound,
    UnsupportedCheckpoint,
    detect_kind,
    read_state_dict,
)

log = logging.getLogger(__name__)

#: Safetensors metadata key holding per-component config overrides (JSON object).
CONFIG_METADATA_KEY = "fooocus_core.configs"
#: Components of an SDXL base model, also the sub-folders of ``config/sdxl``.
COMPONENTS = ("unet", "vae", "text_encoder", "text_encoder_2")
#: Sentinel VAE name meaning "the checkpoint's own VAE".
DEFAULT_VAE = "Default (model)"


@dataclass(eq=False)
class SDXLModels:
    """A loaded SDXL base model: UNet, VAE and the two text encoders (CLIP-L, OpenCLIP bigG)."""

    unet: UNet2DConditionModel
    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    text_encoder_2: CLIPTextModelWithProjection
    kind: CheckpointKind
    path: Path | None = None


@dataclass(eq=False)
class RefinerModels:
    """A refiner: only its UNet is kept (Fooocus uses the base model's CLIP and VAE)."""

    unet: UNet2DConditionModel
    kind: CheckpointKind
    path: Path | None = None


@dataclass(frozen=True)
class ModelDtypes:
    """Weight dtypes per component."""

    unet: torch.dtype
    text_encoder: torch.dtype
    vae: torch.dtype


def default_dtypes(device: torch.device | str) -> ModelDtypes:
    """Fooocus' policy: on CUDA UNet and text encoders fp16, VAE bf16 on compute capability >= 8
    (fp32 before); everything fp32 on other devices.
    """
    device = torch.device(device)
    if device.type != "cuda":
        return ModelDtypes(torch.float32, torch.float32, torch.float32)
    major, _ = torch.cuda.get_device_capability(device)
    vae = torch.bfloat16 if major >= 8 else torch.float32
    return ModelDtypes(torch.float16, torch.float16, vae)


def _dtypes(device: torch.device, dtype: ModelDtypes | torch.dtype | None) -> ModelDtypes:
    if dtype is None:
        return default_dtypes(device)
    if isinstance(dtype, torch.dtype):
        return ModelDtypes(dtype, dtype, dtype)
    return dtype


# --------------------------------------------------------------------------------------------
# Configs


def config_overrides(metadata: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """The per-component config overrides a checkpoint carries in its metadata (or ``{}``)."""
    raw = metadata.get(CONFIG_METADATA_KEY)
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"invalid {CONFIG_METADATA_KEY} metadata: {exc}") from exc
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise CheckpointError(f"{CONFIG_METADATA_KEY} metadata must map component names to objects")
    return data


def load_config(
    config_dir: str | os.PathLike[str],
    family: str,
    component: str,
    *overrides: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The shipped ``<config_dir>/<family>/<component>/config.json`` with ``overrides`` merged
    over it in order (top-level keys replace). An empty ``component`` reads
    ``<config_dir>/<family>/config.json``.
    """
    path = Path(config_dir) / family / component / "config.json"
    try:
        config: dict[str, Any] = json.loads(path.read_text("utf-8"))
    except FileNotFoundError as exc:
        raise CheckpointError(f"shipped model config {str(path)!r} is missing") from exc
    for override in overrides:
        if override:
            config.update(override)
    return config


# --------------------------------------------------------------------------------------------
# Building empty models


_state = threading.local()
_patch_lock = threading.Lock()
_patch_users = 0
_original_register_parameter = nn.Module.register_parameter


def _register_parameter_on_meta(self: nn.Module, name: str, param: nn.Parameter | None) -> None:
    _original_register_parameter(self, name, param)
    if param is not None and getattr(_state, "depth", 0) > 0 and param.device.type != "meta":
        self._parameters[name] = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)


@contextmanager
def empty_weights() -> Iterator[None]:
    """Within the block (and in this thread only), new modules get their parameters on the meta
    device: no memory, no initialisation. Buffers stay real (CLIP's ``position_ids`` is not in
    the state dict and must keep its values).
    """
    global _patch_users
    with _patch_lock:
        if _patch_users == 0:
            nn.Module.register_parameter = _register_parameter_on_meta  # type: ignore[method-assign]
        _patch_users += 1
    _state.depth = getattr(_state, "depth", 0) + 1
    try:
        yield
    finally:
        _state.depth -= 1
        with _patch_lock:
            _patch_users -= 1
            if _patch_users == 0:
                nn.Module.register_parameter = _original_register_parameter  # type: ignore[method-assign]


def build_unet(config: Mapping[str, Any]) -> UNet2DConditionModel:
    """An empty (meta-parameter) UNet2DConditionModel for ``config``."""
    with empty_weights():
        return UNet2DConditionModel.from_config(dict(config))


def build_vae(config: Mapping[str, Any]) -> AutoencoderKL:
    """An empty (meta-parameter) AutoencoderKL for ``config``."""
    with empty_weights():
        return AutoencoderKL.from_config(dict(config))


def build_text_encoder(config: Mapping[str, Any]) -> CLIPTextModel:
    """An empty (meta-parameter) CLIP-L text model for ``config``."""
    with empty_weights():
        return CLIPTextModel(CLIPTextConfig.from_dict(dict(config)))


def build_text_encoder_2(config: Mapping[str, Any]) -> CLIPTextModelWithProjection:
    """An empty (meta-parameter) OpenCLIP bigG text model with projection for ``config``."""
    with empty_weights():
        return CLIPTextModelWithProjection(CLIPTextConfig.from_dict(dict(config)))


def keymap_for(component: str, model: nn.Module, prefix: str | None = None) -> K.KeyMap:
    """The original <-> diffusers KeyMap of one component model; ``prefix`` overrides the
    component's usual original-layout prefix.
    """
    names = list(model.state_dict())
    if component == "unet":
        return K.unet_keymap(model.config, names, prefix if prefix is not None else K.UNET_PREFIX)
    if component == "vae":
        return K.vae_keymap(model.config, names, prefix if prefix is not None else K.VAE_PREFIX)
    if component == "text_encoder":
        return K.clip_l_keymap(names, prefix if prefix is not None else K.CLIP_L_PREFIX)
    if component == "text_encoder_2":
        return K.open_clip_keymap(names, prefix if prefix is not None else K.CLIP_G_PREFIX)
    raise ValueError(f"unknown component {component!r}")


def check_fits(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    label: str,
    optional: frozenset[str] = frozenset(),
) -> None:
    """:class:`CheckpointError` naming the missing, unexpected and wrongly shaped keys of
    ``state_dict`` for ``model`` (keys in ``optional`` may be missing).
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict and k not in optional]
    unexpected = [k for k in state_dict if k not in expected]
    shapes = [
        f"{k} (file {tuple(v.shape)}, model {tuple(expected[k].shape)})"
        for k, v in state_dict.items()
        if k in expected and v.shape != expected[k].shape
    ]
    if missing or unexpected or shapes:
        raise CheckpointError(str(K.KeyMismatch(label, missing, unexpected, shapes)))


def assign_weights(
    model: nn.Module, state_dict: dict[str, torch.Tensor], component: str, device: torch.device
) -> None:
    """Put ``state_dict`` (diffusers names) into an empty model: strict names and shapes, the
    tensors themselves become the parameters (no copy). Moves buffers to ``device``.
    """
    check_fits(model, state_dict, component)
    model.load_state_dict(state_dict, strict=True, assign=True)
    model.to(device)
    still_empty = [n for n, p in model.named_parameters() if p.device.type == "meta"]
    if still_empty:
        raise CheckpointError(f"{component}: parameters left without weights: {still_empty[:8]}")
    model.requires_grad_(False)
    model.eval()


def _convert(
    component: str,
    model: nn.Module,
    state_dict: dict[str, torch.Tensor],
    prefix: str,
    device: torch.device,
    dtype: torch.dtype,
) -> None:
    keymap = keymap_for(component, model, prefix)
    try:
        converted = keymap.to_diffusers(state_dict, pop=True, dtype=dtype, device=device)
    except K.KeyMismatch as exc:
        raise CheckpointError(str(exc)) from exc
    assign_weights(model, converted, component, device)


# --------------------------------------------------------------------------------------------
# Reading + kind checks


def _header(path: Path) -> tuple[list[str], dict[str, tuple[int, ...]]] | None:
    """Key names and shapes of a safetensors file without reading tensors (None otherwise)."""
    if path.suffix.lower() != ".safetensors":
        return None
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            names = list(handle.keys())
            label = K.UNET_PREFIX + "label_emb.0.0.weight"
            shapes = {label: tuple(handle.get_slice(label).get_shape())} if label in names else {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read {path.name!r} as safetensors: {exc}") from exc
    return names, shapes


def _read_checked(
    path: Path, supported: frozenset[CheckpointKind], role: str, prefixes: Sequence[str]
) -> tuple[CheckpointKind, dict[str, torch.Tensor], dict[str, str]]:
    """Detect the kind (from the safetensors header where possible), refuse unsupported kinds,
    then read the tensors (safetensors: only those under ``prefixes``; pickles: all of them).
    """
    if not path.is_file():
        raise ModelFileNotFound(path)
    header = _header(path)
    if header is not None:
        kind = detect_kind(set(header[0]), header[1])
        if kind not in supported:
            raise UnsupportedCheckpoint(path, kind, supported, role)
        state_dict, metadata = read_state_dict(path, prefixes)
        return kind, state_dict, metadata
    state_dict, metadata = read_state_dict(path)
    label = K.UNET_PREFIX + "label_emb.0.0.weight"
    shapes = {label: tuple(state_dict[label].shape)} if label in state_dict else {}
    kind = detect_kind(set(state_dict), shapes)
    if kind not in supported:
        raise UnsupportedCheckpoint(path, kind, supported, role)
    return kind, state_dict, metadata


def _warn_leftovers(path: Path, state_dict: Mapping[str, torch.Tensor]) -> None:
    left = [k for k in state_dict if not K.is_ignorable(k)]
    if left:
        log.warning("%s: ignored %d unknown keys, e.g. %s", path.name, len(left), left[:5])


# --------------------------------------------------------------------------------------------
# Public loaders


def load_sdxl(
    path: str | os.PathLike[str],
    config_dir: str | os.PathLike[str],
    *,
    device: torch.device | str = "cpu",
    dtype: ModelDtypes | torch.dtype | None = None,
    vae_path: str | os.PathLike[str] | None = None,
) -> SDXLModels:
    """Load an SDXL base checkpoint (original single-file layout) fully offline.

    ``config_dir`` is the shipped ``config/`` folder (holding ``sdxl/``). ``dtype`` defaults to
    :func:`default_dtypes`. ``vae_path`` replaces the checkpoint's VAE with a separate file
    (see :func:`load_vae`). Raises :class:`ModelFileNotFound`, :class:`UnsupportedCheckpoint`
    (e.g. an SD 1.5 or refiner file) or :class:`CheckpointError` (keys that do not fit).
    """
    path = Path(path)
    device = torch.device(device)
    dtypes = _dtypes(device, dtype)
    prefixes = [K.UNET_PREFIX, K.CLIP_L_PREFIX, K.CLIP_G_PREFIX]
    if vae_path is None:
        prefixes.append(K.VAE_PREFIX)
    kind, state_dict, metadata = _read_checked(path, BASE_KINDS, "a base model", prefixes)
    overrides = config_overrides(metadata)
    configs = {c: load_config(config_dir, "sdxl", c, overrides.get(c)) for c in COMPONENTS}

    unet = build_unet(configs["unet"])
    _convert("unet", unet, state_dict, K.UNET_PREFIX, device, dtypes.unet)
    text_encoder = build_text_encoder(configs["text_encoder"])
    _convert("text_encoder", text_encoder, state_dict, K.CLIP_L_PREFIX, device, dtypes.text_encoder)
    text_encoder_2 = build_text_encoder_2(configs["text_encoder_2"])
    _convert(
        "text_encoder_2", text_encoder_2, state_dict, K.CLIP_G_PREFIX, device, dtypes.text_encoder
    )
    if vae_path is not None:
        for key in [k for k in state_dict if k.startswith(K.VAE_PREFIX)]:
            del state_dict[key]
        vae = load_vae(
            vae_path, config_dir, device=device, dtype=dtypes.vae, base_config=overrides.get("vae")
        )
    else:
        if not any(k.startswith(K.VAE_PREFIX) for k in state_dict):
            raise CheckpointError(
                f"{path.name!r} holds no VAE ({K.VAE_PREFIX}*): choose a separate VAE file"
            )
        vae = build_vae(configs["vae"])
        _convert("vae", vae, state_dict, K.VAE_PREFIX, device, dtypes.vae)
    _warn_leftovers(path, state_dict)
    if kind is CheckpointKind.PLAYGROUND_V25:
        log.warning("%s is a Playground v2.5 model: EDM schedule, own latent scale", path.name)
    return SDXLModels(unet, vae, text_encoder, text_encoder_2, kind, path)


def load_refiner(
    path: str | os.PathLike[str],
    config_dir: str | os.PathLike[str],
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
) -> RefinerModels:
    """Load only the UNet of a refiner: an SDXL refiner checkpoint (``config/sdxl_refiner``) or
    an SDXL base checkpoint used as refiner (``config/sdxl``). Its CLIP and VAE are not read.
    """
    path = Path(path)
    device = torch.device(device)
    unet_dtype = dtype if dtype is not None else default_dtypes(device).unet
    kind, state_dict, metadata = _read_checked(path, REFINER_KINDS, "a refiner", [K.UNET_PREFIX])
    family = "sdxl_refiner" if kind is CheckpointKind.SDXL_REFINER else "sdxl"
    config = load_config(config_dir, family, "unet", config_overrides(metadata).get("unet"))
    unet = build_unet(config)
    _convert("unet", unet, state_dict, K.UNET_PREFIX, device, unet_dtype)
    return RefinerModels(unet, kind, path)


_DIFFUSERS_VAE_MARKERS = ("encoder.down_blocks.", "decoder.up_blocks.", "decoder.mid_block.")
_DEPRECATED_VAE_ATTENTION = {
    "query.": "to_q.",
    "key.": "to_k.",
    "value.": "to_v.",
    "proj_attn.": "to_out.0.",
}


def load_vae(
    path: str | os.PathLike[str],
    config_dir: str | os.PathLike[str],
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
    base_config: Mapping[str, Any] | None = None,
) -> AutoencoderKL:
    """Load a separate VAE file: original layout without prefix (``encoder.conv_in.weight``),
    original layout under ``first_stage_model.``, or diffusers layout.

    Config: shipped ``sdxl/vae`` < ``base_config`` (the base checkpoint's override) < the VAE
    file's own ``fooocus_core.configs`` metadata.
    """
    path = Path(path)
    device = torch.device(device)
    vae_dtype = dtype if dtype is not None else default_dtypes(device).vae
    state_dict, metadata = read_state_dict(path)
    config = load_config(
        config_dir, "sdxl", "vae", base_config, config_overrides(metadata).get("vae")
    )
    vae = build_vae(config)
    if any(k.startswith(K.VAE_PREFIX) for k in state_dict):
        prefix = K.VAE_PREFIX
        state_dict = {k: v for k, v in state_dict.items() if k.startswith(prefix)}
    elif any(k.startswith(_DIFFUSERS_VAE_MARKERS) for k in state_dict):
        converted = {}
        for key, tensor in state_dict.items():
            if K.is_ignorable(key):
                continue
            for old, new in _DEPRECATED_VAE_ATTENTION.items():
                key = key.replace(".attentions.0." + old, ".attentions.0." + new)
            target_dtype = vae_dtype if tensor.is_floating_point() else None
            converted[key] = tensor.to(device=device, dtype=target_dtype)
        assign_weights(vae, converted, "vae", device)
        return vae
    elif "encoder.conv_in.weight" in state_dict:
        prefix = ""
    else:
        raise CheckpointError(
            f"{path.name!r} is not a VAE: expected keys like 'encoder.conv_in.weight', "
            f"'first_stage_model.encoder.conv_in.weight' or diffusers AutoencoderKL names"
        )
    _convert("vae", vae, state_dict, prefix, device, vae_dtype)
    return vae
