"""Benchmark: zero-shot LAMBADA and WikiText-2 scoring, this project vs a straightforward transformers loop.

Both sides use the same GPT-2 124M-shape model (random weights: the time is
the point, not the numbers), the same de-tokenized text and the same tokens,
and compute the same quantities:

* LAMBADA (OpenAI's 5,153 passages): whole-word, last-token and stop-word
  filtered greedy accuracy, and perplexity of the last word;
* WikiText-2 test: total NLL over disjoint 1,024-token windows (every token
  scored once), hence perplexity per original word.

Ours: `gpt2.evaluate` (`Scorer`: length-sorted batches, vocabulary projection
only at scored positions). Peer: one `GPT2LMHeadModel` forward per passage /
window, `log_softmax` over the full logits. The work is interleaved in
chunks (ours on a chunk, then the peer on the same chunk) so that both see
the same machine load, and every chunk's numbers are compared. The process
keeps freed memory for reuse, as `gpt2 eval` does on a CPU
(kernels.retain_freed_memory); the setting is process-wide, so the peer runs
with it too.

CNN/Daily Mail (`--tasks cnndm`, not part of the default): the paper's
summaries, each article with and without the "TL;DR:" hint, 100 tokens of
top-k (k = 2) sampling. Ours: `gpt2.evaluate.generation.cnndm` as `gpt2 eval`
runs it (both prompts of an article in one batch, the article run once), and
the same with prefix sharing off; peer: transformers' `generate` per prompt.
Sampled text differs between the two libraries (different random streams),
so only the times compare. Natural Questions (`--tasks nq`): 5-shot prompts,
greedy answers to the end of the line, the same three contenders; the
answers are compared with transformers'.

    python bench/bench_eval.py                      # LAMBADA and WikiText-2 (long on a CPU)
    python bench/bench_eval.py --lambada 1000 --wikitext-windows 64
    python bench/bench_eval.py --tasks cnndm,nq --chunks 4
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gpt2 import kernels  # noqa: E402
from gpt2.evaluate import cloze, detokenize  # noqa: E402
from gpt2.evaluate.datasets import load_lambada, read_text  # noqa: E402
from gpt2.evaluate.scoring import Scorer  # noqa: E402
from gpt2.model import GPT, GPTConfig  # noqa: E402
from gpt2.tokenizer import Tokenizer  # noqa: E402
from gpt2.train import cpu_name  # noqa: E402

SHARED = Path(os.environ.get("GPT2_SHARED_DATASETS", REPO.parent / "shared" / "datasets"))



def models(seed: int):
    """A random 124M-shape transformers GPT-2 and our GPT with identical weights."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    hf = GPT2LMHeadModel(GPT2Config(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)).eval()
    ours = GPT(GPTConfig.from_name("gpt2"))
    state = hf.state_dict()
    ours.load_state_dict(
        {k: state[k].t() if k.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight")) else state[k] for k in ours.state_dict()}
    )
    return hf, ours.eval()


# ---------------------------------------------------------------------------- LAMBADA


def lambada_ours(scorer: Scorer, tok: Tokenizer, passages: list[str], banned: list[int]) -> tuple:
    pairs = [cloze.split_last_word(detokenize.lambada(p)) for p in passages]
    ctx = tok.encode_batch([c for c, _ in pairs], disallowed_special=())
    tgt = tok.encode_batch([t for _, t in pairs], disallowed_special=())
    scores = [s[0] for s in scorer.score(list(zip(ctx, [[t] for t in tgt])), banned=banned)]
    return (
        -sum(s.total for s in scores),
        sum(s.all_greedy for s in scores),
        sum(bool(s.greedy[-1]) for s in scores),
        sum(bool(s.greedy_filtered.all()) for s in scores),
    )


@torch.inference_mode()
def lambada_hf(hf, tok: Tokenizer, passages: list[str], banned: list[int]) -> tuple:
    nll, whole, last, filtered = 0.0, 0, 0, 0
    ban = torch.tensor(banned)
    for p in passages:
        context, target = cloze.split_last_word(detokenize.lambada(p))
        c, t = tok.encode_ordinary(context), tok.encode_ordinary(target)
        ids = torch.tensor([c + t])
        logits = hf(ids).logits[0, len(c) - 1 : -1]  # the positions that predict the target
        logp = torch.log_softmax(logits, dim=-1)
        tt = torch.tensor(t)
        nll -= logp[torch.arange(len(t)), tt].double().sum().item()
        greedy = logits.argmax(-1) == tt
        whole += bool(greedy.all())
        last += bool(greedy[-1])
        first = logits[0].clone()
        first[ban] = -math.inf
        filtered += bool(greedy[1:].all()) and int(first.argmax()) == t[0]
    return nll, whole, last, filtered


# ---------------------------------------------------------------------------- WikiText-2


def wikitext_ours(scorer: Scorer, stream: list[int], start: int, stop: int) -> float:
    """NLL of the disjoint windows that start at stream[start] .. stream[stop - 1] (multiples of 1024)."""
    # score_documents puts its `bos` first: pass the chunk's first token as bos, so its windows are the full run's
    return scorer.score_documents([stream[start + 1 : stop + 1]], bos=stream[start]).nll


@torch.inference_mode()
def wikitext_hf(hf, stream: list[int], start: int, stop: int, block: int = 1024) -> float:
    nll = 0.0
    for i in range(start, stop, block):
        x = torch.tensor(stream[i : i + block + 1])
        logits = hf(x[:-1][None]).logits[0]
        nll += F.cross_entropy(logits, x[1:], reduction="sum").double().item()
    return nll


# ---------------------------------------------------------------------------- generation tasks

CONTENDERS = ("ours", "ours, prefix sharing off", "transformers")


@contextlib.contextmanager
def prefix_sharing(on: bool):
    """gpt2.batching's shared-prefix prompt pass on or off (off: every prompt runs whole)."""
    from gpt2 import batching

    share = batching.SHARE_MIN_PREFIX
    batching.SHARE_MIN_PREFIX = share if on else 10**9
    try:
        yield
    finally:
        batching.SHARE_MIN_PREFIX = share


def alternate(n: int, chunks: int, run, what: str) -> dict[str, float]:
    """Seconds of each of CONTENDERS, which take turns on chunks of n items: run(name, lo, hi, folder)
    does items lo..hi-1 in a fresh folder."""
    times = dict.fromkeys(CONTENDERS, 0.0)
    size = math.ceil(n / chunks)
    with tempfile.TemporaryDirectory() as tmp:
        for lo in range(0, n, size):
            hi = min(n, lo + size)
            for k, name in enumerate(CONTENDERS):
                folder = Path(tmp) / f"{lo}-{k}"
                folder.mkdir()
                with prefix_sharing(name != "ours, prefix sharing off"):
                    t = time.perf_counter()
                    run(name, lo, hi, folder)
                    times[name] += time.perf_counter() - t
            print(f"  {what} {hi:4d}/{n}: " + ", ".join(f"{k} {v:.1f} s" for k, v in times.items()), flush=True)
    return times


# ---------------------------------------------------------------------------- CNN / Daily Mail

CNNDM = SHARED / "cnn_dailymail_sample"


def cnndm_files(urls: list[str], folder: Path) -> dict[str, Path]:
    """The task's files for the stories of `urls` only: a test list holding just those."""
    (folder / "urls.txt").write_text("".join(u + "\n" for u in urls))
    return {"cnndm-stories": CNNDM / "cnn_stories", "cnndm-test-urls": folder / "urls.txt"}


def cnndm_ours(ours, tok: Tokenizer, files: dict[str, Path], folder: Path, batch_tokens: int, seed: int) -> int:
    """`gpt2 eval --tasks cnndm` on these stories; returns the tokens generated."""
    from gpt2.config import EvalConfig
    from gpt2.evaluate import generation
    from gpt2.evaluate.tasks import Context
    from gpt2.sample import generate

    cfg = EvalConfig(model="bench", out=folder, seed=seed, batch_tokens=batch_tokens)
    ctx = Context(ours, tok, Scorer(ours), files, cfg, generate, progress=False)
    return generation.cnndm(ctx).tokens_scored


@torch.inference_mode()
def cnndm_hf(hf, tok: Tokenizer, files: dict[str, Path], seed: int) -> int:
    """The same prompts (article cut to fit, with and without the hint), one transformers `generate` each."""
    from gpt2.evaluate import generation
    from gpt2.evaluate.datasets import load_cnndm

    hint = tok.encode_ordinary("\nTL;DR:")
    room = 1024 - generation.CNNDM_NEW_TOKENS - len(hint)
    made = 0
    for i, story in enumerate(load_cnndm(files["cnndm-stories"], files["cnndm-test-urls"])):
        article = tok.encode_ordinary(story.article)[:room]
        for prompt in (article + hint, article):
            torch.manual_seed(seed + i)
            out = hf.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                              max_new_tokens=generation.CNNDM_NEW_TOKENS, do_sample=True, top_k=generation.CNNDM_TOP_K,
                              eos_token_id=tok.eot_token, pad_token_id=tok.eot_token)
            made += out.shape[1] - len(prompt)
    return made


