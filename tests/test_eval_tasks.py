"""Each task end to end on a tiny random model, against the same quantities computed independently with
transformers.GPT2LMHeadModel (same weights), straight from the definitions in EVAL_SPEC.md."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch

from conftest import SHARED, read_text
from gpt2.config import EvalConfig
from gpt2.evaluate import cloze, detokenize, generation, language_modeling
from gpt2.evaluate import datasets as D
from gpt2.evaluate import metrics as M
from gpt2.evaluate.scoring import Scorer
from gpt2.evaluate.tasks import Context
from test_eval_scoring import hf_and_ours

BLOCK = 256
EOT = 50256


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def models():
    return hf_and_ours(vocab=50257, block=BLOCK, n_layer=2, n_head=2, n_embd=32, seed=11, std=0.1)


def hf_generate(hf):
    """A generate() with gpt2.sample's signature, run by transformers: the reference for the generation tasks."""

    def generate(model, prompts, max_new_tokens, *, temperature=1.0, top_k=None, top_p=None, stop_ids=(), generator=None):
        out = []
        for i, p in enumerate(prompts):
            kwargs = dict(do_sample=False) if temperature == 0 else dict(do_sample=True, top_k=top_k or 0, temperature=temperature)
            if temperature:
                g = generator[i] if isinstance(generator, list) else generator
                torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=g)))
            with torch.no_grad():
                ids = hf.generate(torch.tensor([p]), max_new_tokens=max_new_tokens, eos_token_id=list(stop_ids) or None, pad_token_id=0, **kwargs)
            out.append(ids[0, len(p) :].tolist())
        return out

    return generate


def context(models, tokenizer, files, tmp_path, **settings):
    hf, ours = models
    cfg = EvalConfig(model="tiny", out=tmp_path, **settings)
    return Context(ours, tokenizer, Scorer(ours, batch_tokens=2048), files, cfg, hf_generate(hf), progress=False)


def hf_logprob(hf, ids: list[int], n_scored: int) -> np.ndarray:
    """log p of the last n_scored tokens of ids, one forward pass through transformers."""
    with torch.no_grad():
        lp = torch.log_softmax(hf(torch.tensor([ids[:-1]])).logits[0], -1)
    return lp[torch.arange(len(ids) - 1), torch.tensor(ids[1:])][-n_scored:].double().numpy()


