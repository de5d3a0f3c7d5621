"""Reading LoRA files and finding the model parameters their keys name.

A LoRA file holds, per patched module, a few tensors under ``<module alias><suffix>``. The
aliases differ by the tool that wrote the file:

* kohya / A1111: ``lora_unet_<path>`` with every ``.`` of the module path replaced by ``_``,
  where ``<path>`` is either the original SGM/ldm path (``input_blocks_4_1_transformer_blocks_0_
  attn1_to_q``) or the diffusers one (``down_blocks_1_attentions_0_...``); ``lora_te1_`` /
  ``lora_te_`` (CLIP-L) and ``lora_te2_`` (CLIP-G) followed by the transformers path
  (``text_model_encoder_layers_0_self_attn_q_proj``);
* diffusers / peft: ``unet.<diffusers path>``, ``text_encoder.<path>``, ``text_encoder_2.<path>``
  (with or without ``text_model.``), the attention-processor form ``<path>.processor.to_q`` of old
  diffusers files, and ``diffusion_model.<original path>``.

Underscore-joined names are ambiguous (module names contain underscores), so they are not parsed:
:class:`LoraTarget` builds, from the loaded models themselves, a table from every alias of every
module to the module's parameter name (through :mod:`fooocus_core.models.keys` for the original
UNet paths), and a key either is in that table or does not fit the model.

Suffixes understood (per module): ``.lora_up.weight`` / ``.lora_down.weight`` / ``.lora_mid.weight``
(kohya, LoCon), ``.lora_B.weight`` / ``.lora_A.weight`` / ``.lora_B.bias`` (peft),
``.lora.up.weight`` / ``.lora.down.weight``, ``.lora_linear_layer.up.weight`` / ``.down.weight``
and ``_lora.up.weight`` / ``_lora.down.weight`` (older diffusers), ``.alpha``, and full-weight
differences ``.diff`` / ``.diff_b`` / ``.w_norm`` / ``.b_norm``. LoHa, LoKr, GLoRA, DoRA and OFT
files are refused with :class:`UnsupportedLoraFormat`.
"""

from __future__ import annotations

import enum
import json
import logging
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import torch
from torch import Tensor, nn

from fooocus_core.errors import EngineError
from fooocus_core.models import keys as K
from fooocus_core.models.checkpoint import ModelFileNotFound, read_state_dict

log = logging.getLogger(__name__)

Component = Literal["unet", "text_encoder", "text_encoder_2"]
#: The components a LoRA can patch, in the order they are reported.
LORA_COMPONENTS: tuple[Component, ...] = ("unet", "text_encoder", "text_encoder_2")
#: Fooocus skips a LoRA with more unmatched keys than this as a "model mismatch".
MISMATCH_LIMIT = 12
#: Safetensors metadata key under which diffusers stores the peft ``LoraConfig`` of a LoRA.
PEFT_METADATA_KEY = "lora_adapter_metadata"


class LoraError(EngineError):
    """A LoRA file cannot be used."""


class UnsupportedLoraFormat(LoraError):
    """The file is a LyCORIS / peft variant other than plain LoRA (LoHa, LoKr, ...)."""

    def __init__(self, name: str, format_name: str, examples: Iterable[str]) -> None:
        self.name = name
        self.format_name = format_name
        self.examples = list(examples)[:3]
        super().__init__(
            f"LoRA {name!r} is in the {format_name} format, which is not supported; only plain "
            f"LoRA / LoCon files (kohya, diffusers or peft keys) and full-weight 'diff' patches "
            f"are (keys such as {', '.join(self.examples)})"
        )


class Role(enum.Enum):
    """What one tensor of a LoRA module is."""

    UP = "up"
    DOWN = "down"
    MID = "mid"
    ALPHA = "alpha"
    #: peft ``lora_B.bias``: a bias difference scaled like the low-rank product.
    UP_BIAS = "up_bias"
    DIFF = "diff"
    DIFF_BIAS = "diff_bias"


