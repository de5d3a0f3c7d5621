"""Fooocus V2 prompt expansion (spec §1.2) with a tiny random GPT-2 and a tiny BPE tokenizer.

The test writes the model folder as users have it: ``vocab.json`` + ``merges.txt`` (byte-level
alphabet in GPT-2's order, so ``","`` is id 11, plus one merge chain per word), ``config.json``,
``pytorch_model.bin`` (with the attention-mask buffers older transformers saved) and
``positive.txt``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from fooocus_core.config import EngineConfig
from fooocus_core.prompts.expansion import (
    COMMA_ID,
    FILL_MULTIPLE,
    WEIGHTS_URL,
    ExpansionUnavailable,
    PromptExpander,
    expansion_dir,
)
from fooocus_core.prompts.text import safe_str

#: Words of positive.txt (mixed case, one not in the vocabulary, blank lines).
WORD_LINES = ["Red", "rose", "sharp", "vivid", "", "light", "Elegant", "dramatic", "notinvocab"]
ALLOWED = ["red", "rose", "sharp", "vivid", "light", "elegant", "dramatic"]
#: In the vocabulary but not in the word list: never generated.
FORBIDDEN = ["cinematic", "dark", "moody"]
PROMPT = "a cat, sharp"
#: 58 tokens with the comma: 17 new ones (fewer steps for the determinism checks).
LONG_PROMPT = "x" * 50 + " a cat, sharp"


def _byte_alphabet() -> list[str]:
    """GPT-2's byte-to-unicode table, in its token order."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            chars.append(256 + extra)
            extra += 1
    return [chr(c) for c in chars]


def write_tiny_tokenizer(folder: Path, words: list[str]) -> int:
    """``vocab.json`` + ``merges.txt`` where every ``"Ġ" + word`` is one token; the vocab size."""
    vocab = {char: i for i, char in enumerate(_byte_alphabet())}
    merges: list[str] = []
    for word in words:
        token = "Ġ" + word
        for i in range(1, len(token)):
            if token[: i + 1] not in vocab:
                merges.append(f"{token[:i]} {token[i]}")
                vocab[token[: i + 1]] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab), "utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", "utf-8")
    return len(vocab)


def write_tiny_expansion(folder: Path, seed: int = 0) -> Path:
    """A complete tiny ``fooocus_expansion`` folder."""
    folder.mkdir(parents=True, exist_ok=True)
    size = write_tiny_tokenizer(folder, ALLOWED + FORBIDDEN)
    (folder / "positive.txt").write_text("\n".join(WORD_LINES) + "\n", "utf-8")
    config = GPT2Config(
        n_layer=2,
        n_embd=32,
        n_head=2,
        vocab_size=size,
        n_positions=256,
        bos_token_id=size - 1,
        eos_token_id=size - 1,
    )
    config.to_json_file(str(folder / "config.json"))
    torch.manual_seed(seed)
    state = GPT2LMHeadModel(config).state_dict()
    for layer in range(config.n_layer):  # buffers older transformers versions saved
        state[f"transformer.h.{layer}.attn.bias"] = torch.tril(torch.ones(1, 1, 256, 256))
        state[f"transformer.h.{layer}.attn.masked_bias"] = torch.tensor(-1e4)
    torch.save(state, folder / "pytorch_model.bin")
    return folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_expansion(tmp_path_factory.mktemp("models") / "fooocus_expansion")


@pytest.fixture(scope="module")
def expander(folder: Path) -> PromptExpander:
    return PromptExpander.from_dir(folder)


def _vocab(expander: PromptExpander) -> dict[str, int]:
    return dict(expander.tokenizer.get_vocab())


def test_bias_allows_only_word_list(expander: PromptExpander) -> None:
    vocab = _vocab(expander)
    allowed = {vocab["Ġ" + w] for w in ALLOWED}
    assert {i for i in range(expander.width) if expander.bias[i] == 0} == allowed
    assert vocab[","] == COMMA_ID == expander.comma_id
    present = torch.zeros(expander.width, dtype=torch.bool)
    present[[vocab["Ġred"], COMMA_ID]] = True
    step = expander.step_bias(present)
    assert step[vocab["Ġred"]] == -8192 and step[COMMA_ID] == 0 and step[vocab["Ġrose"]] == 0


