"""Key mapping between the original (ldm / "sgm") SDXL checkpoint layout and diffusers /
transformers state-dict names, in both directions.

The mapping is derived from the model configs (number of levels, ``layers_per_block``, which
levels have attention), so it holds for the real SDXL sizes, the refiner and tiny test models.

Two levels of API:

* name functions (``unet_to_original`` / ``unet_to_diffusers``, likewise ``vae_*``) that translate
  one parameter name, component-relative (no ``model.diffusion_model.`` prefix);
* :class:`KeyMap`, built from a model's own state-dict names, that converts whole state dicts in
  either direction, including the tensor reshapes the layouts need (VAE attention 1x1 convs vs
  Linear, OpenCLIP's fused ``in_proj`` split into q/k/v, OpenCLIP's ``text_projection``
  transposed).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

#: Original-layout prefixes of the SDXL components.
UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_L_PREFIX = "conditioner.embedders.0.transformer."
CLIP_G_PREFIX = "conditioner.embedders.1.model."
REFINER_CLIP_G_PREFIX = "conditioner.embedders.0.model."
SD15_CLIP_PREFIX = "cond_stage_model.transformer."

#: Original keys that carry no weights we need (training state, schedules, tokenizer buffers).
_IGNORED_PREFIXES = ("model_ema.", "denoiser.", "loss.", "lora_te", "lora_unet")
_IGNORED_SUFFIXES = ("position_ids", "logit_scale", "attn_mask")


def is_ignorable(key: str) -> bool:
    """True for original-layout keys the loader skips on purpose.

    Top-level keys without a dot (``alphas_cumprod``, ``betas``, ``edm_mean``, ...) are schedule
    buffers or constants, not weights.
    """
    return "." not in key or key.startswith(_IGNORED_PREFIXES) or key.endswith(_IGNORED_SUFFIXES)


class Transform(enum.Enum):
    """How a tensor changes between the two layouts."""

    COPY = "copy"
    #: 2-D matrix transposed (OpenCLIP ``text_projection`` is used as ``x @ P``).
    TRANSPOSE = "transpose"
    #: Original 1x1 conv weight ``[o, i, 1, 1]`` <-> Linear weight ``[o, i]``.
    CONV1X1 = "conv1x1"
    #: One original tensor split in equal parts along dim 0 (OpenCLIP ``in_proj`` -> q, k, v).
    SPLIT = "split"


@dataclass(frozen=True)
class KeyRule:
    """One original key and the diffusers key(s) it becomes."""

    original: str
    diffusers: tuple[str, ...]
    transform: Transform = Transform.COPY


class KeyMismatch(ValueError):
    """A state dict does not fit the key map: missing, unexpected or wrongly shaped keys."""

    def __init__(
        self,
        component: str,
        missing: Sequence[str] = (),
        unexpected: Sequence[str] = (),
        shapes: Sequence[str] = (),
    ) -> None:
        self.component = component
        self.missing = list(missing)
        self.unexpected = list(unexpected)
        self.shapes = list(shapes)
        parts = []
        for label, keys in (
            ("missing keys", self.missing),
            ("unexpected keys", self.unexpected),
            ("shape mismatches", self.shapes),
        ):
            if keys:
                shown = ", ".join(keys[:8]) + (
                    f", ... ({len(keys) - 8} more)" if len(keys) > 8 else ""
                )
                parts.append(f"{len(keys)} {label}: {shown}")
        super().__init__(f"{component}: " + "; ".join(parts))


class KeyMap:
    """Bidirectional state-dict conversion for one component (UNet, VAE or a text encoder).

    ``prefix`` is the component's original-layout prefix (e.g. ``model.diffusion_model.``);
    original keys passed to and returned by the conversions include it. Original keys ending in
    one of ``ignored_suffixes`` are skipped like :func:`is_ignorable` ones.
    """

    def __init__(
        self,
        component: str,
        prefix: str,
        rules: Iterable[KeyRule],
        ignored_suffixes: tuple[str, ...] = (),
    ) -> None:
        self.component = component
        self.prefix = prefix
        self.rules: tuple[KeyRule, ...] = tuple(rules)
        self.ignored_suffixes = ignored_suffixes
        self._by_original = {prefix + r.original: r for r in self.rules}
        self._by_diffusers = {d: r for r in self.rules for d in r.diffusers}

    @property
    def original_keys(self) -> list[str]:
        return list(self._by_original)

    @property
    def diffusers_keys(self) -> list[str]:
        return list(self._by_diffusers)

    def owns(self, original_key: str) -> bool:
        """Whether an original key lies under this component's prefix."""
        return original_key.startswith(self.prefix)

    def to_diffusers(
        self,
        state_dict: MutableMapping[str, torch.Tensor],
        *,
        pop: bool = False,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        strict: bool = True,
    ) -> dict[str, torch.Tensor]:
        """Convert the component's original keys of ``state_dict`` to diffusers names.

        ``pop`` removes converted entries from ``state_dict`` as it goes, so a large checkpoint is
        not held twice. Keys under the prefix that no rule knows are unexpected (unless
        :func:`is_ignorable`); with ``strict`` a missing or unexpected key raises
        :class:`KeyMismatch`.
        """
        missing = [k for k in self._by_original if k not in state_dict]
        unexpected = [
            k
            for k in state_dict
            if k.startswith(self.prefix)
            and k not in self._by_original
            and not is_ignorable(k)
            and not (self.ignored_suffixes and k.endswith(self.ignored_suffixes))
        ]
        if strict and (missing or unexpected):
            raise KeyMismatch(self.component, missing, unexpected)
        out: dict[str, torch.Tensor] = {}
        for key, rule in self._by_original.items():
            if key not in state_dict:
                continue
            tensor = state_dict.pop(key) if pop else state_dict[key]
            if dtype is not None or device is not None:
                target_dtype = dtype if tensor.is_floating_point() else None
                tensor = tensor.to(device=device, dtype=target_dtype)
            out.update(_forward(rule, tensor))
        if pop:
            for key in [k for k in state_dict if k.startswith(self.prefix)]:
                del state_dict[key]
        return out

    def to_original(self, state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Convert a diffusers state dict of this component to original keys (with prefix)."""
        missing = [k for k in self._by_diffusers if k not in state_dict]
        unexpected = [k for k in state_dict if k not in self._by_diffusers]
        if missing or unexpected:
            raise KeyMismatch(self.component, missing, unexpected)
        return {self.prefix + r.original: _backward(r, state_dict) for r in self.rules}


def _forward(rule: KeyRule, tensor: torch.Tensor) -> dict[str, torch.Tensor]:
    if rule.transform is Transform.COPY:
        return {rule.diffusers[0]: tensor}
    if rule.transform is Transform.TRANSPOSE:
        return {rule.diffusers[0]: tensor.t().contiguous()}
    if rule.transform is Transform.CONV1X1:
        if tensor.ndim == 4:
            tensor = tensor.reshape(tensor.shape[0], tensor.shape[1])
        return {rule.diffusers[0]: tensor}
    parts = torch.chunk(tensor, len(rule.diffusers), dim=0)
    return {name: part.contiguous() for name, part in zip(rule.diffusers, parts, strict=True)}


def _backward(rule: KeyRule, state_dict: Mapping[str, torch.Tensor]) -> torch.Tensor:
    if rule.transform is Transform.SPLIT:
        return torch.cat([state_dict[name] for name in rule.diffusers], dim=0)
    tensor = state_dict[rule.diffusers[0]]
    if rule.transform is Transform.TRANSPOSE:
        return tensor.t().contiguous()
    if rule.transform is Transform.CONV1X1 and tensor.ndim == 2:
        return tensor.reshape(*tensor.shape, 1, 1)
    return tensor


# --------------------------------------------------------------------------------------------
# Prefix tables: (diffusers prefix, original prefix, block kind), all ending in "."


_UNET_RESNET = (
    ("norm1", "in_layers.0"),
    ("conv1", "in_layers.2"),
    ("time_emb_proj", "emb_layers.1"),
    ("norm2", "out_layers.0"),
    ("conv2", "out_layers.3"),
    ("conv_shortcut", "skip_connection"),
)
_VAE_RESNET = (
    ("norm1", "norm1"),
    ("conv1", "conv1"),
    ("norm2", "norm2"),
    ("conv2", "conv2"),
    ("conv_shortcut", "nin_shortcut"),
)
_VAE_ATTENTION = (
    ("group_norm", "norm"),
    ("to_q", "q"),
    ("to_k", "k"),
    ("to_v", "v"),
    ("to_out.0", "proj_out"),
)
_SUFFIXES = {
    "unet_resnet": _UNET_RESNET,
    "vae_resnet": _VAE_RESNET,
    "vae_attention": _VAE_ATTENTION,
}

Prefixes = list[tuple[str, str, str]]


def _per_level(value: Any, levels: int) -> list[int]:
    return [int(v) for v in value] if isinstance(value, list | tuple) else [int(value)] * levels


def unet_prefixes(config: Mapping[str, Any]) -> Prefixes:
    """Block prefixes of a UNet2DConditionModel config, e.g. ``down_blocks.1.attentions.0.`` <->
    ``input_blocks.4.1.``; derived from the levels, ``layers_per_block`` and block types.
    """
    levels = len(config["block_out_channels"])
    per_level = _per_level(config.get("layers_per_block", 2), levels)
    down_attn = ["CrossAttn" in t for t in config["down_block_types"]]
    up_attn = ["CrossAttn" in t for t in config["up_block_types"]]
    table: Prefixes = [
        ("conv_in.", "input_blocks.0.0.", "plain"),
        ("time_embedding.linear_1.", "time_embed.0.", "plain"),
        ("time_embedding.linear_2.", "time_embed.2.", "plain"),
        ("add_embedding.linear_1.", "label_emb.0.0.", "plain"),
        ("add_embedding.linear_2.", "label_emb.0.2.", "plain"),
        ("conv_norm_out.", "out.0.", "plain"),
        ("conv_out.", "out.2.", "plain"),
    ]
    block = 1
    for level in range(levels):
        for j in range(per_level[level]):
            table.append(
                (f"down_blocks.{level}.resnets.{j}.", f"input_blocks.{block}.0.", "unet_resnet")
            )
            if down_attn[level]:
                table.append(
                    (f"down_blocks.{level}.attentions.{j}.", f"input_blocks.{block}.1.", "plain")
                )
            block += 1
        if level != levels - 1:
            table.append(
                (
                    f"down_blocks.{level}.downsamplers.0.conv.",
                    f"input_blocks.{block}.0.op.",
                    "plain",
                )
            )
            block += 1
    mid_type = config.get("mid_block_type", "UNetMidBlock2DCrossAttn")
    if mid_type == "UNetMidBlock2DCrossAttn":
        table += [
            ("mid_block.resnets.0.", "middle_block.0.", "unet_resnet"),
            ("mid_block.attentions.0.", "middle_block.1.", "plain"),
            ("mid_block.resnets.1.", "middle_block.2.", "unet_resnet"),
        ]
    elif mid_type is not None:
        raise ValueError(f"unsupported mid_block_type {mid_type!r}")
    block = 0
    for up in range(levels):
        level = levels - 1 - up
        for j in range(per_level[level] + 1):
            table.append(
                (f"up_blocks.{up}.resnets.{j}.", f"output_blocks.{block}.0.", "unet_resnet")
            )
            if up_attn[up]:
                table.append(
                    (f"up_blocks.{up}.attentions.{j}.", f"output_blocks.{block}.1.", "plain")
                )
            if j == per_level[level] and up != levels - 1:
                index = 2 if up_attn[up] else 1
                table.append(
                    (
                        f"up_blocks.{up}.upsamplers.0.conv.",
                        f"output_blocks.{block}.{index}.conv.",
                        "plain",
                    )
                )
            block += 1
    return table


def vae_prefixes(config: Mapping[str, Any]) -> Prefixes:
    """Block prefixes of an AutoencoderKL config (``encoder.down_blocks.0.resnets.1.`` <->
    ``encoder.down.0.block.1.``; decoder up blocks are numbered the other way round).
    """
    levels = len(config["block_out_channels"])
    per_level = int(config.get("layers_per_block", 2))
    table: Prefixes = [
        ("quant_conv.", "quant_conv.", "plain"),
        ("post_quant_conv.", "post_quant_conv.", "plain"),
    ]
    for part in ("encoder", "decoder"):
        table += [
            (f"{part}.conv_in.", f"{part}.conv_in.", "plain"),
            (f"{part}.conv_out.", f"{part}.conv_out.", "plain"),
            (f"{part}.conv_norm_out.", f"{part}.norm_out.", "plain"),
            (f"{part}.mid_block.resnets.0.", f"{part}.mid.block_1.", "vae_resnet"),
            (f"{part}.mid_block.attentions.0.", f"{part}.mid.attn_1.", "vae_attention"),
            (f"{part}.mid_block.resnets.1.", f"{part}.mid.block_2.", "vae_resnet"),
        ]
    for level in range(levels):
        for j in range(per_level):
            table.append(
                (
                    f"encoder.down_blocks.{level}.resnets.{j}.",
                    f"encoder.down.{level}.block.{j}.",
                    "vae_resnet",
                )
            )
        if level != levels - 1:
            table.append(
                (
                    f"encoder.down_blocks.{level}.downsamplers.0.conv.",
                    f"encoder.down.{level}.downsample.conv.",
                    "plain",
                )
            )
    for up in range(levels):
        level = levels - 1 - up
        for j in range(per_level + 1):
            table.append(
                (
                    f"decoder.up_blocks.{up}.resnets.{j}.",
                    f"decoder.up.{level}.block.{j}.",
                    "vae_resnet",
                )
            )
        if up != levels - 1:
            table.append(
                (
                    f"decoder.up_blocks.{up}.upsamplers.0.conv.",
                    f"decoder.up.{level}.upsample.conv.",
                    "plain",
                )
            )
    return table


def _translate(name: str, table: Prefixes, *, forward: bool) -> str:
    """Map one name through a prefix table; ``forward`` = diffusers -> original."""
    src, dst = (0, 1) if forward else (1, 0)
    best: tuple[str, str, str] | None = None
    for row in table:
        if name.startswith(row[src]) and (best is None or len(row[src]) > len(best[src])):
            best = row
    if best is None:
        raise KeyError(f"no mapping for {name!r}")
    rest = name[len(best[src]) :]
    suffixes = _SUFFIXES.get(best[2])
    if suffixes is not None:
        for pair in suffixes:
            if rest.startswith(pair[src] + "."):
                rest = pair[dst] + rest[len(pair[src]) :]
                break
        else:
            raise KeyError(f"no mapping for {name!r}")
    return best[dst] + rest


def unet_to_original(name: str, config: Mapping[str, Any]) -> str:
    """diffusers UNet name -> original name (without ``model.diffusion_model.``)."""
    return _translate(name, unet_prefixes(config), forward=True)


def unet_to_diffusers(name: str, config: Mapping[str, Any]) -> str:
    """Original UNet name (without prefix) -> diffusers name."""
    return _translate(name, unet_prefixes(config), forward=False)


def vae_to_original(name: str, config: Mapping[str, Any]) -> str:
    """diffusers AutoencoderKL name -> original name (without ``first_stage_model.``)."""
    return _translate(name, vae_prefixes(config), forward=True)


def vae_to_diffusers(name: str, config: Mapping[str, Any]) -> str:
    """Original VAE name (without prefix) -> diffusers name."""
    return _translate(name, vae_prefixes(config), forward=False)


_VAE_ATTENTION_CONV = re.compile(r"^(encoder|decoder)\.mid\.attn_1\.(q|k|v|proj_out)\.weight$")


def unet_keymap(
    config: Mapping[str, Any], diffusers_keys: Iterable[str], prefix: str = UNET_PREFIX
) -> KeyMap:
    """KeyMap for a UNet2DConditionModel with these state-dict names."""
    table = unet_prefixes(config)
    rules = [KeyRule(_translate(k, table, forward=True), (k,)) for k in diffusers_keys]
    return KeyMap("unet", prefix, rules)


def vae_keymap(
    config: Mapping[str, Any], diffusers_keys: Iterable[str], prefix: str = VAE_PREFIX
) -> KeyMap:
    """KeyMap for an AutoencoderKL; the mid-block attention 1x1 convs become Linear weights."""
    table = vae_prefixes(config)
    rules = []
    for key in diffusers_keys:
        original = _translate(key, table, forward=True)
        conv = _VAE_ATTENTION_CONV.match(original) is not None
        rules.append(KeyRule(original, (key,), Transform.CONV1X1 if conv else Transform.COPY))
    return KeyMap("vae", prefix, rules)


def clip_l_keymap(diffusers_keys: Iterable[str], prefix: str = CLIP_L_PREFIX) -> KeyMap:
    """KeyMap for transformers' CLIPTextModel stored as ``<prefix>text_model.*``.

    transformers >= 5.6 has no ``text_model.`` level in CLIPTextModel's state dict; older
    versions do. Both work: the original name always carries ``text_model.``. A CLIP-L
    ``text_projection`` some tools save is not used by SDXL and is skipped.
    """
    rules = [
        KeyRule(k if k.startswith("text_model.") else "text_model." + k, (k,))
        for k in diffusers_keys
    ]
    return KeyMap("text_encoder", prefix, rules, ignored_suffixes=("text_projection.weight",))


_OPEN_CLIP_LAYER = re.compile(r"^encoder\.layers\.(\d+)\.(.+)$")
_OPEN_CLIP_LAYER_PARTS = (
    ("layer_norm1.", "ln_1."),
    ("layer_norm2.", "ln_2."),
    ("self_attn.out_proj.", "attn.out_proj."),
    ("mlp.fc1.", "mlp.c_fc."),
    ("mlp.fc2.", "mlp.c_proj."),
)
_OPEN_CLIP_TOP = {
    "embeddings.token_embedding.weight": "token_embedding.weight",
    "embeddings.position_embedding.weight": "positional_embedding",
    "final_layer_norm.weight": "ln_final.weight",
    "final_layer_norm.bias": "ln_final.bias",
}


def open_clip_to_original(name: str) -> str:
    """transformers CLIPTextModelWithProjection name -> OpenCLIP name.

    q/k/v projections all map to the fused ``attn.in_proj_weight`` / ``in_proj_bias``.
    """
    inner = name.removeprefix("text_model.")
    if name == "text_projection.weight":
        return "text_projection"
    if inner in _OPEN_CLIP_TOP:
        return _OPEN_CLIP_TOP[inner]
    match = _OPEN_CLIP_LAYER.match(inner)
    if match is None:
        raise KeyError(f"no mapping for {name!r}")
    layer, rest = match.groups()
    head = f"transformer.resblocks.{layer}."
    attn = re.fullmatch(r"self_attn\.[qkv]_proj\.(weight|bias)", rest)
    if attn:
        return head + f"attn.in_proj_{attn.group(1)}"
    for ours, theirs in _OPEN_CLIP_LAYER_PARTS:
        if rest.startswith(ours):
            return head + theirs + rest[len(ours) :]
    raise KeyError(f"no mapping for {name!r}")


def open_clip_to_diffusers(name: str, wrapped: bool = True) -> tuple[str, ...]:
    """OpenCLIP name -> transformers name(s); ``in_proj_*`` gives the q, k, v names in order.

    ``wrapped``: the model's names carry ``text_model.`` (CLIPTextModelWithProjection does).
    """
    lead = "text_model." if wrapped else ""
    if name == "text_projection":
        return ("text_projection.weight",)
    for ours, theirs in _OPEN_CLIP_TOP.items():
        if name == theirs:
            return (lead + ours,)
    match = re.fullmatch(r"transformer\.resblocks\.(\d+)\.(.+)", name)
    if match is None:
        raise KeyError(f"no mapping for {name!r}")
    layer, rest = match.groups()
    head = f"{lead}encoder.layers.{layer}."
    fused = re.fullmatch(r"attn\.in_proj_(weight|bias)", rest)
    if fused:
        kind = fused.group(1)
        return tuple(f"{head}self_attn.{p}_proj.{kind}" for p in "qkv")
    for ours, theirs in _OPEN_CLIP_LAYER_PARTS:
        if rest.startswith(theirs):
            return (head + ours + rest[len(theirs) :],)
    raise KeyError(f"no mapping for {name!r}")


def open_clip_keymap(diffusers_keys: Iterable[str], prefix: str = CLIP_G_PREFIX) -> KeyMap:
    """KeyMap for transformers' CLIPTextModelWithProjection stored in OpenCLIP layout."""
    keys = list(diffusers_keys)
    wrapped = any(k.startswith("text_model.") for k in keys)
    rules: list[KeyRule] = []
    seen: set[str] = set()
    for key in keys:
        original = open_clip_to_original(key)
        if original in seen:
            continue
        seen.add(original)
        targets = open_clip_to_diffusers(original, wrapped)
        if len(targets) > 1:
            rules.append(KeyRule(original, targets, Transform.SPLIT))
        elif original == "text_projection":
            rules.append(KeyRule(original, targets, Transform.TRANSPOSE))
        else:
            rules.append(KeyRule(original, targets))
    return KeyMap("text_encoder_2", prefix, rules)