#: (suffix, role, layout name); no suffix is the end of another one.
_SUFFIXES: tuple[tuple[str, Role, str], ...] = (
    (".lora_up.weight", Role.UP, "kohya"),
    (".lora_down.weight", Role.DOWN, "kohya"),
    (".lora_mid.weight", Role.MID, "kohya"),
    (".lora_B.weight", Role.UP, "peft"),
    (".lora_A.weight", Role.DOWN, "peft"),
    (".lora_B.bias", Role.UP_BIAS, "peft"),
    (".lora.up.weight", Role.UP, "diffusers"),
    (".lora.down.weight", Role.DOWN, "diffusers"),
    (".lora_linear_layer.up.weight", Role.UP, "diffusers"),
    (".lora_linear_layer.down.weight", Role.DOWN, "diffusers"),
    ("_lora.up.weight", Role.UP, "diffusers"),
    ("_lora.down.weight", Role.DOWN, "diffusers"),
    (".alpha", Role.ALPHA, ""),
    (".diff", Role.DIFF, "diff"),
    (".diff_b", Role.DIFF_BIAS, "diff"),
    (".w_norm", Role.DIFF, "diff"),
    (".b_norm", Role.DIFF_BIAS, "diff"),
)

_LOHA = "LoHa (LyCORIS Hadamard product)"
_LOKR = "LoKr (LyCORIS Kronecker product)"
_GLORA = "GLoRA (LyCORIS generalized LoRA)"
_DORA = "DoRA (weight-decomposed LoRA)"
_OFT = "OFT / BOFT (orthogonal fine-tuning)"
_IA3 = "IA3"
#: (key ending or infix, format) of the variants we refuse.
_REFUSED: tuple[tuple[str, str], ...] = (
    (".hada_w1_a", _LOHA),
    (".hada_w1_b", _LOHA),
    (".hada_w2_a", _LOHA),
    (".hada_w2_b", _LOHA),
    (".hada_t1", _LOHA),
    (".hada_t2", _LOHA),
    (".lokr_w1", _LOKR),
    (".lokr_w2", _LOKR),
    (".lokr_w1_a", _LOKR),
    (".lokr_w1_b", _LOKR),
    (".lokr_w2_a", _LOKR),
    (".lokr_w2_b", _LOKR),
    (".lokr_t2", _LOKR),
    (".a1.weight", _GLORA),
    (".a2.weight", _GLORA),
    (".b1.weight", _GLORA),
    (".b2.weight", _GLORA),
    (".dora_scale", _DORA),
    ("lora_magnitude_vector", _DORA),
    (".oft_blocks", _OFT),
    (".oft_diag", _OFT),
    (".oft_r.weight", _OFT),
    (".ia3_l", _IA3),
)

#: Alias prefixes that name a text-encoder module (whether or not the target has one).
_TEXT_ENCODER_PREFIXES: tuple[tuple[str, Component], ...] = (
    ("lora_te2_", "text_encoder_2"),
    ("lora_te1_", "text_encoder"),
    ("lora_te_", "text_encoder"),
    ("text_encoder_2.", "text_encoder_2"),
    ("text_encoder.", "text_encoder"),
)


def split_key(key: str) -> tuple[str, Role, str] | None:
    """``(module alias, role, layout)`` of a LoRA file key, or None for an unknown suffix."""
    for suffix, role, layout in _SUFFIXES:
        if key.endswith(suffix) and len(key) > len(suffix):
            return key[: -len(suffix)], role, layout
    return None


def refused_format(keys: Iterable[str]) -> tuple[str, list[str]] | None:
    """The unsupported variant (and example keys) a file's keys reveal, if any."""
    found: dict[str, list[str]] = {}
    for key in keys:
        for marker, name in _REFUSED:
            if key.endswith(marker) or (marker == "lora_magnitude_vector" and marker in key):
                found.setdefault(name, []).append(key)
                break
    if not found:
        return None
    name, examples = max(found.items(), key=lambda item: len(item[1]))
    return name, examples


def text_encoder_of(alias: str) -> Component | None:
    """The text encoder an alias names by its prefix (None for UNet or unknown aliases)."""
    for prefix, component in _TEXT_ENCODER_PREFIXES:
        if alias.startswith(prefix):
            return component
    return None


# --------------------------------------------------------------------------------------------
# Files