def bench_cnndm(hf, ours, tok: Tokenizer, n: int, batch_tokens: int, seed: int, chunks: int) -> None:
    import hashlib

    from gpt2.evaluate import generation

    present = {p.stem for p in (CNNDM / "cnn_stories").rglob("*.story")}
    urls = [u.strip() for u in read_text(CNNDM / "abisee_url_lists" / "all_test.txt").splitlines()
            if hashlib.sha1(u.strip().encode()).hexdigest() in present]
    urls = urls[:n] if n else urls
    made = dict.fromkeys(CONTENDERS, 0)

    def run(name: str, lo: int, hi: int, folder: Path) -> None:
        files = cnndm_files(urls[lo:hi], folder)
        if name == "transformers":
            made[name] += cnndm_hf(hf, tok, files, seed)
        else:
            made[name] += cnndm_ours(ours, tok, files, folder, batch_tokens, seed)

    times = alternate(len(urls), chunks, run, "CNN/DM articles")
    print(f"CNN/DM, {len(urls)} articles x 2 prompts ({generation.CNNDM_NEW_TOKENS} new tokens each at most, top-k {generation.CNNDM_TOP_K}):")
    for name, t in times.items():
        print(f"  {name:26s} {t:7.1f} s  ({made[name]:,} tokens generated, {made[name] / t:.1f} tokens/s)  "
              f"transformers / this: {times['transformers'] / t:.2f}x")


