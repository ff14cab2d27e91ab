"""Language-modelling tasks of Table 3: WikiText-2/-103, PTB, 1BW (perplexity per word), enwik8 (bits per
byte), text8 (bits per character).

GPT-2 paper section 3.1: the text is de-tokenized, scored with GPT-2's BPE,
and the total negative log-likelihood is divided by the number of units of
the *original* dataset, so the numbers are comparable with word- and
character-level models:

    PPL_word = exp(sum NLL / N_words)    BPB = sum NLL / (ln 2 * N_bytes)    BPC = sum NLL / (ln 2 * N_chars)

N_words counts whitespace-separated items of the original text (so <eos> /
line ends are not words; the count with one <eos> per line is also recorded).
Windows: see `Scorer.score_documents`; each variant is reported by name.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

from gpt2.errors import GPT2Error
from gpt2.evaluate import detokenize
from gpt2.evaluate.datasets import read_text
from gpt2.evaluate.tasks import Context, Metric, TaskOutput

log = logging.getLogger(__name__)

# enwik8 / text8: the last 5M bytes (characters) of the 100M are the standard test split.
TEST_TAIL = 5_000_000


def _first_lines(text: str, n: int) -> str:
    lines = text.splitlines(keepends=True)
    return "".join(lines[:n])


def _score(ctx: Context, docs: list[str], units: int, unit: str, title: str) -> tuple[list[Metric], dict, int]:
    """Score de-tokenized documents with each window variant and normalise by `units` original units."""
    if units == 0 or not any(docs):
        raise GPT2Error(f"{title}: the test text is empty")
    ids = ctx.encode(docs)
    n_tokens = sum(len(d) for d in ids)
    B = ctx.scorer.block_size
    metrics, details = [], {"bpe_tokens": n_tokens, f"original_{unit}s": units, "documents": len(docs)}
    for kind in ctx.config.windows:
        stride = B if kind == "disjoint" else ctx.config.stride
        r = ctx.scorer.score_documents(ids, bos=ctx.eot, stride=stride, desc=f"{title} ({kind})")
        assert r.n_tokens == n_tokens
        where = f"disjoint windows of {B} tokens" if kind == "disjoint" else f"sliding window of {B} tokens, stride {stride}"
        suffix = "" if kind == "disjoint" else "-sliding"
        if unit == "word":
            metrics.append(
                Metric(
                    "ppl" + suffix, "perplexity", f"{where}; per original word ({units:,} whitespace-separated words)",
                    math.exp(r.nll / units), "ppl", lower_is_better=True,
                )
            )
        else:
            name = "bits per byte" if unit == "byte" else "bits per character"
            metrics.append(
                Metric(("bpb" if unit == "byte" else "bpc") + suffix, name, f"{where}; per original {unit} ({units:,})",
                       r.nll / (math.log(2) * units), "bpb" if unit == "byte" else "bpc", lower_is_better=True)
            )
        metrics.append(
            Metric("token-ppl" + suffix, "perplexity per BPE token", where, math.exp(r.nll / n_tokens), "ppl", lower_is_better=True)
        )
        details[f"nll_{kind}"] = r.nll
        details[f"windows_{kind}"] = r.n_windows
    return metrics, details, n_tokens


def _word_level(ctx: Context, source: str, detok: Callable[[str], str], title: str, per_line: bool = False) -> TaskOutput:
    text = read_text(ctx.files[source])
    if ctx.config.limit:
        text = _first_lines(text, ctx.config.limit)
    units = len(text.split())
    # one document (the test set as published), or one per line where lines are independent (1BW is shuffled)
    docs = [detok(line) for line in text.splitlines() if line.strip()] if per_line else [detok(text)]
    metrics, details, n_tokens = _score(ctx, docs, units, "word", title)
    details["original_words_with_eos"] = units + text.count("\n")
    details["detokenizer"] = detok.__name__
    return TaskOutput(metrics, len(docs), n_tokens, details)


def wikitext2(ctx: Context) -> TaskOutput:
    return _word_level(ctx, "wikitext2-test", detokenize.wikitext, "WikiText-2")


def wikitext103(ctx: Context) -> TaskOutput:
    return _word_level(ctx, "wikitext103-test", detokenize.wikitext, "WikiText-103")


def ptb(ctx: Context) -> TaskOutput:
    return _word_level(ctx, "ptb-test", detokenize.ptb, "PTB")


def one_billion_word(ctx: Context) -> TaskOutput:
    return _word_level(ctx, "1bw-test", detokenize.one_billion_word, "1BW", per_line=True)


def _tail(ctx: Context, source: str) -> bytes:
    data = ctx.files[source].read_bytes()
    if len(data) < TEST_TAIL:
        raise GPT2Error(f"{ctx.files[source]} has {len(data):,} bytes; the test split is its last {TEST_TAIL:,}")
    return data[-TEST_TAIL:]


def enwik8(ctx: Context) -> TaskOutput:
    data = _tail(ctx, "enwik8")
    if ctx.config.limit:
        data = b"".join(data.splitlines(keepends=True)[: ctx.config.limit])
    # A character cut at the split boundary decodes to U+FFFD; the bytes are still counted.
    text = data.decode("utf-8", errors="replace")
    metrics, details, n_tokens = _score(ctx, [text], len(data), "byte", "enwik8")
    return TaskOutput(metrics, 1, n_tokens, details)


def text8(ctx: Context) -> TaskOutput:
    text = _tail(ctx, "text8").decode("ascii", errors="replace")
    if ctx.config.limit:
        # text8 is one line: a limit of N keeps about N x 1,000 characters, cut at a space
        cut = text.find(" ", ctx.config.limit * 1000)
        text = text if cut < 0 else text[:cut]
    metrics, details, n_tokens = _score(ctx, [text], len(text), "char", "text8")
    return TaskOutput(metrics, 1, n_tokens, details)