class LoraFile:
    """A LoRA: a file on disk (read when needed, never cached) or tensors held in memory.

    Two handles are equal when they name the same file in the same state (path, size and
    modification time) or are the same in-memory object; :class:`LoraPatcher` compares sets of
    LoRAs through this, without reading them.
    """

    def __init__(
        self,
        name: str,
        path: Path | None = None,
        tensors: Mapping[str, Tensor] | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        if (path is None) == (tensors is None):
            raise ValueError("a LoraFile has either a path or tensors")
        self.name = name
        self.path = path
        self._tensors = dict(tensors) if tensors is not None else None
        self._metadata = dict(metadata or {})
        if path is not None:
            stat = path.stat()
            self.key: tuple[object, ...] = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
        else:
            self.key = ("memory", id(self))

    @classmethod
    def from_path(cls, path: str | os.PathLike[str], name: str | None = None) -> LoraFile:
        """A handle on a ``.safetensors`` / ``.bin`` / ``.pth`` / ``.pt`` / ``.ckpt`` LoRA file;
        ``name`` defaults to the file stem. Raises :class:`ModelFileNotFound` if it is missing.
        """
        path = Path(path)
        if not path.is_file():
            raise ModelFileNotFound(path)
        return cls(name if name is not None else path.stem, path=path)

    @classmethod
    def from_tensors(
        cls,
        name: str,
        tensors: Mapping[str, Tensor],
        metadata: Mapping[str, str] | None = None,
    ) -> LoraFile:
        """A LoRA held in memory (keys and tensors exactly as a file would hold them)."""
        return cls(name, tensors=tensors, metadata=metadata)

    def read(self) -> tuple[dict[str, Tensor], dict[str, str]]:
        """All tensors (on the CPU) and the safetensors metadata."""
        if self._tensors is not None:
            return dict(self._tensors), dict(self._metadata)
        assert self.path is not None
        return read_state_dict(self.path)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LoraFile) and other.key == self.key

    def __hash__(self) -> int:
        return hash(self.key)

    def __repr__(self) -> str:
        return f"LoraFile({self.name!r})"


# --------------------------------------------------------------------------------------------
# Patches


@dataclass(frozen=True, eq=False)
class LoraPatch:
    """One parameter's change from one LoRA, before the user's weight.

    Low-rank: ``delta = scale * up @ down`` (``up [out, r(,1,1)]``, ``down [r, in(, kh, kw)]``;
    with ``mid [r, r, kh, kw]`` (LoCon Tucker) the product runs through it), reshaped to the
    parameter's shape. Full difference: ``delta = scale * diff``.
    """

    component: Component
    parameter: str
    #: The file's module alias the patch came from (for messages).
    source: str
    scale: float = 1.0
    up: Tensor | None = None
    down: Tensor | None = None
    mid: Tensor | None = None
    diff: Tensor | None = None
    #: The file's alpha (None when it has none) and the rank, for reports.
    alpha: float | None = None
    rank: int | None = None

    @property
    def numel(self) -> int:
        """How many values the delta has (checked against the parameter before merging)."""
        if self.diff is not None:
            return self.diff.numel()
        assert self.up is not None and self.down is not None
        inner = math.prod(self.down.shape[1:])
        if self.mid is not None:
            inner = self.down.shape[1] * math.prod(self.mid.shape[2:])
        return self.up.shape[0] * inner

    def fits(self, shape: torch.Size) -> bool:
        """Whether the delta can be added to a parameter of this shape."""
        if self.diff is not None:
            return self.diff.numel() == math.prod(shape)
        assert self.up is not None and self.down is not None
        rank = self.up.shape[1] if self.up.ndim >= 2 else -1
        inner_rank = self.mid.shape[0] if self.mid is not None else self.down.shape[0]
        ranks_ok = rank == inner_rank and (
            self.mid is None or (self.mid.ndim == 4 and self.mid.shape[1] == self.down.shape[0])
        )
        return ranks_ok and self.up.shape[0] == shape[0] and self.numel == math.prod(shape)

    def delta(self, shape: torch.Size, device: torch.device | str | None = None) -> Tensor:
        """The float32 delta (including ``scale``, not the user's weight) in ``shape``."""
        if self.diff is not None:
            diff = self.diff.to(device=device, dtype=torch.float32)
            return (diff * self.scale).reshape(shape)
        assert self.up is not None and self.down is not None
        up = self.up.to(device=device, dtype=torch.float32).flatten(1)
        down = self.down.to(device=device, dtype=torch.float32).flatten(1)
        if self.mid is not None:
            mid = self.mid.to(device=device, dtype=torch.float32)
            product = torch.einsum("oa,abhw,bc->ochw", up, mid, down)
        else:
            product = up @ down
        return (product * self.scale).reshape(shape)


