"""Tiny random-weight SDXL-architecture models and checkpoints for tests.

Same architecture classes and key layout as real SDXL, with tiny widths: UNet (32, 64, 64),
CLIP-L width 32, OpenCLIP bigG width 64 with a 32-wide projection (the two encoders must differ in
width: layouts are told apart by it), cross-attention 96 = 32 + 64, ADM input 80 = 32 + 6 * 8.
The refiner variant conditions on the bigG part only (cross-attention 64, ADM 72 = 32 + 5 * 8).

Weights come from a fixed seed through our own generator (not the libraries' initialisers), so a
seed gives the same tensors and the same file every time. Checkpoints are written in the original
single-file layout, with their configs in the ``fooocus_core.configs`` metadata.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import save_file
from torch import nn

from fooocus_core.config import SHIPPED_CONFIG_DIR
from fooocus_core.models import keys as K
from fooocus_core.models.checkpoint import CheckpointKind
from fooocus_core.models.loader import (
    CONFIG_METADATA_KEY,
    RefinerModels,
    SDXLModels,
    build_text_encoder,
    build_text_encoder_2,
    build_unet,
    build_vae,
    keymap_for,
)

TINY_UNET: dict[str, Any] = {
    "block_out_channels": [32, 64, 64],
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "layers_per_block": 2,
    "transformer_layers_per_block": [1, 1, 2],
    "attention_head_dim": [2, 4, 4],
    "use_linear_projection": True,
    "cross_attention_dim": 96,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 8,
    "projection_class_embeddings_input_dim": 80,
    "sample_size": 32,
}
TINY_REFINER_UNET: dict[str, Any] = {
    "block_out_channels": [32, 64, 64, 64],
    "down_block_types": [
        "DownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "layers_per_block": 2,
    "transformer_layers_per_block": 2,
    "attention_head_dim": [2, 4, 4, 4],
    "use_linear_projection": True,
    "cross_attention_dim": 64,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 8,
    "projection_class_embeddings_input_dim": 72,
    "sample_size": 32,
}
TINY_VAE: dict[str, Any] = {
    "block_out_channels": [32, 32, 64, 64],
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "latent_channels": 4,
    "scaling_factor": 0.13025,
    "sample_size": 256,
}
TINY_TEXT_ENCODER: dict[str, Any] = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_attention_heads": 4,
    "num_hidden_layers": 3,
    "projection_dim": 32,
}
TINY_TEXT_ENCODER_2: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_hidden_layers": 3,
    "projection_dim": 32,
}
#: Overrides over the shipped SDXL configs (what a tiny checkpoint stores in its metadata).
TINY_CONFIGS: dict[str, dict[str, Any]] = {
    "unet": TINY_UNET,
    "vae": TINY_VAE,
    "text_encoder": TINY_TEXT_ENCODER,
    "text_encoder_2": TINY_TEXT_ENCODER_2,
}
TINY_REFINER_CONFIGS: dict[str, dict[str, Any]] = {
    "unet": TINY_REFINER_UNET,
    "vae": TINY_VAE,
    "text_encoder_2": TINY_TEXT_ENCODER_2,
}

TinyKind = Literal["base", "refiner"]
_SHIPPED = SHIPPED_CONFIG_DIR


def _full_config(family: str, component: str, override: dict[str, Any]) -> dict[str, Any]:
    path = _SHIPPED / family / component / "config.json"
    config: dict[str, Any] = json.loads(path.read_text("utf-8"))
    config.update(override)
    return config


def _fill(model: nn.Module, seed: int) -> nn.Module:
    """Give every parameter deterministic random values: matrices ~ N(0, 1/fan_in), embeddings
    ~ N(0, 0.02), norm weights ~ 1 + N(0, 0.1), biases ~ N(0, 0.05); all distinct, so a swapped
    key cannot go unnoticed in comparisons.
    """
    generator = torch.Generator().manual_seed(seed)
    values: dict[str, torch.Tensor] = {}
    for name, empty in model.state_dict().items():
        shape = tuple(empty.shape)
        noise = torch.randn(shape, generator=generator, dtype=torch.float32)
        if "embedding" in name:
            values[name] = noise * 0.02
        elif len(shape) >= 2:
            values[name] = noise / math.sqrt(math.prod(shape[1:]))
        elif name.endswith("weight"):
            values[name] = 1.0 + 0.1 * noise
        else:
            values[name] = 0.05 * noise
    model.load_state_dict(values, strict=True, assign=True)
    model.requires_grad_(False)
    model.eval()
    return model


def _components(kind: TinyKind, seed: int) -> dict[str, nn.Module]:
    if kind == "base":
        family, overrides = "sdxl", TINY_CONFIGS
    elif kind == "refiner":
        family, overrides = "sdxl_refiner", TINY_REFINER_CONFIGS
    else:
        raise ValueError(f"kind must be 'base' or 'refiner', not {kind!r}")
    builders = {
        "unet": build_unet,
        "vae": build_vae,
        "text_encoder": build_text_encoder,
        "text_encoder_2": build_text_encoder_2,
    }
    models: dict[str, nn.Module] = {}
    for index, (component, override) in enumerate(overrides.items()):
        shipped_family = family if component == "unet" else "sdxl"
        model = builders[component](_full_config(shipped_family, component, override))
        models[component] = _fill(model, seed * 1000 + index)
    return models


def build_tiny_sdxl(seed: int = 0) -> SDXLModels:
    """A tiny SDXL base model with deterministic random weights (about 0.2 s)."""
    m = _components("base", seed)
    return SDXLModels(
        unet=m["unet"],  # type: ignore[arg-type]
        vae=m["vae"],  # type: ignore[arg-type]
        text_encoder=m["text_encoder"],  # type: ignore[arg-type]
        text_encoder_2=m["text_encoder_2"],  # type: ignore[arg-type]
        kind=CheckpointKind.SDXL_BASE,
    )


def build_tiny_refiner(seed: int = 0) -> RefinerModels:
    """The UNet of a tiny SDXL refiner (what :func:`load_refiner` keeps)."""
    return RefinerModels(_components("refiner", seed)["unet"], CheckpointKind.SDXL_REFINER)  # type: ignore[arg-type]


def tiny_state_dict(kind: TinyKind = "base", seed: int = 0) -> dict[str, torch.Tensor]:
    """A tiny checkpoint's tensors in the original single-file layout."""
    prefixes = {
        "unet": K.UNET_PREFIX,
        "vae": K.VAE_PREFIX,
        "text_encoder": K.CLIP_L_PREFIX,
        "text_encoder_2": K.CLIP_G_PREFIX if kind == "base" else K.REFINER_CLIP_G_PREFIX,
    }
    out: dict[str, torch.Tensor] = {}
    for component, model in _components(kind, seed).items():
        keymap = keymap_for(component, model, prefixes[component])
        out.update(keymap.to_original(model.state_dict()))
    return out


def tiny_configs(kind: TinyKind = "base") -> dict[str, dict[str, Any]]:
    """The tiny configs merged over the shipped ones (full configs, per component)."""
    overrides = TINY_CONFIGS if kind == "base" else TINY_REFINER_CONFIGS
    family = "sdxl" if kind == "base" else "sdxl_refiner"
    return {c: _full_config(family if c == "unet" else "sdxl", c, o) for c, o in overrides.items()}


def write_tiny_checkpoint(
    path: str | os.PathLike[str],
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    kind: TinyKind = "base",
) -> Path:
    """Write a tiny SDXL base (or refiner) checkpoint as ``.safetensors`` and return its path."""
    path = Path(path)
    tensors = {
        k: v.to(dtype).contiguous() if v.is_floating_point() else v.contiguous()
        for k, v in tiny_state_dict(kind, seed).items()
    }
    overrides = TINY_CONFIGS if kind == "base" else TINY_REFINER_CONFIGS
    # One metadata entry only: safetensors writes several in an unstable order, and the same
    # seed must give the same bytes.
    metadata = {CONFIG_METADATA_KEY: json.dumps(overrides, sort_keys=True)}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=metadata)
    return path
