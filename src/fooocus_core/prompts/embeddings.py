"""Textual-inversion embedding files for ``embedding:NAME`` words (spec §1.3).

An SDXL embedding holds one vector set per text encoder: ``clip_l`` ``[n, 768]`` and ``clip_g``
``[n, 1280]`` (the widths follow the loaded encoders). Such a word stands for ``n`` tokens whose
input embeddings are these vectors. Files of other models (SD 1.x ``string_to_param`` /
``emb_params`` / bare tensors) are read too, so that a clear warning can say why they do not fit.

Files are read with ``weights_only`` (no code runs) and cached per (path, mtime, size).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from fooocus_core.models.checkpoint import CheckpointError, read_state_dict

#: The SDXL keys, one per text encoder, in encoder order (CLIP-L, CLIP-G).
SDXL_KEYS: tuple[str, ...] = ("clip_l", "clip_g")
#: Key used for an embedding that has a single vector set (SD 1.x / 2.x style).
SINGLE_KEY = ""
_CACHE_SIZE = 64


class EmbeddingError(ValueError):
    """An embedding file cannot be used with the loaded text encoders."""


def _as_matrix(value: torch.Tensor) -> torch.Tensor:
    tensor = value.detach().to("cpu", torch.float32)
    if tensor.ndim == 1:
        tensor = tensor.unsqueeze(0)
    if tensor.ndim != 2:
        raise EmbeddingError(f"expected [n, width] vectors, got shape {tuple(value.shape)}")
    return tensor


def _vector_sets(data: Any) -> dict[str, torch.Tensor]:
    """The vector sets of a loaded file, by key (``SINGLE_KEY`` for a one-set embedding)."""
    if isinstance(data, torch.Tensor):
        return {SINGLE_KEY: _as_matrix(data)}
    if not isinstance(data, Mapping):
        raise EmbeddingError(f"not an embedding file (holds {type(data).__name__})")
    if any(isinstance(data.get(key), torch.Tensor) for key in SDXL_KEYS):
        return {k: _as_matrix(data[k]) for k in SDXL_KEYS if isinstance(data.get(k), torch.Tensor)}
    params = data.get("string_to_param")
    if isinstance(params, Mapping):  # A1111 .pt
        tensors = [_as_matrix(v) for v in params.values() if isinstance(v, torch.Tensor)]
        if tensors:
            return {SINGLE_KEY: torch.cat(tensors, dim=0)}
    if isinstance(data.get("emb_params"), torch.Tensor):
        return {SINGLE_KEY: _as_matrix(data["emb_params"])}
    tensors = [v for v in data.values() if isinstance(v, torch.Tensor)]
    if tensors:
        return {SINGLE_KEY: _as_matrix(tensors[0])}
    raise EmbeddingError("no embedding vectors in the file")


def read_embedding(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The vector sets ``{key: [n, width] float32}`` of an embedding file (uncached)."""
    path = Path(path)
    if path.suffix.lower() == ".safetensors":
        tensors, _ = read_state_dict(path)
        return _vector_sets(tensors)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors come in many types
        raise CheckpointError(f"cannot read {path.name!r} as an embedding: {exc}") from exc
    return _vector_sets(data)


_cache: OrderedDict[tuple[str, int, int], dict[str, torch.Tensor]] = OrderedDict()
_cache_lock = threading.Lock()


def load_embedding(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """:func:`read_embedding`, cached while the file's mtime and size stay the same.

    The returned tensors are shared: do not modify them.
    """
    resolved = Path(path).resolve()
    stat = resolved.stat()
    key = (str(resolved), stat.st_mtime_ns, stat.st_size)
    with _cache_lock:
        cached = _cache.get(key)
        if cached is not None:
            _cache.move_to_end(key)
            return cached
    vectors = read_embedding(resolved)
    with _cache_lock:
        _cache[key] = vectors
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return vectors


def _describe(vectors: Mapping[str, torch.Tensor]) -> str:
    return ", ".join(
        f"{key or 'vectors'} [{v.shape[0]}, {v.shape[1]}]" for key, v in vectors.items()
    )


def check_embedding(vectors: Mapping[str, torch.Tensor], widths: Mapping[str, int | None]) -> int:
    """The number of tokens the embedding stands for, given the encoders' ``widths`` per key
    (``None``: any width). Raises :class:`EmbeddingError` saying why it does not fit.
    """
    missing = [key for key in widths if key not in vectors]
    if missing:
        expected = ", ".join(f"{k} [n, {w if w is not None else '?'}]" for k, w in widths.items())
        raise EmbeddingError(
            f"holds {_describe(vectors)}, the loaded model needs {expected} "
            "(an embedding for another model family?)"
        )
    for key, width in widths.items():
        if width is not None and vectors[key].shape[1] != width:
            raise EmbeddingError(
                f"{key} has width {vectors[key].shape[1]}, the loaded text encoder needs {width}"
            )
    counts = {vectors[key].shape[0] for key in widths}
    if len(counts) != 1:
        raise EmbeddingError(f"vector counts differ between encoders ({_describe(vectors)})")
    (count,) = counts
    if count < 1:
        raise EmbeddingError("holds no vectors")
    return int(count)
