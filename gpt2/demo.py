"""The end-to-end demo that the README's first command runs.

Today: learn a byte-level BPE vocabulary on Tiny Shakespeare (Karpathy's
char-rnn corpus) and encode the corpus with it, reporting compression.
The corpus is downloaded once into the cache (sha256-checked); offline users
pass `--corpus FILE` or set GPT2_DEMO_CORPUS to a local copy.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from gpt2 import download
from gpt2.errors import GPT2Error
from gpt2.tokenizer import Tokenizer, iter_file_text, stats_line

log = logging.getLogger(__name__)

CORPUS_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
CORPUS_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"


def demo_corpus(path: Path | None) -> Path:
    """--corpus, else $GPT2_DEMO_CORPUS, else the cached download."""
    path = path or (Path(os.environ["GPT2_DEMO_CORPUS"]) if os.environ.get("GPT2_DEMO_CORPUS") else None)
    if path is not None:
        if not path.is_file():
            raise GPT2Error(f"demo corpus {path} does not exist; pass --corpus with a copy of Tiny Shakespeare ({CORPUS_URL})")
        return path
    return download.fetch(CORPUS_URL, CORPUS_SHA256, download.cache_dir() / "tinyshakespeare" / "input.txt", what="Tiny Shakespeare")


def demo(cfg) -> None:
    """`gpt2 demo`."""
    corpus = demo_corpus(cfg.corpus)
    out = Path(cfg.out)
    t0 = time.perf_counter()
    tok = Tokenizer.train(iter_file_text([corpus]), cfg.vocab_size)
    tok.save(out / "tokenizer")
    log.info("trained a %d-token vocabulary on %s in %.1f s -> %s", tok.n_vocab, corpus, time.perf_counter() - t0, out / "tokenizer")
    text = corpus.read_text(encoding="utf-8")
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    log.info("encoded the corpus: %s", stats_line(tok, len(text.encode("utf-8")), ids))
    first = ids[:24]
    log.info("its first tokens: %s", " | ".join(repr(tok.decode([i])) for i in first))
