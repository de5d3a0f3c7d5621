"""Which LoRAs a task applies, in Fooocus' order."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import PurePosixPath

from fooocus_core.task import LoraSpec

#: Most LoRAs a task applies besides its performance LoRA (Fooocus' default_max_lora_number).
MAX_LORAS = 5
NO_LORA = "None"


def _stem(name: str) -> str:
    return PurePosixPath(name).stem


def select_loras(
    requested: Sequence[LoraSpec],
    inline: Sequence[tuple[str, float]],
    available: Sequence[str],
    performance: LoraSpec | None = None,
    limit: int = MAX_LORAS,
) -> tuple[list[LoraSpec], list[str]]:
    """The LoRAs to apply and notes for the user.

    Enabled request LoRAs (not "None") come first, then the prompt's ``<lora:NAME:WEIGHT>`` tags,
    each matched to an installed file by file name or stem; a file already chosen is not added
    twice. The list is cut to ``limit``, then the performance mode's LoRA is appended (it is
    never taken from the prompt or the request, so it applies once at the mode's weight).
    """
    skip = {performance.model_name} if performance is not None else set()
    chosen: list[LoraSpec] = []
    notes: list[str] = []
    for lora in requested:
        if lora.enabled and lora.model_name != NO_LORA and lora.model_name not in skip:
            chosen.append(lora)
    names = {lora.model_name for lora in chosen}
    for tag, weight in inline:
        match = next((f for f in available if tag in (f, _stem(f))), None)
        if match is None:
            notes.append(f"LoRA {tag!r} from the prompt is not installed; skipped.")
        elif match not in names and match not in skip:
            chosen.append(LoraSpec(model_name=match, weight=weight))
            names.add(match)
    if len(chosen) > limit:
        dropped = ", ".join(repr(lora.model_name) for lora in chosen[limit:])
        notes.append(f"At most {limit} LoRAs apply; skipped {dropped}.")
        chosen = chosen[:limit]
    if performance is not None:
        chosen.append(performance)
    return chosen, notes
