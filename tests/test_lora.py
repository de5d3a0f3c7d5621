"""LoRA reading, merging and un-merging (``fooocus_core.models.lora``).

The LoRAs are built here, in every key layout SDXL LoRAs ship in, against the tiny SDXL model.
Reference for the merge: ``W + weight * alpha / rank * up @ down`` computed here, and diffusers'
own ``load_lora_weights`` + ``fuse_lora`` on the same file (the oracle; float32 weights agree to
about 3e-8, asserted at 1e-6).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import Tensor, nn

from fooocus_core.config import SHIPPED_CONFIG_DIR
from fooocus_core.models import keys as K
from fooocus_core.models.checkpoint import CheckpointError, ModelFileNotFound
from fooocus_core.models.loader import (
    RefinerModels,
    SDXLModels,
    build_text_encoder,
    build_text_encoder_2,
    build_unet,
    load_config,
)
from fooocus_core.models.lora import (
    MISMATCH_LIMIT,
    LoraFile,
    LoraPatcher,
    LoraPatchers,
    LoraTarget,
    UnsupportedLoraFormat,
)
from fooocus_core.models.lora_keys import PEFT_METADATA_KEY
from fooocus_core.models.tiny import build_tiny_refiner, build_tiny_sdxl

COMPONENTS = ("unet", "text_encoder", "text_encoder_2")

#: UNet modules the test LoRAs patch: attention (self and cross), proj_in/out, feed-forward,
#: 3x3 and 1x1 convolutions, down/upsamplers, time and ADM embeddings.
UNET_MODULES = (
    "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q",
    "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_out.0",
    "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k",
    "up_blocks.0.attentions.1.transformer_blocks.1.attn2.to_v",
    "down_blocks.1.attentions.0.proj_in",
    "mid_block.attentions.0.proj_out",
    "up_blocks.1.attentions.2.transformer_blocks.0.ff.net.0.proj",
    "up_blocks.1.attentions.2.transformer_blocks.0.ff.net.2",
    "down_blocks.0.resnets.0.conv1",
    "down_blocks.1.resnets.0.conv_shortcut",
    "down_blocks.0.downsamplers.0.conv",
    "up_blocks.0.upsamplers.0.conv",
    "time_embedding.linear_1",
    "down_blocks.0.resnets.0.time_emb_proj",
    "add_embedding.linear_2",
    "conv_in",
)
#: A 3x3 conv patched through a LoCon middle factor (diffusers has no such format).
LOCON_MODULE = "up_blocks.2.resnets.1.conv2"
#: A full attention + MLP layer per text encoder (diffusers needs ``out_proj`` among the keys
#: to convert kohya text-encoder attention keys at all).
TE_LAYER = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj")
TE_MODULES = {
    "text_encoder": tuple(f"encoder.layers.0.{m}" for m in (*TE_LAYER, "mlp.fc1", "mlp.fc2")),
    "text_encoder_2": tuple(
        f"text_model.encoder.layers.1.{m}" for m in (*TE_LAYER, "mlp.fc1", "mlp.fc2")
    ),
}
LAYOUTS = ("kohya_sgm", "kohya_diffusers", "peft", "peft_metadata", "diffusers_old")


@dataclass(frozen=True)
class Factor:
    """One module's LoRA factors as the test wrote them."""

    component: str
    module: str
    up: Tensor
    down: Tensor
    mid: Tensor | None = None
    #: None: the file stores no alpha (scale 1).
    alpha: float | None = None

    @property
    def rank(self) -> int:
        return self.down.shape[0]

    @property
    def scale(self) -> float:
        return 1.0 if self.alpha is None else self.alpha / self.rank


# --------------------------------------------------------------------------------------------
# Building test LoRAs


def parameters(models: object, component: str) -> dict[str, nn.Parameter]:
    return dict(getattr(models, component).named_parameters())


def snapshot(models: object) -> dict[str, dict[str, Tensor]]:
    return {
        c: {k: v.detach().clone() for k, v in parameters(models, c).items()}
        for c in COMPONENTS
        if getattr(models, c, None) is not None
    }