# ---------------------------------------------------------------------------- Natural Questions


def nq_file(records: list[tuple[str, list[str]]], folder: Path) -> dict[str, Path]:
    path = folder / "nq.jsonl"
    path.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in records))
    return {"nq-open-dev": path}


def nq_ours(ours, tok: Tokenizer, files: dict[str, Path], folder: Path, batch_tokens: int, shots: int) -> list[str]:
    """`gpt2 eval --tasks nq` on these questions; returns the answers."""
    from gpt2.config import EvalConfig
    from gpt2.evaluate import generation
    from gpt2.evaluate.tasks import Context
    from gpt2.sample import generate

    cfg = EvalConfig(model="bench", out=folder, batch_tokens=batch_tokens, nq_shots=shots)
    ctx = Context(ours, tok, Scorer(ours), files, cfg, generate, progress=False)
    return [x["answer"] for x in generation.natural_questions(ctx).samples]


@torch.inference_mode()
def nq_hf(hf, tok: Tokenizer, records: list[tuple[str, list[str]]], shots: int) -> list[str]:
    """The same prompts, greedy, one transformers `generate` each, cut at the first line break."""
    from gpt2.evaluate import generation

    examples = [(q, a[0]) for q, a in records[:shots]]
    newline = [i for i in range(tok.n_vocab) if b"\n" in tok.vocab[i]]
    answers = []
    for q, _ in records[shots:]:
        prompt = tok.encode_ordinary(generation.qa_prompt(examples, q))
        out = hf.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                          max_new_tokens=generation.NQ_NEW_TOKENS, do_sample=False,
                          eos_token_id=[tok.eot_token, *newline], pad_token_id=tok.eot_token)
        line = []
        for t in out[0, len(prompt) :].tolist():
            if t == tok.eot_token or t in newline:
                break
            line.append(t)
        answers.append(tok.decode(line).strip())
    return answers


