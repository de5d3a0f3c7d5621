"""Weighted CLIP tokenization and packing into 77-token chunks (spec §1.3, ComfyUI rules).

The prompt is parsed for emphasis, split on spaces, and every word is tokenized on its own (no
BOS/EOS). Words are packed into chunks of at most 75 tokens, each wrapped as BOS … EOS: a word of
fewer than :data:`MAX_WORD_LENGTH` tokens that would overflow the chunk moves whole to the next
one; a longer word is split across chunks. Chunks are kept unpadded; the encoder pads them per
encoder (CLIP-L with the end token, CLIP-G with 0, see :data:`PAD_L` / :data:`PAD_G`).

``embedding:NAME`` words become one :class:`EmbeddingRef` marker per vector of the embedding
file (an ``n``-vector embedding counts as ``n`` tokens when packing) when an embeddings folder
holding ``NAME`` is given and the file fits the text encoders (see
:mod:`fooocus_core.prompts.embeddings`); otherwise the word stays text and a warning is recorded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec

from fooocus_core.prompts.emphasis import parse_emphasis

BOS = 49406
EOS = 49407
#: CLIP-L pads with the end token.
PAD_L = EOS
#: CLIP-G (OpenCLIP bigG) pads with 0 (the tokenizer's pad token must not be used: it is "!").
PAD_G = 0
#: Tokens per chunk including BOS and EOS.
CHUNK_LENGTH = 77
#: Words of at least this many tokens may be split across chunks; shorter ones move whole.
MAX_WORD_LENGTH = 8

EMBEDDING_PREFIX = "embedding:"
#: File suffixes tried for an ``embedding:NAME`` word.
EMBEDDING_SUFFIXES: tuple[str, ...] = (".safetensors", ".pt", ".bin", ".pth")
#: Token id put where an embedding vector goes (the encoder replaces its input embedding).
EMBEDDING_PLACEHOLDER = 0
#: Embedding vector widths per key when no encoder is known: SDXL keys, any width.
ANY_SDXL_WIDTHS: Mapping[str, int | None] = {"clip_l": None, "clip_g": None}


class EmbeddingRef(msgspec.Struct, frozen=True):
    """One vector of a textual-inversion embedding in the token stream.

    ``index`` is the vector's row in the file; the encoder loads the vectors from ``path``.
    """

    name: str
    path: str
    index: int = 0


Token = int | EmbeddingRef


class TokenChunk(msgspec.Struct, frozen=True):
    """One unpadded chunk: BOS, up to 75 tokens, EOS, with one weight per token."""

    tokens: list[Token]
    weights: list[float]

    @property
    def eos_index(self) -> int:
        """Position of the end token (the pooled-output position)."""
        return len(self.tokens) - 1

    def padded_ids(self, pad_id: int, embedding_id: int | None = None) -> list[int]:
        """The 77 token ids of this chunk padded with ``pad_id``.

        Embedding markers become ``embedding_id``; without one they raise ``ValueError``.
        """
        ids: list[int] = []
        for token in self.tokens:
            if isinstance(token, EmbeddingRef):
                if embedding_id is None:
                    raise ValueError(
                        f"chunk holds embedding {token.name!r}: pass embedding_id and inject "
                        "its vectors"
                    )
                ids.append(embedding_id)
            else:
                ids.append(token)
        return ids + [pad_id] * (CHUNK_LENGTH - len(ids))

    def embedding_positions(self) -> list[tuple[int, EmbeddingRef]]:
        """``(position, marker)`` of every embedding vector in this chunk."""
        return [(i, t) for i, t in enumerate(self.tokens) if isinstance(t, EmbeddingRef)]

    def padded_weights(self) -> list[float]:
        """The 77 weights of this chunk (padding has weight 1)."""
        return self.weights + [1.0] * (CHUNK_LENGTH - len(self.weights))


class TokenizedPrompt(msgspec.Struct, frozen=True):
    """A prompt as chunks, plus warnings (e.g. embeddings that were not found)."""

    chunks: list[TokenChunk]
    warnings: list[str] = []

    @property
    def has_weights(self) -> bool:
        """Whether any token's weight differs from 1."""
        return any(w != 1.0 for chunk in self.chunks for w in chunk.weights)

    @property
    def has_embeddings(self) -> bool:
        return any(isinstance(t, EmbeddingRef) for chunk in self.chunks for t in chunk.tokens)


def find_embedding(name: str, directory: str | Path) -> Path | None:
    """The file for ``embedding:name`` in ``directory`` (name with or without suffix), if any.

    Names that lead outside ``directory`` (``..`` parts, absolute paths) find nothing; files
    that are symbolic links to elsewhere are fine.
    """
    root = Path(directory)
    if not name or Path(name).is_absolute() or ".." in Path(name).parts:
        return None
    candidates = [root / name]
    candidates += [root / f"{name}{suffix}" for suffix in EMBEDDING_SUFFIXES]
    for candidate in candidates:
        if candidate.suffix.lower() in EMBEDDING_SUFFIXES and candidate.is_file():
            return candidate
    return None