@pytest.mark.parametrize("seed", [0, 2**40 + 7])
def test_only_allowed_words_no_repeats_filled_to_75(expander: PromptExpander, seed: int) -> None:
    vocab = _vocab(expander)
    allowed = {vocab["Ġ" + w] for w in ALLOWED}
    result = expander.expand(PROMPT, seed)
    assert set(result.new_ids) <= allowed | {COMMA_ID}
    words = [i for i in result.new_ids if i != COMMA_ID]
    assert len(words) == len(set(words)), "a word was generated twice"
    assert not set(words) & set(result.prompt_ids), "a word of the prompt was repeated"
    assert vocab["Ġsharp"] not in words  # in the prompt already
    total = len(result.prompt_ids) + len(result.new_ids)
    assert total == FILL_MULTIPLE * math.ceil(len(result.prompt_ids) / FILL_MULTIPLE)
    assert total % 75 == 0 and result.new_ids
    assert result.prompt_ids == tuple(expander.tokenizer(PROMPT + ",")["input_ids"])
    decoded = expander.tokenizer.decode(list(result.prompt_ids + result.new_ids))
    assert result.text == safe_str(decoded)
    assert result.text.startswith(PROMPT)
    extra = result.text[len(PROMPT) :].replace(",", " ").split()
    assert set(extra) <= set(ALLOWED) and len(extra) == len(words)


def test_deterministic_per_seed(expander: PromptExpander, folder: Path) -> None:
    first = expander.expand(LONG_PROMPT, 7)
    assert len(first.prompt_ids) == 58 and len(first.new_ids) == 17
    assert expander.expand(LONG_PROMPT, 7) == first
    assert expander.expand(LONG_PROMPT, 7 + 2**32) == first  # seed mod 2**32
    others = [expander.expand(LONG_PROMPT, seed).new_ids for seed in (8, 9)]
    assert any(ids != first.new_ids for ids in others)
    # a freshly loaded expander, with the global RNG moved on, gives the same text
    torch.manual_seed(999)
    torch.rand(3)
    assert PromptExpander.from_dir(folder)(LONG_PROMPT, 7) == first.text


def test_global_rng_untouched(expander: PromptExpander) -> None:
    torch.manual_seed(3)
    before = torch.get_rng_state()
    expander(LONG_PROMPT, 5)
    assert torch.equal(torch.get_rng_state(), before)


def test_full_prompt_and_empty_prompt(expander: PromptExpander) -> None:
    # 74 single-byte tokens + "," = 75: nothing to add, the comma is dropped
    prompt = "x" * 74
    result = expander.expand(prompt, 1)
    assert len(result.prompt_ids) == 75 and result.new_ids == ()
    assert result.text == prompt
    assert expander("", 1) == ""
    # safe_str on the input: doubled spaces and trailing punctuation go
    assert expander.expand("  " + LONG_PROMPT + ".. ", 1).text.startswith(LONG_PROMPT + ",")


def test_available_and_reasons(tmp_path: Path) -> None:
    config = EngineConfig(models_dir=str(tmp_path))
    folder = expansion_dir(config)
    assert folder == tmp_path / "prompt_expansion" / "fooocus_expansion"
    assert not PromptExpander.available(config)
    reason = PromptExpander.unavailable_reason(config)
    assert reason is not None and str(folder) in reason and WEIGHTS_URL in reason

    write_tiny_expansion(folder)
    assert PromptExpander.available(config)
    assert PromptExpander.unavailable_reason(config) is None
    assert PromptExpander.from_config(config)(LONG_PROMPT, 3).startswith(LONG_PROMPT)

    (folder / "positive.txt").unlink()
    (folder / "pytorch_model.bin").unlink()
    reason = PromptExpander.unavailable_reason(config)
    assert reason is not None and "positive.txt" in reason and "pytorch_model.bin" in reason
    assert WEIGHTS_URL in reason
    with pytest.raises(ExpansionUnavailable, match=r"positive\.txt"):
        PromptExpander.from_config(config)
