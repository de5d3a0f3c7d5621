"""Per-image workloads (spec §1.1 steps 1–9): styles, negatives, top-k, rng order, LoRA tags."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from fooocus_core.prompts.styles import Style, StyleLibrary
from fooocus_core.prompts.wildcards import WildcardLibrary
from fooocus_core.prompts.workloads import (
    build_image_workloads,
    build_workloads,
    parse_prompt,
    with_expansion,
)

LIB = StyleLibrary(
    [
        Style("Enhance", "{prompt} . detailed", "low quality"),
        Style("Sharp", "still {prompt} . sharp", "blurry\nsoft"),
        Style("Two Lines", "{prompt} one\n{prompt} two", ""),
        Style("Neg Only", "", "ugly"),
        Style("Fixed", "a fixed scene", "fixed neg"),
    ]
)
NO_WILDCARDS = WildcardLibrary([])


def build(prompt: str, negative: str = "", styles: tuple[str, ...] = (), **kw: object):
    args = {"task_seed": 1, "image_index": 0, "read_wildcards_in_order": False}
    args.update(kw)
    return build_image_workloads(
        prompt, negative, list(styles), style_library=LIB, wildcards=NO_WILDCARDS, **args
    )


def test_no_styles() -> None:
    w = build("a cat", "dog")
    assert w.positive == ["a cat"] and w.negative == ["dog"]
    assert (w.positive_top_k, w.negative_top_k) == (1, 1)


def test_styles_in_order_with_negatives_first() -> None:
    w = build("a cat", "dog", ("Fooocus V2", "Enhance", "Sharp"))
    assert w.positive == ["a cat . detailed", "still a cat . sharp"]
    assert w.negative == ["low quality", "blurry", "soft", "dog"]
    assert (w.positive_top_k, w.negative_top_k) == (2, 4)
    assert w.styles == ["Enhance", "Sharp"]
    assert w.expansion_requested and w.use_expansion


def test_multi_line_style_gives_workloads() -> None:
    w = build("a cat", styles=("Two Lines",))
    assert w.positive == ["a cat one", "a cat two"]
    assert w.negative == [""]  # empty user negative is the fallback workload


def test_bare_prompt_inserted_when_no_placeholder() -> None:
    w = build("a cat", "n", ("Neg Only", "Fixed"))
    assert w.positive == ["a cat", "a fixed scene"]
    assert w.negative == ["ugly", "fixed neg", "n"]


def test_extra_lines_and_log_prompts() -> None:
    w = build("a cat\nextra one\n\nextra two", "bad\nworse", ("Enhance",))
    assert w.positive == ["a cat . detailed", "extra one", "extra two"]
    assert w.negative == ["low quality", "bad", "worse"]
    assert w.positive_top_k == 3 and w.negative_top_k == 3
    assert w.log_positive_prompt == "a cat\nextra one\nextra two"
    assert w.log_negative_prompt == "bad\nworse"


def test_empty_prompt_disables_expansion() -> None:
    w = build("", styles=("Fooocus V2",))
    assert w.positive == [""] and w.negative == [""]
    assert w.expansion_requested and not w.use_expansion


def test_inline_loras_and_cleanup() -> None:
    parsed = parse_prompt("a cat,, <lora:detail:0.5> sunny\n<lora:x:1> extra", "", [])
    assert parsed.loras == [("detail", 0.5)]  # only the main line is scanned
    assert parsed.prompt == "a cat, sunny"
    assert parsed.extra_prompts == ["<lora:x:1> extra"]


def test_unknown_style_raises() -> None:
    with pytest.raises(ValueError, match="Nope"):
        build("a", styles=("Nope",))


def test_random_style_reproducible_and_after_wildcards(tmp_path: Path) -> None:
    (tmp_path / "n.txt").write_text("\n".join(str(i) for i in range(50)), "utf-8")
    wild = WildcardLibrary([tmp_path])
    args = dict(
        task_seed=42,
        image_index=0,
        read_wildcards_in_order=False,
        style_library=LIB,
        wildcards=wild,
    )
    a = build_image_workloads("__n__", "__n__", ["Random Style"], **args)
    b = build_image_workloads("__n__", "__n__", ["Random Style"], **args)
    assert a == b
    rng = random.Random(42)
    words = [str(i) for i in range(50)]
    assert a.task_prompt == rng.choice(words)
    assert a.task_negative_prompt == rng.choice(words)
    assert a.styles == [rng.choice(LIB.names())]


def test_wildcards_in_order_and_arrays(tmp_path: Path) -> None:
    (tmp_path / "color.txt").write_text("red\ngreen\nblue\n", "utf-8")
    parsed = parse_prompt("a __color__ [[cat,dog]]", "no __color__", [])
    got = [build_workloads(parsed, 100 + i, i, True, LIB, [tmp_path]).positive[0] for i in range(4)]
    assert got == ["a red cat", "a green dog", "a blue cat", "a red dog"]
    neg = build_workloads(parsed, 5, 1, True, LIB, [tmp_path]).negative
    assert neg == ["no green"]  # arrays apply to the main positive only


def test_with_expansion_keeps_top_k() -> None:
    w = build("a cat", styles=("Fooocus V2", "Enhance"))
    e = with_expansion(w, "a cat, vivid, detailed")
    assert e.positive == ["a cat . detailed", "a cat, vivid, detailed"]
    assert e.positive_top_k == 1 and e.expansion == "a cat, vivid, detailed"
