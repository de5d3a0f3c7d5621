"""Textual-inversion embeddings (``embedding:NAME``, spec §1.3) with tiny random text encoders.

The oracle for the encoding: an ``n``-vector embedding behaves exactly like ``n`` new vocabulary
tokens whose embedding rows are the file's vectors.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn
from transformers import CLIPTextModel, CLIPTextModelWithProjection

from fooocus_core.config import SHIPPED_CONFIG_DIR, EngineConfig
from fooocus_core.prompts.encode import PromptEncoder
from fooocus_core.prompts.tokenize import (
    BOS,
    EMBEDDING_PLACEHOLDER,
    EOS,
    PAD_G,
    PAD_L,
    EmbeddingRef,
    PromptTokenizer,
)
from tests.tiny_clip import HG, HL, tiny_clip_pair

CAT = 2368  # "cat</w>"


@pytest.fixture(scope="module")
def models() -> tuple[CLIPTextModel, CLIPTextModelWithProjection]:
    return tiny_clip_pair(4321)


@pytest.fixture(scope="module")
def emb_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Embeddings: ``two`` (2 vectors, fp16), ``ten``/``three`` (counting), SD 1.5 and wrong-width
    files, and a file outside the folder.
    """
    root = tmp_path_factory.mktemp("embeddings")
    gen = torch.Generator().manual_seed(7)

    def sdxl(n: int, wl: int = HL, wg: int = HG, dtype: torch.dtype = torch.float32) -> dict:
        return {
            "clip_l": torch.randn(n, wl, generator=gen).to(dtype),
            "clip_g": torch.randn(n, wg, generator=gen).to(dtype),
        }

    save_file(sdxl(2, dtype=torch.float16), str(root / "two.safetensors"))
    save_file(sdxl(10), str(root / "ten.safetensors"))
    save_file(sdxl(3), str(root / "three.safetensors"))
    save_file(sdxl(1, 768, 1280), str(root / "realxl.safetensors"))
    save_file({"emb_params": torch.randn(2, 768, generator=gen)}, str(root / "sd15.safetensors"))
    torch.save(
        {"string_to_param": {"*": torch.randn(3, 768, generator=gen)}, "name": "old"},
        root / "a1111.pt",
    )
    save_file(sdxl(1), str(root.parent / "outside.safetensors"))
    return root


@pytest.fixture(scope="module")
def tokenizer(emb_dir: Path) -> PromptTokenizer:
    return PromptTokenizer.from_dir(SHIPPED_CONFIG_DIR / "clip_tokenizer", embeddings_dir=emb_dir)


@pytest.fixture
def encoder(tokenizer: PromptTokenizer, models: tuple) -> PromptEncoder:
    return PromptEncoder(tokenizer, *models)


def _vectors(emb_dir: Path, name: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return {k: v.float() for k, v in load_file(str(emb_dir / f"{name}.safetensors")).items()}


def _embeddings_module(model: nn.Module) -> nn.Module:
    return getattr(model, "text_model", model).embeddings


def test_two_vectors_change_exactly_their_rows(
    encoder: PromptEncoder, models: tuple, emb_dir: Path
) -> None:
    """The embedding layer's output differs from the placeholder run only at the two vector
    rows, and there it is ``vector + position embedding``.
    """
    text = "a embedding:two cat"
    (chunk,) = encoder.tokenizer.tokenize(text).chunks
    ref = EmbeddingRef("two", str(emb_dir / "two.safetensors"))
    assert chunk.tokens == [BOS, 320, ref, EmbeddingRef(ref.name, ref.path, 1), CAT, EOS]
    vectors = _vectors(emb_dir, "two")
    for model, key, pad in ((models[0], "clip_l", PAD_L), (models[1], "clip_g", PAD_G)):
        module = _embeddings_module(model)
        injected = _captured_embedding_output(module, lambda: encoder.encode([text], 1))
        with torch.inference_mode():
            plain = module(input_ids=torch.tensor([chunk.padded_ids(pad, EMBEDDING_PLACEHOLDER)]))
        changed = (injected[0] != plain[0]).any(dim=-1).nonzero().flatten().tolist()
        assert changed == [2, 3]
        positions = module.position_embedding.weight[2:4]
        torch.testing.assert_close(injected[0, 2:4], vectors[key] + positions)
        encoder.clear_cache()


def _captured_embedding_output(module: nn.Module, run: Callable[[], object]) -> torch.Tensor:
    """The output of ``module`` during ``run()`` (its first call)."""
    seen: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda _m, _a, out: seen.append(out.clone()))
    try:
        run()
    finally:
        handle.remove()
    return seen[0]


