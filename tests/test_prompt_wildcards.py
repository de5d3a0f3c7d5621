"""Wildcards (spec §1.1 step 5): random and in-order choice, nesting, missing lists, overrides."""

from __future__ import annotations

import random
from pathlib import Path

from fooocus_core.config import SHIPPED_CONFIG_DIR
from fooocus_core.prompts.wildcards import WildcardLibrary


def _write(folder: Path, name: str, lines: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.txt").write_text("\n".join(lines) + "\n", "utf-8")


def test_random_choice_uses_rng(tmp_path: Path) -> None:
    _write(tmp_path, "color", ["red", "", "green", "blue"])
    lib = WildcardLibrary([tmp_path])
    got = lib.apply("a __color__ car", random.Random(7), 0)
    expected = random.Random(7).choice(["red", "green", "blue"])
    assert got == f"a {expected} car"


def test_in_order_uses_index(tmp_path: Path) -> None:
    _write(tmp_path, "color", ["red", "green", "blue"])
    lib = WildcardLibrary([tmp_path])
    rng = random.Random(0)
    got = [lib.apply("__color__", rng, i, in_order=True) for i in range(4)]
    assert got == ["red", "green", "blue", "red"]


def test_each_occurrence_drawn_separately(tmp_path: Path) -> None:
    _write(tmp_path, "n", [str(i) for i in range(100)])
    lib = WildcardLibrary([tmp_path])
    rng = random.Random(3)
    got = lib.apply("__n__ __n__", rng, 0)
    ref = random.Random(3)
    assert (
        got
        == f"{ref.choice([str(i) for i in range(100)])} {ref.choice([str(i) for i in range(100)])}"
    )


def test_nested_wildcards(tmp_path: Path) -> None:
    _write(tmp_path, "color", ["red"])
    _write(tmp_path, "flower", ["rose"])
    _write(tmp_path / "sub", "color-flower", ["__color__ __flower__"])
    lib = WildcardLibrary([tmp_path])
    assert lib.apply("a __color-flower__", random.Random(0), 0) == "a red rose"


def test_missing_list_becomes_bare_word(tmp_path: Path) -> None:
    _write(tmp_path, "empty", [""])
    lib = WildcardLibrary([tmp_path])
    assert lib.apply("__nothing__ and __empty__", random.Random(0), 0) == "nothing and empty"


def test_self_reference_stops(tmp_path: Path) -> None:
    _write(tmp_path, "loop", ["x __loop__"])
    lib = WildcardLibrary([tmp_path])
    out = lib.apply("__loop__", random.Random(0), 0)
    assert out.count("x") == 64 and out.endswith("__loop__")


def test_later_folder_overrides(tmp_path: Path) -> None:
    _write(tmp_path / "shipped", "color", ["red"])
    _write(tmp_path / "user", "color", ["violet"])
    lib = WildcardLibrary([tmp_path / "shipped", tmp_path / "user", tmp_path / "missing"])
    assert lib.apply("__color__", random.Random(0), 0) == "violet"
    assert lib.names() == ["color"]


def test_shipped_lists() -> None:
    lib = WildcardLibrary([SHIPPED_CONFIG_DIR / "wildcards"])
    assert {"animal", "color", "flower", "color_flower", "extended-color"} <= set(lib.names())
    assert len(lib.words("color")) == 17
    out = lib.apply("__color_flower__", random.Random(1), 0)
    assert "__" not in out and len(out.split()) >= 2
