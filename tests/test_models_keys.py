"""Key mapping original <-> diffusers at the real SDXL sizes, on the meta device (no weights)."""

from __future__ import annotations

import pytest
import torch

from fooocus_core.config import SHIPPED_CONFIG_DIR
from fooocus_core.models import keys as K
from fooocus_core.models.loader import (
    build_text_encoder,
    build_text_encoder_2,
    build_unet,
    build_vae,
    keymap_for,
    load_config,
)

BUILDERS = {
    "unet": build_unet,
    "vae": build_vae,
    "text_encoder": build_text_encoder,
    "text_encoder_2": build_text_encoder_2,
}

# (family, component): parameter count of the real model.
REAL = {
    ("sdxl", "unet"): 2_567_463_684,
    ("sdxl", "vae"): 83_653_863,
    ("sdxl", "text_encoder"): 123_060_480,  # CLIP ViT-L/14 text tower
    ("sdxl", "text_encoder_2"): 694_659_840,  # OpenCLIP bigG text tower + 1280x1280 projection
    ("sdxl_refiner", "unet"): 2_259_526_660,
}

# Original-layout keys and shapes known from the released SDXL files.
KNOWN = {
    ("sdxl", "unet"): {
        "model.diffusion_model.label_emb.0.0.weight": (1280, 2816),
        "model.diffusion_model.time_embed.0.weight": (1280, 320),
        "model.diffusion_model.input_blocks.3.0.op.weight": (320, 320, 3, 3),
        "model.diffusion_model.input_blocks.4.0.skip_connection.weight": (640, 320, 1, 1),
        "model.diffusion_model.input_blocks.4.1.proj_in.weight": (640, 640),
        "model.diffusion_model.input_blocks.8.1.transformer_blocks.9.attn2.to_k.weight": (
            1280,
            2048,
        ),
        "model.diffusion_model.middle_block.1.transformer_blocks.9.ff.net.0.proj.weight": (
            10240,
            1280,
        ),
        "model.diffusion_model.middle_block.2.emb_layers.1.weight": (1280, 1280),
        "model.diffusion_model.output_blocks.2.2.conv.weight": (1280, 1280, 3, 3),
        "model.diffusion_model.output_blocks.5.2.conv.weight": (640, 640, 3, 3),
        "model.diffusion_model.output_blocks.8.0.skip_connection.weight": (320, 640, 1, 1),
        "model.diffusion_model.out.2.weight": (4, 320, 3, 3),
    },
    ("sdxl_refiner", "unet"): {
        "model.diffusion_model.label_emb.0.0.weight": (1536, 2560),
        "model.diffusion_model.input_blocks.9.0.op.weight": (1536, 1536, 3, 3),
        "model.diffusion_model.input_blocks.7.1.transformer_blocks.3.attn2.to_k.weight": (
            1536,
            1280,
        ),
        "model.diffusion_model.output_blocks.2.1.conv.weight": (1536, 1536, 3, 3),
        "model.diffusion_model.output_blocks.5.2.conv.weight": (1536, 1536, 3, 3),
        "model.diffusion_model.output_blocks.11.0.skip_connection.weight": (384, 768, 1, 1),
    },
    ("sdxl", "vae"): {
        "first_stage_model.encoder.mid.attn_1.q.weight": (512, 512, 1, 1),
        "first_stage_model.decoder.up.0.block.0.nin_shortcut.weight": (128, 256, 1, 1),
        "first_stage_model.decoder.up.3.upsample.conv.weight": (512, 512, 3, 3),
        "first_stage_model.encoder.down.0.downsample.conv.weight": (128, 128, 3, 3),
        "first_stage_model.quant_conv.weight": (8, 8, 1, 1),
    },
    ("sdxl", "text_encoder"): {
        "conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight": (
            49408,
            768,
        ),
        "conditioner.embedders.0.transformer.text_model.encoder.layers.11.mlp.fc1.weight": (
            3072,
            768,
        ),
        "conditioner.embedders.0.transformer.text_model.final_layer_norm.weight": (768,),
    },
    ("sdxl", "text_encoder_2"): {
        "conditioner.embedders.1.model.positional_embedding": (77, 1280),
        "conditioner.embedders.1.model.transformer.resblocks.31.attn.in_proj_weight": (3840, 1280),
        "conditioner.embedders.1.model.transformer.resblocks.0.mlp.c_fc.weight": (5120, 1280),
        "conditioner.embedders.1.model.ln_final.weight": (1280,),
        "conditioner.embedders.1.model.text_projection": (1280, 1280),
    },
}


def _meta_model(family: str, component: str) -> torch.nn.Module:
    config = load_config(SHIPPED_CONFIG_DIR, family, component)
    with torch.device("meta"):
        return BUILDERS[component](config)


@pytest.mark.parametrize(("family", "component"), list(REAL))
def test_real_size_round_trip(family: str, component: str) -> None:
    model = _meta_model(family, component)
    assert sum(p.numel() for p in model.parameters()) == REAL[(family, component)]
    keymap = keymap_for(component, model)
    state = model.state_dict()
    original = keymap.to_original(state)
    for key, shape in KNOWN.get((family, component), {}).items():
        assert tuple(original[key].shape) == shape, key
    back = keymap.to_diffusers(dict(original))
    assert {k: tuple(v.shape) for k, v in back.items()} == {
        k: tuple(v.shape) for k, v in state.items()
    }
    assert all(v.device.type == "meta" for v in original.values())


@pytest.mark.parametrize("family", ["sdxl", "sdxl_refiner"])
def test_unet_name_functions_invert(family: str) -> None:
    config = load_config(SHIPPED_CONFIG_DIR, family, "unet")
    names = list(_meta_model(family, "unet").state_dict())
    originals = [K.unet_to_original(n, config) for n in names]
    assert len(set(originals)) == len(names)
    assert [K.unet_to_diffusers(o, config) for o in originals] == names


def test_vae_and_open_clip_name_functions_invert() -> None:
    config = load_config(SHIPPED_CONFIG_DIR, "sdxl", "vae")
    names = list(_meta_model("sdxl", "vae").state_dict())
    assert [K.vae_to_diffusers(K.vae_to_original(n, config), config) for n in names] == names
    for name in _meta_model("sdxl", "text_encoder_2").state_dict():
        assert name in K.open_clip_to_diffusers(K.open_clip_to_original(name))


def test_real_checkpoint_key_counts() -> None:
    """The released SDXL base file has 1680 UNet, 248 VAE, 196 CLIP-L and 389 bigG weights
    (plus logit_scale / position_ids, which are ignorable)."""
    counts = {
        c: len(keymap_for(c, _meta_model("sdxl", c)).original_keys)
        for c in ("unet", "vae", "text_encoder", "text_encoder_2")
    }
    assert counts == {"unet": 1680, "vae": 248, "text_encoder": 196, "text_encoder_2": 389}
    assert K.is_ignorable("conditioner.embedders.1.model.logit_scale")
    assert K.is_ignorable("conditioner.embedders.0.transformer.text_model.embeddings.position_ids")
    assert K.is_ignorable("edm_mean")
    assert not K.is_ignorable("model.diffusion_model.out.2.weight")


def test_unknown_names_raise() -> None:
    config = load_config(SHIPPED_CONFIG_DIR, "sdxl", "unet")
    with pytest.raises(KeyError, match="no mapping"):
        K.unet_to_original("nonsense.weight", config)
    with pytest.raises(KeyError, match="no mapping"):
        K.open_clip_to_diffusers("transformer.resblocks.0.nonsense.weight")