def make_factors(
    models: object,
    modules: Mapping[str, Iterable[str]],
    *,
    seed: int = 0,
    rank: int = 4,
    alpha: float | None = 2.0,
    locon: Iterable[str] = (),
    uniform_alpha: bool = False,
) -> list[Factor]:
    """Random factors for ``modules`` (per component) of ``models``; conv modules get conv
    factors (``down [r, in, kh, kw]``, ``up [out, r, 1, 1]``), ``locon`` ones a middle factor.
    Ranks alternate between ``rank`` and ``rank + 1``; alphas cycle through ``alpha + 0, 1, 2``
    unless ``uniform_alpha``.
    """
    generator = torch.Generator().manual_seed(seed)
    locon = set(locon)
    factors = []
    for component, names in modules.items():
        params = parameters(models, component)
        for index, module in enumerate(names):
            shape = params[module + ".weight"].shape
            r = rank if component == "unet" else max(1, rank // 2)
            r += index % 2  # ranks differ between modules
            mid = None
            if module in locon:
                down = torch.randn(r, shape[1], 1, 1, generator=generator)
                mid = torch.randn(r, r, *shape[2:], generator=generator) * 0.3
                up = torch.randn(shape[0], r, 1, 1, generator=generator)
            elif len(shape) == 4:
                down = torch.randn(r, *shape[1:], generator=generator)
                up = torch.randn(shape[0], r, 1, 1, generator=generator)
            else:
                down = torch.randn(r, shape[1], generator=generator)
                up = torch.randn(shape[0], r, generator=generator)
            module_alpha = None if alpha is None else alpha + (0 if uniform_alpha else index % 3)
            factors.append(Factor(component, module, up * 0.1, down * 0.1, mid, module_alpha))
    return factors


def default_factors(models: SDXLModels, **kwargs: object) -> list[Factor]:
    modules = {"unet": UNET_MODULES, **TE_MODULES}
    return make_factors(models, modules, **kwargs)  # type: ignore[arg-type]


def alias(factor: Factor, layout: str, models: object) -> str:
    """The module name a file in ``layout`` gives the factor's module."""
    module, component = factor.module, factor.component
    if layout in ("kohya_sgm", "kohya_diffusers"):
        if component == "unet":
            if layout == "kohya_sgm":
                unet = models.unet  # type: ignore[attr-defined]
                module = K.unet_to_original(module + ".weight", unet.config)[: -len(".weight")]
            return "lora_unet_" + module.replace(".", "_")
        if component == "text_encoder":
            return "lora_te1_text_model_" + module.replace(".", "_")
        return "lora_te2_" + module.replace(".", "_")
    if layout == "attn_procs":
        head, _, projection = module.rpartition(".to_")
        assert component == "unet" and projection in ("q", "k", "v", "out.0"), module
        return f"{head}.processor.to_{projection.removesuffix('.0')}"
    if component == "text_encoder":
        return "text_encoder.text_model." + module
    return f"{component}.{module}"


SUFFIXES = {
    "kohya_sgm": (".lora_up.weight", ".lora_down.weight"),
    "kohya_diffusers": (".lora_up.weight", ".lora_down.weight"),
    "peft": (".lora_B.weight", ".lora_A.weight"),
    "peft_metadata": (".lora_B.weight", ".lora_A.weight"),
    "diffusers_old": (".lora.up.weight", ".lora.down.weight"),
    "attn_procs": ("_lora.up.weight", "_lora.down.weight"),
}


def lora_tensors(
    factors: Iterable[Factor], layout: str, models: object
) -> tuple[dict[str, Tensor], dict[str, str]]:
    """The tensors (and metadata) of a LoRA file with these factors in ``layout``."""
    tensors: dict[str, Tensor] = {}
    factors = list(factors)
    for factor in factors:
        name = alias(factor, layout, models)
        up_suffix, down_suffix = SUFFIXES[layout]
        if layout == "diffusers_old" and factor.component != "unet":
            up_suffix, down_suffix = (
                ".lora_linear_layer.up.weight",
                ".lora_linear_layer.down.weight",
            )
        tensors[name + up_suffix] = factor.up.contiguous()
        tensors[name + down_suffix] = factor.down.contiguous()
        if factor.mid is not None:
            assert layout.startswith("kohya")
            tensors[name + ".lora_mid.weight"] = factor.mid.contiguous()
        if factor.alpha is not None and layout != "peft_metadata":
            tensors[name + ".alpha"] = torch.tensor(factor.alpha)
    metadata: dict[str, str] = {}
    if layout == "peft_metadata":
        metadata[PEFT_METADATA_KEY] = json.dumps(peft_metadata(factors))
    return tensors, metadata


def peft_metadata(factors: list[Factor]) -> dict[str, object]:
    """diffusers' ``lora_adapter_metadata`` (peft LoraConfig per component) for the factors."""
    out: dict[str, object] = {}
    for component in COMPONENTS:
        mine = [f for f in factors if f.component == component]
        if not mine:
            continue
        ranks = [f.rank for f in mine]
        alphas = [f.alpha if f.alpha is not None else float(f.rank) for f in mine]
        rank = max(set(ranks), key=ranks.count)
        alpha = max(set(alphas), key=alphas.count)
        out[f"{component}.r"] = rank
        out[f"{component}.lora_alpha"] = alpha
        out[f"{component}.rank_pattern"] = {f.module: f.rank for f in mine if f.rank != rank}
        out[f"{component}.alpha_pattern"] = {
            f.module: a for f, a in zip(mine, alphas, strict=True) if a != alpha
        }
        out[f"{component}.target_modules"] = sorted(f.module for f in mine)
    return out


def write_lora(path: Path, factors: Iterable[Factor], layout: str, models: object) -> Path:
    tensors, metadata = lora_tensors(factors, layout, models)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        save_file(tensors, str(path), metadata=metadata or None)
    else:
        torch.save(tensors, path)
    return path


def expected_delta(factor: Factor, shape: torch.Size) -> Tensor:
    """``scale * up @ down`` (float32), computed independently of the library."""
    up = factor.up.double().flatten(1)
    down = factor.down.double().flatten(1)
    if factor.mid is not None:
        # compose 1x1 (down), kxk (mid), 1x1 (up) into one kxk kernel
        kernel = torch.zeros(shape, dtype=torch.float64)
        for o in range(shape[0]):
            for a in range(factor.rank):
                kernel[o] += up[o, a] * torch.einsum("bhw,bc->chw", factor.mid[a].double(), down)
        return kernel * factor.scale
    return ((up @ down) * factor.scale).reshape(shape)


def assert_merged(
    models: object,
    original: dict[str, dict[str, Tensor]],
    factors: Iterable[Factor],
    weight: float,
    atol: float = 1e-6,
) -> None:
    """Every factor's parameter changed by ``weight * scale * up @ down``; nothing else moved."""
    touched: dict[tuple[str, str], Tensor] = {}
    for factor in factors:
        key = (factor.component, factor.module + ".weight")
        shape = original[factor.component][key[1]].shape
        delta = expected_delta(factor, shape) * weight
        touched[key] = touched.get(key, torch.zeros(shape, dtype=torch.float64)) + delta
    for component, params in original.items():
        now = parameters(models, component)
        for name, before in params.items():
            key = (component, name)
            if key in touched:
                want = (before.double() + touched[key]).to(before.dtype)
                torch.testing.assert_close(now[name].detach(), want, atol=atol, rtol=0)
                assert not torch.equal(now[name], before), key
            else:
                assert torch.equal(now[name], before), f"{key} changed"


def assert_plain(models: object, original: dict[str, dict[str, Tensor]]) -> None:
    for component, params in original.items():
        now = parameters(models, component)
        for name, before in params.items():
            assert now[name].dtype == before.dtype
            assert torch.equal(now[name], before), f"{component}.{name} not restored"


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """These tensors are tiny: a second thread only adds contention on shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def models() -> SDXLModels:
    return build_tiny_sdxl()


# --------------------------------------------------------------------------------------------
# Key tables


def test_kohya_sgm_names_resolve_on_the_tiny_model(models: SDXLModels) -> None:
    target = LoraTarget.of(models)
    assert not target.ambiguous
    expected = {
        "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q": (
            "unet",
            "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q",
        ),
        "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_out_0": (
            "unet",
            "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_out.0",
        ),
        "lora_unet_middle_block_1_proj_in": ("unet", "mid_block.attentions.0.proj_in"),
        "lora_unet_output_blocks_2_2_conv": ("unet", "up_blocks.0.upsamplers.0.conv"),
        "lora_unet_input_blocks_3_0_op": ("unet", "down_blocks.0.downsamplers.0.conv"),
        "lora_unet_input_blocks_1_0_in_layers_2": ("unet", "down_blocks.0.resnets.0.conv1"),
        "lora_unet_input_blocks_1_0_emb_layers_1": (
            "unet",
            "down_blocks.0.resnets.0.time_emb_proj",
        ),
        "lora_unet_output_blocks_0_0_skip_connection": (
            "unet",
            "up_blocks.0.resnets.0.conv_shortcut",
        ),
        "lora_unet_time_embed_0": ("unet", "time_embedding.linear_1"),
        "lora_unet_label_emb_0_2": ("unet", "add_embedding.linear_2"),
        "lora_unet_input_blocks_0_0": ("unet", "conv_in"),
        "lora_unet_out_2": ("unet", "conv_out"),
        "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_ff_net_0_proj": (
            "unet",
            "down_blocks.1.attentions.0.transformer_blocks.0.ff.net.0.proj",
        ),
        "unet.up_blocks.0.attentions.1.transformer_blocks.1.attn2.processor.to_out": (
            "unet",
            "up_blocks.0.attentions.1.transformer_blocks.1.attn2.to_out.0",
        ),
        "diffusion_model.output_blocks.2.2.conv": ("unet", "up_blocks.0.upsamplers.0.conv"),
        "lora_te1_text_model_encoder_layers_0_self_attn_q_proj": (
            "text_encoder",
            "encoder.layers.0.self_attn.q_proj",
        ),
        "lora_te_text_model_encoder_layers_2_mlp_fc2": ("text_encoder", "encoder.layers.2.mlp.fc2"),
        "text_encoder.encoder.layers.1.self_attn.k_proj": (
            "text_encoder",
            "encoder.layers.1.self_attn.k_proj",
        ),
        "lora_te2_text_model_encoder_layers_2_self_attn_out_proj": (
            "text_encoder_2",
            "text_model.encoder.layers.2.self_attn.out_proj",
        ),
        "text_encoder_2.text_model.encoder.layers.0.mlp.fc1": (
            "text_encoder_2",
            "text_model.encoder.layers.0.mlp.fc1",
        ),
        "lora_te2_text_projection": ("text_encoder_2", "text_projection"),
    }
    for name, want in expected.items():
        assert target.resolve(name) == want, name
    assert target.resolve("lora_unet_input_blocks_4_1_transformer_blocks_0_attn1") is None
    assert target.resolve("lora_unet_down_blocks_0_attentions_0_proj_in") is None


def test_real_sdxl_key_tables_are_unambiguous() -> None:
    """Full-size SDXL base and refiner (parameters on the meta device: no memory)."""
    configs = {c: load_config(SHIPPED_CONFIG_DIR, "sdxl", c) for c in COMPONENTS}
    base = LoraTarget(
        {
            "unet": build_unet(configs["unet"]),
            "text_encoder": build_text_encoder(configs["text_encoder"]),
            "text_encoder_2": build_text_encoder_2(configs["text_encoder_2"]),
        }
    )
    assert not base.ambiguous
    assert base.resolve("lora_unet_input_blocks_7_1_transformer_blocks_9_attn2_to_k") == (
        "unet",
        "down_blocks.2.attentions.0.transformer_blocks.9.attn2.to_k",
    )
    assert base.resolve("lora_unet_output_blocks_5_2_conv") == (
        "unet",
        "up_blocks.1.upsamplers.0.conv",
    )
    assert base.resolve("lora_unet_output_blocks_8_0_skip_connection") == (
        "unet",
        "up_blocks.2.resnets.2.conv_shortcut",
    )
    assert base.resolve("lora_te2_text_model_encoder_layers_31_mlp_fc2") == (
        "text_encoder_2",
        "text_model.encoder.layers.31.mlp.fc2",
    )
    refiner = LoraTarget(
        {"unet": build_unet(load_config(SHIPPED_CONFIG_DIR, "sdxl_refiner", "unet"))}
    )
    assert not refiner.ambiguous
    # the base's deepest attention blocks do not exist in the refiner
    assert refiner.resolve("lora_unet_input_blocks_7_1_transformer_blocks_9_attn2_to_k") is None


# --------------------------------------------------------------------------------------------
# Merging


@pytest.mark.parametrize("layout", LAYOUTS)
def test_merge_is_weight_times_alpha_over_rank_times_up_down(
    models: SDXLModels, layout: str, tmp_path: Path
) -> None:
    alpha = None if layout == "diffusers_old" else 2.0
    factors = default_factors(models, alpha=alpha)
    if layout.startswith("kohya"):
        factors += make_factors(models, {"unet": [LOCON_MODULE]}, seed=5, locon=[LOCON_MODULE])
    path = write_lora(tmp_path / "style.safetensors", factors, layout, models)
    original = snapshot(models)

    update = LoraPatcher().set_loras(models, [(LoraFile.from_path(path), 0.7)])

    assert update.changed and update.text_encoders_changed
    (report,) = update.reports
    assert report.status == "applied" and report.name == "style"
    assert report.patched == len(factors)
    assert report.unmatched == () and report.shape_mismatches == () and not update.messages
    assert_merged(models, original, factors, 0.7)


def test_attention_processor_layout(models: SDXLModels, tmp_path: Path) -> None:
    """Old diffusers ``...attn1.processor.to_q_lora.up.weight`` files (UNet attention only)."""
    modules = [m for m in UNET_MODULES if ".to_" in m]
    factors = make_factors(models, {"unet": modules}, alpha=None)
    path = write_lora(tmp_path / "procs.safetensors", factors, "attn_procs", models)
    original = snapshot(models)
    LoraPatcher().set_loras(models, [(LoraFile.from_path(path), 1.5)])
    assert_merged(models, original, factors, 1.5)


def test_locon_middle_factor_equals_the_three_convolutions(models: SDXLModels) -> None:
    """The merged kernel acts like ``up(mid(down(x)))`` scaled: checked by running convs."""
    (factor,) = make_factors(models, {"unet": [LOCON_MODULE]}, seed=3, locon=[LOCON_MODULE])
    tensors, _ = lora_tensors([factor], "kohya_sgm", models)
    conv = dict(models.unet.named_modules())[LOCON_MODULE]
    before = conv.weight.detach().clone()
    LoraPatcher().set_loras(models, [(LoraFile.from_tensors("locon", tensors), 0.5)])
    x = torch.randn(1, before.shape[1], 9, 9, generator=torch.Generator().manual_seed(0))
    merged_delta = F.conv2d(x, conv.weight.detach() - before, padding=1)
    assert factor.mid is not None
    chained = F.conv2d(F.conv2d(F.conv2d(x, factor.down), factor.mid, padding=1), factor.up)
    torch.testing.assert_close(merged_delta, 0.5 * factor.scale * chained, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("suffix", [".bin", ".pt", ".pth", ".ckpt"])
def test_pickled_files_read_like_safetensors(
    models: SDXLModels, tmp_path: Path, suffix: str
) -> None:
    factors = default_factors(models)
    path = write_lora(tmp_path / f"style{suffix}", factors, "kohya_sgm", models)
    original = snapshot(models)
    LoraPatcher().set_loras(models, [(LoraFile.from_path(path), 1.0)])
    assert_merged(models, original, factors, 1.0)


def test_diff_and_bias_patches(models: SDXLModels) -> None:
    module = "down_blocks.1.attentions.0.proj_out"
    params = parameters(models, "unet")
    weight = params[module + ".weight"].detach().clone()
    bias = params[module + ".bias"].detach().clone()
    generator = torch.Generator().manual_seed(4)
    diff = torch.randn(weight.shape, generator=generator) * 0.01
    diff_b = torch.randn(bias.shape, generator=generator) * 0.01
    name = "lora_unet_input_blocks_4_1_proj_out"
    tensors = {name + ".diff": diff, name + ".diff_b": diff_b}
    update = LoraPatcher().set_loras(models, [(LoraFile.from_tensors("diff", tensors), 0.5)])
    assert update.reports[0].layouts == ("diff",)
    assert not update.text_encoders_changed
    torch.testing.assert_close(params[module + ".weight"].detach(), weight + 0.5 * diff)
    torch.testing.assert_close(params[module + ".bias"].detach(), bias + 0.5 * diff_b)


def test_peft_lora_b_bias_is_scaled_like_the_product(models: SDXLModels) -> None:
    (factor,) = make_factors(models, {"unet": [UNET_MODULES[0]]}, alpha=None)
    tensors, _ = lora_tensors([factor], "peft", models)
    params = parameters(models, "unet")
    proj_bias = UNET_MODULES[4] + ".bias"  # attention projections have no bias: use proj_in
    (proj,) = make_factors(models, {"unet": [UNET_MODULES[4]]}, seed=2, alpha=None)
    more, _ = lora_tensors([proj], "peft", models)
    bias_delta = torch.linspace(-0.1, 0.1, params[proj_bias].shape[0])
    more[f"unet.{UNET_MODULES[4]}.lora_B.bias"] = bias_delta
    tensors.update(more)
    metadata = {PEFT_METADATA_KEY: json.dumps({"unet.r": 4, "unet.lora_alpha": 8})}
    bias_before = params[proj_bias].detach().clone()
    original = snapshot(models)
    LoraPatcher().set_loras(models, [(LoraFile.from_tensors("b", tensors, metadata), 1.0)])
    # metadata alpha 8: scale 8 / rank for every module
    scaled = [replace(f, alpha=8.0) for f in (factor, proj)]
    torch.testing.assert_close(
        params[proj_bias].detach(), bias_before + bias_delta * 8.0 / proj.rank
    )
    original["unet"][proj_bias] = params[proj_bias].detach().clone()  # checked above
    assert_merged(models, original, scaled, 1.0)


def test_half_precision_merge_is_computed_in_float32_and_restored(models: SDXLModels) -> None:
    models.unet.half()
    models.text_encoder.half()
    factors = default_factors(models)
    tensors, _ = lora_tensors(factors, "kohya_sgm", models)
    original = snapshot(models)
    patcher = LoraPatcher()
    patcher.set_loras(models, [(LoraFile.from_tensors("half", tensors), 0.8)])
    for factor in factors:
        param = parameters(models, factor.component)[factor.module + ".weight"]
        before = original[factor.component][factor.module + ".weight"]
        merged = before.float() + 0.8 * factor.scale * (
            factor.up.flatten(1) @ factor.down.flatten(1)
        ).reshape(before.shape)
        assert param.dtype == before.dtype
        # one float32 -> dtype rounding at the end (a half ulp; two when float32 sums differ)
        torch.testing.assert_close(param.detach().float(), merged.to(before.dtype).float())
    patcher.set_loras(models, [])
    assert_plain(models, original)


# --------------------------------------------------------------------------------------------
# Oracle: diffusers' own LoRA loading on the same tiny checkpoint


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from fooocus_core.models.tiny import write_tiny_checkpoint

    return write_tiny_checkpoint(tmp_path_factory.mktemp("lora_tiny") / "tiny.safetensors")


def diffusers_pipeline(checkpoint: Path, root: Path) -> object:
    from diffusers import StableDiffusionXLPipeline

    from tests.oracle import diffusers_config_dir

    config = diffusers_config_dir(root / "diffusers")
    return StableDiffusionXLPipeline.from_single_file(
        str(checkpoint), config=str(config), local_files_only=True
    )


@pytest.mark.parametrize("layout", ["kohya_sgm", "kohya_diffusers", "peft", "peft_metadata"])
def test_merge_matches_diffusers_load_lora_weights_and_fuse(
    tiny_checkpoint: Path, tmp_path: Path, layout: str
) -> None:
    from fooocus_core.models.loader import load_sdxl

    pytest.importorskip("peft")
    ours = load_sdxl(tiny_checkpoint, SHIPPED_CONFIG_DIR, device="cpu", dtype=torch.float32)
    pipe = diffusers_pipeline(tiny_checkpoint, tmp_path)
    for component in COMPONENTS:  # both load the same weights
        theirs = getattr(pipe, component).state_dict()
        for name, value in getattr(ours, component).state_dict().items():
            assert torch.equal(theirs[name], value), (component, name)
    plain = snapshot(ours)
    # diffusers turns per-module kohya alphas into peft alpha_pattern keys that match no module
    # (its RuntimeWarning says so) and then scales them wrongly: one alpha per file for kohya.
    factors = default_factors(
        ours,
        seed=11,
        uniform_alpha=layout.startswith("kohya"),
        alpha=None if layout == "peft" else 2.0,  # plain peft files carry no alpha
    )
    if layout == "kohya_diffusers":
        # diffusers cannot name lora_unet_add_embedding_linear_2 (its key heuristics make it
        # "add.embedding.linear" and drop it with a warning); Fooocus' key table can.
        factors = [f for f in factors if not f.module.startswith("add_embedding.")]
    path = write_lora(tmp_path / "oracle.safetensors", factors, layout, ours)

    LoraPatcher().set_loras(ours, [(LoraFile.from_path(path), 0.65)])
    pipe.load_lora_weights(str(path))  # type: ignore[attr-defined]
    pipe.fuse_lora(lora_scale=0.65)  # type: ignore[attr-defined]
    pipe.unload_lora_weights()  # type: ignore[attr-defined]

    worst = 0.0
    changed = 0
    for component in COMPONENTS:
        theirs = getattr(pipe, component).state_dict()
        mine = getattr(ours, component).state_dict()
        assert set(theirs) == set(mine)
        for name, value in mine.items():
            worst = max(worst, (theirs[name] - value).abs().max().item())
            if name in plain[component]:
                # diffusers changes exactly the parameters we change
                assert torch.equal(theirs[name], plain[component][name]) == torch.equal(
                    value, plain[component][name]
                ), (component, name)
                changed += not torch.equal(value, plain[component][name])
    assert changed == len(factors)
    assert worst < 1e-6  # measured about 3e-8: float32 rounding only


# --------------------------------------------------------------------------------------------
# Set changes, weight 0, restore


def test_weight_zero_leaves_the_model_untouched_and_reads_nothing(
    models: SDXLModels, tmp_path: Path
) -> None:
    path = write_lora(tmp_path / "gone.safetensors", default_factors(models), "kohya_sgm", models)
    lora = LoraFile.from_path(path)
    path.unlink()  # reading it now would fail
    original = snapshot(models)
    update = LoraPatcher().set_loras(models, [(lora, 0.0)])
    assert update.reports[0].status == "zero_weight"
    assert not update.text_encoders_changed
    assert_plain(models, original)


def test_removing_the_loras_restores_the_plain_weights_bit_identically(
    models: SDXLModels,
) -> None:
    factors = default_factors(models) + make_factors(
        models, {"unet": [LOCON_MODULE]}, locon=[LOCON_MODULE]
    )
    tensors, _ = lora_tensors(factors, "kohya_sgm", models)
    original = snapshot(models)
    patcher = LoraPatcher()
    patcher.set_loras(models, [(LoraFile.from_tensors("a", tensors), 1.3)])
    assert len(patcher.touched) == len(factors)
    update = patcher.set_loras(models, [])
    assert update.changed and update.text_encoders_changed
    assert patcher.touched == frozenset() and patcher.active == ()
    assert_plain(models, original)


def test_unchanged_set_is_a_no_op_and_a_rewritten_file_is_reapplied(
    models: SDXLModels, tmp_path: Path
) -> None:
    factors = default_factors(models)
    path = write_lora(tmp_path / "style.safetensors", factors, "kohya_sgm", models)
    patcher = LoraPatcher()
    original = snapshot(models)
    first = patcher.set_loras(models, [(LoraFile.from_path(path), 1.0)])
    param = parameters(models, "unet")[UNET_MODULES[0] + ".weight"]
    version = param._version
    again = patcher.set_loras(models, [(LoraFile.from_path(path), 1.0)])
    assert not again.changed and not again.text_encoders_changed
    assert again.reports == first.reports
    assert param._version == version  # not even rewritten

    newer = default_factors(models, seed=7)
    write_lora(path, newer, "kohya_sgm", models)
    update = patcher.set_loras(models, [(LoraFile.from_path(path), 1.0)])
    assert update.changed
    assert_merged(models, original, newer, 1.0)


def test_switching_sets_equals_applying_the_new_set_to_the_plain_model(
    models: SDXLModels,
) -> None:
    unet_only = make_factors(models, {"unet": UNET_MODULES[:8]}, seed=1)
    mixed = make_factors(models, {"unet": UNET_MODULES[4:], **TE_MODULES}, seed=2)
    a = LoraFile.from_tensors("a", lora_tensors(unet_only, "kohya_sgm", models)[0])
    b = LoraFile.from_tensors("b", lora_tensors(mixed, "peft", models)[0])
    original = snapshot(models)
    patcher = LoraPatcher()

    assert not patcher.set_loras(models, [(a, 1.0)]).text_encoders_changed
    update = patcher.set_loras(models, [(a, 0.5), (b, -1.0)])
    assert update.text_encoders_changed
    both = [replace(f, up=f.up * 0.5) for f in unet_only] + [replace(f, up=-f.up) for f in mixed]
    assert_merged(models, original, both, 1.0)

    update = patcher.set_loras(models, [(b, 0.25)])
    assert update.text_encoders_changed
    assert_merged(models, original, mixed, 0.25)
    fresh = build_tiny_sdxl()
    LoraPatcher().set_loras(fresh, [(b, 0.25)])
    for component in COMPONENTS:  # bit-identical to a model that never saw LoRA a
        mine, theirs = parameters(models, component), parameters(fresh, component)
        for name in mine:
            assert torch.equal(mine[name], theirs[name]), (component, name)

    # only the UNet LoRA changes: the text encoders keep their (patched) values
    update = patcher.set_loras(models, [(b, 0.25), (a, 2.0)])
    assert update.changed and not update.text_encoders_changed
    update = patcher.set_loras(models, [])
    assert update.text_encoders_changed
    assert_plain(models, original)


def test_refiner_unet_is_patched_and_text_encoder_keys_are_not_a_mismatch(
    tmp_path: Path,
) -> None:
    refiner = build_tiny_refiner()
    modules = (
        "down_blocks.1.attentions.0.transformer_blocks.1.attn1.to_q",
        "down_blocks.2.attentions.1.transformer_blocks.0.attn2.to_k",
        "up_blocks.1.attentions.2.proj_out",
        "down_blocks.3.resnets.1.conv2",
        "up_blocks.0.upsamplers.0.conv",
        "time_embedding.linear_2",
        "add_embedding.linear_1",
    )
    factors = make_factors(refiner, {"unet": modules}, seed=3)
    tensors, _ = lora_tensors(factors, "kohya_sgm", refiner)
    base = build_tiny_sdxl()
    te_tensors, _ = lora_tensors(make_factors(base, dict(TE_MODULES), seed=4), "kohya_sgm", base)
    assert len(te_tensors) > 2 * MISMATCH_LIMIT
    tensors.update(te_tensors)
    path = tmp_path / "refiner_lora.safetensors"
    save_file(tensors, str(path))
    original = snapshot(refiner)
    patchers = LoraPatchers()
    patcher = patchers.for_models(refiner)
    assert patchers.for_models(refiner) is patcher and patchers.for_models(base) is not patcher

    update = patcher.set_loras(refiner, [(LoraFile.from_path(path), 0.9)])
    (report,) = update.reports
    assert report.status == "applied" and report.unmatched == ()
    assert report.absent == len(te_tensors)
    assert not update.text_encoders_changed
    assert_merged(refiner, original, factors, 0.9)

    # a per-task wrapper around the same UNet shares the patcher and its state: no double merge
    wrapper = UnetHolder(refiner.unet)
    assert patchers.for_models(wrapper) is patcher
    assert not patcher.set_loras(wrapper, [(LoraFile.from_path(path), 0.9)]).changed
    assert_merged(refiner, original, factors, 0.9)
    patcher.set_loras(wrapper, [])
    assert_plain(refiner, original)


@dataclass
class UnetHolder:
    """Like the engine's per-task ``Refiner`` wrapper."""

    unet: nn.Module


def test_a_patcher_moved_to_other_models_restores_the_first_ones(models: SDXLModels) -> None:
    other = build_tiny_sdxl(seed=1)
    tensors, _ = lora_tensors(default_factors(models), "kohya_sgm", models)
    lora = LoraFile.from_tensors("a", tensors)
    first, second = snapshot(models), snapshot(other)
    patcher = LoraPatcher()
    patcher.set_loras(models, [(lora, 1.0)])
    update = patcher.set_loras(other, [(lora, 1.0)])
    assert update.changed
    assert_plain(models, first)
    patcher.set_loras(other, [])
    assert_plain(other, second)


def test_base_lora_on_the_refiner_skips_what_does_not_fit(models: SDXLModels) -> None:
    """The tiny refiner's cross-attention is 64 wide (base: 96): those weights cannot merge."""
    refiner: RefinerModels = build_tiny_refiner()
    cross = [
        "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k",
        "down_blocks.2.attentions.1.transformer_blocks.1.attn2.to_v",
    ]
    factors = make_factors(models, {"unet": cross}, seed=6)
    tensors, _ = lora_tensors(factors, "kohya_diffusers", models)
    original = snapshot(refiner)
    update = LoraPatcher().set_loras(refiner, [(LoraFile.from_tensors("base", tensors), 1.0)])
    (report,) = update.reports
    assert report.status == "applied" and report.patched == 0
    assert len(report.shape_mismatches) == len(cross)
    assert update.messages and "refiner" in update.messages[0]
    assert_plain(refiner, original)


# --------------------------------------------------------------------------------------------
# Mismatch and refused formats


def sd15_like_keys(count: int) -> dict[str, Tensor]:
    """Kohya keys of modules the tiny SDXL does not have (SD 1.5 has attention at level 0)."""
    tensors = {}
    for i in range(count):
        name = f"lora_unet_down_blocks_0_attentions_{i}_proj_in"
        tensors[name + ".lora_up.weight"] = torch.zeros(32, 2)
        tensors[name + ".lora_down.weight"] = torch.zeros(2, 32)
        tensors[name + ".alpha"] = torch.tensor(2.0)
    return tensors


def test_lora_for_another_architecture_is_reported_as_mismatched(models: SDXLModels) -> None:
    factors = make_factors(models, {"unet": UNET_MODULES[:3]})
    tensors, _ = lora_tensors(factors, "kohya_sgm", models)
    tensors.update(sd15_like_keys(5))  # 15 unmatched keys > 12
    original = snapshot(models)
    update = LoraPatcher().set_loras(models, [(LoraFile.from_tensors("sd15", tensors), 1.0)])
    (report,) = update.reports
    assert report.status == "mismatch" and len(report.unmatched) == 15
    assert update.messages == [report.message]
    assert report.message is not None and "sd15" in report.message
    assert "base model (15 of 24 keys unmatched" in report.message
    assert_plain(models, original)


def test_up_to_twelve_unmatched_keys_are_tolerated(models: SDXLModels) -> None:
    factors = make_factors(models, {"unet": UNET_MODULES[:3]})
    tensors, _ = lora_tensors(factors, "kohya_sgm", models)
    tensors.update(sd15_like_keys(4))  # 12 unmatched keys
    original = snapshot(models)
    update = LoraPatcher().set_loras(models, [(LoraFile.from_tensors("x", tensors), 1.0)])
    (report,) = update.reports
    assert report.status == "applied" and len(report.unmatched) == MISMATCH_LIMIT
    assert not update.messages
    assert_merged(models, original, factors, 1.0)


@pytest.mark.parametrize(
    ("suffixes", "format_name"),
    [
        ((".hada_w1_a", ".hada_w1_b", ".hada_w2_a", ".hada_w2_b", ".alpha"), "LoHa"),
        ((".lokr_w1", ".lokr_w2_a", ".lokr_w2_b", ".alpha"), "LoKr"),
        ((".lora_up.weight", ".lora_down.weight", ".dora_scale"), "DoRA"),
    ],
)
def test_lycoris_variants_are_refused_with_a_clear_error(
    models: SDXLModels, suffixes: tuple[str, ...], format_name: str
) -> None:
    factors = make_factors(models, {"unet": UNET_MODULES[:2]})
    good = LoraFile.from_tensors("good", lora_tensors(factors, "kohya_sgm", models)[0])
    patcher = LoraPatcher()
    patcher.set_loras(models, [(good, 1.0)])
    applied = snapshot(models)
    name = "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q"
    tensors = {name + s: torch.ones(2, 2) for s in suffixes}
    bad = LoraFile.from_tensors("fancy", tensors)
    with pytest.raises(UnsupportedLoraFormat, match=format_name) as caught:
        patcher.set_loras(models, [(good, 1.0), (bad, 1.0)])
    assert "fancy" in str(caught.value)
    assert_plain(models, applied)  # nothing changed, the previous set stays applied
    assert patcher.active == ((good.key, 1.0),)


def test_unreadable_or_missing_files(models: SDXLModels, tmp_path: Path) -> None:
    with pytest.raises(ModelFileNotFound):
        LoraFile.from_path(tmp_path / "missing.safetensors")
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a safetensors file")
    original = snapshot(models)
    with pytest.raises(CheckpointError):
        LoraPatcher().set_loras(models, [(LoraFile.from_path(broken), 1.0)])
    assert_plain(models, original)
