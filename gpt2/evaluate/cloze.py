"""Tasks scored by comparing log-probabilities: LAMBADA, CBT, WSC273 (GPT-2 paper sections 3.2-3.4)
and GPT-1's zero-shot heuristics (Radford et al. 2018, section 5: SST-2, CoLA, RACE, Story Cloze).

Every task turns its examples into `(context, [continuation, ...])` requests
for `Scorer.score`, which runs a shared context once. Text is split between
context and continuation at a space that begins the continuation, which is
where GPT-2's pre-tokenizer splits anyway, so the tokens are those of the
whole text. Where several choices tie, the first wins.
"""

from __future__ import annotations

import math
import re

import numpy as np

from gpt2.errors import GPT2Error
from gpt2.evaluate import datasets as D
from gpt2.evaluate import detokenize
from gpt2.evaluate.metrics import best_threshold, matthews_corrcoef
from gpt2.evaluate.tasks import Context, Metric, TaskOutput


def _pct(flags) -> float:
    flags = list(flags)
    return 100.0 * sum(bool(f) for f in flags) / len(flags) if flags else float("nan")


def _argmax(values: list[float]) -> int:
    return int(np.argmax(values))  # first of equal maxima


# ============================================================================
# LAMBADA

# English stop words: NLTK's list (Bird et al. 2009) without the forms with an
# apostrophe, which are never one token with a leading space. The paper lifts the
# 1.5B model from 52.66% to 63.24% "by adding a stop-word filter"; here the
# single-token forms of these words are removed from the choices for the
# target's first token.
STOP_WORDS = """
i me my myself we our ours ourselves you your yours yourself yourselves he him his himself she her hers herself it
its itself they them their theirs themselves what which who whom this that these those am is are was were be been
being have has had having do does did doing a an the and but if or because as until while of at by for with about
against between into through during before after above below to from up down in out on off over under again further
then once here there when where why how all any both each few more most other some such no nor not only own same so
than too very s t can will just don should now d ll m o re ve y ain aren couldn didn doesn hadn hasn haven isn ma
mightn mustn needn shan shouldn wasn weren won wouldn
""".split()

_LAST_WORD = re.compile(r"^(.*\S)\s+(\S+)\s*$", re.DOTALL)


def split_last_word(passage: str) -> tuple[str, str]:
    """LAMBADA: (context, target) with target = " " + the passage's last word (after its last white space)."""
    m = _LAST_WORD.match(passage)
    if m is None:
        raise GPT2Error(f"LAMBADA passage has no context before its last word: {passage[:60]!r}")
    return m.group(1), " " + m.group(2)


def stop_word_ids(tokenizer) -> list[int]:
    """Token ids that spell a stop word, with its leading space, as one token (' the', ' The', ...)."""
    ids = set()
    for w in STOP_WORDS:
        for form in {" " + w, " " + w.capitalize()}:
            enc = tokenizer.encode_ordinary(form)
            if len(enc) == 1:
                ids.add(enc[0])
    return sorted(ids)


def lambada(ctx: Context) -> TaskOutput:
    passages = ctx.limited(D.load_lambada(ctx.files["lambada-test"]))
    pairs = [split_last_word(detokenize.lambada(p)) for p in passages]
    contexts = ctx.encode([c for c, _ in pairs])
    targets = ctx.encode([t for _, t in pairs])
    scores = [s[0] for s in ctx.scorer.score(list(zip(contexts, [[t] for t in targets])), banned=stop_word_ids(ctx.tokenizer), desc="LAMBADA")]
    n_tokens = sum(s.n_tokens for s in scores)
    metrics = [
        Metric("acc", "accuracy", "whole word: every token of the last word is the greedy choice", _pct(s.all_greedy for s in scores), "%"),
        Metric("acc-last-token", "accuracy", "last token: the word's last BPE token is the greedy choice given all before it",
               _pct(s.greedy[-1] for s in scores), "%"),
        Metric("acc-stopword-filter", "accuracy",
               f"whole word, stop-word filter: {len(STOP_WORDS)} stop words' single-token forms removed from the first token's choices",
               _pct(s.greedy_filtered.all() for s in scores), "%"),
        Metric("ppl", "perplexity", "exp(mean over passages of -log p(last word | context))",
               math.exp(-sum(s.total for s in scores) / len(scores)), "ppl", lower_is_better=True),
    ]
    details = {"multi_token_targets": sum(s.n_tokens > 1 for s in scores)}
    samples = [
        {"target": t, "logprob": s.total, "greedy": s.all_greedy, "greedy_last_token": bool(s.greedy[-1]),
         "greedy_stopword_filter": bool(s.greedy_filtered.all())}
        for (_, t), s in zip(pairs, scores)
    ]
    return TaskOutput(metrics, len(scores), n_tokens, details, samples)


# ============================================================================
# Children's Book Test


