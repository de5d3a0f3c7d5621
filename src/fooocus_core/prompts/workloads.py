"""Per-image prompt workloads: Fooocus' ``process_prompt`` text steps (spec §1.1 steps 1–9, 12).

:func:`parse_prompt` does the per-task part (lines, inline LoRA tags, cleanup, ``Fooocus V2``);
:func:`build_workloads` the per-image part (wildcards, arrays, styles, negatives, top-k). The
GPT-2 expansion (step 10) is not done here: :attr:`PromptWorkloads.use_expansion` says whether
the pipeline should run it, and :func:`with_expansion` appends its result.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import msgspec

from fooocus_core.prompts.styles import FOOOCUS_V2, RANDOM_STYLE, StyleLibrary
from fooocus_core.prompts.text import (
    apply_arrays,
    extract_lora_tags,
    remove_empty,
    split_prompt_lines,
)
from fooocus_core.prompts.wildcards import WildcardLibrary


class ParsedPrompt(msgspec.Struct, frozen=True, kw_only=True):
    """The task-level prompt parts (the same for every image of the task)."""

    #: Main positive line, LoRA tags removed and cleaned up.
    prompt: str
    extra_prompts: list[str]
    negative_prompt: str
    extra_negative_prompts: list[str]
    #: Inline ``<lora:NAME:WEIGHT>`` tags of the main line, as ``(NAME, WEIGHT)``.
    loras: list[tuple[str, float]]
    #: Selected styles without ``Fooocus V2`` (``Random Style`` still unresolved).
    styles: list[str]
    #: ``Fooocus V2`` was among the selected styles.
    expansion_requested: bool
    #: Expansion requested and the main line was not empty (checked before LoRA tag removal).
    use_expansion: bool


class PromptWorkloads(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the text encoder needs for one image, plus the texts for the log/metadata."""

    task_seed: int
    image_index: int
    #: Main prompt after wildcards and arrays (the expansion's input).
    task_prompt: str
    task_negative_prompt: str
    positive: list[str]
    negative: list[str]
    #: Workloads whose pooled vectors are summed (all positive ones before any expansion).
    positive_top_k: int
    negative_top_k: int
    log_positive_prompt: str
    log_negative_prompt: str
    #: Styles applied, in order, with ``Random Style`` replaced by the style it picked.
    styles: list[str]
    loras: list[tuple[str, float]]
    expansion_requested: bool
    use_expansion: bool
    #: The expansion text once :func:`with_expansion` has added it, else ``""``.
    expansion: str = ""


def parse_prompt(prompt: str, negative_prompt: str, styles: Sequence[str]) -> ParsedPrompt:
    """Split prompts into lines, extract inline LoRA tags and pull out ``Fooocus V2``."""
    main, extra = split_prompt_lines(prompt)
    negative, extra_negative = split_prompt_lines(negative_prompt)
    expansion_requested = FOOOCUS_V2 in styles
    use_expansion = expansion_requested and main != ""
    loras, main = extract_lora_tags(main)
    return ParsedPrompt(
        prompt=main,
        extra_prompts=extra,
        negative_prompt=negative,
        extra_negative_prompts=extra_negative,
        loras=loras,
        styles=[name for name in styles if name != FOOOCUS_V2],
        expansion_requested=expansion_requested,
        use_expansion=use_expansion,
    )


def build_workloads(
    parsed: ParsedPrompt,
    task_seed: int,
    image_index: int,
    read_wildcards_in_order: bool,
    style_library: StyleLibrary,
    wildcards: WildcardLibrary | Sequence[str | Path],
) -> PromptWorkloads:
    """One image's positive/negative workloads from a parsed prompt.

    The task's ``random.Random(task_seed)`` drives, in this order: wildcards of the main prompt,
    of the negative, of each extra positive line, of each extra negative line, then each
    ``Random Style``. Unknown style names raise ``ValueError``. ``wildcards`` is a library or
    the folders to build one from (later folders override earlier ones).
    """
    library = wildcards if isinstance(wildcards, WildcardLibrary) else WildcardLibrary(wildcards)
    rng = random.Random(task_seed)

    def wild(text: str) -> str:
        return library.apply(text, rng, image_index, read_wildcards_in_order)

    task_prompt = apply_arrays(wild(parsed.prompt), image_index)
    task_negative = wild(parsed.negative_prompt)
    extra_positive = [wild(text) for text in parsed.extra_prompts]
    extra_negative = [wild(text) for text in parsed.extra_negative_prompts]

    positive: list[str] = []
    negative: list[str] = []
    applied_styles: list[str] = []
    if parsed.styles:
        placeholder_used = False
        for name in parsed.styles:
            if name == RANDOM_STYLE:
                name = style_library.random_style(rng)
            applied = style_library.apply(name, task_prompt)
            applied_styles.append(style_library.get(name).name)
            placeholder_used = placeholder_used or applied.has_placeholder
            positive += applied.positive
            negative += applied.negative
        if not placeholder_used:
            positive.insert(0, task_prompt)
    else:
        positive.append(task_prompt)
    negative.append(task_negative)

    positive = remove_empty(positive + extra_positive, default=task_prompt)
    negative = remove_empty(negative + extra_negative, default=task_negative)
    return PromptWorkloads(
        task_seed=task_seed,
        image_index=image_index,
        task_prompt=task_prompt,
        task_negative_prompt=task_negative,
        positive=positive,
        negative=negative,
        positive_top_k=len(positive),
        negative_top_k=len(negative),
        log_positive_prompt="\n".join([task_prompt, *extra_positive]),
        log_negative_prompt="\n".join([task_negative, *extra_negative]),
        styles=applied_styles,
        loras=list(parsed.loras),
        expansion_requested=parsed.expansion_requested,
        use_expansion=parsed.use_expansion,
    )


def build_image_workloads(
    prompt: str,
    negative_prompt: str,
    styles: Sequence[str],
    task_seed: int,
    image_index: int,
    read_wildcards_in_order: bool,
    style_library: StyleLibrary,
    wildcards: WildcardLibrary | Sequence[str | Path],
) -> PromptWorkloads:
    """:func:`parse_prompt` then :func:`build_workloads`, for one image."""
    parsed = parse_prompt(prompt, negative_prompt, styles)
    return build_workloads(
        parsed, task_seed, image_index, read_wildcards_in_order, style_library, wildcards
    )


def with_expansion(workloads: PromptWorkloads, expansion: str) -> PromptWorkloads:
    """Append the Fooocus V2 expansion as the last positive workload (top-k unchanged).

    The hook for the GPT-2 expansion: call it only when ``workloads.use_expansion`` is set.
    """
    return msgspec.structs.replace(
        workloads, positive=[*workloads.positive, expansion], expansion=expansion
    )