@dataclass(frozen=True)
class LoraMatch:
    """A LoRA file read against one model set."""

    name: str
    patches: tuple[LoraPatch, ...]
    #: File keys that name no module of the model set (Fooocus' "unmatched keys").
    unmatched: tuple[str, ...]
    #: Keys for a text encoder the model set does not have (a refiner's UNet alone): not
    #: applied and not counted as unmatched.
    absent: tuple[str, ...] = ()
    #: Key layouts seen: "kohya", "peft", "diffusers", "diff".
    layouts: tuple[str, ...] = ()
    #: How many keys the file has.
    total: int = 0

    @property
    def mismatched(self) -> bool:
        """More than :data:`MISMATCH_LIMIT` unmatched keys: Fooocus skips such a LoRA."""
        return len(self.unmatched) > MISMATCH_LIMIT

    @property
    def components(self) -> frozenset[Component]:
        """The components the patches touch."""
        return frozenset(p.component for p in self.patches)


# --------------------------------------------------------------------------------------------
# Alias tables


def _attention_processor_alias(module: str) -> str | None:
    """Old diffusers attention-processor name of an attention projection, else None:
    ``...attn1.to_q`` -> ``...attn1.processor.to_q``, ``...to_out.0`` -> ``...processor.to_out``.
    """
    match = re.fullmatch(r"(.*\.attn\d)\.(to_q|to_k|to_v|to_out\.0)", module)
    if match is None:
        return None
    return f"{match.group(1)}.processor.{match.group(2).removesuffix('.0')}"


def unet_aliases(unet: nn.Module) -> dict[str, str]:
    """Every LoRA alias of every UNet module with a weight -> the module's diffusers path."""
    names = [n for n, _ in unet.named_parameters()]
    keymap = K.unet_keymap(cast(Mapping[str, Any], unet.config), names, prefix="")
    out: dict[str, str] = {}
    for rule in keymap.rules:
        name = rule.diffusers[0]
        if not name.endswith(".weight"):
            continue
        module = name[: -len(".weight")]
        original = rule.original[: -len(".weight")]
        aliases = [
            "lora_unet_" + module.replace(".", "_"),
            "lora_unet_" + original.replace(".", "_"),
            "unet." + module,
            module,
            "diffusion_model." + original,
        ]
        processor = _attention_processor_alias(module)
        if processor is not None:
            aliases += ["unet." + processor, processor]
        for alias in aliases:
            out.setdefault(alias, module)
    return out


def text_encoder_aliases(model: nn.Module, component: Component) -> dict[str, str]:
    """Every LoRA alias of a text encoder's modules -> the module's path in ``model``.

    transformers' names (with or without the ``text_model.`` level, which CLIPTextModel lost in
    transformers 5.6) are brought to the classic ``text_model.encoder.layers.N...`` form.
    """
    lora_prefixes = ("lora_te2_",) if component == "text_encoder_2" else ("lora_te1_", "lora_te_")
    out: dict[str, str] = {}
    for name, _ in model.named_parameters():
        if not name.endswith(".weight"):
            continue
        module = name[: -len(".weight")]
        classic = (
            module
            if module.startswith(("text_model.", "text_projection"))
            else ("text_model." + module)
        )
        aliases = [p + classic.replace(".", "_") for p in lora_prefixes]
        aliases += [f"{component}.{classic}", f"{component}.{classic.removeprefix('text_model.')}"]
        for alias in aliases:
            out.setdefault(alias, module)
    return out


