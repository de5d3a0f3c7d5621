"""SDXL text conditioning from CLIP-L + CLIP-G, Fooocus/ComfyUI style (spec §1.3, §3.4, §3.7).

Per text: tokenize into 77-token chunks; run both encoders over the chunks and take
``hidden_states[-clip_skip]`` (no final layer norm); apply emphasis weights against the encoding
of the empty sequence, ``z = (z - z_empty) * w + z_empty``, then rescale each chunk so its mean is
restored (done per encoder, as ComfyUI encodes CLIP-L and CLIP-G separately); concatenate
``[L, G]`` on the feature axis and the chunks on the token axis. The pooled vector is the CLIP-G
final-layer output (after its final layer norm) at the first chunk's end token, projected by
``text_projection``.

Per prompt: the workloads' encodings are concatenated on the token axis and the pooled vectors of
the first ``pool_top_k`` workloads are summed.

Textual-inversion embeddings (``embedding:NAME``): each vector is one token whose input embedding
(before the position embedding is added) is the file's ``clip_l`` / ``clip_g`` row instead of a
vocabulary row; the token id there is :data:`EMBEDDING_PLACEHOLDER`. The vectors are put in by a
forward hook on the encoder's token-embedding layer that lives for one call and only touches the
call with this encoder's own ``input_ids`` tensor.

The encoder only encodes: skipping the negative prompt when cfg == 1 (reusing the positive) and
appending the Fooocus V2 expansion are the pipeline's decisions.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from fooocus_core.prompts.embeddings import load_embedding
from fooocus_core.prompts.tokenize import (
    BOS,
    EMBEDDING_PLACEHOLDER,
    EOS,
    PAD_G,
    PAD_L,
    PromptTokenizer,
    TokenChunk,
)

#: Embedding-file key of each encoder's vectors.
KEY_L = "clip_l"
KEY_G = "clip_g"


@dataclass(frozen=True)
class Conditioning:
    """Encoded prompt: token conditioning and pooled vector (float32, on the encoder's device)."""

    #: ``[1, 77 * chunks, hidden_L + hidden_G]``.
    cond: Tensor
    #: ``[1, projection_dim_G]``.
    pooled: Tensor
    #: Notes from tokenization (e.g. embeddings kept as text), de-duplicated.
    warnings: tuple[str, ...] = field(default=())


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _num_layers(model: nn.Module) -> int:
    return int(model.config.num_hidden_layers)


def _embedding_width(model: nn.Module) -> int:
    """Width of the model's token embeddings (what an embedding vector must have)."""
    return int(model.get_input_embeddings().weight.shape[-1])


def _embedding_rows(
    chunks: Sequence[TokenChunk], key: str
) -> tuple[list[int], list[int], list[Tensor]]:
    """Batch rows, positions and vectors (``[width]``) of the embedding markers in ``chunks``."""
    rows: list[int] = []
    positions: list[int] = []
    vectors: list[Tensor] = []
    for k, chunk in enumerate(chunks):
        for position, ref in chunk.embedding_positions():
            rows.append(k)
            positions.append(position)
            vectors.append(load_embedding(ref.path)[key][ref.index])
    return rows, positions, vectors


def apply_token_weights(z: Tensor, z_empty: Tensor, weights: Tensor) -> Tensor:
    """Weight one chunk's tokens against the empty encoding, then restore the chunk's mean.

    ``z``, ``z_empty``: ``[77, hidden]``; ``weights``: ``[77]``. Tokens of weight 1 are left exactly
    as they are before the rescale; the rescale multiplies the whole chunk by
    ``mean(z) / mean(z_weighted)``.
    """
    mean_before = z.mean()
    w = weights.to(z.dtype).unsqueeze(-1)
    weighted = torch.where(w != 1.0, (z - z_empty) * w + z_empty, z)
    return weighted * (mean_before / weighted.mean())


class PromptEncoder:
    """Encodes prompt workloads with an SDXL text-encoder pair, caching per-text results.

    ``tokenizer`` is a :class:`PromptTokenizer` or a ``transformers.CLIPTokenizer``; ``clip_l`` a
    ``transformers.CLIPTextModel``; ``clip_g`` a ``transformers.CLIPTextModelWithProjection``.
    The models may live on any device and dtype; results are float32 on CLIP-L's device. Cached
    tensors are shared between calls: do not modify them in place. Call :meth:`clear_cache` when
    a model (or its LoRA patching) changes. Not thread-safe (one engine worker uses it).
    """

    def __init__(
        self,
        tokenizer: PromptTokenizer | Any,
        clip_l: nn.Module,
        clip_g: nn.Module,
        *,
        cache_size: int = 512,
    ) -> None:
        self.tokenizer = (
            tokenizer if isinstance(tokenizer, PromptTokenizer) else PromptTokenizer(tokenizer)
        )
        self.clip_l = clip_l
        self.clip_g = clip_g
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple[str, int], Conditioning] = OrderedDict()

    def clear_cache(self) -> None:
        """Forget all cached encodings (call after changing the models)."""
        self._cache.clear()

    def _check_clip_skip(self, clip_skip: int) -> None:
        layers = min(_num_layers(self.clip_l), _num_layers(self.clip_g))
        if not 1 <= clip_skip <= layers:
            raise ValueError(f"clip_skip must be between 1 and {layers}, got {clip_skip}")

    def embedding_widths(self) -> dict[str, int]:
        """The vector width per embedding key that the loaded encoders need."""
        return {KEY_L: _embedding_width(self.clip_l), KEY_G: _embedding_width(self.clip_g)}

    def _run(
        self,
        model: nn.Module,
        chunks: Sequence[TokenChunk],
        pad: int,
        with_empty: bool,
        key: str,
    ) -> Any:
        ids = [chunk.padded_ids(pad, EMBEDDING_PLACEHOLDER) for chunk in chunks]
        if with_empty:
            ids.append(TokenChunk([BOS, EOS], [1.0, 1.0]).padded_ids(pad))
        input_ids = torch.tensor(ids, dtype=torch.long, device=_device_of(model))
        rows, positions, vectors = _embedding_rows(chunks, key)
        if not rows:
            return model(input_ids=input_ids, output_hidden_states=True)
        row_index = torch.tensor(rows, dtype=torch.long, device=input_ids.device)
        position_index = torch.tensor(positions, dtype=torch.long, device=input_ids.device)
        stacked = torch.stack(vectors)
        injected: list[bool] = []

        def inject(_module: nn.Module, args: tuple[Any, ...], output: Tensor) -> Tensor | None:
            ids_in = args[0] if args else None
            if not (
                isinstance(ids_in, Tensor)
                and ids_in.data_ptr() == input_ids.data_ptr()
                and tuple(output.shape[:2]) == tuple(input_ids.shape)
            ):
                return None  # another caller's batch
            output = output.clone()
            output[row_index, position_index] = stacked.to(output.device, output.dtype)
            injected.append(True)
            return output

        handle = model.get_input_embeddings().register_forward_hook(inject)
        try:
            result = model(input_ids=input_ids, output_hidden_states=True)
        finally:
            handle.remove()
        if not injected:
            raise RuntimeError(
                "textual-inversion vectors could not be put into the text encoder "
                f"({type(model).__name__} did not call its token embedding with input_ids)"
            )
        return result

    def _hidden(
        self, output: Any, chunks: Sequence[TokenChunk], clip_skip: int, with_empty: bool
    ) -> list[Tensor]:
        """Per-chunk ``[77, hidden]`` float32 tensors of the chosen layer, weights applied."""
        hidden = output.hidden_states[-clip_skip].float()
        results: list[Tensor] = []
        for k, chunk in enumerate(chunks):
            z = hidden[k]
            if with_empty:
                weights = torch.tensor(chunk.padded_weights(), device=z.device)
                z = apply_token_weights(z, hidden[-1], weights)
            results.append(z)
        return results

    def encode_text(self, text: str, clip_skip: int = 2) -> Conditioning:
        """Encode one workload text (cached): ``cond [1, 77*n, L+G]``, ``pooled [1, proj_G]``."""
        key = (text, clip_skip)
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached
        self._check_clip_skip(clip_skip)
        tokenized = self.tokenizer.tokenize(text, self.embedding_widths())
        chunks = tokenized.chunks
        with_empty = tokenized.has_weights
        with torch.inference_mode():
            out_l = self._run(self.clip_l, chunks, PAD_L, with_empty, KEY_L)
            out_g = self._run(self.clip_g, chunks, PAD_G, with_empty, KEY_G)
            z_l = self._hidden(out_l, chunks, clip_skip, with_empty)
            z_g = self._hidden(out_g, chunks, clip_skip, with_empty)
            cond = torch.cat(
                [torch.cat([a, b.to(a.device)], dim=-1) for a, b in zip(z_l, z_g, strict=True)],
                dim=0,
            ).unsqueeze(0)
            eos_state = out_g.last_hidden_state[0, chunks[0].eos_index]
            pooled = self.clip_g.text_projection(eos_state).float().unsqueeze(0)
        # Clone outside inference mode: callers may use the tensors where autograd is on.
        result = Conditioning(
            cond.clone(), pooled.to(cond.device).clone(), tuple(tokenized.warnings)
        )
        self._cache[key] = result
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return result

    def encode(self, workloads: Sequence[str], pool_top_k: int, clip_skip: int = 2) -> Conditioning:
        """Encode a list of workloads into one conditioning.

        Token conditionings are concatenated in order; ``pooled`` is the sum of the pooled vectors
        of the first ``pool_top_k`` workloads (so an appended expansion can be left out).
        """
        if not workloads:
            raise ValueError("no prompt workloads to encode")
        if pool_top_k < 1:
            raise ValueError(f"pool_top_k must be at least 1, got {pool_top_k}")
        parts = [self.encode_text(text, clip_skip) for text in workloads]
        cond = torch.cat([part.cond for part in parts], dim=1)
        pooled = torch.stack([part.pooled for part in parts[:pool_top_k]]).sum(dim=0)
        warnings = tuple(dict.fromkeys(w for part in parts for w in part.warnings))
        return Conditioning(cond, pooled, warnings)