def bench_nq(hf, ours, tok: Tokenizer, n: int, batch_tokens: int, chunks: int, shots: int = 5) -> None:
    from gpt2.evaluate.datasets import load_nq_open

    data = load_nq_open(SHARED / "nq_open" / "NQ-open.dev.jsonl")
    examples, questions = data[:shots], data[shots:]
    questions = questions[:n] if n else questions
    answers: dict[str, list[str]] = {k: [] for k in CONTENDERS}

    def run(name: str, lo: int, hi: int, folder: Path) -> None:
        records = examples + questions[lo:hi]
        if name == "transformers":
            answers[name] += nq_hf(hf, tok, records, shots)
        else:
            answers[name] += nq_ours(ours, tok, nq_file(records, folder), folder, batch_tokens, shots)

    times = alternate(len(questions), chunks, run, "NQ questions")
    print(f"Natural Questions, {len(questions):,} questions, {shots}-shot, greedy:")
    for name, t in times.items():
        same = sum(a == b for a, b in zip(answers[name], answers["transformers"]))
        print(f"  {name:26s} {t:7.1f} s  ({len(questions) / t:.1f} questions/s)  transformers / this: {times['transformers'] / t:.2f}x"
              + ("" if name == "transformers" else f"  answers equal to transformers': {same} of {len(questions)}"))


def bench_lambada(hf, scorer: Scorer, tok: Tokenizer, limit: int, chunks: int) -> tuple[float, float]:
    passages = load_lambada(SHARED / "lambada" / "lambada_test.jsonl")
    passages = passages[:limit] if limit else passages
    banned = cloze.stop_word_ids(tok)
    with torch.inference_mode():  # warm up both
        lambada_ours(scorer, tok, passages[:8], banned)
        lambada_hf(hf, tok, passages[:2], banned)
    t_ours = t_hf = 0.0
    sums_ours, sums_hf = [0.0, 0, 0, 0], [0.0, 0, 0, 0]
    size = math.ceil(len(passages) / chunks)
    for i in range(0, len(passages), size):
        chunk = passages[i : i + size]
        t0 = time.perf_counter()
        a = lambada_ours(scorer, tok, chunk, banned)
        t1 = time.perf_counter()
        b = lambada_hf(hf, tok, chunk, banned)
        t2 = time.perf_counter()
        t_ours, t_hf = t_ours + t1 - t0, t_hf + t2 - t1
        assert a[1:] == b[1:], f"LAMBADA passages {i}..: accuracy counts differ: ours {a[1:]}, transformers {b[1:]}"
        assert abs(a[0] - b[0]) <= 1e-5 * abs(b[0]), f"LAMBADA passages {i}..: NLL {a[0]} vs {b[0]}"
        sums_ours = [x + y for x, y in zip(sums_ours, a)]
        sums_hf = [x + y for x, y in zip(sums_hf, b)]
        print(f"  LAMBADA {i + len(chunk):5d}/{len(passages)}: ours {t_ours:7.1f} s, transformers {t_hf:7.1f} s", flush=True)
    n = len(passages)
    print(f"LAMBADA, {n:,} passages: ours {t_ours:.1f} s ({n / t_ours:.1f} passages/s), transformers loop {t_hf:.1f} s "
          f"({n / t_hf:.1f} passages/s): {t_hf / t_ours:.2f}x")
    for name, s in (("ours", sums_ours), ("transformers", sums_hf)):
        print(f"  {name:12s} acc {100 * s[1] / n:.2f}%  last-token {100 * s[2] / n:.2f}%  stop-word filter {100 * s[3] / n:.2f}%  "
              f"ppl {math.exp(s[0] / n):.6g}")
    return t_ours, t_hf


