"""Loading SDXL single-file checkpoints offline: tiny random checkpoints through the same code
path as real ones, checked against the models they were built from and against diffusers' own
single-file loaders (an independent implementation of the key conversion).
"""

from __future__ import annotations

import gc
import hashlib
import json
import shutil
import threading
import weakref
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from fooocus_core.config import SHIPPED_CONFIG_DIR, EngineConfig
from fooocus_core.models import keys as K
from fooocus_core.models.checkpoint import (
    CheckpointError,
    CheckpointKind,
    ModelFileNotFound,
    UnsupportedCheckpoint,
    detect_kind,
    read_state_dict,
)
from fooocus_core.models.loader import (
    CONFIG_METADATA_KEY,
    ModelDtypes,
    SDXLModels,
    default_dtypes,
    empty_weights,
    load_refiner,
    load_sdxl,
    load_vae,
)
from fooocus_core.models.manager import ModelManager
from fooocus_core.models.tiny import (
    TINY_CONFIGS,
    _components,
    build_tiny_refiner,
    build_tiny_sdxl,
    tiny_configs,
    tiny_state_dict,
    write_tiny_checkpoint,
)
from tests.oracle import diffusers_config_dir

COMPONENTS = ("unet", "vae", "text_encoder", "text_encoder_2")


def assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert sa[key].dtype == sb[key].dtype, key
        assert torch.equal(sa[key], sb[key]), key


@pytest.fixture(scope="module")
def tiny() -> SDXLModels:
    return build_tiny_sdxl(seed=0)


@pytest.fixture(scope="module")
def tiny_refiner_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_checkpoint(
        tmp_path_factory.mktemp("tiny_refiner") / "refiner.safetensors", kind="refiner"
    )


@pytest.fixture(scope="module")
def loaded(tiny_sdxl_checkpoint: Path) -> SDXLModels:
    return load_sdxl(tiny_sdxl_checkpoint, SHIPPED_CONFIG_DIR)


# ------------------------------------------------------------------------------------------
# Round trip through our loader


def test_loaded_tiny_equals_built_model(loaded: SDXLModels, tiny: SDXLModels) -> None:
    assert loaded.kind is CheckpointKind.SDXL_BASE
    for name in COMPONENTS:
        model = getattr(loaded, name)
        assert_same_weights(model, getattr(tiny, name))
        assert not model.training
        assert all(not p.requires_grad for p in model.parameters())
        assert all(p.device.type == "cpu" for p in model.parameters())
    # Non-persistent buffers stayed real (CLIP position ids).
    buffers = dict(loaded.text_encoder_2.named_buffers())
    assert torch.equal(buffers["text_model.embeddings.position_ids"][0], torch.arange(77))
    assert loaded.unet.config.cross_attention_dim == 96
    assert loaded.text_encoder.config.hidden_size != loaded.text_encoder_2.config.hidden_size


def test_loaded_tiny_runs(loaded: SDXLModels) -> None:
    ids = torch.full((1, 77), 49407)
    ids[0, 0] = 49406
    with torch.no_grad():
        hidden_l = loaded.text_encoder(ids, output_hidden_states=True).hidden_states[-2]
        out_g = loaded.text_encoder_2(ids, output_hidden_states=True)
        context = torch.cat([hidden_l, out_g.hidden_states[-2]], dim=-1)
        time_ids = torch.tensor([[64.0, 64.0, 0.0, 0.0, 64.0, 64.0]])
        eps = loaded.unet(
            torch.randn(1, 4, 8, 8),
            10,
            encoder_hidden_states=context,
            added_cond_kwargs={"text_embeds": out_g.text_embeds, "time_ids": time_ids},
        ).sample
        image = loaded.vae.decode(eps).sample
    assert eps.shape == (1, 4, 8, 8)
    assert image.shape == (1, 3, 64, 64)
    assert torch.isfinite(image).all()


