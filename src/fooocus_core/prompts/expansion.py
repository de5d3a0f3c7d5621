"""Fooocus V2 prompt expansion: GPT-2 with a restricted vocabulary (spec §1.2, §1.1 step 10).

The model folder ``<prompt_expansion>/fooocus_expansion/`` is the user's (weights and word list are
CC-BY-NC; the project ships none of it). It holds what Fooocus ships there plus the downloaded
weights: ``pytorch_model.bin`` (or ``model.safetensors``), ``config.json`` (optional: GPT-2 small
is assumed without it), the GPT-2 tokenizer files (``vocab.json`` + ``merges.txt`` and/or
``tokenizer.json``, with ``tokenizer_config.json`` / ``special_tokens_map.json`` if present) and
the word list ``positive.txt``.

Generation follows Fooocus: the input is ``safe_str(prompt) + ","``; new tokens fill the sequence
to the next multiple of 75 tokens; every step adds a bias of −8192 to every token except
``"Ġ" + word.lower()`` for the words of ``positive.txt``, sets −8192 on every token already in the
sequence (no repeats) and always allows ``","``; top-k (100) sampling. Unlike Fooocus (which seeds
the global RNGs with ``transformers.set_seed``) the sampling uses a private CPU
``torch.Generator`` seeded with ``seed mod 2**32``: deterministic for a seed, no effect on other
threads' random streams.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from fooocus_core.errors import EngineError
from fooocus_core.models.checkpoint import CheckpointError, read_state_dict
from fooocus_core.prompts.text import safe_str

if TYPE_CHECKING:
    from fooocus_core.config import EngineConfig

#: Sub-folder of the ``prompt_expansion`` model folder.
EXPANSION_FOLDER = "fooocus_expansion"
#: Weight file names tried, in order.
WEIGHT_FILES: tuple[str, ...] = ("pytorch_model.bin", "model.safetensors")
#: Where Fooocus downloads ``pytorch_model.bin`` from.
WEIGHTS_URL = "https://huggingface.co/lllyasviel/misc/resolve/main/fooocus_expansion.bin"
#: Where the tokenizer files and the word list come from.
FILES_URL = (
    "https://github.com/lllyasviel/Fooocus/tree/main/models/prompt_expansion/fooocus_expansion"
)
WORD_LIST = "positive.txt"
#: The bias of a forbidden token.
NEG_INF = -8192.0
TOP_K = 100
SEED_LIMIT = 2**32
#: Token count the expansion fills the sequence up to a multiple of.
FILL_MULTIPLE = 75
#: GPT-2's id of ``","`` (used when the tokenizer does not know ``","``).
COMMA_ID = 11


class ExpansionUnavailable(EngineError, FileNotFoundError):
    """The expansion model folder is incomplete; the message says what is missing and where."""


def expansion_dir(config: EngineConfig) -> Path:
    """``<prompt_expansion folder>/fooocus_expansion``."""
    return config.folder("prompt_expansion") / EXPANSION_FOLDER


def _weights_file(folder: Path) -> Path | None:
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    return None


def unavailable_reason(folder: str | os.PathLike[str]) -> str | None:
    """Why the expansion cannot load from ``folder`` (``None`` when the files are there)."""
    folder = Path(folder)
    if not folder.is_dir():
        return (
            f"Fooocus V2 prompt expansion needs the folder {str(folder)!r}: copy Fooocus' "
            f"fooocus_expansion folder ({FILES_URL}) there and download {WEIGHTS_URL} into it "
            f"as {WEIGHT_FILES[0]}"
        )
    problems: list[str] = []
    if _weights_file(folder) is None:
        problems.append(f"{WEIGHT_FILES[0]} (download {WEIGHTS_URL} and save it under that name)")
    has_bpe = (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()
    if not has_bpe and not (folder / "tokenizer.json").is_file():
        problems.append(f"the tokenizer files vocab.json and merges.txt (from {FILES_URL})")
    if not (folder / WORD_LIST).is_file():
        problems.append(f"the word list {WORD_LIST} (from {FILES_URL})")
    if not problems:
        return None
    return f"Fooocus V2 prompt expansion: {str(folder)!r} lacks " + "; ".join(problems)


def read_word_list(path: str | os.PathLike[str]) -> list[str]:
    """The non-empty lines of ``positive.txt``, as they are (Fooocus does not strip them)."""
    return [line for line in Path(path).read_text("utf-8").splitlines() if line != ""]


def allowed_bias(vocab: dict[str, int], words: list[str], width: int) -> torch.Tensor:
    """The base logits bias ``[width]``: 0 for ``"Ġ" + word.lower()`` tokens, −8192 elsewhere."""
    bias = torch.full((width,), NEG_INF, dtype=torch.float32)
    wanted = {"Ġ" + word.lower() for word in words}
    for token, index in vocab.items():
        if token in wanted and 0 <= index < width:
            bias[index] = 0.0
    return bias


def _state_dict_for(model: torch.nn.Module, path: Path) -> dict[str, torch.Tensor]:
    """The file's tensors under the model's names: ``transformer.`` prefix added when absent,
    old attention-mask buffers dropped, a tied ``lm_head.weight`` dropped.
    """
    tensors, _ = read_state_dict(path)
    expected = set(model.state_dict())
    result: dict[str, torch.Tensor] = {}
    for key, value in tensors.items():
        name = key
        if name not in expected and "transformer." + name in expected:
            name = "transformer." + name
        if name.endswith((".attn.bias", ".attn.masked_bias")) and name not in expected:
            continue
        result[name] = value
    if getattr(model.config, "tie_word_embeddings", True):
        result.pop("lm_head.weight", None)
    return result


def load_gpt2(
    folder: str | os.PathLike[str],
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
) -> Any:
    """A ``GPT2LMHeadModel`` from ``folder``'s ``config.json`` and weights file.

    Without ``config.json`` the architecture is GPT-2 small (transformers' defaults).
    The model is built without initialising its weights, then the file's tensors are assigned.
    Keys that do not fit raise :class:`CheckpointError`.
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    from fooocus_core.models.loader import check_fits, empty_weights

    folder = Path(folder)
    weights = _weights_file(folder)
    if weights is None:
        raise ExpansionUnavailable(unavailable_reason(folder) or str(folder))
    config_file = folder / "config.json"
    if config_file.is_file():
        config = GPT2Config.from_dict(json.loads(config_file.read_text("utf-8")))
    else:
        config = GPT2Config()
    with empty_weights():
        model = GPT2LMHeadModel(config)
    state_dict = _state_dict_for(model, weights)
    tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", True) else set()
    check_fits(model, state_dict, f"{weights.name!r} (against the GPT-2 config)", frozenset(tied))
    model.load_state_dict(state_dict, strict=False, assign=True)
    if tied:
        model.tie_weights()
    empty = [n for n, p in model.named_parameters() if p.device.type == "meta"]
    if empty:
        raise CheckpointError(f"{weights.name!r}: GPT-2 parameters left without weights: {empty}")
    device = torch.device(device)
    if dtype is None:
        dtype = torch.float16 if device.type == "cuda" else torch.float32
    model.to(device=device, dtype=dtype)
    model.requires_grad_(False)
    model.eval()
    return model


@dataclass(frozen=True)
class Expansion:
    """One expansion: the text and the GPT-2 token ids (input, then generated)."""

    #: ``safe_str`` of the decoded sequence: the prompt followed by the new words.
    text: str
    prompt_ids: tuple[int, ...]
    new_ids: tuple[int, ...]


class PromptExpander:
    """Fooocus V2: expands a prompt with GPT-2 words from the word list, seeded per image.

    Build it with :meth:`from_dir` / :meth:`from_config`; call it with ``(prompt, seed)``. Calls
    are serialised with a lock (one generation at a time). The fill target is capped at the
    model's ``n_positions`` (1024 for GPT-2), where Fooocus would fail.
    """

    def __init__(self, model: Any, tokenizer: Any, words: list[str]) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.words = list(words)
        vocab: dict[str, int] = dict(tokenizer.get_vocab())
        self.width = int(model.config.vocab_size)
        self.bias = allowed_bias(vocab, self.words, self.width)
        comma = vocab.get(",")
        self.comma_id = int(comma) if comma is not None and comma < self.width else COMMA_ID
        self.max_positions = int(getattr(model.config, "n_positions", 1024))
        # Recent transformers name the key/value cache "cache", older ones "past_key_values".
        params = inspect.signature(model.forward).parameters
        self._cache_name = "cache" if "cache" in params else "past_key_values"
        self._lock = threading.Lock()

    # --- construction -----------------------------------------------------------------------

    @staticmethod
    def unavailable_reason(config: EngineConfig) -> str | None:
        """Why "Fooocus V2" cannot run with ``config``'s folders (``None`` when it can)."""
        return unavailable_reason(expansion_dir(config))

    @classmethod
    def available(cls, config: EngineConfig) -> bool:
        """Whether the expansion files are in ``config``'s prompt_expansion folder."""
        return cls.unavailable_reason(config) is None

    @classmethod
    def from_dir(
        cls,
        folder: str | os.PathLike[str],
        device: torch.device | str = "cpu",
        dtype: torch.dtype | None = None,
    ) -> PromptExpander:
        """Load the tokenizer, word list and GPT-2 from ``folder`` (fp16 on CUDA by default).

        Raises :class:`ExpansionUnavailable` when files are missing.
        """
        from transformers import GPT2Tokenizer

        folder = Path(folder)
        reason = unavailable_reason(folder)
        if reason is not None:
            raise ExpansionUnavailable(reason)
        tokenizer = GPT2Tokenizer.from_pretrained(str(folder), local_files_only=True)
        words = read_word_list(folder / WORD_LIST)
        model = load_gpt2(folder, device, dtype)
        return cls(model, tokenizer, words)

    @classmethod
    def from_config(
        cls, config: EngineConfig, device: torch.device | str = "cpu"
    ) -> PromptExpander:
        """:meth:`from_dir` on ``<prompt_expansion>/fooocus_expansion``."""
        return cls.from_dir(expansion_dir(config), device)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # --- generation -------------------------------------------------------------------------

    def __call__(self, prompt: str, seed: int) -> str:
        """The expanded prompt (``""`` for an empty prompt)."""
        return self.expand(prompt, seed).text

    def expand(self, prompt: str, seed: int) -> Expansion:
        """Expand ``prompt`` with the image seed ``seed`` (taken mod 2**32)."""
        if prompt == "":
            return Expansion("", (), ())
        text = safe_str(prompt) + ","
        ids = [int(i) for i in self.tokenizer(text)["input_ids"]]
        length = len(ids)
        target = FILL_MULTIPLE * math.ceil(length / FILL_MULTIPLE)
        max_new = min(target, self.max_positions) - length
        if max_new <= 0:
            return Expansion(text[:-1], tuple(ids), ())
        generator = torch.Generator(device="cpu")
        generator.manual_seed(int(seed) % SEED_LIMIT)
        with self._lock:
            new_ids = self._sample(ids, max_new, generator)
        decoded = self.tokenizer.decode(ids + new_ids, skip_special_tokens=True)
        return Expansion(safe_str(decoded), tuple(ids), tuple(new_ids))

    def step_bias(self, present: torch.Tensor) -> torch.Tensor:
        """The bias of one step: the base bias, −8192 on tokens already present, 0 on ``","``."""
        bias = self.bias.clone()
        bias[present] = NEG_INF
        bias[self.comma_id] = 0.0
        return bias

    @torch.inference_mode()
    def _sample(self, ids: list[int], max_new: int, generator: torch.Generator) -> list[int]:
        """Top-k sampling with the bias, one token at a time (with the key/value cache)."""
        device = self.device
        present = torch.zeros(self.width, dtype=torch.bool)
        present[torch.tensor([i for i in ids if 0 <= i < self.width], dtype=torch.long)] = True
        step_input = torch.tensor([ids], dtype=torch.long, device=device)
        past: Any = None
        new_ids: list[int] = []
        for _ in range(max_new):
            out = self.model(input_ids=step_input, use_cache=True, **{self._cache_name: past})
            past = getattr(out, self._cache_name)
            logits = out.logits[0, -1, : self.width].float().cpu()
            scores = logits + self.step_bias(present)
            values, indices = torch.topk(scores, min(TOP_K, self.width))
            probs = torch.softmax(values, dim=-1)
            choice = int(torch.multinomial(probs, 1, generator=generator).item())
            token = int(indices[choice].item())
            new_ids.append(token)
            present[token] = True
            step_input = torch.tensor([[token]], dtype=torch.long, device=device)
        return new_ids
