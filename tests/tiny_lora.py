"""Tiny kohya-format LoRAs for the tiny SDXL model, written by the tests."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from fooocus_core.models.tiny import build_tiny_sdxl


def write_kohya_lora(path: Path, seed: int = 0, rank: int = 4, scale: float = 0.5) -> Path:
    """A LoRA over every attention projection of the UNet and CLIP-L's first layer.

    Keys use kohya's ``lora_unet_<diffusers path>`` / ``lora_te1_`` names with an ``alpha``.
    """
    models = build_tiny_sdxl()
    generator = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}

    def add(prefix: str, module: nn.Linear) -> None:
        down = torch.randn(rank, module.in_features, generator=generator) * scale
        up = torch.randn(module.out_features, rank, generator=generator) * scale
        tensors[f"{prefix}.lora_down.weight"] = down
        tensors[f"{prefix}.lora_up.weight"] = up
        tensors[f"{prefix}.alpha"] = torch.tensor(float(rank))

    for name, module in models.unet.named_modules():
        if isinstance(module, nn.Linear) and ".attn" in name and "to_out" not in name:
            add("lora_unet_" + name.replace(".", "_"), module)
    for name, module in models.text_encoder.named_modules():
        if isinstance(module, nn.Linear) and name.startswith("encoder.layers.0.self_attn"):
            add("lora_te1_text_model_" + name.replace(".", "_"), module)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))
    return path