def test_tiny_checkpoint_layout_and_determinism(tiny_sdxl_checkpoint: Path, tmp_path: Path) -> None:
    tensors, metadata = read_state_dict(tiny_sdxl_checkpoint)
    for key in (
        "model.diffusion_model.label_emb.0.0.weight",
        "model.diffusion_model.output_blocks.2.2.conv.weight",
        "first_stage_model.decoder.up.3.upsample.conv.weight",
        "conditioner.embedders.0.transformer.text_model.final_layer_norm.weight",
        "conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight",
        "conditioner.embedders.1.model.text_projection",
    ):
        assert key in tensors, key
    assert tensors["model.diffusion_model.label_emb.0.0.weight"].shape == (128, 80)
    assert tensors["conditioner.embedders.1.model.text_projection"].shape == (64, 32)
    assert tensors["first_stage_model.encoder.mid.attn_1.q.weight"].shape == (64, 64, 1, 1)
    assert json.loads(metadata[CONFIG_METADATA_KEY]) == TINY_CONFIGS
    again = write_tiny_checkpoint(tmp_path / "again.safetensors")
    other = write_tiny_checkpoint(tmp_path / "other.safetensors", seed=1)
    digest = [
        hashlib.sha256(p.read_bytes()).hexdigest() for p in (tiny_sdxl_checkpoint, again, other)
    ]
    assert digest[0] == digest[1] != digest[2]


def test_fp16_checkpoint_loads_as_fp32_on_cpu(tmp_path: Path, tiny: SDXLModels) -> None:
    path = write_tiny_checkpoint(tmp_path / "half.safetensors", dtype=torch.float16)
    assert load_file(path)["model.diffusion_model.out.2.weight"].dtype == torch.float16
    models = load_sdxl(path, SHIPPED_CONFIG_DIR)
    weight = models.unet.conv_out.weight
    assert weight.dtype == torch.float32
    assert torch.equal(weight, tiny.unet.conv_out.weight.half().float())


def test_explicit_dtype(tiny_sdxl_checkpoint: Path) -> None:
    dtypes = ModelDtypes(unet=torch.bfloat16, text_encoder=torch.float16, vae=torch.float32)
    models = load_sdxl(tiny_sdxl_checkpoint, SHIPPED_CONFIG_DIR, dtype=dtypes)
    assert {p.dtype for p in models.unet.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in models.text_encoder_2.parameters()} == {torch.float16}
    assert {p.dtype for p in models.vae.parameters()} == {torch.float32}
    assert models.text_encoder.embeddings.position_ids.dtype == torch.int64


def test_default_dtypes(monkeypatch: pytest.MonkeyPatch) -> None:
    assert default_dtypes("cpu") == ModelDtypes(torch.float32, torch.float32, torch.float32)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 6))
    assert default_dtypes("cuda") == ModelDtypes(torch.float16, torch.float16, torch.bfloat16)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    assert default_dtypes("cuda:0") == ModelDtypes(torch.float16, torch.float16, torch.float32)


@pytest.mark.parametrize("suffix", [".ckpt", ".pth"])
@pytest.mark.parametrize("wrapped", [False, True])
def test_pickled_checkpoint(tmp_path: Path, tiny: SDXLModels, suffix: str, wrapped: bool) -> None:
    state = tiny_state_dict()
    state["conditioner.embedders.0.transformer.text_model.embeddings.position_ids"] = torch.arange(
        77
    )[None]
    state["alphas_cumprod"] = torch.linspace(1, 0, 1000)
    state["conditioner.embedders.0.transformer.text_projection.weight"] = torch.zeros(32, 32)
    state["conditioner.embedders.1.model.logit_scale"] = torch.tensor(4.6)
    path = tmp_path / f"tiny{suffix}"
    torch.save({"state_dict": state, "global_step": 3} if wrapped else state, path)
    # No config metadata in pickles: pass the tiny configs by a config dir of our own.
    config_dir = _fooocus_config_dir(tmp_path / "cfg")
    models = load_sdxl(path, config_dir)
    for name in COMPONENTS:
        assert_same_weights(getattr(models, name), getattr(tiny, name))