def share_common_start(context: list[int], continuations: list[list[int]]) -> tuple[list[int], list[list[int]]]:
    """Move the tokens that every continuation starts with into the context (each keeps at least one).

    Their log-probability is the same for every continuation, so a comparison
    of totals picks the same candidate, and the words before the candidate are
    run once instead of once per candidate (the scorer caches a shared context).
    """
    first, n = continuations[0], 0
    shortest = min(len(c) for c in continuations)
    while n < shortest - 1 and all(c[n] == first[n] for c in continuations):
        n += 1
    return context + first[:n], [c[n:] for c in continuations]


def _cbt(ctx: Context, source: str, title: str) -> TaskOutput:
    examples = ctx.limited(D.load_cbt(ctx.files[source]))
    requests, answers = [], []
    contexts = ctx.encode([detokenize.cbt(" ".join(ex.context)) for ex in examples])
    for ex, context in zip(examples, contexts):
        # the query sentence with each candidate in place of XXXXX, scored after the 20 context sentences
        # (the query's words before XXXXX, the same for every candidate, join the context)
        queries = ctx.encode([" " + detokenize.cbt(ex.query.replace("XXXXX", c)) for c in ex.candidates])
        requests.append(share_common_start(context, queries))
        answers.append(ex.answer)
    scores = ctx.scorer.score(requests, desc=title)
    picks = [_argmax([s.total for s in row]) for row in scores]
    metrics = [Metric("acc", "accuracy", "candidate whose query sentence has the highest total log-probability given the 20 context sentences "
                      "(the words before the candidate, common to all, are left out of the totals)",
                      _pct(p == a for p, a in zip(picks, answers)), "%")]
    tokens = sum(s.n_tokens for row in scores for s in row)
    return TaskOutput(metrics, len(examples), tokens, {}, [{"pick": p, "answer": a} for p, a in zip(picks, answers)])


def cbt_cn(ctx: Context) -> TaskOutput:
    return _cbt(ctx, "cbt-cn-valid", "CBT-CN")


def cbt_ne(ctx: Context) -> TaskOutput:
    return _cbt(ctx, "cbt-ne-valid", "CBT-NE")


# ============================================================================
# Winograd Schema Challenge

_POSSESSIVE = {"his", "her", "their", "its"}
_LOWER_FIRST = {"The", "A", "An", "This", "That", "These", "Those", "My", "His", "Her", "Their", "Its", "Our", "Your"}


def _no_space_before(text: str) -> bool:
    return bool(text) and text[0] in ",.;:!?'"


def substitute(schema: D.WinogradSchema, candidate: str) -> tuple[str, str]:
    """(sentence up to and including the candidate, the rest) with the candidate in place of the pronoun.

    A possessive pronoun takes the candidate's possessive ("his" -> "Jim's"); a
    determiner that opens the candidate is lower-cased inside a sentence and
    the candidate capitalised at its start ("The trophy" / "the trophy").
    """
    if schema.pronoun.lower() in _POSSESSIVE:
        candidate += "'s"
    at_start = not schema.before or schema.before.rstrip().endswith((".", "!", "?"))
    first, _, rest = candidate.partition(" ")
    if at_start:
        candidate = candidate[0].upper() + candidate[1:]
    elif first in _LOWER_FIRST:
        candidate = first.lower() + (" " + rest if rest else "")
    head = f"{schema.before} {candidate}" if schema.before else candidate
    tail = schema.after if _no_space_before(schema.after) or not schema.after else " " + schema.after
    return head, tail


def wsc273(ctx: Context) -> TaskOutput:
    schemas = ctx.limited(D.load_wsc(ctx.files["wsc273"]))
    eot = [ctx.eot]
    full_requests, partial_requests = [], []
    for s in schemas:
        parts = [substitute(s, c) for c in s.candidates]
        full_requests.append(share_common_start(eot, ctx.encode([h + t for h, t in parts])))
        # partial: the rest of the sentence, once after each candidate
        for head, tail in zip(ctx.encode([h for h, _ in parts]), ctx.encode([t for _, t in parts])):
            partial_requests.append((head, [tail]))
    full = ctx.scorer.score(full_requests, desc="WSC273 full")
    partial = [s[0] for s in ctx.scorer.score(partial_requests, desc="WSC273 partial")]
    full_picks = [_argmax([x.total for x in row]) for row in full]
    partial_picks = [_argmax([partial[2 * i].total, partial[2 * i + 1].total]) for i in range(len(schemas))]
    answers = [s.answer for s in schemas]
    metrics = [
        Metric("acc-partial", "accuracy", "partial scoring: log-prob of the words after the candidate, given the sentence up to it",
               _pct(p == a for p, a in zip(partial_picks, answers)), "%"),
        Metric("acc-full", "accuracy", "full scoring: log-prob of the whole sentence with the candidate substituted "
               "(the words before the candidates, common to both, are left out of the totals)",
               _pct(p == a for p, a in zip(full_picks, answers)), "%"),
    ]
    tokens = sum(x.n_tokens for row in full for x in row) + sum(x.n_tokens for x in partial)
    samples = [{"full": f, "partial": p, "answer": a} for f, p, a in zip(full_picks, partial_picks, answers)]
    return TaskOutput(metrics, len(schemas), tokens, {}, samples)


# ============================================================================
# GPT-1's zero-shot heuristics


