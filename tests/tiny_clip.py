"""A tiny CLIP-L / CLIP-G text-encoder pair (SDXL shapes at small widths) for prompt tests."""

from __future__ import annotations

import torch
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

#: Hidden widths of the CLIP-L and CLIP-G stand-ins, and CLIP-G's projection width.
HL, HG, PROJ = 32, 64, 32


def _config(hidden: int, act: str) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=49408,
        hidden_size=hidden,
        intermediate_size=37,
        num_hidden_layers=3,
        num_attention_heads=4,
        max_position_embeddings=77,
        projection_dim=PROJ,
        hidden_act=act,
    )


def tiny_clip_pair(seed: int) -> tuple[CLIPTextModel, CLIPTextModelWithProjection]:
    """Random (seeded) CLIP-L-like and CLIP-G-like text encoders in eval mode."""
    torch.manual_seed(seed)
    clip_l = CLIPTextModel(_config(HL, "quick_gelu")).eval()
    clip_g = CLIPTextModelWithProjection(_config(HG, "gelu")).eval()
    return clip_l, clip_g