def hf_argmax(hf, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return hf(torch.tensor([ids[:-1]])).logits[0]


# ----------------------------------------------------------------------------- language modelling


def hf_document_nll(hf, ids: list[int], stride: int) -> float:
    s = [EOT] + ids
    nll, done = 0.0, 0
    while done < len(s) - 1:
        end = min(len(s) - 1, done + (BLOCK if done == 0 else stride))
        start = done if stride == BLOCK else max(0, end - BLOCK)
        nll -= hf_logprob(hf, s[start : end + 1], end - done).sum()
        done = end
    return nll


@pytest.mark.parametrize("task, source, path, detok", [
    ("wikitext2", "wikitext2-test", SHARED / "wikitext2_tokens" / "wiki.test.tokens", detokenize.wikitext),
    ("ptb", "ptb-test", SHARED / "ptb" / "ptb.test.txt", detokenize.ptb),
    ("wikitext103", "wikitext103-test", None, detokenize.wikitext),
])
def test_word_level_perplexity(models, gpt2_tokenizer, tmp_path, task, source, path, detok):
    hf, _ = models
    if path is None:  # WikiText-103's test articles are WikiText-2's (only the <unk>s differ): its file stands in
        path = tmp_path / "wikitext-103" / "wiki.test.tokens"
        path.parent.mkdir()
        path.write_bytes((SHARED / "wikitext2_tokens" / "wiki.test.tokens").read_bytes())
    ctx = context(models, gpt2_tokenizer, {source: path}, tmp_path, limit=25, windows=["disjoint", "sliding"], stride=96)
    out = getattr(language_modeling, task)(ctx)
    original = "".join(read_text(path).splitlines(keepends=True)[:25])
    words = len(original.split())  # normalised by the original text's whitespace-separated words
    ids = gpt2_tokenizer.encode_ordinary(detok(original))
    got = {m.id: m.value for m in out.metrics}
    assert out.tokens_scored == len(ids) and out.details["original_words"] == words
    for suffix, stride in (("", BLOCK), ("-sliding", 96)):
        nll = hf_document_nll(hf, ids, stride)
        assert got["ppl" + suffix] == pytest.approx(math.exp(nll / words), rel=1e-4)
        assert got["token-ppl" + suffix] == pytest.approx(math.exp(nll / len(ids)), rel=1e-4)


def test_one_billion_word_scores_each_sentence_alone(models, gpt2_tokenizer, tmp_path):
    hf, _ = models
    lines = ["The U.S. said , `` we paid $ 5 million . ''", "It 's a players ' union ( of sorts ) .", "Short ."]
    (tmp_path / "news.en.heldout-00000-of-00050").write_text("\n".join(lines) + "\n")
    ctx = context(models, gpt2_tokenizer, {"1bw-test": tmp_path / "news.en.heldout-00000-of-00050"}, tmp_path)
    out = language_modeling.one_billion_word(ctx)
    nll = sum(hf_document_nll(hf, gpt2_tokenizer.encode_ordinary(detokenize.one_billion_word(s)), BLOCK) for s in lines)
    words = sum(len(s.split()) for s in lines)
    assert out.n_examples == 3 and out.metrics[0].value == pytest.approx(math.exp(nll / words), rel=1e-4)


def test_enwik8_bits_per_byte_and_text8_bits_per_character(models, gpt2_tokenizer, tmp_path):
    hf, _ = models
    rng = np.random.default_rng(0)
    words = np.array(["anarchism", "originated", "as", "a", "term", "of", "abuse", "first", "used"])
    body = " ".join(rng.choice(words, size=1_000_000))
    text8 = (body * 2)[: language_modeling.TEST_TAIL + 1000]
    (tmp_path / "text8").write_text(text8)
    enwik = ("<page>\n  <title>Ωmega</title>\n" * 200_000)[: language_modeling.TEST_TAIL + 10]
    (tmp_path / "enwik8").write_bytes(enwik.encode("utf-8")[-(language_modeling.TEST_TAIL + 10):])
    ctx = context(models, gpt2_tokenizer, {"text8": tmp_path / "text8", "enwik8": tmp_path / "enwik8"}, tmp_path, limit=2)
    out = language_modeling.text8(ctx)
    tail = text8[-language_modeling.TEST_TAIL :]
    kept = tail[: tail.find(" ", 2000)]
    nll = hf_document_nll(hf, gpt2_tokenizer.encode_ordinary(kept), BLOCK)
    assert out.metrics[0].id == "bpc" and out.metrics[0].value == pytest.approx(nll / (math.log(2) * len(kept)), rel=1e-4)
    out = language_modeling.enwik8(ctx)
    data = (tmp_path / "enwik8").read_bytes()[-language_modeling.TEST_TAIL :]
    kept = b"".join(data.splitlines(keepends=True)[:2])
    nll = hf_document_nll(hf, gpt2_tokenizer.encode_ordinary(kept.decode("utf-8", errors="replace")), BLOCK)
    assert out.metrics[0].id == "bpb" and out.metrics[0].value == pytest.approx(nll / (math.log(2) * len(kept)), rel=1e-4)


# ----------------------------------------------------------------------------- LAMBADA


def test_lambada_against_transformers(models, gpt2_tokenizer, tmp_path):
    """Real passages, plus passages whose last word is the reference model's own greedy choice (so some are right)."""
    hf, _ = models
    first = D.load_lambada(SHARED / "lambada" / "lambada_test.jsonl")[:100]
    real, made = first[:40], []
    for p in first[60:]:
        ctx_text, _ = cloze.split_last_word(detokenize.lambada(p))
        ids = gpt2_tokenizer.encode_ordinary(ctx_text)
        nxt = int(hf_argmax(hf, ids + [0])[-1].argmax())
        word = gpt2_tokenizer.decode([nxt])
        if re.fullmatch(r" [A-Za-z]+", word):
            made.append(ctx_text + word)
    assert len(made) >= 10
    passages = real + made
    (tmp_path / "lambada_test.jsonl").write_text("".join(json.dumps({"text": p}) + "\n" for p in passages))
    ctx = context(models, gpt2_tokenizer, {"lambada-test": tmp_path / "lambada_test.jsonl"}, tmp_path)
    got = {m.id: m.value for m in cloze.lambada(ctx).metrics}

    banned = set(cloze.stop_word_ids(gpt2_tokenizer))
    whole, last, filtered, nll = [], [], [], []
    for p in passages:
        c, t = cloze.split_last_word(detokenize.lambada(p))
        ci, ti = gpt2_tokenizer.encode_ordinary(c), gpt2_tokenizer.encode_ordinary(t)
        logits = hf_argmax(hf, ci + ti)[len(ci) - 1 :]
        greedy = logits.argmax(-1) == torch.tensor(ti)
        whole.append(bool(greedy.all()))
        last.append(bool(greedy[-1]))
        nll.append(-torch.log_softmax(logits.double(), -1)[torch.arange(len(ti)), torch.tensor(ti)].sum().item())
        logits[0, list(banned)] = -math.inf
        filtered.append(bool(greedy[1:].all()) and int(logits[0].argmax()) == ti[0])
    assert got["acc"] == pytest.approx(100 * np.mean(whole)) and got["acc"] > 0
    assert got["acc-last-token"] == pytest.approx(100 * np.mean(last))
    assert got["acc-stopword-filter"] == pytest.approx(100 * np.mean(filtered))
    assert got["ppl"] == pytest.approx(math.exp(np.mean(nll)), rel=1e-4)


# ----------------------------------------------------------------------------- CBT, WSC, GPT-1 heuristics


def hf_pick(hf, tokenizer, context_text: str, continuations: list[str], mean: bool = False, bos: bool = False) -> int:
    ci = ([EOT] if bos else []) + tokenizer.encode_ordinary(context_text)
    scores = []
    for c in continuations:
        ti = tokenizer.encode_ordinary(c)
        lp = hf_logprob(hf, ci + ti, len(ti))
        scores.append(lp.mean() if mean else lp.sum())
    return int(np.argmax(scores))


def test_cbt_against_transformers(models, gpt2_tokenizer, tmp_path):
    from test_eval_datasets import CBT_TEXT

    hf, _ = models
    (tmp_path / "cbt.txt").write_text(CBT_TEXT)
    ctx = context(models, gpt2_tokenizer, {"cbt-cn-valid": tmp_path / "cbt.txt"}, tmp_path)
    out = cloze.cbt_cn(ctx)
    for ex, sample in zip(D.load_cbt(tmp_path / "cbt.txt"), out.samples):
        want = hf_pick(hf, gpt2_tokenizer, detokenize.cbt(" ".join(ex.context)),
                       [" " + detokenize.cbt(ex.query.replace("XXXXX", c)) for c in ex.candidates])
        assert sample["pick"] == want


def test_share_common_start_moves_only_what_all_candidates_share():
    assert cloze.share_common_start([9], [[1, 2, 3], [1, 2, 4, 5], [1, 2, 3, 6]]) == ([9, 1, 2], [[3], [4, 5], [3, 6]])
    assert cloze.share_common_start([9], [[1, 2], [1, 2]]) == ([9, 1], [[2], [2]])  # each keeps a token to score
    assert cloze.share_common_start([9], [[1], [2, 3]]) == ([9], [[1], [2, 3]])


def test_wsc_against_transformers(models, gpt2_tokenizer, tmp_path):
    hf, _ = models
    ctx = context(models, gpt2_tokenizer, {"wsc273": SHARED / "wsc" / "WSCollection.xml"}, tmp_path, limit=30)
    out = cloze.wsc273(ctx)
    schemas = D.load_wsc(SHARED / "wsc" / "WSCollection.xml")[:30]
    full_right = partial_right = 0
    for s, sample in zip(schemas, out.samples):
        parts = [cloze.substitute(s, c) for c in s.candidates]
        full = hf_pick(hf, gpt2_tokenizer, "", [h + t for h, t in parts], bos=True)
        partial = int(np.argmax([hf_logprob(hf, gpt2_tokenizer.encode_ordinary(h) + gpt2_tokenizer.encode_ordinary(t),
                                            len(gpt2_tokenizer.encode_ordinary(t))).sum() for h, t in parts]))
        assert (sample["full"], sample["partial"]) == (full, partial)
        full_right += full == s.answer
        partial_right += partial == s.answer
    got = {m.id: m.value for m in out.metrics}
    assert got["acc-full"] == pytest.approx(100 * full_right / 30) and got["acc-partial"] == pytest.approx(100 * partial_right / 30)


def test_gpt1_heuristics_against_transformers(models, gpt2_tokenizer, tmp_path):
    hf, _ = models
    (tmp_path / "dev.tsv").write_text("sentence\tlabel\nit 's a charming journey . \t1\nunflinchingly bleak and desperate \t0\na gorgeous film \t1\n")
    race = tmp_path / "race"
    race.mkdir()
    (race / "1.txt").write_text(json.dumps({"article": "Tom has a red ball. He plays with it every day.", "questions": ["What color is the ball?", "Tom plays _ ."],
                                            "options": [["red", "blue", "green", "black"], ["every day", "never", "at night", "once"]], "answers": ["A", "A"]}))
    files = {"sst2-dev": tmp_path / "dev.tsv", "race-test": race, "story-cloze-val": SHARED / "story_cloze" / "cloze_test_val__spring2016.tsv",
             "cola-in-domain-dev": SHARED / "glue" / "CoLA" / "in_domain_dev.tsv", "cola-out-of-domain-dev": SHARED / "glue" / "CoLA" / "out_of_domain_dev.tsv"}
    ctx = context(models, gpt2_tokenizer, files, tmp_path, limit=12)

    sst = {m.id: m.value for m in cloze.sst2(ctx).metrics}
    rows = D.load_sst2(tmp_path / "dev.tsv")
    right = [hf_pick(hf, gpt2_tokenizer, detokenize.cbt(s.strip()) + " very", [" negative", " positive"]) == y for s, y in rows]
    assert sst["acc"] == pytest.approx(100 * np.mean(right))

    got = {m.id: m.value for m in cloze.race(ctx).metrics}
    q1 = hf_pick(hf, gpt2_tokenizer, "Tom has a red ball. He plays with it every day.\n\nQ: What color is the ball?\nA:", [" red", " blue", " green", " black"], mean=True)
    q2 = hf_pick(hf, gpt2_tokenizer, "Tom has a red ball. He plays with it every day.\n\nTom plays", [" every day .", " never .", " at night .", " once ."], mean=True)
    assert got["acc"] == pytest.approx(100 * ((q1 == 0) + (q2 == 0)) / 2)

    got = {m.id: m.value for m in cloze.story_cloze(ctx).metrics}
    stories = D.load_story_cloze(files["story-cloze-val"])[:12]
    right = [hf_pick(hf, gpt2_tokenizer, " ".join(s), [" " + e for e in ends], mean=True) == a for s, ends, a in stories]
    assert got["acc"] == pytest.approx(100 * np.mean(right))

    out = cloze.cola(ctx)
    rows = D.load_cola([files["cola-in-domain-dev"], files["cola-out-of-domain-dev"]])[:12]
    scores = [hf_logprob(hf, [EOT] + gpt2_tokenizer.encode_ordinary(s), len(gpt2_tokenizer.encode_ordinary(s))).mean() for s, _ in rows]
    threshold, mcc = M.best_threshold(scores, [y for _, y in rows])
    got = {m.id: m.value for m in out.metrics}
    assert got["mcc"] == pytest.approx(100 * mcc, abs=1e-6) and out.details["threshold"] == pytest.approx(threshold, abs=1e-5)
    fixed = {m.id: m.value for m in cloze.cola(context(models, gpt2_tokenizer, files, tmp_path, limit=12, cola_threshold=-1e9)).metrics}
    assert fixed["acc"] == pytest.approx(100 * np.mean([y for _, y in rows]))  # everything called acceptable


# ----------------------------------------------------------------------------- generation


def test_coqa_prompts_answers_and_f1(models, gpt2_tokenizer, tmp_path):
    from test_eval_datasets import test_coqa_format

    test_coqa_format(tmp_path)  # writes coqa-dev-v1.0.json
    hf, _ = models
    ctx = context(models, gpt2_tokenizer, {"coqa-dev": tmp_path / "coqa-dev-v1.0.json"}, tmp_path)
    out = generation.coqa(ctx)
    (story,) = D.load_coqa(tmp_path / "coqa-dev-v1.0.json")
    prompt2 = generation.coqa_prompt(story.story, [(story.questions[0], story.answers[0][0])], story.questions[1])
    assert prompt2 == story.story + "\n\nQ: what color was cotton?\n\nA: white\n\nQ: where did she live?\n\nA:"
    f1 = []
    for i, q in enumerate(story.questions):
        prompt = generation.coqa_prompt(story.story, [(story.questions[k], story.answers[k][0]) for k in range(i)], q)
        new = hf_generate(hf)(None, [gpt2_tokenizer.encode_ordinary(prompt)], generation.COQA_NEW_TOKENS, temperature=0.0, stop_ids=(EOT,))[0]
        answer = generation.coqa_answer(gpt2_tokenizer.decode([t for t in new if t != EOT]))
        assert out.samples[i]["answer"] == answer
        f1.append(max(M.token_f1(answer, r) for r in story.answers[i]))
    assert out.metrics[0].id == "f1" and out.metrics[0].value == pytest.approx(100 * np.mean(f1))


def test_coqa_answer_stops_at_the_next_question():
    assert generation.coqa_answer(" white\n\nQ: and then?\n\nA: x") == "white"
    assert generation.coqa_answer(" in a barn") == "in a barn"


def test_wmt_prompt_and_bleu(models, gpt2_tokenizer, tmp_path):
    hf, _ = models
    src = ["The cat sits.", "I like bread.", "It is raining.", "Good morning.", "See you soon."]
    ref = ["Le chat est assis.", "J'aime le pain.", "Il pleut.", "Bonjour.", "A bientôt."]
    for name, lines in (("src.en", src), ("ref.fr", ref)):
        (tmp_path / f"newstest2014-fren-{name}.sgm").write_text(
            '<srcset setid="newstest2014" srclang="any">\n<doc docid="1" genre="news">\n'
            + "".join(f'<seg id="{i}">{s}</seg>\n' for i, s in enumerate(lines, 1)) + "</doc>\n</srcset>\n"
        )
    files = {"wmt14-en-fr-src": tmp_path / "newstest2014-fren-src.en.sgm", "wmt14-en-fr-ref": tmp_path / "newstest2014-fren-ref.fr.sgm"}
    ctx = context(models, gpt2_tokenizer, files, tmp_path, wmt_shots=2)
    out = generation.wmt14_en_fr(ctx)
    assert generation.translation_prompt([("a", "b")], "c") == "a = b\nc ="
    hyps = []
    for s in src[2:]:
        prompt = gpt2_tokenizer.encode_ordinary(f"The cat sits. = Le chat est assis.\nI like bread. = J'aime le pain.\n{s} =")
        budget = generation.translation_budget([len(gpt2_tokenizer.encode_ordinary(x)) for x in src[2:]])
        new = hf_generate(hf)(None, [prompt], budget, temperature=0.0)[0]
        hyps.append(gpt2_tokenizer.decode(new).split("\n")[0].replace("<|endoftext|>", "").strip())
    assert [x["hypothesis"] for x in out.samples] == hyps
    assert out.metrics[0].value == pytest.approx(M.bleu(hyps, ref[2:])[0])
    assert "tok:13a" in out.details["signature"] and out.n_examples == 3


def test_natural_questions_exact_match_and_confidence(models, gpt2_tokenizer, tmp_path):
    hf, _ = models
    path = SHARED / "nq_open" / "NQ-open.dev.jsonl"
    ctx = context(models, gpt2_tokenizer, {"nq-open-dev": path}, tmp_path, limit=8, nq_shots=2)
    out = generation.natural_questions(ctx)
    data = D.load_nq_open(path)
    shots = "".join(f"Q: {q}?\nA: {a[0]}\n\n" for q, a in data[:2])
    assert generation.qa_prompt([(q, a[0]) for q, a in data[:2]], data[2][0]) == shots + f"Q: {data[2][0]}?\nA:"
    right, conf = [], []
    for (q, refs), sample in zip(data[2:10], out.samples):
        prompt = gpt2_tokenizer.encode_ordinary(shots + f"Q: {q}?\nA:")
        new = hf_generate(hf)(None, [prompt], generation.NQ_NEW_TOKENS, temperature=0.0)[0]
        line = []
        for t in new:
            if t == EOT or "\n" in gpt2_tokenizer.decode([t]):
                break
            line.append(t)
        answer = gpt2_tokenizer.decode(line).strip()
        assert sample["answer"] == answer
        right.append(max(M.exact_match(answer, r) for r in refs))
        conf.append(hf_logprob(hf, prompt + line, len(line)).sum() if line else -math.inf)
        assert sample["logprob"] == pytest.approx(conf[-1], rel=1e-4)
    got = {m.id: m.value for m in out.metrics}
    assert got["em"] == pytest.approx(100 * np.mean(right))
    assert got["em-top1pct"] == pytest.approx(100 * right[int(np.argmax(conf))])  # 1% of 8 questions is 1


def test_natural_questions_confidence_recorded_while_generating(models, gpt2_tokenizer, tmp_path):
    """With gpt2.sample.generate the answers' log-probabilities come from the generation itself: no second pass."""
    from gpt2.sample import generate

    _, ours = models
    files = {"nq-open-dev": SHARED / "nq_open" / "NQ-open.dev.jsonl"}
    cfg = EvalConfig(model="tiny", out=tmp_path, limit=6, nq_shots=2)
    # transformers' generate reports no log-probabilities: then the answers are scored again
    rescored = generation.natural_questions(context(models, gpt2_tokenizer, files, tmp_path, limit=6, nq_shots=2))
    scorer = Scorer(ours, batch_tokens=2048)
    recorded = generation.natural_questions(Context(ours, gpt2_tokenizer, scorer, files, cfg, generate, progress=False))
    assert scorer.tokens_run == 0  # nothing was scored again
    assert [x["answer"] for x in recorded.samples] == [x["answer"] for x in rescored.samples]
    assert [x["logprob"] for x in recorded.samples] == pytest.approx([x["logprob"] for x in rescored.samples], rel=1e-4)


def test_cnndm_summaries_and_baselines(models, gpt2_tokenizer, tmp_path):
    root = SHARED / "cnn_dailymail_sample"
    files = {"cnndm-stories": root / "cnn_stories", "cnndm-test-urls": root / "abisee_url_lists" / "all_test.txt"}
    ctx = context(models, gpt2_tokenizer, files, tmp_path, limit=1, seed=3)
    out = generation.cnndm(ctx)
    stories = D.load_cnndm(files["cnndm-stories"], files["cnndm-test-urls"])[:1]
    refs = ["\n".join(s.highlights) for s in stories]
    got = {m.id: m.value for m in out.metrics}
    lead3 = M.rouge(["\n".join(M.split_sentences(s.article)[:3]) for s in stories], refs)
    assert got["lead3-rouge1"] == pytest.approx(lead3["rouge1"]) and got["lead3-rougeL"] == pytest.approx(lead3["rougeL"])
    summaries = [x["summary"] for x in out.samples]
    assert all(len(M.split_sentences(s)) <= 3 for s in summaries)
    assert got["rouge2"] == pytest.approx(M.rouge(summaries, refs)["rouge2"])
    assert out.details["articles_cut"] == 1  # the article is longer than the tiny model's 256-token context
    again = generation.cnndm(context(models, gpt2_tokenizer, files, tmp_path, limit=1, seed=3))
    assert [x["summary"] for x in again.samples] == summaries  # seeded sampling: reproducible


def test_cnndm_samples_do_not_depend_on_the_batching(models, gpt2_tokenizer, tmp_path):
    """Each article draws from its own seeded generator, so --batch-tokens changes nothing (gpt2.sample.generate),
    though in one batch the article runs once for both of its prompts."""
    from gpt2.sample import generate

    _, ours = models
    root = SHARED / "cnn_dailymail_sample"
    files = {"cnndm-stories": root / "cnn_stories", "cnndm-test-urls": root / "abisee_url_lists" / "all_test.txt"}
    runs, prompt_tokens = [], []
    run: list[int] = []
    hook = ours.register_forward_pre_hook(lambda m, args: run.append(args[0].numel()) if args[0].shape[1] > 1 else None)
    try:
        for batch_tokens in (256, 4096):  # one prompt per batch, then all six (three articles, with and without the hint)
            cfg = EvalConfig(model="tiny", out=tmp_path, limit=3, seed=5, batch_tokens=batch_tokens)
            ctx = Context(ours, gpt2_tokenizer, Scorer(ours, batch_tokens=2048), files, cfg, generate, progress=False)
            runs.append(generation.cnndm(ctx).samples)
            prompt_tokens.append(sum(run))
            run.clear()
    finally:
        hook.remove()
    # batched together, each article runs once for its two prompts: little over half the prompt tokens
    assert prompt_tokens[1] < 0.6 * prompt_tokens[0]
    assert [x["summary"] for x in runs[0]] == [x["summary"] for x in runs[1]]
    assert [x["no_hint"] for x in runs[0]] == [x["no_hint"] for x in runs[1]]
    assert len({x["summary"] for x in runs[0]}) == 3


def test_generation_batches_keep_prompts_that_begin_alike_together(models, gpt2_tokenizer, tmp_path):
    """Three pairs of prompts that share 40 tokens, a budget of three rows: batches of whole pairs, never 3 + 3."""
    g = torch.Generator().manual_seed(0)
    bases = [torch.randint(0, 50000, (40,), generator=g).tolist() for _ in range(3)]
    prompts = [b + tail for b in bases for tail in ([1, 2], [3])]
    batches = []

    def recording(model, rows, max_new_tokens, **kw):
        batches.append(sorted(prompts.index(r) for r in rows))
        return [[7] * max_new_tokens for _ in rows]

    cfg = EvalConfig(model="tiny", out=tmp_path, batch_tokens=3 * (42 + 4))
    ctx = Context(models[1], gpt2_tokenizer, Scorer(models[1]), {}, cfg, recording, progress=False)
    new, cut = generation.generate_batched(ctx, prompts, 4, desc="test", temperature=0.0)
    assert sorted(map(tuple, batches)) == [(0, 1), (2, 3), (4, 5)]
    assert new == [[7] * 4] * 6 and cut == 0


# ----------------------------------------------------------------------------- the full real files (slow)


@pytest.mark.slow
def test_full_lambada_and_wikitext2_against_transformers(models, gpt2_tokenizer, tmp_path):
    """All 5,153 LAMBADA passages and the whole WikiText-2 test set, checked against transformers."""
    hf, _ = models
    files = {"lambada-test": SHARED / "lambada" / "lambada_test.jsonl", "wikitext2-test": SHARED / "wikitext2_tokens" / "wiki.test.tokens"}
    ctx = context(models, gpt2_tokenizer, files, tmp_path)
    got = {m.id: m.value for m in cloze.lambada(ctx).metrics}
    nll, whole = [], []
    for p in D.load_lambada(files["lambada-test"]):
        c, t = cloze.split_last_word(detokenize.lambada(p))
        ci, ti = gpt2_tokenizer.encode_ordinary(c), gpt2_tokenizer.encode_ordinary(t)
        logits = hf_argmax(hf, ci + ti)[len(ci) - 1 :]
        whole.append(bool((logits.argmax(-1) == torch.tensor(ti)).all()))
        nll.append(-torch.log_softmax(logits.double(), -1)[torch.arange(len(ti)), torch.tensor(ti)].sum().item())
    assert len(nll) == 5153
    assert got["acc"] == pytest.approx(100 * np.mean(whole)) and got["ppl"] == pytest.approx(math.exp(np.mean(nll)), rel=1e-4)

    out = language_modeling.wikitext2(ctx)
    original = read_text(files["wikitext2-test"])
    ids = gpt2_tokenizer.encode_ordinary(detokenize.wikitext(original))
    assert out.metrics[0].value == pytest.approx(math.exp(hf_document_nll(hf, ids, BLOCK) / 241_211), rel=1e-4)


def test_generation_tasks_with_the_projects_generator(models, gpt2_tokenizer, tmp_path):
    """gpt2.sample.generate (batched, KV cache) gives the answers transformers' greedy search gives."""
    from gpt2.evaluate.run import _default_generate
    from gpt2.sample import generate
    from test_eval_datasets import test_coqa_format

    assert _default_generate() is generate
    test_coqa_format(tmp_path)
    files = {"nq-open-dev": SHARED / "nq_open" / "NQ-open.dev.jsonl", "coqa-dev": tmp_path / "coqa-dev-v1.0.json"}
    ref = context(models, gpt2_tokenizer, files, tmp_path, limit=6, nq_shots=1)
    ours = context(models, gpt2_tokenizer, files, tmp_path, limit=6, nq_shots=1)
    ours.generate = generate
    for task in (generation.natural_questions, generation.coqa):
        a, b = task(ours), task(ref)
        assert [s["answer"] for s in a.samples] == [s["answer"] for s in b.samples]
        assert [m.value for m in a.metrics] == pytest.approx([m.value for m in b.metrics])


def test_race_requests_split_where_the_tokenizer_does(gpt2_tokenizer):
    """Context and option encoded apart give the tokens of the whole text, for every question shape."""
    article = "Tom has a red ball.\nHe plays with it every day."
    for question in ("What color is the ball?", "Tom plays _ .", "_ is the name of the boy.", "The ball is _"):
        context, options = cloze._race_request(D.RaceQuestion(article, question, ["red", "every day", "Tom", "x"], 0))
        for o in options:
            assert gpt2_tokenizer.encode_ordinary(context) + gpt2_tokenizer.encode_ordinary(o) == gpt2_tokenizer.encode_ordinary(context + o)