def sst2(ctx: Context) -> TaskOutput:
    """Append " very" and compare p(" positive") with p(" negative")."""
    rows = ctx.limited(D.load_sst2(ctx.files["sst2-dev"]))
    words = ctx.encode([" positive", " negative"])
    if any(len(w) != 1 for w in words):
        raise GPT2Error("SST-2's heuristic needs ' positive' and ' negative' to be single tokens of this tokenizer")
    contexts = ctx.encode([detokenize.cbt(s.strip()) + " very" for s, _ in rows])
    scores = ctx.scorer.score([(c, words) for c in contexts], desc="SST-2")
    preds = [int(row[0].total > row[1].total) for row in scores]
    metrics = [Metric("acc", "accuracy", "sentence + ' very': p(' positive') > p(' negative')", _pct(p == y for p, (_, y) in zip(preds, rows)), "%")]
    return TaskOutput(metrics, len(rows), 2 * len(rows), {}, [{"pick": p, "answer": y} for p, (_, y) in zip(preds, rows)])


def cola(ctx: Context) -> TaskOutput:
    """Mean token log-probability of the sentence (after <|endoftext|>), thresholded; Matthews correlation."""
    rows = ctx.limited(D.load_cola([ctx.files["cola-in-domain-dev"], ctx.files["cola-out-of-domain-dev"]]))
    sentences = ctx.encode([s for s, _ in rows])
    scores = [row[0].mean for row in ctx.scorer.score([([ctx.eot], [s]) for s in sentences], desc="CoLA")]
    labels = [y for _, y in rows]
    if ctx.config.cola_threshold is not None:
        threshold, how = ctx.config.cola_threshold, f"threshold {ctx.config.cola_threshold} (given)"
    else:
        threshold, _ = best_threshold(scores, labels)
        how = f"threshold {threshold:.4f} chosen on these sentences to maximise the MCC (an upper bound)"
    preds = [int(s >= threshold) for s in scores]
    metrics = [
        Metric("mcc", "Matthews correlation", f"mean token log-prob >= threshold; {how}", 100 * matthews_corrcoef(labels, preds), "MCC x 100"),
        Metric("acc", "accuracy", f"mean token log-prob >= threshold; {how}", _pct(p == y for p, y in zip(preds, labels)), "%"),
    ]
    samples = [{"score": s, "label": y} for s, y in zip(scores, labels)]
    return TaskOutput(metrics, len(rows), sum(len(s) for s in sentences), {"threshold": threshold}, samples)


def _race_request(q: D.RaceQuestion) -> tuple[str, list[str]]:
    """A cloze question ("... _ ...") takes each option in the blank; others read 'Q: question' / 'A: option'.

    Each continuation starts where GPT-2's pre-tokenizer would split the whole text anyway."""
    if "_" in q.question:
        before, _, after = q.question.partition("_")
        if not before.strip():  # the blank opens the question: the line break goes with the options
            return q.article.rstrip(), ["\n\n" + o.strip() + after.rstrip() for o in q.options]
        return f"{q.article}\n\n{before.rstrip()}", [" " + o.strip() + after.rstrip() for o in q.options]
    return f"{q.article}\n\nQ: {q.question.strip()}\nA:", [" " + o.strip() for o in q.options]


def race(ctx: Context) -> TaskOutput:
    """The option with the highest mean token log-probability given the article and question."""
    questions = ctx.limited(D.load_race(ctx.files["race-test"]))
    built = [_race_request(q) for q in questions]
    contexts = ctx.encode([c for c, _ in built])
    requests = [(c, ctx.encode(opts)) for c, (_, opts) in zip(contexts, built)]
    scores = ctx.scorer.score(requests, desc="RACE")
    picks = [_argmax([s.mean for s in row]) for row in scores]
    metrics = [Metric("acc", "accuracy", "option with the highest mean token log-prob given article and question",
                      _pct(p == q.answer for p, q in zip(picks, questions)), "%")]
    samples = [{"pick": p, "answer": q.answer} for p, q in zip(picks, questions)]
    return TaskOutput(metrics, len(questions), sum(s.n_tokens for row in scores for s in row), {}, samples)


def story_cloze(ctx: Context) -> TaskOutput:
    """The ending with the highest mean token log-probability given the four sentences."""
    stories = ctx.limited(D.load_story_cloze(ctx.files["story-cloze-val"]))
    contexts = ctx.encode([" ".join(s.strip() for s in sentences) for sentences, _, _ in stories])
    requests = [(c, ctx.encode([" " + e.strip() for e in endings])) for c, (_, endings, _) in zip(contexts, stories)]
    scores = ctx.scorer.score(requests, desc="Story Cloze")
    picks = [_argmax([s.mean for s in row]) for row in scores]
    metrics = [Metric("acc", "accuracy", "ending with the highest mean token log-prob given the four sentences",
                      _pct(p == a for p, (_, _, a) in zip(picks, stories)), "%")]
    samples = [{"pick": p, "answer": a} for p, (_, _, a) in zip(picks, stories)]
    return TaskOutput(metrics, len(stories), sum(s.n_tokens for row in scores for s in row), {}, samples)
