"""Prompt handling: text rules, wildcards, styles, weighted tokenization and CLIP encoding.

Typical use per task::

    styles = StyleLibrary.from_dirs(config_dir / "styles", user_styles_dir)
    wildcards = WildcardLibrary([config_dir / "wildcards", user_wildcards_dir])
    styles.validate(task.styles)                      # ValueError names unknown styles
    parsed = parse_prompt(task.prompt, task.negative_prompt, task.styles)
    for i, seed in enumerate(task_seeds):
        w = build_workloads(parsed, seed, i, task.read_wildcards_in_order, styles, wildcards)
        if w.use_expansion:
            w = with_expansion(w, expand(w.task_prompt, seed))   # later issue
        c = encoder.encode(w.positive, w.positive_top_k, task.clip_skip)
        uc = encoder.encode(w.negative, w.negative_top_k, task.clip_skip)  # skip when cfg == 1
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fooocus_core.prompts.emphasis import parse_emphasis
from fooocus_core.prompts.styles import (
    FOOOCUS_V2,
    RANDOM_STYLE,
    AppliedStyle,
    Style,
    StyleLibrary,
    normalize_style_name,
    read_style_file,
)
from fooocus_core.prompts.text import (
    apply_arrays,
    cleanup_prompt,
    extract_lora_tags,
    remove_empty,
    safe_str,
    split_prompt_lines,
)
from fooocus_core.prompts.tokenize import (
    BOS,
    CHUNK_LENGTH,
    EOS,
    PAD_G,
    PAD_L,
    EmbeddingRef,
    PromptTokenizer,
    TokenChunk,
    TokenizedPrompt,
    pack_words,
)
from fooocus_core.prompts.wildcards import WildcardLibrary
from fooocus_core.prompts.workloads import (
    ParsedPrompt,
    PromptWorkloads,
    build_image_workloads,
    build_workloads,
    parse_prompt,
    with_expansion,
)

if TYPE_CHECKING:
    from fooocus_core.prompts.encode import Conditioning, PromptEncoder, apply_token_weights

_LAZY = {"Conditioning", "PromptEncoder", "apply_token_weights"}


def __getattr__(name: str) -> Any:
    """Import the torch-based encoder only when it is used (styles/wildcards stay light)."""
    if name in _LAZY:
        from fooocus_core.prompts import encode

        return getattr(encode, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BOS",
    "CHUNK_LENGTH",
    "EOS",
    "FOOOCUS_V2",
    "PAD_G",
    "PAD_L",
    "RANDOM_STYLE",
    "AppliedStyle",
    "Conditioning",
    "EmbeddingRef",
    "ParsedPrompt",
    "PromptEncoder",
    "PromptTokenizer",
    "PromptWorkloads",
    "Style",
    "StyleLibrary",
    "TokenChunk",
    "TokenizedPrompt",
    "WildcardLibrary",
    "apply_arrays",
    "apply_token_weights",
    "build_image_workloads",
    "build_workloads",
    "cleanup_prompt",
    "extract_lora_tags",
    "normalize_style_name",
    "pack_words",
    "parse_emphasis",
    "parse_prompt",
    "read_style_file",
    "remove_empty",
    "safe_str",
    "split_prompt_lines",
    "with_expansion",
]
