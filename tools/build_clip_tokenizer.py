"""Build the offline CLIP tokenizer files shipped in ``config/clip_tokenizer/``.

Input: OpenAI CLIP's byte-level BPE table ``bpe_simple_vocab_16e6.txt.gz`` (MIT licence, as
distributed inside the ``open_clip_torch`` wheel). Output: ``vocab.json``, ``merges.txt`` and the
tokenizer configuration that ``transformers.CLIPTokenizer.from_pretrained`` reads, so the service
never needs a model hub to tokenize prompts.

Usage:
    python tools/build_clip_tokenizer.py bpe_simple_vocab_16e6.txt.gz config/clip_tokenizer
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

MERGE_COUNT = 49152 - 256 - 2


def byte_symbols() -> list[str]:
    """The 256 printable stand-ins for bytes, in CLIP's order (printable bytes first)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    codes = list(printable)
    for b in range(256):
        if b not in printable:
            codes.append(256 + len(codes) - len(printable))
    return [chr(c) for c in codes]


def build(bpe_gz: Path, out: Path) -> None:
    with gzip.open(bpe_gz, "rt", encoding="utf-8") as handle:
        lines = handle.read().split("\n")
    merges = [tuple(line.split()) for line in lines[1 : MERGE_COUNT + 1]]
    symbols = byte_symbols()
    vocab = symbols + [s + "</w>" for s in symbols]
    vocab += ["".join(pair) for pair in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.json").write_text(
        json.dumps({token: i for i, token in enumerate(vocab)}, ensure_ascii=False), "utf-8"
    )
    (out / "merges.txt").write_text(
        "#version: 0.2\n" + "\n".join(" ".join(pair) for pair in merges) + "\n", "utf-8"
    )
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": 77,
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "do_lower_case": True,
        "clean_up_tokenization_spaces": False,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", "utf-8")
    specials = {k: config[k] for k in ("bos_token", "eos_token", "unk_token", "pad_token")}
    (out / "special_tokens_map.json").write_text(json.dumps(specials, indent=2) + "\n", "utf-8")
    print(f"wrote {len(vocab)} tokens and {len(merges)} merges to {out}")


if __name__ == "__main__":
    build(Path(sys.argv[1]), Path(sys.argv[2]))
