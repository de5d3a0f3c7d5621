"""Styles (spec §9.6, §1.1 step 7): names, load order, overrides, application, shipped set."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from fooocus_core.config import SHIPPED_CONFIG_DIR
from fooocus_core.prompts.styles import (
    FOOOCUS_V2,
    RANDOM_STYLE,
    Style,
    StyleLibrary,
    normalize_style_name,
    read_style_file,
)

SHIPPED = SHIPPED_CONFIG_DIR / "styles"


def _write(folder: Path, name: str, entries: list[dict[str, str]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(json.dumps(entries), "utf-8")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("sai-3d-model", "SAI 3D Model"),
        ("mre-dark-cyberpunk", "MRE Dark Cyberpunk"),
        ("Fooocus Enhance", "Fooocus Enhance"),
        ("ads-advertising", "Ads Advertising"),
        ("Artstyle (subtle)", "Artstyle (Subtle)"),
        ("misc-saint", "Misc SAInt"),
        ("Photo HDR", "Photo Hdr"),
        ("a--b", "A  B"),
        ("3d", "3D"),
    ],
)
def test_normalize_style_name(raw: str, expected: str) -> None:
    assert normalize_style_name(raw) == expected


def test_load_order_and_override(tmp_path: Path) -> None:
    _write(tmp_path, "sdxl_styles_sai.json", [{"name": "clash", "prompt": "sai {prompt}"}])
    _write(tmp_path, "sdxl_styles_fooocus.json", [{"name": "clash", "prompt": "fooocus {prompt}"}])
    _write(tmp_path, "zz_other.json", [{"name": "zz", "prompt": "{prompt}"}])
    _write(tmp_path, "aa_other.json", [{"name": "clash", "prompt": "other {prompt}"}])
    _write(tmp_path, "sdxl_styles_marc_k3nt3l.json", [{"name": "last", "prompt": "{prompt}"}])
    lib = StyleLibrary.from_dirs(tmp_path)
    # others sorted first (aa, zz), then fooocus, sai, ..., marc_k3nt3l; sai wins the clash,
    # and the clashing style keeps its first position.
    assert lib.names() == ["Clash", "Zz", "Last"]
    assert lib.get("Clash").prompt == "sai {prompt}"
    assert lib.legal_names() == [FOOOCUS_V2, RANDOM_STYLE, "Clash", "Zz", "Last"]


def test_user_folder_overrides_and_adds(tmp_path: Path) -> None:
    shipped = tmp_path / "shipped"
    user = tmp_path / "user"
    _write(shipped, "fooocus.json", [{"name": "Fooocus Sharp", "prompt": "ours {prompt}"}])
    _write(shipped, "basic.json", [{"name": "Basic", "prompt": "basic {prompt}"}])
    # a user "other" file sorts before shipped priority files but must still win
    _write(user, "mine.json", [{"name": "Fooocus Sharp", "prompt": "mine {prompt}"}])
    _write(user, "sdxl_styles_twri.json", [{"name": "twri-new", "prompt": "twri {prompt}"}])
    lib = StyleLibrary.from_dirs(shipped, user)
    assert lib.get("Fooocus Sharp").prompt == "mine {prompt}"
    assert lib.names() == ["Basic", "Fooocus Sharp", "Twri New"]


def test_user_fooocus_format_file_adds_styles(tmp_path: Path) -> None:
    user = tmp_path / "user"
    _write(
        user,
        "sdxl_styles_sai.json",
        [
            {"name": "sai-anime", "prompt": "anime artwork {prompt}", "negative_prompt": "photo"},
            {"name": "sai-line art", "prompt": "line art {prompt}"},
        ],
    )
    lib = StyleLibrary.from_dirs(SHIPPED, user)
    assert "SAI Anime" in lib and "SAI Line Art" in lib
    assert lib.names()[-2:] == ["SAI Anime", "SAI Line Art"]
    assert lib.get("sai-anime").negative_prompt == "photo"  # raw names are normalised on lookup


def test_bad_user_file_is_skipped(tmp_path: Path) -> None:
    (tmp_path / "broken.json").write_text("{not json", "utf-8")
    _write(tmp_path, "ok.json", [{"name": "ok", "prompt": "{prompt}"}])
    assert StyleLibrary.from_dirs(None, tmp_path).names() == ["Ok"]
    with pytest.raises(ValueError, match=r"broken\.json"):
        read_style_file(tmp_path / "broken.json")


def test_apply_substitutes_and_splits_lines() -> None:
    lib = StyleLibrary(
        [
            Style("Two", "first {prompt}\nsecond {prompt}", "neg a\nneg b"),
            Style("Neg Only", "", "bad"),
        ]
    )
    applied = lib.apply("Two", "a cat")
    assert applied.positive == ["first a cat", "second a cat"]
    assert applied.negative == ["neg a", "neg b"]
    assert applied.has_placeholder
    neg_only = lib.apply("Neg Only", "a cat")
    assert neg_only.positive == [] and neg_only.negative == ["bad"]
    assert not neg_only.has_placeholder


def test_unknown_style_error_names_it() -> None:
    lib = StyleLibrary.from_dirs(SHIPPED)
    with pytest.raises(ValueError, match="'No Such Style'"):
        lib.validate(["Fooocus V2", "No Such Style", "Fooocus Sharp"])
    assert lib.validate(["Fooocus V2", "Random Style", "fooocus-sharp"]) == [
        FOOOCUS_V2,
        RANDOM_STYLE,
        "Fooocus Sharp",
    ]


def test_random_style_reproducible() -> None:
    lib = StyleLibrary.from_dirs(SHIPPED)
    picks = [lib.random_style(random.Random(seed)) for seed in range(5)]
    assert picks == [lib.random_style(random.Random(seed)) for seed in range(5)]
    assert picks[0] == random.Random(0).choice(lib.names())
    assert len(set(picks)) > 1


def test_shipped_styles() -> None:
    lib = StyleLibrary.from_dirs(SHIPPED)
    fooocus_names = [
        "Fooocus Enhance",
        "Fooocus Semi Realistic",
        "Fooocus Sharp",
        "Fooocus Masterpiece",
        "Fooocus Photograph",
        "Fooocus Negative",
        "Fooocus Cinematic",
        "Fooocus Pony",
    ]
    assert all(name in lib for name in fooocus_names)
    others = [name for name in lib.names() if not name.startswith("Fooocus ")]
    assert len(others) >= 60
    for name in lib.names():
        assert normalize_style_name(name) == name  # shipped names are already normal
        style = lib.get(name)
        if name == "Fooocus Negative":  # negative-only, as in Fooocus
            assert style.prompt == "" and style.negative_prompt
        else:
            assert "{prompt}" in style.prompt, name
    # the Fooocus-named file loads after the other shipped files
    assert lib.names()[-len(fooocus_names) :] == [
        n for n in lib.names() if n.startswith("Fooocus ")
    ]
