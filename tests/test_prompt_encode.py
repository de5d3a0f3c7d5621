"""CLIP-L + CLIP-G encoding (spec §1.3, §3.4, §3.7) with tiny, seeded random text encoders."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import CLIPTextModel, CLIPTextModelWithProjection

from fooocus_core.config import SHIPPED_CONFIG_DIR
from fooocus_core.prompts.encode import PromptEncoder
from fooocus_core.prompts.tokenize import PAD_G, PAD_L, PromptTokenizer
from tests.tiny_clip import HG, HL, PROJ, tiny_clip_pair


@pytest.fixture(scope="module")
def models() -> tuple[CLIPTextModel, CLIPTextModelWithProjection]:
    return tiny_clip_pair(1234)


@pytest.fixture(scope="module")
def tokenizer() -> PromptTokenizer:
    return PromptTokenizer.from_dir(SHIPPED_CONFIG_DIR / "clip_tokenizer")


@pytest.fixture
def encoder(tokenizer: PromptTokenizer, models: tuple) -> PromptEncoder:
    return PromptEncoder(tokenizer, *models)


def _direct(model: torch.nn.Module, ids: list[int]) -> object:
    with torch.inference_mode():
        return model(input_ids=torch.tensor([ids]), output_hidden_states=True)


def test_shapes_and_empty_prompt(encoder: PromptEncoder) -> None:
    c = encoder.encode(["a photo of a cat"], 1)
    assert c.cond.shape == (1, 77, HL + HG) and c.pooled.shape == (1, PROJ)
    assert c.cond.dtype == torch.float32
    empty = encoder.encode([""], 1)
    assert empty.cond.shape == (1, 77, HL + HG) and torch.isfinite(empty.cond).all()
    long = encoder.encode([" ".join(["cat"] * 200)], 1)
    assert long.cond.shape == (1, 231, HL + HG)


@pytest.mark.parametrize("clip_skip", [1, 2, 3])
def test_clip_skip_selects_hidden_layer(
    encoder: PromptEncoder, tokenizer: PromptTokenizer, models: tuple, clip_skip: int
) -> None:
    """Both halves equal ``hidden_states[-clip_skip]`` of the model (no final layer norm)."""
    clip_l, clip_g = models
    (chunk,) = tokenizer.tokenize("a photo of a cat").chunks
    ref_l = _direct(clip_l, chunk.padded_ids(PAD_L)).hidden_states[-clip_skip][0]
    ref_g = _direct(clip_g, chunk.padded_ids(PAD_G)).hidden_states[-clip_skip][0]
    cond = encoder.encode(["a photo of a cat"], 1, clip_skip=clip_skip).cond[0]
    torch.testing.assert_close(cond[:, :HL], ref_l, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cond[:, HL:], ref_g, atol=1e-5, rtol=1e-5)


def test_clip_skip_changes_cond_not_pooled(encoder: PromptEncoder) -> None:
    one = encoder.encode(["a cat"], 1, clip_skip=1)
    two = encoder.encode(["a cat"], 1, clip_skip=2)
    assert not torch.allclose(one.cond, two.cond)
    torch.testing.assert_close(one.pooled, two.pooled)
    with pytest.raises(ValueError, match="clip_skip"):
        encoder.encode(["a cat"], 1, clip_skip=4)


def test_pooled_is_projected_final_layer_at_first_chunk_eos(
    encoder: PromptEncoder, tokenizer: PromptTokenizer, models: tuple
) -> None:
    _, clip_g = models
    text = " ".join(["dog"] * 100)  # two chunks; only the first one is pooled
    first = tokenizer.tokenize(text).chunks[0]
    out = _direct(clip_g, first.padded_ids(PAD_G))
    with torch.inference_mode():
        normed = clip_g.text_model.final_layer_norm(out.hidden_states[-1][0])
        expected = clip_g.text_projection(normed[first.eos_index]).unsqueeze(0)
    pooled = encoder.encode([text], 1).pooled
    torch.testing.assert_close(pooled, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pooled, out.text_embeds, atol=1e-5, rtol=1e-5)


def test_workloads_concat_and_pooled_sum(encoder: PromptEncoder) -> None:
    texts = ["a cat", "a dog", "expansion words"]  # the last one stands for the expansion
    parts = [encoder.encode_text(t) for t in texts]
    c = encoder.encode(texts, pool_top_k=2)
    assert c.cond.shape == (1, 3 * 77, HL + HG)
    torch.testing.assert_close(c.cond, torch.cat([p.cond for p in parts], dim=1))
    torch.testing.assert_close(c.pooled, parts[0].pooled + parts[1].pooled)
    all_three = encoder.encode(texts, pool_top_k=3).pooled
    assert not torch.allclose(all_three, c.pooled)
    with pytest.raises(ValueError):
        encoder.encode([], 1)


def test_emphasis_weights_one_token(encoder: PromptEncoder, tokenizer: PromptTokenizer) -> None:
    """``(photo:1.5)`` against ``photo``, per encoder half (L and G are weighted separately).

    Both prompts tokenize to the same ids, so their raw hidden states are equal. Weighting moves
    only the ``photo`` row: ``z_j' = (z_j - z_empty_j) * 1.5 + z_empty_j``; then the whole chunk is
    multiplied by ``s = mean(z) / mean(z')`` so its mean is restored. Hence: every other row is
    exactly ``s`` times its unweighted value (same direction), the weighted row equals ``s`` times
    the hand-computed ``z_j'``, and the chunk mean equals the unweighted mean.
    """
    plain = encoder.encode(["a photo of a cat"], 1).cond[0]
    weighted = encoder.encode(["a (photo:1.5) of a cat"], 1).cond[0]
    empty = encoder.encode([""], 1).cond[0]  # BOS, EOS, pads: the z_empty sequence
    j = 2  # BOS, "a", "photo"
    assert tokenizer.tokenize("a (photo:1.5) of a cat").chunks[0].weights[j] == 1.5
    for cols in (slice(0, HL), slice(HL, HL + HG)):
        z, zw, ze = plain[:, cols], weighted[:, cols], empty[:, cols]
        hand = z.clone()
        hand[j] = (z[j] - ze[j]) * 1.5 + ze[j]
        s = z.mean() / hand.mean()
        torch.testing.assert_close(zw, hand * s, atol=1e-5, rtol=1e-4)
        others = [k for k in range(77) if k != j]
        torch.testing.assert_close(zw[others], z[others] * s, atol=1e-5, rtol=1e-4)
        assert not torch.allclose(zw[j], z[j] * s, atol=1e-3)
        torch.testing.assert_close(zw.mean(), z.mean(), atol=1e-6, rtol=1e-5)


def test_unit_weights_need_no_empty_pass(encoder: PromptEncoder) -> None:
    """Weights of exactly 1 (``(a:1)``) leave the encoding identical to the plain prompt."""
    torch.testing.assert_close(
        encoder.encode(["(a:1) cat"], 1).cond, encoder.encode(["a cat"], 1).cond
    )


def test_cache_and_clear(encoder: PromptEncoder) -> None:
    a = encoder.encode_text("a cat")
    assert encoder.encode_text("a cat") is a
    assert encoder.encode_text("a cat", clip_skip=1) is not a
    encoder.clear_cache()
    b = encoder.encode_text("a cat")
    assert b is not a
    torch.testing.assert_close(a.cond, b.cond)


def test_other_dtype(tokenizer: PromptTokenizer, models: tuple) -> None:
    clip_l, clip_g = models
    ref = PromptEncoder(tokenizer, clip_l, clip_g).encode(["a (red:1.3) cat"], 1)
    low_l = copy.deepcopy(clip_l).to(torch.bfloat16)
    low_g = copy.deepcopy(clip_g).to(torch.bfloat16)
    low = PromptEncoder(tokenizer, low_l, low_g).encode(["a (red:1.3) cat"], 1)
    assert low.cond.dtype == torch.float32 and low.pooled.dtype == torch.float32
    torch.testing.assert_close(low.cond, ref.cond, atol=0.1, rtol=0.05)


def test_embedding_warning_passed_on(encoder: PromptEncoder) -> None:
    c = encoder.encode(["embedding:foo cat", "embedding:foo cat, dog"], 1)
    assert len(c.warnings) == 1 and "foo" in c.warnings[0]


def test_results_usable_outside_inference_mode(encoder: PromptEncoder) -> None:
    c = encoder.encode(["a cat"], 1)
    assert not c.cond.is_inference() and not c.pooled.is_inference()
    weight = torch.ones(HL + HG, requires_grad=True)
    (c.cond * weight).sum().backward()  # would fail on inference tensors
    assert weight.grad is not None