def _fooocus_config_dir(root: Path, kind: str = "base") -> Path:
    """A shipped-style config dir (``sdxl/<component>/config.json``) holding tiny configs."""
    family = "sdxl" if kind == "base" else "sdxl_refiner"
    for component, config in tiny_configs(kind).items():
        folder = root / (family if component == "unet" else "sdxl") / component
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps(config))
    return root


def test_playground_detected(tmp_path: Path) -> None:
    state = tiny_state_dict()
    state["edm_mean"] = torch.zeros(1, 4, 1, 1)
    state["edm_std"] = torch.ones(1, 4, 1, 1)
    path = tmp_path / "playground.safetensors"
    save_file(state, str(path), metadata={CONFIG_METADATA_KEY: json.dumps(TINY_CONFIGS)})
    assert load_sdxl(path, SHIPPED_CONFIG_DIR).kind is CheckpointKind.PLAYGROUND_V25


# ------------------------------------------------------------------------------------------
# Refiner


def test_refiner_unet(
    tiny_refiner_checkpoint: Path, tiny_sdxl_checkpoint: Path, tiny: SDXLModels
) -> None:
    refiner = load_refiner(tiny_refiner_checkpoint, SHIPPED_CONFIG_DIR)
    assert refiner.kind is CheckpointKind.SDXL_REFINER
    assert_same_weights(refiner.unet, build_tiny_refiner(seed=0).unet)
    assert refiner.unet.config.cross_attention_dim == tiny.text_encoder_2.config.hidden_size
    assert refiner.unet.config.projection_class_embeddings_input_dim == 32 + 5 * 8
    # A base model can serve as refiner: only its UNet is read.
    as_refiner = load_refiner(tiny_sdxl_checkpoint, SHIPPED_CONFIG_DIR)
    assert as_refiner.kind is CheckpointKind.SDXL_BASE
    assert_same_weights(as_refiner.unet, tiny.unet)


def test_refiner_is_not_a_base_model(tiny_refiner_checkpoint: Path) -> None:
    with pytest.raises(UnsupportedCheckpoint) as info:
        load_sdxl(tiny_refiner_checkpoint, SHIPPED_CONFIG_DIR)
    message = str(info.value)
    assert "refiner.safetensors" in message
    assert "an SDXL refiner model" in message and "cannot be used as a base model" in message
    assert "an SDXL base model" in message


# ------------------------------------------------------------------------------------------
# Kinds and errors


def _keys(*prefixes: str) -> set[str]:
    return {p + "x.weight" for p in prefixes}


def test_detect_kind() -> None:
    unet = "model.diffusion_model."
    label = unet + "label_emb.0.0.weight"
    base = _keys(unet, K.VAE_PREFIX, K.CLIP_L_PREFIX, K.CLIP_G_PREFIX) | {label}
    assert detect_kind(base) is CheckpointKind.SDXL_BASE
    assert detect_kind(base | {"edm_mean", "edm_std"}) is CheckpointKind.PLAYGROUND_V25
    refiner = _keys(unet, K.VAE_PREFIX, K.REFINER_CLIP_G_PREFIX) | {label}
    assert detect_kind(refiner) is CheckpointKind.SDXL_REFINER
    unet_only = _keys(unet) | {label}
    assert detect_kind(unet_only, {label: (1536, 2560)}) is CheckpointKind.SDXL_REFINER
    assert detect_kind(unet_only, {label: (1280, 2816)}) is CheckpointKind.SDXL_BASE
    sd15 = _keys(unet, K.VAE_PREFIX, K.SD15_CLIP_PREFIX)
    assert detect_kind(sd15) is CheckpointKind.SD15
    assert detect_kind(_keys(unet, "cond_stage_model.model.")) is CheckpointKind.SD2
    assert detect_kind({"encoder.conv_in.weight", "lora_unet_x.alpha"}) is CheckpointKind.UNKNOWN
    assert detect_kind(set()) is CheckpointKind.UNKNOWN


