"""Emphasis parsing and weighted tokenization into 77-token chunks (spec §1.3)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fooocus_core.config import SHIPPED_CONFIG_DIR
from fooocus_core.prompts.emphasis import parse_emphasis
from fooocus_core.prompts.tokenize import (
    BOS,
    EOS,
    PAD_G,
    PAD_L,
    EmbeddingRef,
    PromptTokenizer,
    pack_words,
)


@pytest.fixture(scope="module")
def tok() -> PromptTokenizer:
    return PromptTokenizer.from_dir(SHIPPED_CONFIG_DIR / "clip_tokenizer")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a", [("a", 1.0)]),
        ("(a)", [("a", 1.1)]),
        ("((a))", [("a", 1.1 * 1.1)]),
        ("(((a)))", [("a", 1.1 * 1.1 * 1.1)]),
        ("(a:1.5)", [("a", 1.5)]),
        ("((a:1.5))", [("a", 1.5)]),  # explicit weight replaces, not multiplies
        ("(a:0.25) b", [("a", 0.25), (" b", 1.0)]),
        ("\\(a\\)", [("(a)", 1.0)]),
        ("(a \\(b\\))", [("a (b)", 1.1)]),
        ("(a (b:2))", [("a ", 1.1), ("b", 2.0)]),
        ("(a (b) c)", [("a ", 1.1), ("b", 1.1 * 1.1), (" c", 1.1)]),
        ("[a]", [("[a]", 1.0)]),  # no de-emphasis
        ("(a:b)", [("a:b", 1.1)]),  # not a number: plain group
        ("(:2)", [(":2", 1.1)]),  # colon at the start is not a weight
        ("(a", [("(a", 1.0)]),  # unclosed: literal
        ("a) (b)", [("a) ", 1.0), ("b", 1.1)]),  # stray ')' is literal
        ("()", []),
        ("x (y:1.2), z", [("x ", 1.0), ("y", 1.2), (", z", 1.0)]),
    ],
)
def test_parse_emphasis(text: str, expected: list[tuple[str, float]]) -> None:
    got = parse_emphasis(text)
    assert [s for s, _ in got] == [s for s, _ in expected]
    assert [w for _, w in got] == pytest.approx([w for _, w in expected])


def test_known_ids(tok: PromptTokenizer) -> None:
    chunks = tok.tokenize("a photo of a cat").chunks
    assert len(chunks) == 1
    assert chunks[0].tokens == [BOS, 320, 1125, 539, 320, 2368, EOS]
    assert chunks[0].weights == [1.0] * 7
    assert tok.word_ids("Hello,") == [3306, 267]


def test_empty_prompt_is_one_chunk(tok: PromptTokenizer) -> None:
    (chunk,) = tok.tokenize("").chunks
    assert chunk.tokens == [BOS, EOS]
    assert chunk.padded_ids(PAD_L) == [BOS] + [EOS] * 76
    assert chunk.padded_ids(PAD_G) == [BOS, EOS] + [0] * 75


def test_exclamation_marks_are_not_padding(tok: PromptTokenizer) -> None:
    (chunk,) = tok.tokenize("!!!").chunks
    assert chunk.padded_ids(PAD_G)[:4] == [BOS, 995, EOS, 0]


def test_weights_follow_tokens(tok: PromptTokenizer) -> None:
    (chunk,) = tok.tokenize("a (photo:1.5) of ((a cat))").chunks
    assert chunk.tokens == [BOS, 320, 1125, 539, 320, 2368, EOS]
    assert chunk.weights == pytest.approx([1.0, 1.0, 1.5, 1.0, 1.21, 1.21, 1.0])
    assert chunk.padded_weights()[7:] == [1.0] * 70


def test_long_prompt_three_chunks(tok: PromptTokenizer) -> None:
    prompt = " ".join(["cat"] * 200)
    chunks = tok.tokenize(prompt).chunks
    assert [len(c.tokens) for c in chunks] == [77, 77, 52]
    for chunk in chunks:
        ids_l = chunk.padded_ids(PAD_L)
        ids_g = chunk.padded_ids(PAD_G)
        assert len(ids_l) == len(ids_g) == 77
        assert ids_l[0] == ids_g[0] == BOS
        assert chunk.tokens[-1] == EOS
    last = chunks[-1]
    assert last.padded_ids(PAD_L)[51:] == [EOS] * 26
    assert last.padded_ids(PAD_G)[51:] == [EOS] + [0] * 25
    assert sum(t == 2368 for c in chunks for t in c.tokens) == 200


def _word(n: int, start: int) -> list[tuple[int, float]]:
    return [(start + k, 1.0) for k in range(n)]


def test_short_word_moves_whole_to_next_chunk() -> None:
    words = [_word(1, 1000 + i) for i in range(73)] + [_word(3, 5000)]
    first, second = pack_words(words)
    assert len(first.tokens) == 75  # BOS + 73 + EOS: the 3-token word did not fit in 2 slots
    assert second.tokens == [BOS, 5000, 5001, 5002, EOS]


def test_word_of_eight_tokens_is_split() -> None:
    words = [_word(1, 1000 + i) for i in range(70)] + [_word(8, 5000)]
    first, second = pack_words(words)
    assert len(first.tokens) == 77
    assert first.tokens[-6:] == [5000, 5001, 5002, 5003, 5004, EOS]
    assert second.tokens == [BOS, 5005, 5006, 5007, EOS]


def test_word_exactly_filling_chunk_stays() -> None:
    words = [_word(1, 1000 + i) for i in range(72)] + [_word(3, 5000)]
    (only,) = pack_words(words)
    assert len(only.tokens) == 77


def test_very_long_word_spans_chunks(tok: PromptTokenizer) -> None:
    ids = tok.word_ids("x" * 400)
    assert len(ids) > 76
    chunks = tok.tokenize("x" * 400).chunks
    assert [t for c in chunks for t in c.tokens[1:-1]] == ids
    assert all(len(c.tokens) == 77 for c in chunks[:-1])


def test_embedding_words(tok: PromptTokenizer, tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    vectors = {"clip_l": torch.zeros(1, 768), "clip_g": torch.zeros(1, 1280)}
    save_file(vectors, str(tmp_path / "myemb.safetensors"))
    with_dir = PromptTokenizer(tok.tokenizer, embeddings_dir=tmp_path)
    result = with_dir.tokenize("a (embedding:myemb:1.2) embedding:myemb, cat")
    tokens = result.chunks[0].tokens
    marker = EmbeddingRef("myemb", str(tmp_path / "myemb.safetensors"))
    assert tokens == [BOS, 320, marker, marker, 267, 2368, EOS]
    assert result.chunks[0].weights[2] == pytest.approx(1.2)
    assert result.has_embeddings and not result.warnings
    with pytest.raises(ValueError, match="myemb"):
        result.chunks[0].padded_ids(PAD_L)
    assert result.chunks[0].padded_ids(PAD_L, 0)[:7] == [BOS, 320, 0, 0, 267, 2368, EOS]

    missing = with_dir.tokenize("embedding:other cat")
    assert missing.warnings and "other" in missing.warnings[0]
    assert not missing.has_embeddings
    no_dir = tok.tokenize("embedding:myemb")
    assert no_dir.warnings and not no_dir.has_embeddings
    assert no_dir.chunks[0].tokens[1:-1] == tok.word_ids("embedding:myemb")
