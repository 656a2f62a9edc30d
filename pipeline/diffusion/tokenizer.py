"""SD v1.5's CLIP tokenizer, rebuilt offline from the BPE file that open_clip ships.

Stable Diffusion v1.5 uses OpenAI CLIP ViT-L/14's tokenizer: byte-level BPE with 48 894 merges, a
49 408-token vocabulary (256 bytes, the same 256 with "</w>", the merges, then <|startoftext|> = 49406
and <|endoftext|> = 49407), 77 tokens, padded with <|endoftext|>. open_clip's
`bpe_simple_vocab_16e6.txt.gz` is that very merge list, so the vocabulary can be rebuilt exactly the way
OpenAI's `SimpleTokenizer` builds it (tests check known SD token ids and agreement with open_clip).
"""
from __future__ import annotations

import gzip
import importlib.util
from functools import lru_cache
from pathlib import Path

N_MERGES = 49152 - 256 - 2  # OpenAI CLIP's merge count (the file holds a few more lines: unused)
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
MAX_LENGTH = 77


def bpe_path() -> Path:
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("open_clip_torch is not installed: it ships the CLIP BPE merges file")
    p = Path(list(spec.submodule_search_locations)[0]) / "bpe_simple_vocab_16e6.txt.gz"
    if not p.is_file():
        raise RuntimeError(f"CLIP BPE merges file missing: {p}")
    return p


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP byte -> printable unicode map (the BPE works on these characters)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


@lru_cache(maxsize=1)
def vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    lines = gzip.open(bpe_path()).read().decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in lines[1:N_MERGES + 1]]
    base = list(bytes_to_unicode().values())
    tokens = base + [t + "</w>" for t in base] + ["".join(m) for m in merges] + [BOS, EOS]
    return {t: i for i, t in enumerate(tokens)}, merges


def build_clip_tokenizer():
    """A transformers CLIPTokenizer identical to SD v1.5's `tokenizer/` folder."""
    from transformers import CLIPTokenizer
    vocab, merges = vocab_and_merges()
    return CLIPTokenizer(vocab=dict(vocab), merges=list(merges), unk_token=EOS, bos_token=BOS,
                         eos_token=EOS, pad_token=EOS, model_max_length=MAX_LENGTH)