class LoraTarget:
    """The modules of one model set a LoRA can patch, and the aliases that name them.

    ``modules`` maps component names to models: the base (``unet``, ``text_encoder``,
    ``text_encoder_2``) or a refiner (``unet`` only). Keys for a text encoder the target lacks
    are reported as ``absent``, not unmatched: Fooocus builds a refiner's key map before it drops
    the refiner's CLIP, so for an SDXL base used as refiner they count as matched. (On an SDXL
    refiner checkpoint Fooocus would count them as unmatched, but the UNet keys of a LoRA made
    for the base do not fit that refiner either, so the LoRA is skipped all the same.)
    """

    def __init__(self, modules: Mapping[Component, nn.Module]) -> None:
        unknown = set(modules) - set(LORA_COMPONENTS)
        if unknown:
            raise ValueError(f"unknown components {sorted(unknown)}")
        self.modules: dict[Component, nn.Module] = dict(modules)
        self.aliases: dict[str, tuple[Component, str]] = {}
        ambiguous: set[str] = set()
        for component, model in self.modules.items():
            table = (
                unet_aliases(model)
                if component == "unet"
                else text_encoder_aliases(model, component)
            )
            for alias, module in table.items():
                if alias in self.aliases and self.aliases[alias] != (component, module):
                    ambiguous.add(alias)
                self.aliases.setdefault(alias, (component, module))
        for alias in ambiguous:
            del self.aliases[alias]
        #: Aliases that named two different modules (dropped; empty for SDXL).
        self.ambiguous = frozenset(ambiguous)
        self._shapes: dict[tuple[Component, str], torch.Size] = {
            (component, name): param.shape
            for component, model in self.modules.items()
            for name, param in model.named_parameters()
        }

    @classmethod
    def of(cls, models: Any) -> LoraTarget:
        """The target for an :class:`SDXLModels` (UNet and both text encoders) or a
        :class:`RefinerModels` (UNet only), or any object with those attributes.
        """
        modules: dict[Component, nn.Module] = {}
        for component in LORA_COMPONENTS:
            model = getattr(models, component, None)
            if model is not None:
                modules[component] = model
        return cls(modules)

    def resolve(self, alias: str) -> tuple[Component, str] | None:
        """``(component, module path)`` an alias names, or None."""
        return self.aliases.get(alias)

    def shape(self, component: Component, parameter: str) -> torch.Size | None:
        """The shape of a parameter of the target (None if it has no such parameter)."""
        return self._shapes.get((component, parameter))

    def match(self, lora: LoraFile) -> LoraMatch:
        """Read ``lora`` and turn its keys into patches for this target's parameters.

        Raises :class:`UnsupportedLoraFormat` for LoHa / LoKr / GLoRA / DoRA / OFT files.
        """
        tensors, metadata = lora.read()
        return self.match_tensors(lora.name, tensors, metadata)

    def match_tensors(
        self, name: str, tensors: Mapping[str, Tensor], metadata: Mapping[str, str] | None = None
    ) -> LoraMatch:
        """:meth:`match` for tensors already read."""
        refused = refused_format(tensors)
        if refused is not None:
            raise UnsupportedLoraFormat(name, *refused)
        peft = _peft_configs(name, metadata or {})
        groups: dict[str, dict[Role, str]] = {}
        layouts: set[str] = set()
        unmatched: list[str] = []
        absent: list[str] = []
        for key in tensors:
            parts = split_key(key)
            if parts is None:
                unmatched.append(key)
                continue
            alias, role, layout = parts
            if self.resolve(alias) is None:
                component = text_encoder_of(alias)
                if component is not None and component not in self.modules:
                    absent.append(key)
                else:
                    unmatched.append(key)
                continue
            group = groups.setdefault(alias, {})
            if role in group:  # the same module written in two layouts
                unmatched.append(key)
                continue
            group[role] = key
            if layout:
                layouts.add(layout)
        patches: list[LoraPatch] = []
        for alias, group in groups.items():
            made, leftover = self._patches(alias, group, tensors, peft)
            patches += made
            unmatched += leftover
        return LoraMatch(
            name=name,
            patches=tuple(patches),
            unmatched=tuple(unmatched),
            absent=tuple(absent),
            layouts=tuple(sorted(layouts)),
            total=len(tensors),
        )

    def _patches(
        self,
        alias: str,
        group: dict[Role, str],
        tensors: Mapping[str, Tensor],
        peft: Mapping[str, dict[str, Any]],
    ) -> tuple[list[LoraPatch], list[str]]:
        """Patches of one module alias, and the keys that could not be used."""
        resolved = self.resolve(alias)
        assert resolved is not None
        component, module = resolved
        used: set[str] = set()
        patches: list[LoraPatch] = []
        alpha: float | None = None
        if Role.ALPHA in group:
            alpha = float(tensors[group[Role.ALPHA]].float().item())
            used.add(group[Role.ALPHA])
        scale = 1.0
        if Role.UP in group and Role.DOWN in group:
            up, down = tensors[group[Role.UP]], tensors[group[Role.DOWN]]
            mid = tensors[group[Role.MID]] if Role.MID in group else None
            rank = int(down.shape[0])
            if alpha is not None:
                scale = alpha / rank
            elif group[Role.UP].endswith(".lora_B.weight"):
                scale = _peft_scale(peft.get(component), alias, component, rank)
            patches.append(
                LoraPatch(
                    component,
                    module + ".weight",
                    alias,
                    scale=scale,
                    up=up,
                    down=down,
                    mid=mid,
                    alpha=alpha,
                    rank=rank,
                )
            )
            used.update(group[r] for r in (Role.UP, Role.DOWN, Role.MID) if r in group)
            if Role.UP_BIAS in group:
                patches.append(
                    LoraPatch(
                        component,
                        module + ".bias",
                        alias,
                        scale=scale,
                        diff=tensors[group[Role.UP_BIAS]],
                    )
                )
                used.add(group[Role.UP_BIAS])
        if Role.DIFF in group:
            patches.append(
                LoraPatch(component, module + ".weight", alias, diff=tensors[group[Role.DIFF]])
            )
            used.add(group[Role.DIFF])
        if Role.DIFF_BIAS in group:
            patches.append(
                LoraPatch(component, module + ".bias", alias, diff=tensors[group[Role.DIFF_BIAS]])
            )
            used.add(group[Role.DIFF_BIAS])
        if not patches and used == set(group.values()):
            return [], []  # an alpha alone: harmless, counted as matched (as in Fooocus)
        return patches, [k for k in group.values() if k not in used]