def bench_wikitext(hf, scorer: Scorer, tok: Tokenizer, limit: int, chunks: int) -> tuple[float, float]:
    original = read_text(SHARED / "wikitext2_tokens" / "wiki.test.tokens")
    words = len(original.split())
    stream = [tok.eot_token] + tok.encode_ordinary(detokenize.wikitext(original))
    windows = list(range(0, len(stream) - 1, 1024))
    windows = windows[:limit] if limit else windows
    end_of = lambda k: min(windows[k - 1] + 1024, len(stream) - 1)  # noqa: E731
    t_ours = t_hf = 0.0
    nll_ours = nll_hf = 0.0
    size = math.ceil(len(windows) / chunks)
    for k in range(0, len(windows), size):
        start, stop = windows[k], end_of(min(k + size, len(windows)))
        t0 = time.perf_counter()
        a = wikitext_ours(scorer, stream, start, stop)
        t1 = time.perf_counter()
        b = wikitext_hf(hf, stream, start, stop)
        t2 = time.perf_counter()
        t_ours, t_hf = t_ours + t1 - t0, t_hf + t2 - t1
        assert abs(a - b) <= 1e-5 * abs(b), f"WikiText-2 windows {k}..: NLL {a} vs {b}"
        nll_ours, nll_hf = nll_ours + a, nll_hf + b
        print(f"  WikiText-2 {min(k + size, len(windows)):4d}/{len(windows)} windows: ours {t_ours:7.1f} s, transformers {t_hf:7.1f} s", flush=True)
    scored = end_of(len(windows))
    print(f"WikiText-2 test, {len(windows)} disjoint windows ({scored:,} tokens): ours {t_ours:.1f} s ({scored / t_ours:,.0f} tokens/s), "
          f"transformers loop {t_hf:.1f} s ({scored / t_hf:,.0f} tokens/s): {t_hf / t_ours:.2f}x")
    if scored == len(stream) - 1:
        print(f"  ppl per original word ({words:,}): ours {math.exp(nll_ours / words):.6g}, transformers {math.exp(nll_hf / words):.6g}")
    print(f"  NLL: ours {nll_ours:.6f}, transformers {nll_hf:.6f} (relative difference {abs(nll_ours - nll_hf) / nll_hf:.1e})")
    return t_ours, t_hf


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", default="lambada,wikitext2", help="comma-separated: lambada, wikitext2, cnndm, nq")
    ap.add_argument("--lambada", type=int, default=0, help="passages (0: all 5,153)")
    ap.add_argument("--wikitext-windows", type=int, default=0, help="1,024-token windows of WikiText-2 test (0: all)")
    ap.add_argument("--cnndm", type=int, default=0, help="CNN/DM test articles of the sample in ../shared (0: all present)")
    ap.add_argument("--nq", type=int, default=256, help="Natural Questions dev questions (0: all 3,610)")
    ap.add_argument("--chunks", type=int, default=8, help="interleaved chunks per task")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-tokens", type=int, default=8192)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    tasks = {t.strip() for t in args.tasks.split(",") if t.strip()}
    unknown = tasks - {"lambada", "wikitext2", "cnndm", "nq"}
    if unknown:
        ap.error(f"unknown task(s) {', '.join(sorted(unknown))}: choose from lambada, wikitext2, cnndm, nq")
    torch.set_num_threads(args.threads)
    retained = kernels.retain_freed_memory()  # what `gpt2 eval` does on a CPU; process-wide, so the peer runs with it too

    tok = Tokenizer.load(SHARED / "gpt2_bpe")
    hf, ours = models(args.seed)
    scorer = Scorer(ours, batch_tokens=args.batch_tokens, progress=False)
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, {args.threads} torch threads; torch {torch.__version__}; float32")
    print(f"freed memory kept for reuse (kernels.retain_freed_memory), for both sides: {retained}")
    print("model: GPT-2 124M shape (12 layers, 768 wide, 50,257 tokens, context 1,024), random weights, identical on both sides")
    totals = []
    if "lambada" in tasks:
        totals.append(bench_lambada(hf, scorer, tok, args.lambada, args.chunks))
    if "wikitext2" in tasks:
        totals.append(bench_wikitext(hf, scorer, tok, args.wikitext_windows, args.chunks))
    if len(totals) == 2:
        both_ours, both_hf = (sum(t[i] for t in totals) for i in (0, 1))
        print(f"both: ours {both_ours:.1f} s, transformers loop {both_hf:.1f} s: {both_hf / both_ours:.2f}x")
    if "cnndm" in tasks:
        bench_cnndm(hf, ours, tok, args.cnndm, args.batch_tokens, args.seed, args.chunks)
    if "nq" in tasks:
        bench_nq(hf, ours, tok, args.nq, args.batch_tokens, args.chunks)


if __name__ == "__main__":
    main()