def test_encoding_equals_extended_vocabulary(
    encoder: PromptEncoder, models: tuple, emb_dir: Path
) -> None:
    vectors = _vectors(emb_dir, "two")
    text = "a embedding:two cat"
    c = encoder.encode([text], 1, clip_skip=2)
    new = [49408, 49409]
    ids = [BOS, 320, *new, CAT, EOS]
    halves = []
    for model, key, pad in ((models[0], "clip_l", PAD_L), (models[1], "clip_g", PAD_G)):
        extended = copy.deepcopy(model)
        layer = extended.get_input_embeddings()
        layer.weight = nn.Parameter(torch.cat([layer.weight.detach(), vectors[key]]))
        with torch.inference_mode():
            padded = torch.tensor([ids + [pad] * (77 - len(ids))])
            out = extended(input_ids=padded, output_hidden_states=True)
        halves.append(out)
        if key == "clip_g":
            with torch.inference_mode():
                pooled = extended.text_projection(out.last_hidden_state[0, 5]).unsqueeze(0)
            torch.testing.assert_close(c.pooled, pooled, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(c.cond[0, :, :HL], halves[0].hidden_states[-2][0], atol=1e-5, rtol=0)
    torch.testing.assert_close(c.cond[0, :, HL:], halves[1].hidden_states[-2][0], atol=1e-5, rtol=0)
    assert not torch.allclose(c.cond, encoder.encode(["a cat"], 1).cond)
    weighted = encoder.encode(["a (embedding:two:1.3) cat"], 1)
    assert torch.isfinite(weighted.cond).all() and not torch.allclose(weighted.cond, c.cond)


def test_vectors_count_as_tokens_when_packing(tokenizer: PromptTokenizer) -> None:
    # 10 vectors (>= 8 tokens): split across the chunk boundary like a long word
    chunks = tokenizer.tokenize("cat " * 70 + "embedding:ten dog").chunks
    assert len(chunks) == 2 and len(chunks[0].tokens) == 77
    assert [p for p, _ in chunks[0].embedding_positions()] == list(range(71, 76))
    assert [r.index for _, r in chunks[0].embedding_positions()] == [0, 1, 2, 3, 4]
    assert [r.index for _, r in chunks[1].embedding_positions()] == [5, 6, 7, 8, 9]
    assert chunks[1].eos_index == 1 + 5 + 1  # BOS, 5 vectors, "dog"
    # 3 vectors after 73 tokens: they move whole to the next chunk
    chunks = tokenizer.tokenize("cat " * 73 + "embedding:three").chunks
    assert len(chunks) == 2 and len(chunks[0].tokens) == 75
    assert not chunks[0].embedding_positions()
    assert [r.index for _, r in chunks[1].embedding_positions()] == [0, 1, 2]
    assert chunks[1].eos_index == 4
    # exactly filling the chunk keeps it in place
    chunks = tokenizer.tokenize("cat " * 72 + "embedding:three").chunks
    assert len(chunks) == 1 and chunks[0].eos_index == 76


def test_multi_chunk_encoding_with_embeddings(encoder: PromptEncoder) -> None:
    c = encoder.encode(["cat " * 70 + "embedding:ten dog"], 1)
    assert c.cond.shape == (1, 154, HL + HG) and torch.isfinite(c.cond).all()
    assert not c.warnings


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("sd15", "another model family"),
        ("a1111", "another model family"),
        ("realxl", "width 768"),
    ],
)
def test_mismatch_stays_text_with_warning(
    encoder: PromptEncoder, tokenizer: PromptTokenizer, name: str, expected: str
) -> None:
    text = f"a embedding:{name} cat"
    tokenized = tokenizer.tokenize(text, encoder.embedding_widths())
    assert not tokenized.has_embeddings
    assert tokenized.chunks[0].tokens[2:-2] == tokenizer.word_ids(f"embedding:{name}")
    (warning,) = tokenized.warnings
    assert name in warning and expected in warning and "kept as text" in warning
    c = encoder.encode([text], 1)
    assert c.warnings == (warning,)


def test_real_widths_fit_without_encoder(tokenizer: PromptTokenizer) -> None:
    """Without encoder widths any SDXL pair fits; SD 1.5 files never do."""
    assert tokenizer.tokenize("embedding:realxl").has_embeddings
    assert not tokenizer.tokenize("embedding:sd15").has_embeddings
    widths = {"clip_l": 768, "clip_g": 1280}
    assert tokenizer.tokenize("embedding:realxl", widths).has_embeddings
    assert not tokenizer.tokenize("embedding:two", widths).has_embeddings


def test_names_outside_the_folder_are_not_found(tokenizer: PromptTokenizer, emb_dir: Path) -> None:
    for name in ("../outside", str(emb_dir.parent / "outside")):
        result = tokenizer.tokenize(f"embedding:{name}")
        assert not result.has_embeddings and "not found" in result.warnings[0]
    link = emb_dir / "linked.safetensors"  # a link to a file elsewhere is fine
    link.symlink_to(emb_dir.parent / "outside.safetensors")
    assert tokenizer.tokenize("embedding:linked").has_embeddings


def test_engine_folder_wiring(tmp_path: Path) -> None:
    """What the engine passes: ``config.folder("embeddings")``, which may not exist yet."""
    config = EngineConfig(models_dir=str(tmp_path))
    tok = PromptTokenizer.from_dir(
        SHIPPED_CONFIG_DIR / "clip_tokenizer", embeddings_dir=config.folder("embeddings")
    )
    result = tok.tokenize("embedding:nothing cat")
    assert not result.has_embeddings and "not found" in result.warnings[0]
    config.folder("embeddings").mkdir(parents=True)
    save_file(
        {"clip_l": torch.ones(1, HL), "clip_g": torch.ones(1, HG)},
        str(config.folder("embeddings") / "nothing.safetensors"),
    )
    assert tok.tokenize("embedding:nothing cat").has_embeddings