def test_missing_file_names_file_and_folder(tmp_path: Path) -> None:
    path = tmp_path / "checkpoints" / "nothing.safetensors"
    with pytest.raises(ModelFileNotFound) as info:
        load_sdxl(path, SHIPPED_CONFIG_DIR)
    assert isinstance(info.value, FileNotFoundError)
    assert "'nothing.safetensors'" in str(info.value)
    assert str(tmp_path / "checkpoints") in str(info.value)


def test_sd15_is_unsupported(tmp_path: Path) -> None:
    path = tmp_path / "sd15.safetensors"
    save_file(
        {
            "model.diffusion_model.input_blocks.0.0.weight": torch.zeros(320, 4, 3, 3),
            "cond_stage_model.transformer.text_model.final_layer_norm.weight": torch.ones(768),
            "first_stage_model.encoder.conv_in.weight": torch.zeros(128, 3, 3, 3),
        },
        str(path),
    )
    with pytest.raises(UnsupportedCheckpoint) as info:
        load_sdxl(path, SHIPPED_CONFIG_DIR)
    assert info.value.kind is CheckpointKind.SD15
    assert "'sd15.safetensors' is a Stable Diffusion 1.x model" in str(info.value)
    assert "supported: " in str(info.value) and "an SDXL base model" in str(info.value)
    with pytest.raises(UnsupportedCheckpoint, match="cannot be used as a refiner"):
        load_refiner(path, SHIPPED_CONFIG_DIR)


def test_not_a_checkpoint(tmp_path: Path) -> None:
    lora = tmp_path / "lora.safetensors"
    save_file({"lora_unet_down_blocks_0.alpha": torch.ones(())}, str(lora))
    with pytest.raises(UnsupportedCheckpoint, match="not a Stable Diffusion checkpoint"):
        load_sdxl(lora, SHIPPED_CONFIG_DIR)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match=r"cannot read 'junk\.safetensors'"):
        load_sdxl(junk, SHIPPED_CONFIG_DIR)
    pickle = tmp_path / "junk.ckpt"
    pickle.write_bytes(b"not a pickle")
    with pytest.raises(CheckpointError, match=r"cannot read 'junk\.ckpt'"):
        load_sdxl(pickle, SHIPPED_CONFIG_DIR)


def _rewrite(tmp_path: Path, state: dict[str, torch.Tensor]) -> Path:
    path = tmp_path / "edited.safetensors"
    save_file(state, str(path), metadata={CONFIG_METADATA_KEY: json.dumps(TINY_CONFIGS)})
    return path


