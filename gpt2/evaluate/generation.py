"""Generation tasks of the GPT-2 paper: CoQA (3.5), CNN / Daily Mail (3.6), WMT-14 (3.7), Natural Questions (3.8).

Each task builds prompts in the paper's format (EVAL_SPEC.md), generates with
`gpt2.sample.generate` (greedy, or top-k with k = 2 for summaries), cuts the
answer out of the continuation, and scores it with the benchmark's metric:

    CoQA    story, then "Q: ...\\n\\nA: ..." turns, then "Q: q\\n\\nA:"  -> F1 (SQuAD normalisation)
    CNN/DM  article + "\\nTL;DR:", 100 tokens, top-k 2, first 3 sentences -> ROUGE-1/2/L F1
    WMT-14  "source = target" example lines, then "source ="             -> BLEU (sacrebleu)
    NQ      "Q: ...?\\nA: ..." example pairs, then "Q: q?\\nA:"           -> exact match

Prompts longer than the context lose their oldest tokens (a CNN/DM article
loses its end instead, so that the "TL;DR:" hint stays); how many were cut
is recorded. Few-shot examples for WMT and NQ are the first examples of the
evaluation file, which are then not scored.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import math
import numbers
import random
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from gpt2.errors import GPT2Error
from gpt2.evaluate import datasets as D
from gpt2.evaluate import metrics as M
from gpt2.evaluate.tasks import Context, Metric, TaskOutput
from gpt2.batching import batch_order, token_batches

log = logging.getLogger(__name__)

COQA_NEW_TOKENS = 30
CNNDM_NEW_TOKENS = 100
CNNDM_TOP_K = 2
NQ_NEW_TOKENS = 16


def _newline_ids(tokenizer) -> list[int]:
    """Tokens whose text holds a line break: generation of a one-line answer stops at any of them."""
    return [i for i in range(tokenizer.n_vocab) if b"\n" in tokenizer.vocab[i]]


def generate_batched(
    ctx: Context, prompts: list[list[int]], max_new_tokens: int, *, desc: str, keep: str = "end",
    seed: int | list[int] | None = None, logprobs: list[list[float] | None] | None = None, **sampling
) -> tuple[list[list[int]], int]:
    """Generate for every prompt, in batches of at most `batch_tokens` (prompt plus new tokens, padded);
    returns (new tokens per prompt, prompts cut).

    A prompt longer than `block_size - max_new_tokens` keeps its last tokens
    (`keep="end"`) or its first ones (`keep="start"`). With `seed`, prompt i
    samples from its own generator seeded with seed + i (or with seed[i], given
    a list), so its result does not depend on how prompts are batched
    (--batch-tokens). Prompts are ordered longest first, except that prompts
    that begin alike (gpt2.batching.shared_prefixes) stay together, and a batch
    ends before a group it would split (unless the group alone is larger), so
    that gpt2.sample.generate runs their common beginning once. A list as `logprobs` is filled with each prompt's log-probabilities of
    its new tokens, if `ctx.generate` can report them (gpt2.sample.generate
    can), else with None.
    """
    reports = logprobs is not None and "return_logprobs" in inspect.signature(ctx.generate).parameters
    if ctx.generate is None:
        raise GPT2Error("generation tasks need gpt2.sample.generate, which this installation of gpt2 lacks")
    room = ctx.scorer.block_size - max_new_tokens
    if room < 1:
        raise GPT2Error(f"the model's context ({ctx.scorer.block_size}) leaves no room for a prompt and {max_new_tokens} new tokens")
    cut = 0
    fitted = []
    for p in prompts:
        if len(p) > room:
            cut += 1
            p = p[-room:] if keep == "end" else p[:room]
        fitted.append(p)
    if ctx.tokenizer.n_vocab < ctx.model.config.vocab_size:
        sampling["vocab_size"] = ctx.tokenizer.n_vocab  # never produce ids the tokenizer cannot decode
    out: list[list[int]] = [[] for _ in fitted]
    scores: list[list[float] | None] = [None] * len(fitted)
    done = _resume(ctx.partial, desc, fitted, out, scores if reports else None)
    one_seed = isinstance(seed, numbers.Integral)
    if seed is not None and not one_seed and len(seed) != len(prompts):
        raise ValueError(f"{len(seed)} seeds for {len(prompts)} prompts")
    order, group = batch_order(fitted, [i for i in range(len(fitted)) if i not in done])
    with tqdm(total=len(fitted), initial=len(done), desc=desc, unit="prompt", file=sys.stderr,
              disable=None if ctx.progress is None else not ctx.progress, leave=False) as bar:
        for batch in token_batches(fitted, order, group, max_new_tokens, ctx.config.batch_tokens):
            if seed is not None:
                seeds = [int(seed) + k for k in batch] if one_seed else [int(seed[k]) for k in batch]
                sampling["generator"] = [torch.Generator().manual_seed(x) for x in seeds]
            if reports:
                new, lps = ctx.generate(ctx.model, [fitted[k] for k in batch], max_new_tokens, return_logprobs=True, **sampling)
            else:
                new, lps = ctx.generate(ctx.model, [fitted[k] for k in batch], max_new_tokens, **sampling), [None] * len(batch)
            for k, tokens, lp in zip(batch, new, lps):
                out[k], scores[k] = [int(t) for t in tokens], lp
            if ctx.partial is not None:
                with open(ctx.partial, "a", encoding="utf-8") as f:
                    f.writelines(
                        json.dumps({"desc": desc, "prompt": k, "id": _prompt_id(fitted[k]), "new": out[k], "logprobs": scores[k]}) + "\n"
                        for k in batch
                    )
            bar.update(len(batch))
    if logprobs is not None:
        logprobs[:] = scores
    return out, cut


def _prompt_id(tokens: list[int]) -> str:
    return hashlib.sha256(json.dumps(tokens).encode()).hexdigest()[:16]


def _resume(
    partial: Path | None, desc: str, prompts: list[list[int]], out: list[list[int]], scores: list[list[float] | None] | None
) -> set[int]:
    """Fill `out` (and `scores`, if given) with what an interrupted run of this task wrote to `partial`;
    return those prompts' indices.

    A line is taken only if its prompt is still the prompt at that index (same tokens) and,
    when `scores` are wanted, it holds them; the last line of a killed run may be cut short
    and is skipped.
    """
    done: set[int] = set()
    if partial is None or not partial.exists():
        return done
    text = partial.read_text(encoding="utf-8")
    if text and not text.endswith("\n"):  # end the cut-short line, so that the next one starts afresh
        with open(partial, "a", encoding="utf-8") as f:
            f.write("\n")
    for line in text.splitlines():
        try:
            r = json.loads(line)
            k = r["prompt"]
            if r["desc"] == desc and 0 <= k < len(prompts) and r["id"] == _prompt_id(prompts[k]):
                if scores is not None:
                    if r.get("logprobs") is None:
                        continue
                    scores[k] = [float(x) for x in r["logprobs"]]
                out[k] = [int(t) for t in r["new"]]
                done.add(k)
        except (ValueError, KeyError, TypeError):
            continue
    if done:
        log.info("%s: %d of %d prompts done by an earlier run (%s)", desc, len(done), len(prompts), partial)
    return done


def _first_line(ctx: Context, tokens: list[int]) -> list[int]:
    """The generated tokens before the first line break or <|endoftext|> (GPT-2's pre-tokenizer keeps
    line breaks in tokens of white space only, so a token boundary always falls there)."""
    out = []
    for t in tokens:
        if t == ctx.eot or b"\n" in ctx.tokenizer.vocab[t]:
            break
        out.append(t)
    return out


def _decode_line(ctx: Context, tokens: list[int]) -> str:
    """The first line of generated text, stripped."""
    return ctx.tokenizer.decode(_first_line(ctx, tokens)).strip()


# ============================================================================
# CoQA


def coqa_prompt(story: str, history: list[tuple[str, str]], question: str) -> str:
    turns = "".join(f"Q: {q}\n\nA: {a}\n\n" for q, a in history)
    return f"{story}\n\n{turns}Q: {question}\n\nA:"


def coqa_answer(generated: str) -> str:
    """The text before the next 'Q:' line."""
    cut = generated.find("\nQ:")
    return (generated if cut < 0 else generated[:cut]).strip()


def coqa(ctx: Context) -> TaskOutput:
    stories = ctx.limited(D.load_coqa(ctx.files["coqa-dev"]))
    prompts, refs = [], []
    for s in stories:
        for i, q in enumerate(s.questions):
            prompts.append(coqa_prompt(s.story, [(s.questions[k], s.answers[k][0]) for k in range(i)], q))
            refs.append(s.answers[i])
    new, cut = generate_batched(ctx, ctx.encode(prompts), COQA_NEW_TOKENS, desc="CoQA", temperature=0.0, stop_ids=(ctx.eot,))
    answers = [coqa_answer(ctx.tokenizer.decode([t for t in n if t != ctx.eot])) for n in new]
    f1 = [M.max_over_references(M.token_f1, a, r) for a, r in zip(answers, refs)]
    loo = [M.leave_one_out(M.token_f1, a, r) for a, r in zip(answers, refs)]
    em = [M.max_over_references(M.exact_match, a, r) for a, r in zip(answers, refs)]
    n = len(answers)
    metrics = [
        Metric("f1", "F1", "greedy, answer = text before the next 'Q:' line; SQuAD-normalised token F1, max over the references",
               100 * sum(f1) / n, "F1"),
        Metric("f1-loo", "F1", "as f1, averaged leave-one-out over the references (the official CoQA script)", 100 * sum(loo) / n, "F1"),
        Metric("em", "exact match", "SQuAD-normalised exact match, max over the references", 100 * sum(em) / n, "%"),
    ]
    samples = [{"answer": a, "references": r} for a, r in zip(answers, refs)]
    return TaskOutput(metrics, n, sum(len(x) for x in new), {"stories": len(stories), "prompts_cut": cut}, samples)


# ============================================================================
# CNN / Daily Mail


def first_sentences(text: str, n: int = 3) -> str:
    return "\n".join(M.split_sentences(text)[:n])


def cnndm(ctx: Context) -> TaskOutput:
    present = D.load_cnndm(ctx.files["cnndm-stories"], ctx.files["cnndm-test-urls"])
    listed = sum(1 for line in D.read_text(ctx.files["cnndm-test-urls"]).splitlines() if line.strip())
    stories = ctx.limited(present)
    refs = ["\n".join(s.highlights) for s in stories]
    articles = ctx.encode([s.article for s in stories])
    hint = ctx.encode(["\nTL;DR:"])[0]
    room = ctx.scorer.block_size - CNNDM_NEW_TOKENS - len(hint)
    sampling = dict(temperature=1.0, top_k=CNNDM_TOP_K, stop_ids=(ctx.eot,))
    seed = ctx.config.seed
    # the article keeps its beginning so that the hint follows it; both prompts of an article go into one
    # batch, where the article runs once, and they draw from generators with the same seed
    n = len(articles)
    prompts = [a[:room] + hint for a in articles] + [a[:room] for a in articles]
    seeds = [seed + i for i in range(n)] * 2
    new, _ = generate_batched(ctx, prompts, CNNDM_NEW_TOKENS, desc="CNN/DM", seed=seeds, **sampling)
    with_hint, no_hint = new[:n], new[n:]
    cut = sum(len(a) > room for a in articles)
    decode = ctx.tokenizer.decode
    summaries = [first_sentences(decode([t for t in n if t != ctx.eot])) for n in with_hint]
    plain = [first_sentences(decode([t for t in n if t != ctx.eot])) for n in no_hint]
    lead3 = [first_sentences(s.article) for s in stories]
    rng = random.Random(ctx.config.seed)
    random3 = []
    for s in stories:
        sentences = M.split_sentences(s.article)
        picked = sorted(rng.sample(range(len(sentences)), min(3, len(sentences))))
        random3.append("\n".join(sentences[i] for i in picked))
    metrics = []
    for key, preds, how in [
        ("", summaries, f"article + '\\nTL;DR:', {CNNDM_NEW_TOKENS} tokens of top-k sampling (k = {CNNDM_TOP_K}), first 3 sentences"),
        ("no-hint-", plain, f"article alone (no 'TL;DR:'), {CNNDM_NEW_TOKENS} tokens of top-k sampling (k = {CNNDM_TOP_K}), first 3 sentences"),
        ("random3-", random3, f"3 random sentences of the article (seed {ctx.config.seed})"),
        ("lead3-", lead3, "the article's first 3 sentences"),
    ]:
        scores = M.rouge(preds, refs)
        for name, label in (("rouge1", "ROUGE-1"), ("rouge2", "ROUGE-2"), ("rougeL", "ROUGE-L")):
            metrics.append(Metric(key + name, label, f"{how}; F1 (rouge-score, stemming)", scores[name], "F1"))
    samples = [{"summary": s, "no_hint": p, "reference": r} for s, p, r in zip(summaries, plain, refs)]
    n_new = sum(len(x) for x in with_hint) + sum(len(x) for x in no_hint)
    details = {"articles_cut": cut, "seed": ctx.config.seed, "test_stories_listed": listed, "test_stories_present": len(present)}
    return TaskOutput(metrics, len(stories), n_new, details, samples)


# ============================================================================
# WMT-14


def translation_budget(source_lengths: list[int]) -> int:
    """New tokens allowed: room for a translation twice as long (in tokens) as the longest source, at most 256."""
    return min(256, 2 * max(source_lengths) + 8)


def translation_prompt(shots: list[tuple[str, str]], source: str) -> str:
    return "".join(f"{s} = {t}\n" for s, t in shots) + f"{source} ="


def _wmt(ctx: Context, pair: str, title: str) -> TaskOutput:
    sources = D.load_sgm(ctx.files[f"wmt14-{pair}-src"])
    targets = D.load_sgm(ctx.files[f"wmt14-{pair}-ref"])
    if len(sources) != len(targets):
        raise GPT2Error(f"{title}: {len(sources)} source segments but {len(targets)} references")
    k = ctx.config.wmt_shots
    if len(sources) <= k:
        raise GPT2Error(f"{title}: {len(sources)} segments leave none to score after {k} few-shot examples")
    shots = list(zip(sources[:k], targets[:k]))
    test = ctx.limited(list(zip(sources[k:], targets[k:])))
    prompts = ctx.encode([translation_prompt(shots, s) for s, _ in test])
    max_new = translation_budget([len(x) for x in ctx.encode([s for s, _ in test])])
    new, cut = generate_batched(ctx, prompts, max_new, desc=title, temperature=0.0, stop_ids=(ctx.eot, *_newline_ids(ctx.tokenizer)))
    hyps = [_decode_line(ctx, n) for n in new]
    score, signature = M.bleu(hyps, [t for _, t in test])
    metrics = [Metric("bleu", "BLEU", f"{k}-shot 'source = target' lines, greedy, first line; sacrebleu {signature}", score, "BLEU")]
    samples = [{"source": s, "hypothesis": h, "reference": t} for (s, t), h in zip(test, hyps)]
    return TaskOutput(metrics, len(test), sum(len(x) for x in new), {"signature": signature, "shots": k, "prompts_cut": cut}, samples)


def wmt14_en_fr(ctx: Context) -> TaskOutput:
    return _wmt(ctx, "en-fr", "WMT-14 en-fr")


def wmt14_fr_en(ctx: Context) -> TaskOutput:
    return _wmt(ctx, "fr-en", "WMT-14 fr-en")


# ============================================================================
# Natural Questions


def qa_prompt(shots: list[tuple[str, str]], question: str) -> str:
    def q(text: str) -> str:
        text = text.strip()
        return text if text.endswith("?") else text + "?"

    return "".join(f"Q: {q(a)}\nA: {b}\n\n" for a, b in shots) + f"Q: {q(question)}\nA:"


def natural_questions(ctx: Context) -> TaskOutput:
    data = D.load_nq_open(ctx.files["nq-open-dev"])
    k = ctx.config.nq_shots
    if len(data) <= k:
        raise GPT2Error(f"Natural Questions: {len(data)} questions leave none to score after {k} few-shot examples")
    shots = [(q, answers[0]) for q, answers in data[:k]]
    test = ctx.limited(data[k:])
    prompts = ctx.encode([qa_prompt(shots, q) for q, _ in test])
    logprobs: list = []
    new, cut = generate_batched(ctx, prompts, NQ_NEW_TOKENS, desc="Natural Questions", temperature=0.0,
                                stop_ids=(ctx.eot, *_newline_ids(ctx.tokenizer)), logprobs=logprobs)
    answer_ids = [_first_line(ctx, n) for n in new]
    answers = [ctx.tokenizer.decode(a).strip() for a in answer_ids]
    correct = [M.max_over_references(M.exact_match, a, refs) for a, (_, refs) in zip(answers, test)]
    # the model's confidence: the probability it gave its own answer (the tokens before the line break),
    # recorded while generating; scored again only if the generator cannot report it
    if all(lp is not None for lp in logprobs):
        confidence = [math.fsum(lp[: len(a)]) if a else -math.inf for lp, a in zip(logprobs, answer_ids)]
    else:
        requests = [(p, [a]) for p, a in zip(prompts, answer_ids) if a]
        scored = iter(ctx.scorer.score(requests, desc="NQ confidence")) if requests else iter(())
        confidence = [next(scored)[0].total if a else -math.inf for a in answer_ids]
    top = max(1, math.ceil(len(test) / 100))
    best = sorted(range(len(test)), key=lambda i: -confidence[i])[:top]
    metrics = [
        Metric("em", "exact match", f"{k}-shot 'Q: ...? / A: ...' pairs, greedy, first line; SQuAD-normalised, any reference",
               100 * sum(correct) / len(test), "%"),
        Metric("em-top1pct", "exact match", f"on the {top} most confident answers (1%), by the probability of the generated answer",
               100 * sum(correct[i] for i in best) / top, "%"),
    ]
    samples = [{"question": q, "answer": a, "references": r, "logprob": c} for (q, r), a, c in zip(test, answers, confidence)]
    return TaskOutput(metrics, len(test), sum(len(x) for x in new), {"shots": k, "prompts_cut": cut}, samples)