# --------------------------------------------------------------------------------------------
# peft adapter configs stored by diffusers


def _peft_configs(name: str, metadata: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """Per-component peft ``LoraConfig`` fields from diffusers' ``lora_adapter_metadata``
    (``{"unet.r": 4, "unet.lora_alpha": 8, ...}``); empty without it.
    """
    raw = metadata.get(PEFT_METADATA_KEY)
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except json.JSONDecodeError:
        log.warning("LoRA %r: unreadable %s metadata ignored", name, PEFT_METADATA_KEY)
        return {}
    if not isinstance(data, dict):
        return {}
    out: dict[str, dict[str, Any]] = {}
    for key, value in data.items():
        component, _, field_name = str(key).partition(".")
        if field_name:
            out.setdefault(component, {})[field_name] = value
    for component, config in out.items():
        if config.get("use_dora"):
            raise UnsupportedLoraFormat(name, _DORA, [f"{component}.use_dora"])
    return out


def _pattern_value(patterns: Any, module: str) -> Any:
    """peft's ``rank_pattern`` / ``alpha_pattern`` lookup: the first pattern that matches the
    end of the module name (at a ``.`` boundary), else None.
    """
    if not isinstance(patterns, dict):
        return None
    for pattern, value in patterns.items():
        try:
            if re.fullmatch(rf"(?:.*\.)?(?:{pattern})", module):
                return value
        except re.error:
            if module == pattern or module.endswith("." + pattern):
                return value
    return None


def _peft_scale(config: dict[str, Any] | None, alias: str, component: str, rank: int) -> float:
    """``lora_alpha / r`` (``/ sqrt(r)`` with rsLoRA) of a peft module; 1.0 without a config
    (peft's and diffusers' convention when no alpha is stored: alpha = rank).
    """
    if not config:
        return 1.0
    module = alias.removeprefix(component + ".")
    alpha = _pattern_value(config.get("alpha_pattern"), module)
    if alpha is None:
        alpha = config.get("lora_alpha", rank)
    if config.get("use_rslora"):
        return float(alpha) / math.sqrt(rank)
    return float(alpha) / rank
