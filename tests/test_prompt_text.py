"""Text rules of spec §1.1: safe_str, lines, inline LoRA tags, cleanup, arrays."""

from __future__ import annotations

import pytest

from fooocus_core.prompts.text import (
    apply_arrays,
    cleanup_prompt,
    extract_lora_tags,
    remove_empty,
    safe_str,
    split_prompt_lines,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  a   cat ,. ", "a cat"),
        ("a cat.\r\n", "a cat"),
        (",,hello, world,,", "hello, world"),
        ("x" + " " * 40 + "y", "x y"),
        ("", ""),
        ("(a:1.2).", "(a:1.2)"),
    ],
)
def test_safe_str(raw: str, expected: str) -> None:
    assert safe_str(raw) == expected


def test_split_prompt_lines_main_and_extras() -> None:
    main, extra = split_prompt_lines("a cat.\n\n  \nsecond line,\nthird  line")
    assert main == "a cat"
    assert extra == ["second line", "third line"]


def test_split_prompt_lines_empty() -> None:
    assert split_prompt_lines("") == ("", [])
    assert split_prompt_lines("\n \n.,") == ("", [])


def test_remove_empty_default() -> None:
    assert remove_empty(["", "a", ""]) == ["a"]
    assert remove_empty(["", ""], default="x") == ["x"]
    assert remove_empty([], default=None) == []


def test_cleanup_prompt_rejoins_with_comma_space() -> None:
    assert cleanup_prompt("a ,b,,  c ,,, ,d") == "a, b, c, d"
    assert cleanup_prompt("a  cat") == "a cat"
    assert cleanup_prompt("") == ""


def test_extract_lora_tags() -> None:
    loras, text = extract_lora_tags("a cat, <lora:detail_v2:0.8>, sunny <lora:style:-.5>day")
    assert loras == [("detail_v2", 0.8), ("style", -0.5)]
    assert text == "a cat, sunny day"


def test_extract_lora_tags_keeps_malformed_and_duplicates() -> None:
    loras, text = extract_lora_tags("<lora:a:1><lora:a:+2.> <lora:bad:x> b")
    assert loras == [("a", 1.0), ("a", 2.0)]
    assert text == "<lora:bad:x> b"


def test_extract_lora_tags_without_tags_still_cleans() -> None:
    assert extract_lora_tags("a,b ,  c") == ([], "a, b, c")


def test_arrays_single_group_cycles() -> None:
    text = "a [[red,green, blue]] car"
    got = [apply_arrays(text, i) for i in range(4)]
    assert got == ["a red car", "a green car", "a blue car", "a red car"]


def test_arrays_mixed_radix_first_group_fastest() -> None:
    text = "[[a,b]] [[x,y,z]]"
    got = [apply_arrays(text, i) for i in range(7)]
    assert got == ["a x", "b x", "a y", "b y", "a z", "b z", "a x"]


def test_arrays_without_groups_unchanged() -> None:
    assert apply_arrays("no [arrays] here", 3) == "no [arrays] here"
