"""Prompt styles in Fooocus' file format (spec §9.6) and their application (spec §1.1 step 7).

A style file is a JSON list of ``{"name", "prompt", "negative_prompt"}`` objects (both texts
optional); ``"{prompt}"`` in a style's prompt is replaced by the user's prompt. Files are read from
the shipped ``config/styles/`` folder and an optional user folder: within the combined set, files
load in Fooocus' order (other files sorted by name, then ``fooocus``, ``sai``, ``mre``, ``twri``,
``diva``, ``marc_k3nt3l``; a ``sdxl_styles_`` prefix is ignored), a later file overriding an earlier
one's style of the same name, except that a shipped file never overrides a user style. An
overridden style keeps its first listing position.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Iterable, Sequence
from pathlib import Path

import msgspec

logger = logging.getLogger(__name__)

#: The pseudo-style that turns on the GPT-2 prompt expansion.
FOOOCUS_V2 = "Fooocus V2"
#: The pseudo-style that picks one real style per image with the task's random generator.
RANDOM_STYLE = "Random Style"

#: Style files loaded last, in this order (file stems, with ``sdxl_styles_`` removed).
PRIORITY_FILES: tuple[str, ...] = ("fooocus", "sai", "mre", "twri", "diva", "marc_k3nt3l")

_PLACEHOLDER = "{prompt}"


class Style(msgspec.Struct, frozen=True):
    """One style: a positive template (may hold ``{prompt}``) and a negative text."""

    name: str
    prompt: str = ""
    negative_prompt: str = ""


class AppliedStyle(msgspec.Struct, frozen=True):
    """A style applied to one prompt: its positive and negative workloads (one per line)."""

    positive: list[str]
    negative: list[str]
    #: Whether the style's template contained ``{prompt}``.
    has_placeholder: bool


def normalize_style_name(name: str) -> str:
    """Fooocus' style-name normalisation.

    ``-`` becomes a space, every space-separated word gets an upper-case first letter and a
    lower-case rest, then ``3d``→``3D``, ``Sai``→``SAI``, ``Mre``→``MRE``, ``(s``→``(S`` are
    replaced anywhere in the name (so ``saint`` becomes ``SAInt``, as in Fooocus).
    """
    words = name.replace("-", " ").split(" ")
    name = " ".join(word[:1].upper() + word[1:].lower() for word in words)
    for old, new in (("3d", "3D"), ("Sai", "SAI"), ("Mre", "MRE"), ("(s", "(S")):
        name = name.replace(old, new)
    return name


def _load_rank(path: Path) -> int:
    """0 for ordinary files, 1..6 for Fooocus' priority files (loaded last, in that order)."""
    stem = path.stem.lower().removeprefix("sdxl_styles_")
    return PRIORITY_FILES.index(stem) + 1 if stem in PRIORITY_FILES else 0


def read_style_file(path: str | Path) -> list[Style]:
    """Read one style file; names normalised. Raises ``ValueError`` on a malformed file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"style file {path} could not be read: {exc}") from exc
    if not isinstance(data, list):
        raise ValueError(f"style file {path} must hold a JSON list")
    styles: list[Style] = []
    for entry in data:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise ValueError(f"style file {path}: every entry needs a string 'name'")
        prompt = entry.get("prompt") or ""
        negative = entry.get("negative_prompt") or ""
        if not isinstance(prompt, str) or not isinstance(negative, str):
            raise ValueError(f"style file {path}: style {entry['name']!r} has non-string texts")
        styles.append(Style(normalize_style_name(entry["name"]), prompt, negative))
    return styles


class StyleLibrary:
    """All known styles by normalised name, in listing (load) order."""

    def __init__(self, styles: Iterable[Style] = ()) -> None:
        self._styles: dict[str, Style] = {}
        for style in styles:
            self._styles[style.name] = style

    @classmethod
    def from_dirs(
        cls, shipped_dir: str | Path | None, user_dir: str | Path | None = None
    ) -> StyleLibrary:
        """Load the ``*.json`` style files of the shipped folder and the user folder.

        A file that cannot be read is skipped with a logged warning (as Fooocus does), so one bad
        user file does not take the service down.
        """
        files: list[tuple[int, int, str, Path]] = []
        for source, directory in enumerate((shipped_dir, user_dir)):
            if directory is None or not Path(directory).is_dir():
                continue
            root = Path(directory)
            for path in root.rglob("*.json"):
                if path.is_file():
                    rel = path.relative_to(root).as_posix()
                    files.append((_load_rank(path), source, rel, path))
        files.sort(key=lambda item: item[:3])
        styles: dict[str, Style] = {}
        owner: dict[str, int] = {}
        for _rank, source, _rel, path in files:
            try:
                loaded = read_style_file(path)
            except ValueError as exc:
                logger.warning("skipping style file: %s", exc)
                continue
            for style in loaded:
                if owner.get(style.name, source) > source:
                    continue  # a shipped file never overrides a user style
                styles[style.name] = style
                owner[style.name] = source
        return cls(styles.values())

    def __contains__(self, name: object) -> bool:
        return name in self._styles

    def __len__(self) -> int:
        return len(self._styles)

    def names(self) -> list[str]:
        """Real style names in load order (no pseudo-styles)."""
        return list(self._styles)

    def legal_names(self) -> list[str]:
        """What a user may select: ``Fooocus V2``, ``Random Style``, then every style."""
        return [FOOOCUS_V2, RANDOM_STYLE, *self._styles]

    def get(self, name: str) -> Style:
        """The style called ``name`` (exact or after normalisation); ``ValueError`` if unknown."""
        style = self._styles.get(name) or self._styles.get(normalize_style_name(name))
        if style is None:
            raise ValueError(f"unknown style {name!r}")
        return style

    def validate(self, names: Sequence[str]) -> list[str]:
        """Canonical names for a selection (pseudo-styles kept); ``ValueError`` naming unknowns."""
        unknown: list[str] = []
        canonical: list[str] = []
        for name in names:
            if name in (FOOOCUS_V2, RANDOM_STYLE):
                canonical.append(name)
                continue
            try:
                canonical.append(self.get(name).name)
            except ValueError:
                unknown.append(name)
        if unknown:
            raise ValueError(f"unknown style(s): {', '.join(repr(n) for n in unknown)}")
        return canonical

    def random_style(self, rng: random.Random) -> str:
        """One real style name, chosen with ``rng`` over the load order (``Random Style``)."""
        if not self._styles:
            raise ValueError("'Random Style' needs at least one style, but none are loaded")
        return rng.choice(list(self._styles))

    def apply(self, name: str, prompt: str) -> AppliedStyle:
        """Apply one style to ``prompt``: ``{prompt}`` replaced, each text split into lines."""
        style = self.get(name)
        return AppliedStyle(
            positive=style.prompt.replace(_PLACEHOLDER, prompt).splitlines(),
            negative=style.negative_prompt.splitlines(),
            has_placeholder=_PLACEHOLDER in style.prompt,
        )
