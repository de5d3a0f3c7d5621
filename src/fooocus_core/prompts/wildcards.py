"""Wildcards: ``__name__`` placeholders replaced by a line of ``name.txt`` (spec §1.1 step 5).

Word lists are plain text files, one entry per line, found by file stem in a list of folders
(searched recursively). Later folders override earlier ones, so pass
``[shipped_dir, user_dir]``.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Iterable
from pathlib import Path

logger = logging.getLogger(__name__)

#: ``__name__`` with a name of word characters and dashes.
WILDCARD_PATTERN = re.compile(r"__([\w-]+)__")

#: Rounds of replacement before giving up on self-referencing lists (Fooocus' BFS depth).
WILDCARDS_MAX_DEPTH = 64


class WildcardLibrary:
    """The wildcard word lists found in some folders, indexed by file stem.

    The folder listing is taken when the library is built; file contents are read on use, so an
    edited list takes effect on the next task.
    """

    def __init__(self, directories: Iterable[str | Path] = ()) -> None:
        self._files: dict[str, Path] = {}
        for directory in directories:
            root = Path(directory)
            if not root.is_dir():
                continue
            found: dict[str, Path] = {}
            for path in sorted(root.rglob("*.txt")):
                if path.is_file():
                    found.setdefault(path.stem, path)
            self._files.update(found)

    def names(self) -> list[str]:
        """The available wildcard names, sorted."""
        return sorted(self._files)

    def words(self, name: str) -> list[str]:
        """The non-empty lines of ``name``'s list; empty when the list is missing or empty."""
        path = self._files.get(name)
        if path is None:
            return []
        try:
            text = path.read_text("utf-8")
        except OSError as exc:
            logger.warning("wildcard list %s could not be read: %s", path, exc)
            return []
        return [line.strip() for line in text.splitlines() if line.strip()]

    def apply(
        self,
        text: str,
        rng: random.Random,
        index: int,
        in_order: bool = False,
    ) -> str:
        """Replace ``__name__`` placeholders in ``text``, nested lists included.

        Each occurrence takes ``rng.choice(words)``, or ``words[index % len(words)]`` when
        ``in_order``. A name without a (non-empty) list is replaced by the bare name. Replacement
        repeats for up to :data:`WILDCARDS_MAX_DEPTH` rounds so that list entries may themselves
        hold placeholders.
        """
        for _ in range(WILDCARDS_MAX_DEPTH):
            names = WILDCARD_PATTERN.findall(text)
            if not names:
                return text
            for name in names:
                words = self.words(name)
                placeholder = f"__{name}__"
                if not words:
                    logger.warning("wildcard %r has no list; using the bare word", name)
                    text = text.replace(placeholder, name)
                    continue
                word = words[index % len(words)] if in_order else rng.choice(words)
                text = text.replace(placeholder, word, 1)
        logger.warning("wildcards still unresolved after %d rounds: %s", WILDCARDS_MAX_DEPTH, text)
        return text