def test_missing_and_unexpected_keys_are_named(tmp_path: Path) -> None:
    state = tiny_state_dict()
    del state["model.diffusion_model.middle_block.1.proj_out.weight"]
    state["model.diffusion_model.extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError) as info:
        load_sdxl(_rewrite(tmp_path, state), SHIPPED_CONFIG_DIR)
    message = str(info.value)
    assert message.startswith("unet:")
    assert "1 missing keys: model.diffusion_model.middle_block.1.proj_out.weight" in message
    assert "1 unexpected keys: model.diffusion_model.extra.weight" in message


def test_shape_mismatch_is_named(tmp_path: Path) -> None:
    state = tiny_state_dict()
    state["first_stage_model.quant_conv.weight"] = torch.zeros(8, 8, 3, 3)
    with pytest.raises(CheckpointError, match=r"vae: 1 shape mismatches: quant_conv.weight \(file"):
        load_sdxl(_rewrite(tmp_path, state), SHIPPED_CONFIG_DIR)


def test_config_override_must_be_json_object(tmp_path: Path) -> None:
    path = tmp_path / "bad.safetensors"
    save_file(tiny_state_dict(), str(path), metadata={CONFIG_METADATA_KEY: "[1, 2]"})
    with pytest.raises(CheckpointError, match=CONFIG_METADATA_KEY):
        load_sdxl(path, SHIPPED_CONFIG_DIR)


# ------------------------------------------------------------------------------------------
# Separate VAE files


@pytest.fixture(scope="module")
def other_vae() -> nn.Module:
    return _components("base", seed=7)["vae"]


def _vae_file(tmp_path: Path, vae: nn.Module, layout: str) -> Path:
    from fooocus_core.models.loader import keymap_for

    if layout == "diffusers":
        state = dict(vae.state_dict())
    else:
        prefix = "first_stage_model." if layout == "prefixed" else ""
        state = keymap_for("vae", vae, prefix).to_original(vae.state_dict())
        state["model_ema.decay"] = torch.tensor(0.999)  # ignorable training leftovers
        state["loss.logvar"] = torch.zeros(())
    path = tmp_path / f"vae_{layout}.safetensors"
    # Only the diffusers file carries its own config; the others fall back on the base
    # checkpoint's override, as a standalone VAE next to that checkpoint would.
    metadata = {CONFIG_METADATA_KEY: json.dumps({"vae": TINY_CONFIGS["vae"]})}
    save_file(state, str(path), metadata=metadata if layout == "diffusers" else None)
    return path


@pytest.mark.parametrize("layout", ["plain", "prefixed", "diffusers"])
def test_separate_vae_replaces_checkpoint_vae(
    tmp_path: Path,
    tiny_sdxl_checkpoint: Path,
    tiny: SDXLModels,
    other_vae: nn.Module,
    layout: str,
) -> None:
    path = _vae_file(tmp_path, other_vae, layout)
    models = load_sdxl(tiny_sdxl_checkpoint, SHIPPED_CONFIG_DIR, vae_path=path)
    assert_same_weights(models.vae, other_vae)
    assert_same_weights(models.unet, tiny.unet)
    standalone = load_vae(path, SHIPPED_CONFIG_DIR, base_config=TINY_CONFIGS["vae"])
    assert_same_weights(standalone, other_vae)


def test_deprecated_diffusers_vae_attention_names(tmp_path: Path, other_vae: nn.Module) -> None:
    renames = {
        ".to_q.": ".query.",
        ".to_k.": ".key.",
        ".to_v.": ".value.",
        ".to_out.0.": ".proj_attn.",
    }
    state = {}
    for key, tensor in other_vae.state_dict().items():
        for new, old in renames.items():
            key = key.replace(".attentions.0" + new, ".attentions.0" + old)
        state[key] = tensor
    path = tmp_path / "old.safetensors"
    save_file(state, str(path))
    assert_same_weights(
        load_vae(path, SHIPPED_CONFIG_DIR, base_config=TINY_CONFIGS["vae"]), other_vae
    )


def test_not_a_vae(tmp_path: Path, tiny_sdxl_checkpoint: Path) -> None:
    path = tmp_path / "unet.safetensors"
    save_file({"conv_in.weight": torch.zeros(1)}, str(path))
    with pytest.raises(CheckpointError, match=r"'unet\.safetensors' is not a VAE"):
        load_sdxl(tiny_sdxl_checkpoint, SHIPPED_CONFIG_DIR, vae_path=path)


# ------------------------------------------------------------------------------------------
# Manager


def test_manager_caches_and_frees(
    tmp_path: Path, tiny_sdxl_checkpoint: Path, other_vae: nn.Module
) -> None:
    checkpoints = tmp_path / "models" / "checkpoints"
    (checkpoints / "sub").mkdir(parents=True)
    shutil.copy(tiny_sdxl_checkpoint, checkpoints / "sub" / "a.safetensors")
    write_tiny_checkpoint(checkpoints / "b.safetensors", seed=1)
    vae_dir = tmp_path / "models" / "vae"
    vae_dir.mkdir()
    shutil.copy(_vae_file(tmp_path, other_vae, "diffusers"), vae_dir / "mine.safetensors")
    manager = ModelManager(EngineConfig(models_dir=str(tmp_path / "models")), "cpu")

    first = manager.get_base("sub/a.safetensors")
    assert manager.get_base("sub/a.safetensors") is first
    old = weakref.ref(first)
    old_unet = weakref.ref(first.unet)
    del first
    second = manager.get_base("b.safetensors")
    assert old() is None and old_unet() is None
    assert not torch.equal(second.unet.conv_out.weight, build_tiny_sdxl(0).unet.conv_out.weight)

    with_vae = manager.get_base("b.safetensors", vae_name="mine.safetensors")
    assert with_vae is not second
    assert_same_weights(with_vae.vae, other_vae)
    assert manager.get_base("b.safetensors", "mine.safetensors") is with_vae

    with pytest.raises(FileNotFoundError) as info:
        manager.get_base("missing.safetensors")
    assert "missing.safetensors" in str(info.value) and str(checkpoints) in str(info.value)
    with pytest.raises(ValueError):
        manager.get_base("../escape.safetensors")

    refiner = manager.get_refiner("sub/a.safetensors")
    assert manager.get_refiner("sub/a.safetensors") is refiner
    manager.unload_all()
    assert manager.base is None and manager.refiner is None
    gc.collect()


# ------------------------------------------------------------------------------------------
# Building empty models


def test_empty_weights_only_affects_this_thread() -> None:
    other: list[nn.Linear] = []
    with empty_weights():
        here = nn.Linear(2, 2)
        thread = threading.Thread(target=lambda: other.append(nn.Linear(2, 2)))
        thread.start()
        thread.join()
    assert here.weight.device.type == "meta"
    assert other[0].weight.device.type == "cpu"
    assert nn.Linear(2, 2).weight.device.type == "cpu"


# ------------------------------------------------------------------------------------------
# Independent oracle: diffusers' own single-file loaders


def test_diffusers_component_loaders_agree(
    tmp_path: Path, tiny_sdxl_checkpoint: Path, loaded: SDXLModels
) -> None:
    from diffusers import AutoencoderKL, UNet2DConditionModel

    config = str(diffusers_config_dir(tmp_path / "diffusers"))
    unet = UNet2DConditionModel.from_single_file(
        str(tiny_sdxl_checkpoint), config=config, subfolder="unet", local_files_only=True
    )
    assert_same_weights(unet, loaded.unet)
    vae = AutoencoderKL.from_single_file(
        str(tiny_sdxl_checkpoint), config=config, subfolder="vae", local_files_only=True
    )
    assert_same_weights(vae, loaded.vae)


def test_diffusers_pipeline_loader_agrees(
    tmp_path: Path, tiny_sdxl_checkpoint: Path, loaded: SDXLModels
) -> None:
    from diffusers import StableDiffusionXLPipeline

    config = str(diffusers_config_dir(tmp_path / "diffusers"))
    pipe = StableDiffusionXLPipeline.from_single_file(
        str(tiny_sdxl_checkpoint), config=config, local_files_only=True
    )
    for name in COMPONENTS:
        assert_same_weights(getattr(pipe, name), getattr(loaded, name))


def test_diffusers_refiner_loader_agrees(tmp_path: Path, tiny_refiner_checkpoint: Path) -> None:
    from diffusers import StableDiffusionXLImg2ImgPipeline

    config = str(diffusers_config_dir(tmp_path / "diffusers", kind="refiner"))
    pipe = StableDiffusionXLImg2ImgPipeline.from_single_file(
        str(tiny_refiner_checkpoint), config=config, local_files_only=True
    )
    built = _components("refiner", seed=0)
    for name in ("unet", "vae", "text_encoder_2"):
        assert_same_weights(getattr(pipe, name), built[name])
    assert_same_weights(pipe.unet, load_refiner(tiny_refiner_checkpoint, SHIPPED_CONFIG_DIR).unet)
