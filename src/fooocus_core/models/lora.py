"""LoRAs merged into the loaded models' weights, and taken out again.

Fooocus bakes LoRAs into the weights (no adapter layers at sampling time):
``W <- W + sum_i weight_i * delta_i`` with ``delta = alpha / rank * up @ down`` (see
:class:`LoraPatch`), accumulated in float32 from the original weight and cast to the model's dtype
once. :class:`LoraPatcher` does this for one model set (a base model, or a refiner's UNet), keeps
the original of every parameter it changed and puts it back bit for bit when the set of LoRAs
changes, so a later task without LoRAs gets the plain model.

A LoRA with more than :data:`MISMATCH_LIMIT` keys that name nothing in the model is skipped as
a "model mismatch", as Fooocus does (e.g. an SD 1.5 LoRA, or an SDXL-base LoRA on the
SDXL refiner); the reason is in the :class:`LoraReport`.

Typical use, once per task (the engine holds one patcher per model set in a
:class:`LoraPatchers`)::

    files = [(LoraFile.from_path(p), w) for p, w in loras]
    update = patchers.for_models(models).set_loras(models, files)
    if update.text_encoders_changed:
        prompt_encoder.clear_cache()
    messages += update.messages
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from fooocus_core.models.lora_keys import (
    LORA_COMPONENTS,
    MISMATCH_LIMIT,
    Component,
    LoraError,
    LoraFile,
    LoraMatch,
    LoraPatch,
    LoraTarget,
    UnsupportedLoraFormat,
)

__all__ = [
    "LORA_COMPONENTS",
    "MISMATCH_LIMIT",
    "Component",
    "LoraError",
    "LoraFile",
    "LoraMatch",
    "LoraPatch",
    "LoraPatcher",
    "LoraPatchers",
    "LoraReport",
    "LoraTarget",
    "LoraUpdate",
    "UnsupportedLoraFormat",
]

log = logging.getLogger(__name__)

Status = Literal["applied", "mismatch", "zero_weight"]
_ParamKey = tuple[Component, str]
#: What was merged into one parameter: (file key, weight, module alias) per patch, in order.
_Signature = tuple[tuple[object, float, str], ...]
#: Per parameter, the patches to merge: (patch, weight, file key), in LoRA order.
_Plan = dict[_ParamKey, list[tuple[LoraPatch, float, tuple[object, ...]]]]


@dataclass(frozen=True)
class LoraReport:
    """What happened to one requested LoRA on one model set."""

    name: str
    weight: float
    #: "applied", "mismatch" (skipped: too many unmatched keys) or "zero_weight" (not read).
    status: Status
    #: Parameters this LoRA changed.
    patched: int = 0
    #: Keys naming modules the model does not have.
    unmatched: tuple[str, ...] = ()
    #: Keys for text encoders the model set does not have (a refiner), not applied.
    absent: int = 0
    #: Module aliases whose tensors do not fit the parameter's shape (not applied).
    shape_mismatches: tuple[str, ...] = ()
    #: Key layouts of the file ("kohya", "peft", "diffusers", "diff").
    layouts: tuple[str, ...] = ()
    #: A line for the task's messages when something was not applied, else None.
    message: str | None = None


@dataclass(frozen=True)
class LoraUpdate:
    """The result of :meth:`LoraPatcher.set_loras`."""

    #: Whether the requested set differed from the one applied before (False: nothing done).
    changed: bool
    #: Whether any text-encoder weight changed value: cached prompt encodings are stale.
    text_encoders_changed: bool
    reports: tuple[LoraReport, ...] = ()

    @property
    def messages(self) -> list[str]:
        """The lines worth showing the user (skipped LoRAs, weights that did not fit)."""
        return [r.message for r in self.reports if r.message]


def _components(models: Any) -> dict[Component, nn.Module]:
    """The patchable component modules of a model set (attributes named like the components)."""
    out: dict[Component, nn.Module] = {}
    for component in LORA_COMPONENTS:
        module = getattr(models, component, None)
        if module is not None:
            out[component] = module
    if "unet" not in out:
        raise TypeError(f"{type(models).__name__} has no 'unet': not a model set")
    return out


def _model_label(modules: dict[Component, nn.Module]) -> str:
    return "base model" if "text_encoder" in modules else "refiner"


def _examples(items: Sequence[str], count: int = 3) -> str:
    shown = ", ".join(repr(i) for i in items[:count])
    return shown + (", ..." if len(items) > count else "")


class LoraPatcher:
    """Applies a list of ``(LoraFile, weight)`` to one model set and undoes it.

    A model set is any object with a ``unet`` (and optionally ``text_encoder`` /
    ``text_encoder_2``) attribute: :class:`SDXLModels`, :class:`RefinerModels` or a wrapper
    around the same modules. The first :meth:`set_loras` binds the patcher to those modules (held
    weakly); it is what stays patched between calls, so always pass the same, long-lived modules.
    Only the parameters a LoRA touches are backed up (on the CPU when the model is on an
    accelerator): the size of those parameters in the model's dtype (about 4 GiB for a LoRA on
    every transformer layer of an fp16 SDXL UNet).
    """

    def __init__(self) -> None:
        self._bound: dict[Component, weakref.ReferenceType[nn.Module]] = {}
        self._active: tuple[tuple[tuple[object, ...], float], ...] = ()
        self._backup: dict[_ParamKey, Tensor] = {}
        self._signature: dict[_ParamKey, _Signature] = {}
        self._reports: tuple[LoraReport, ...] = ()

    # --- state --------------------------------------------------------------------------------

    @property
    def active(self) -> tuple[tuple[tuple[object, ...], float], ...]:
        """The applied set, as ``(LoraFile.key, weight)`` pairs in order."""
        return self._active

    @property
    def touched(self) -> frozenset[_ParamKey]:
        """``(component, parameter)`` of every parameter currently differing from the original."""
        return frozenset(self._backup)

    @property
    def reports(self) -> tuple[LoraReport, ...]:
        """The reports of the set now applied."""
        return self._reports

    def _reset(self) -> None:
        self._active = ()
        self._backup = {}
        self._signature = {}
        self._reports = ()

    # --- public API ---------------------------------------------------------------------------

    def set_loras(
        self,
        models: Any,
        loras: Sequence[tuple[LoraFile, float]],
        *,
        label: str | None = None,
    ) -> LoraUpdate:
        """Make ``models`` carry exactly ``loras`` (in order; weight 0 entries are ignored).

        A no-op (``changed`` False, nothing read) when the same files in the same state with the
        same weights are applied already. Otherwise every LoRA is read and matched first (a
        missing file or an unsupported format raises before any weight changes), then each
        affected parameter is rebuilt from its original: restored where no LoRA touches it
        any more. ``label`` names the model set in messages ("base model" / "refiner" by
        default). On an error while writing weights, the original weights are restored.
        """
        entries = [(lora, float(weight)) for lora, weight in loras]
        wanted = tuple((lora.key, weight) for lora, weight in entries)
        modules = _components(models)
        bound = {c: ref() for c, ref in self._bound.items()}
        if bound != modules:  # compared by identity (modules do not define ==)
            if self._backup:
                self._restore_all({c: m for c, m in bound.items() if m is not None})
            self._reset()
            self._bound = {c: weakref.ref(m) for c, m in modules.items()}
        if wanted == self._active:
            return LoraUpdate(False, False, self._reports)

        target = LoraTarget(modules)
        name = label if label is not None else _model_label(modules)
        plan, reports = self._plan(target, entries, name)
        try:
            te_changed = self._apply(target, plan)
        except BaseException:
            self._restore_all(modules)
            self._reset()
            raise
        self._active = wanted
        self._reports = tuple(reports)
        return LoraUpdate(True, te_changed, self._reports)

    def restore(self, models: Any) -> LoraUpdate:
        """Take every LoRA out of ``models`` (same as ``set_loras(models, [])``)."""
        return self.set_loras(models, [])

    # --- internals ----------------------------------------------------------------------------

    def _plan(
        self, target: LoraTarget, entries: Sequence[tuple[LoraFile, float]], label: str
    ) -> tuple[_Plan, list[LoraReport]]:
        """Read and match every LoRA; the patches per parameter and one report per LoRA."""
        plan: _Plan = {}
        reports: list[LoraReport] = []
        for lora, weight in entries:
            if weight == 0.0:
                reports.append(LoraReport(lora.name, weight, "zero_weight"))
                continue
            match = target.match(lora)
            if match.mismatched:
                message = (
                    f"LoRA {lora.name!r} does not fit the {label} ({len(match.unmatched)} of "
                    f"{match.total} keys unmatched, e.g. {_examples(match.unmatched)}): skipped."
                )
                log.warning(message)
                reports.append(
                    LoraReport(
                        lora.name,
                        weight,
                        "mismatch",
                        unmatched=match.unmatched,
                        absent=len(match.absent),
                        layouts=match.layouts,
                        message=message,
                    )
                )
                continue
            bad: list[str] = []
            patched: set[_ParamKey] = set()
            for patch in match.patches:
                shape = target.shape(patch.component, patch.parameter)
                if shape is None or not patch.fits(shape):
                    bad.append(patch.source)
                    continue
                key = (patch.component, patch.parameter)
                plan.setdefault(key, []).append((patch, weight, lora.key))
                patched.add(key)
            message = None
            if bad:
                message = (
                    f"LoRA {lora.name!r}: {len(bad)} weights do not fit the {label} and were "
                    f"not applied (e.g. {_examples(bad)})."
                )
                log.warning(message)
            if match.unmatched:
                log.info(
                    "LoRA %r on the %s: %d unmatched keys ignored: %s",
                    lora.name,
                    label,
                    len(match.unmatched),
                    list(match.unmatched),
                )
            log.info(
                "LoRA %r applied to the %s at weight %s: %d parameters",
                lora.name,
                label,
                weight,
                len(patched),
            )
            reports.append(
                LoraReport(
                    lora.name,
                    weight,
                    "applied",
                    patched=len(patched),
                    unmatched=match.unmatched,
                    absent=len(match.absent),
                    shape_mismatches=tuple(bad),
                    layouts=match.layouts,
                    message=message,
                )
            )
        return plan, reports

    def _apply(self, target: LoraTarget, plan: _Plan) -> bool:
        """Rebuild every parameter whose patch list changed; True if a text encoder changed."""
        wanted: dict[_ParamKey, _Signature] = {
            key: tuple((file_key, weight, patch.source) for patch, weight, file_key in entries)
            for key, entries in plan.items()
        }
        changed = [
            key
            for key in (*self._signature, *(k for k in wanted if k not in self._signature))
            if self._signature.get(key) != wanted.get(key)
        ]
        parameters = _Parameters(target.modules)
        with torch.no_grad():
            for key in changed:
                param = parameters.get(key)
                if key not in wanted:
                    param.copy_(self._backup.pop(key))
                    del self._signature[key]
                    continue
                original = self._backup.get(key)
                if original is None:  # first change: back up; compute from the live value
                    self._backup[key] = _save(param)
                    original = param.detach()
                merged = original.to(device=param.device, dtype=torch.float32, copy=True)
                for patch, weight, _ in plan[key]:
                    merged.add_(patch.delta(param.shape, param.device), alpha=weight)
                param.copy_(merged)
                self._signature[key] = wanted[key]
        return any(component != "unet" for component, _ in changed)

    def _restore_all(self, modules: dict[Component, nn.Module]) -> None:
        """Put every backed-up original back (into the components still alive)."""
        parameters = _Parameters(modules)
        with torch.no_grad():
            for key, original in self._backup.items():
                if key[0] in modules:
                    parameters.get(key).copy_(original)
        self._backup = {}
        self._signature = {}


def _save(param: Tensor) -> Tensor:
    """A copy of a parameter's value: on the CPU for accelerator-resident models."""
    if param.device.type == "cpu":
        return param.detach().clone()
    return param.detach().to("cpu", copy=True)


class _Parameters:
    """Parameter lookup by ``(component, name)``, built per component on first use."""

    def __init__(self, modules: dict[Component, nn.Module]) -> None:
        self._modules = modules
        self._cache: dict[Component, dict[str, nn.Parameter]] = {}

    def get(self, key: _ParamKey) -> nn.Parameter:
        component, name = key
        table = self._cache.get(component)
        if table is None:
            table = dict(self._modules[component].named_parameters())
            self._cache[component] = table
        return table[name]


class LoraPatchers:
    """One :class:`LoraPatcher` per model set, keyed by its UNet module and gone with it.

    Any object holding the same UNet (``RefinerModels`` or a per-task wrapper) gets the same
    patcher, so patches are never applied twice.
    """

    def __init__(self) -> None:
        self._patchers: weakref.WeakKeyDictionary[nn.Module, LoraPatcher] = (
            weakref.WeakKeyDictionary()
        )

    def for_models(self, models: Any) -> LoraPatcher:
        """The patcher of ``models``, created on first use."""
        unet = _components(models)["unet"]
        patcher = self._patchers.get(unet)
        if patcher is None:
            patcher = self._patchers[unet] = LoraPatcher()
        return patcher