def pack_words(words: Sequence[Sequence[tuple[Token, float]]]) -> list[TokenChunk]:
    """Pack tokenized words into BOS … EOS chunks of at most :data:`CHUNK_LENGTH` tokens."""
    capacity = CHUNK_LENGTH - 2
    chunks: list[TokenChunk] = []
    current: list[tuple[Token, float]] = []

    def close() -> None:
        pairs = [(BOS, 1.0), *current, (EOS, 1.0)]
        chunks.append(TokenChunk([t for t, _ in pairs], [w for _, w in pairs]))

    for word in words:
        remaining = list(word)
        splittable = len(remaining) >= MAX_WORD_LENGTH
        while remaining:
            room = capacity - len(current)
            if len(remaining) <= room:
                current.extend(remaining)
                break
            if splittable:
                current.extend(remaining[:room])
                remaining = remaining[room:]
            close()
            current = []
    close()
    return chunks


class PromptTokenizer:
    """Turns prompt text into weighted :class:`TokenizedPrompt` chunks with a CLIP BPE tokenizer.

    ``tokenizer`` is a ``transformers.CLIPTokenizer`` (the same ids serve CLIP-L and CLIP-G).
    Word tokenizations are cached.
    """

    def __init__(self, tokenizer: Any, embeddings_dir: str | Path | None = None) -> None:
        self.tokenizer = tokenizer
        self.embeddings_dir = Path(embeddings_dir) if embeddings_dir is not None else None
        self._word_cache: dict[str, list[int]] = {}

    @classmethod
    def from_dir(
        cls, path: str | Path, embeddings_dir: str | Path | None = None
    ) -> PromptTokenizer:
        """Load the offline tokenizer files (``vocab.json``, ``merges.txt``) from ``path``."""
        from transformers import CLIPTokenizer

        return cls(CLIPTokenizer.from_pretrained(str(path)), embeddings_dir)

    def word_ids(self, word: str) -> list[int]:
        """Token ids of one word, without BOS/EOS."""
        ids = self._word_cache.get(word)
        if ids is None:
            backend = getattr(self.tokenizer, "backend_tokenizer", None)
            if backend is not None:  # avoids transformers' "sequence too long" warning
                ids = list(backend.encode(word, add_special_tokens=False).ids)
            else:
                ids = list(self.tokenizer.encode(word, add_special_tokens=False))
            if len(self._word_cache) < 65536:
                self._word_cache[word] = ids
        return list(ids)

    def _embedding_word(
        self,
        word: str,
        weight: float,
        warnings: list[str],
        widths: Mapping[str, int | None],
    ) -> tuple[list[tuple[Token, float]], str]:
        """An ``embedding:NAME`` word as one marker per vector (plus leftover text, e.g. a
        trailing comma); ``([], word)`` with a warning when it stays text.
        """
        from fooocus_core.models.checkpoint import CheckpointError
        from fooocus_core.prompts.embeddings import EmbeddingError, check_embedding, load_embedding

        name = word[len(EMBEDDING_PREFIX) :]
        stripped = name.rstrip(",")
        if self.embeddings_dir is None:
            warnings.append(f"embedding {stripped!r} ignored (no embeddings folder); kept as text")
            return [], word
        for candidate in dict.fromkeys((name, stripped)):
            path = find_embedding(candidate, self.embeddings_dir) if candidate else None
            if path is None:
                continue
            try:
                count = check_embedding(load_embedding(path), widths)
            except (OSError, CheckpointError, EmbeddingError) as exc:
                warnings.append(
                    f"embedding {candidate!r} ({path.name}) not used: {exc}; kept as text"
                )
                return [], word
            markers: list[tuple[Token, float]] = [
                (EmbeddingRef(candidate, str(path), index), weight) for index in range(count)
            ]
            return markers, name[len(candidate) :]
        warnings.append(f"embedding {stripped!r} not found; kept as text")
        return [], word

    def tokenize(
        self, text: str, embedding_widths: Mapping[str, int | None] | None = None
    ) -> TokenizedPrompt:
        """Parse emphasis, split into words, tokenize and pack into chunks.

        ``embedding_widths``: the vector width each text encoder needs, by embedding key
        (``{"clip_l": 768, "clip_g": 1280}`` for SDXL); embeddings that do not fit stay text.
        Default: the SDXL keys with any width.
        """
        widths = ANY_SDXL_WIDTHS if embedding_widths is None else embedding_widths
        warnings: list[str] = []
        words: list[list[tuple[Token, float]]] = []
        for segment, weight in parse_emphasis(text):
            for word in segment.replace("\n", " ").split(" "):
                if not word:
                    continue
                if word.startswith(EMBEDDING_PREFIX):
                    marker, word = self._embedding_word(word, weight, warnings, widths)
                    if marker:
                        words.append(marker)
                    if not word:
                        continue
                words.append([(token, weight) for token in self.word_ids(word)])
        return TokenizedPrompt(pack_words(words), warnings)
