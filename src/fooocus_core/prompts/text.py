"""Plain-text prompt rules: line cleanup, inline LoRA tags, prompt cleanup and ``[[a,b]]`` arrays.

These follow Fooocus' prompt handling (spec §1.1 steps 1, 2 and 6); nothing here touches files or
models.
"""

from __future__ import annotations

import math
import re

#: ``<lora:NAME:WEIGHT>``: NAME has no colon or comma, WEIGHT is a signed decimal number.
LORA_TAG_PATTERN = re.compile(r"<lora:([^:,]+):([+-]?(?:\d+(?:\.\d*)?|\.\d+))>")

#: ``[[a,b,c]]`` groups (non-greedy, so two groups on one line stay apart).
ARRAY_PATTERN = re.compile(r"\[\[(.*?)\]\]")


def safe_str(text: str) -> str:
    """Collapse runs of spaces and strip ``,``, ``.``, spaces and line breaks from both ends.

    Fooocus halves double spaces 16 times; that collapses any realistic run of spaces to one.
    """
    for _ in range(16):
        text = text.replace("  ", " ")
    return text.strip(",. \r\n")


def remove_empty(items: list[str], default: str | None = None) -> list[str]:
    """Drop empty strings; when nothing is left and ``default`` is given, return ``[default]``."""
    kept = [item for item in items if item != ""]
    if not kept and default is not None:
        return [default]
    return kept


def split_prompt_lines(text: str) -> tuple[str, list[str]]:
    """Split a prompt into its main (first non-empty) line and the extra lines after it.

    Every line is passed through :func:`safe_str`; empty lines are dropped. An empty prompt gives
    ``("", [])``.
    """
    lines = remove_empty([safe_str(line) for line in text.splitlines()], default="")
    return lines[0], lines[1:]


def cleanup_prompt(text: str) -> str:
    """Re-join a prompt's comma-separated parts with ``", "``, dropping empty parts.

    Runs of spaces and of commas collapse first. Fooocus applies this to the main prompt always
    (also when it holds no LoRA tag).
    """
    text = re.sub(" +", " ", text)
    text = re.sub(",+", ",", text)
    parts = [part.strip() for part in text.split(",")]
    return ", ".join(part for part in parts if part)


def extract_lora_tags(text: str) -> tuple[list[tuple[str, float]], str]:
    """Remove every ``<lora:NAME:WEIGHT>`` tag from ``text``; return the tags and the cleaned text.

    Tags come back as ``(NAME, WEIGHT)`` pairs in prompt order, duplicates included; matching a
    name to a LoRA file (by stem), de-duplication and the LoRA count limit are the caller's job.
    The remaining text is passed through :func:`cleanup_prompt`.
    """
    found = [(m.group(1), float(m.group(2))) for m in LORA_TAG_PATTERN.finditer(text)]
    without = LORA_TAG_PATTERN.sub("", text)
    return found, cleanup_prompt(without)


def apply_arrays(text: str, index: int) -> str:
    """Replace every ``[[a,b,c]]`` group by one of its elements, chosen by the image index.

    The groups form a mixed-radix number (the first group is the fastest-varying digit) and
    ``index`` is taken modulo the product of the group sizes, so consecutive images walk through
    all combinations. Elements are split on ``,`` and stripped.
    """
    groups = [match.group(1).split(",") for match in ARRAY_PATTERN.finditer(text)]
    if not groups:
        return text
    index %= math.prod(len(group) for group in groups)
    chosen: list[str] = []
    for group in groups:
        index, digit = divmod(index, len(group))
        chosen.append(group[digit].strip())
    replacements = iter(chosen)
    return ARRAY_PATTERN.sub(lambda _match: next(replacements), text)
