"""A real CLIP BPE tokenizer (vocab.json + merges.txt) built for the toy world's vocabulary.

The files follow OpenAI CLIP's format: the 256 byte symbols and their end-of-word (``</w>``) forms, then one
merge per line, learnt by classic BPE (Sennrich et al. 2016) on the world's words until every word is one
token. Any other text still tokenizes (it falls back to byte symbols), so the tokenizer never fails.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections import Counter
from pathlib import Path

from lcm_plugin.toy import world

logger = logging.getLogger(__name__)

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
MODEL_MAX_LENGTH = 77
_EXTRA_WORDS = (
    "a",
    "an",
    "the",
    "of",
    "on",
    "at",
    "in",
    "to",
    "with",
    "and",
    "near",
    "background",
    "image",
    "photo",
)


def bytes_to_unicode() -> dict[int, str]:
    """OpenAI CLIP/GPT-2 reversible byte -> printable unicode table."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))


def world_words() -> list[str]:
    """Every word a toy-world caption can contain (plus a few common function words)."""
    words: set[str] = set(_EXTRA_WORDS)
    for group in (world.SHAPES, world.COLOUR_NAMES, world.BACKGROUND_NAMES, world.POSITIONS):
        words.update(group)
    for phrases in (
        *world._SYNONYMS.values(),
        *world._POS_PHRASE.values(),
        ("left of", "right of", "above", "below", "middle"),
    ):
        for phrase in phrases:
            words.update(phrase.split())
    return sorted(words)


def learn_merges(words: list[str]) -> list[tuple[str, str]]:
    """Classic BPE: repeatedly merge the most frequent adjacent pair until each word is a single symbol."""
    segs = {w: [*w[:-1], w[-1] + "</w>"] for w in words}
    merges: list[tuple[str, str]] = []
    while True:
        pairs: Counter[tuple[str, str]] = Counter()
        for seg in segs.values():
            pairs.update(zip(seg, seg[1:], strict=False))
        if not pairs:
            return merges
        # Deterministic tie-break: count, then the pair itself.
        best = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))[0]
        merges.append(best)
        for w, seg in segs.items():
            out, i = [], 0
            while i < len(seg):
                if i + 1 < len(seg) and (seg[i], seg[i + 1]) == best:
                    out.append(seg[i] + seg[i + 1])
                    i += 2
                else:
                    out.append(seg[i])
                    i += 1
            segs[w] = out


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def build_tokenizer_files(out_dir: str | os.PathLike) -> Path:
    """Write CLIP-format ``vocab.json`` and ``merges.txt`` for the toy world into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    base = list(bytes_to_unicode().values())
    vocab_list = base + [b + "</w>" for b in base]
    merges = learn_merges(world_words())
    vocab_list += ["".join(m) for m in merges]
    vocab_list += [BOS, EOS]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(vocab_list))}
    _atomic_write(out / "vocab.json", json.dumps(vocab, ensure_ascii=False))
    _atomic_write(out / "merges.txt", "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    logger.info("wrote tokenizer (%d tokens, %d merges) to %s", len(vocab), len(merges), out)
    return out


def load_tokenizer(path: str | os.PathLike):
    """Load a ``CLIPTokenizer`` from a folder holding vocab.json and merges.txt (model_max_length 77)."""
    from transformers import CLIPTokenizer

    folder = Path(path)
    for name in ("vocab.json", "merges.txt"):
        if not (folder / name).is_file():
            raise FileNotFoundError(
                f"{folder / name} is missing; build it with lcm_plugin.toy.tokenizer.build_tokenizer_files"
            )
    vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
    lines = (folder / "merges.txt").read_text(encoding="utf-8").splitlines()
    merges = [tuple(line.split()) for line in lines if line and not line.startswith("#version")]
    if any(len(m) != 2 for m in merges):
        raise ValueError(f"{folder / 'merges.txt'} is corrupt: every line must hold two symbols; rebuild it")
    return CLIPTokenizer(
        vocab=vocab,
        merges=merges,
        model_max_length=MODEL_MAX_LENGTH,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=EOS,
        pad_token=EOS,
    )
