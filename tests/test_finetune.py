"""GPT-1's fine-tuning (gpt2/finetune): input transforms, heads and losses against transformers' GPT2DoubleHeadsModel,
the task files in their published formats, a whole run through the training loop with its outputs, exact resume,
`gpt2 finetune predict`, and one-line errors for bad input."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from conftest import GPT2_BPE, SHARED
from gpt2.config import FinetuneConfig, FinetunePredictConfig, from_dict
from gpt2.errors import GPT2Error
from gpt2.finetune import heads
from gpt2.finetune.run import FINETUNE_JSON, HEAD_WEIGHTS, finetune, load_task_model, predict, restart_layers
from gpt2.finetune.tasks import TASKS, Example, load_split
from gpt2.finetune.transforms import SPECIAL_TOKENS, Transform, collate
from gpt2.model import GPT, GPTConfig
from gpt2.tokenizer import Tokenizer
from gpt2.weights import load_model, save_model
from test_model import ours_from_hf
from test_train import _restore_threads  # noqa: F401

transformers = pytest.importorskip("transformers")
GLUE = SHARED / "glue"


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    t = Tokenizer.load(GPT2_BPE)
    t.add_special_tokens(SPECIAL_TOKENS)
    return t


# ----------------------------------------------------------------------------
# input transforms (GPT-1 Figure 1)


def test_transforms_follow_gpt1_figure_1(tok):
    s, d, e = (tok.special_tokens[t] for t in SPECIAL_TOKENS)
    enc = tok.encode_ordinary
    one = Transform(TASKS["sst2"], tok, 64).encode(Example(("a fine film",), 1))
    assert one.sequences == [[s, *enc("a fine film"), e]] and one.label == 1 and not one.truncated
    pair = Transform(TASKS["rte"], tok, 64).encode(Example(("It rains.", "It is wet."), 0))
    assert pair.sequences == [[s, *enc("It rains."), d, *enc("It is wet."), e]]
    both = Transform(TASKS["stsb"], tok, 64).encode(Example(("A dog runs.", "A cat sleeps."), 2.5))
    assert both.sequences == [[s, *enc("A dog runs."), d, *enc("A cat sleeps."), e], [s, *enc("A cat sleeps."), d, *enc("A dog runs."), e]]
    choice = Transform(TASKS["race-m"], tok, 64).encode(Example(("The text.", "Who?"), 3, ("Ann", "Bob", "Cy", "Di")))
    assert choice.sequences == [[s, *enc("The text."), *enc("\nWho?"), d, *enc(a), e] for a in ("Ann", "Bob", "Cy", "Di")]
    # text that spells an added token stays text
    sneaky = Transform(TASKS["sst2"], tok, 64).encode(Example(("<|extract|>",), 0))
    assert sneaky.sequences[0].count(e) == 1 and sneaky.sequences[0][-1] == e


def test_long_examples_are_truncated_never_dropped(tok):
    long_text = " ".join(f"word{i}" for i in range(300))
    t = Transform(TASKS["rte"], tok, 40)
    out = t.encode(Example((long_text, "short hypothesis"), 1))
    (seq,) = out.sequences
    assert out.truncated and len(seq) == 40
    assert seq[-4:-1] == tok.encode_ordinary(" short hypothesis")[-3:] or tok.decode(seq).endswith("short hypothesis<|extract|>")
    assert tok.decode(seq).startswith("<|start|>word0 word1")  # a premise loses its end
    # a multiple-choice context keeps its end, next to the question and the answer
    mc = Transform(TASKS["story-cloze"], tok, 30).encode(Example((long_text,), 0, ("The end.", "Not the end.")))
    assert all(len(s) <= 30 for s in mc.sequences) and mc.truncated
    assert "word299" in tok.decode(mc.sequences[0]) and "word0 " not in tok.decode(mc.sequences[0])
    encoded, cut = t.encode_all([Example((long_text, "x"), 0), Example(("short", "x"), 1)])
    assert len(encoded) == 2 and cut == 1
    with pytest.raises(GPT2Error, match="use a model with a longer context"):
        Transform(TASKS["rte"], tok, 4).encode(Example((long_text, "x"), 0))


def test_collate_points_at_the_extract_tokens_and_masks_padding(tok):
    t = Transform(TASKS["stsb"], tok, 64)
    batch = [t.encode(Example(("One.", "Two words here."), 1.0)), t.encode(Example(("A much longer first sentence.", "B."), 4.0))]
    out = collate(batch, pad=tok.eot_token, regression=True)
    e = tok.special_tokens["<|extract|>"]
    assert out["ids"].shape[0] == 4 and out["extract"].shape == (2, 2)
    assert (out["ids"].view(2, 2, -1).gather(2, out["extract"].unsqueeze(-1)) == e).all()
    for row, seq in zip(out["lm_targets"], [s for b in batch for s in b.sequences]):
        assert row[: len(seq) - 1].tolist() == seq[1:] and (row[len(seq) - 1 :] == -1).all()  # ⟨e⟩ and padding: no target
    assert out["labels"].dtype == torch.float32 and out["labels"].tolist() == [1.0, 4.0]


# ----------------------------------------------------------------------------
# the heads and losses against transformers


def _tiny_double_heads(vocab=120, seed=0):
    torch.manual_seed(seed)
    config = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=vocab, n_positions=32, attn_implementation="eager")
    hf = transformers.GPT2DoubleHeadsModel(config).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.normal_(0.0, 0.3)
    lm = transformers.GPT2LMHeadModel(config)
    lm.transformer.load_state_dict(hf.transformer.state_dict())
    return hf, ours_from_hf(lm)


def test_multiple_choice_logits_and_lm_loss_equal_gpt2_double_heads():
    """Same weights: our Choose head's logits equal mc_logits (mc_token_ids at ⟨e⟩), and our auxiliary LM loss equals
    transformers' LM loss with padding labelled -100 (both averaged over every real token of every choice)."""
    hf, gpt = _tiny_double_heads()
    head = heads.Choose(32, dropout=0.0)
    with torch.no_grad():
        head.linear.weight.copy_(hf.multiple_choice_head.summary.weight)
        head.linear.bias.copy_(hf.multiple_choice_head.summary.bias)
    model = heads.TaskModel(gpt, head, lm_coef=0.5).eval()
    g = torch.Generator().manual_seed(1)
    lengths = [[9, 14, 6], [20, 11, 17]]  # 2 questions x 3 answers, padded to 20
    ids = torch.randint(0, 117, (2, 3, 20), generator=g)
    extract = torch.tensor(lengths) - 1
    labels_lm = ids.clone()
    for b in range(2):
        for k in range(3):
            ids[b, k, extract[b, k]] = 119  # the extract token
            labels_lm[b, k, lengths[b][k]:] = -100
    labels_lm[..., :] = torch.where(labels_lm == -100, -100, ids)
    targets = torch.full_like(ids, -1)
    targets[..., :-1] = torch.where(labels_lm[..., 1:] == -100, -1, ids[..., 1:])
    answers = torch.tensor([2, 0])
    with torch.no_grad():
        ref = hf(ids, mc_token_ids=extract, labels=labels_lm, mc_labels=answers)
        scores = model.scores(ids.view(6, 20), extract)
        total, parts = model(ids.view(6, 20), extract, targets.view(6, 20), answers)
    torch.testing.assert_close(scores, ref.mc_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(parts["lm_loss"], ref.loss, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(parts["task_loss"], ref.mc_loss, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(total, ref.mc_loss + 0.5 * ref.loss, atol=1e-5, rtol=1e-5)


def test_classify_sums_both_orders_and_regresses():
    head = heads.Classify(8, 3, dropout=0.0)
    assert head.linear.bias.abs().sum() == 0 and 0.01 < head.linear.weight.std() < 0.03  # N(0, 0.02), zero bias
    states = torch.randn(4, 2, 8)
    torch.testing.assert_close(head(states), head.linear(states[:, 0] + states[:, 1]))
    reg = heads.Classify(8, 0, dropout=0.0, regression=True)
    out = reg(states)
    assert out.shape == (4,)
    labels = torch.tensor([1.0, 2.0, 3.0, 4.0])
    torch.testing.assert_close(reg.loss(out, labels), ((out - labels) ** 2).mean())


def test_lambda_zero_turns_the_lm_loss_off():
    _, gpt = _tiny_double_heads()
    model = heads.TaskModel(gpt, heads.Classify(32, 2, dropout=0.0), lm_coef=0.0).eval()
    ids = torch.randint(0, 119, (2, 10))
    total, parts = model(ids, torch.tensor([[9], [9]]), torch.full_like(ids, 5), torch.tensor([0, 1]))
    assert set(parts) == {"task_loss"} and torch.equal(total, parts["task_loss"])


# ----------------------------------------------------------------------------
# the model: added tokens, transferred layers


def test_added_tokens_grow_the_tied_embedding_and_are_saved_with_the_model(tmp_path, tok):
    torch.manual_seed(0)
    gpt = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=16, vocab_size=50257, pad_vocab_to=64))
    before = gpt.transformer.wte.weight[:50257].clone()
    gpt.grow_vocab(50260, torch.Generator().manual_seed(3))
    w = gpt.transformer.wte.weight
    assert gpt.config.vocab_size == 50260 and w.shape[0] == 50304 and gpt.lm_head.weight is w
    assert torch.equal(w[:50257], before) and 0.005 < w[50257:50260].std() < 0.05 and w[50260:].abs().sum() == 0
    assert gpt(torch.tensor([[50259]]))[0].shape[-1] == 50260
    save_model(gpt, tmp_path / "m", tokenizer=tok)
    again, again_tok = load_model(tmp_path / "m")
    assert again_tok.special_tokens == tok.special_tokens and torch.equal(again.transformer.wte.weight, w)


def test_transferring_the_first_k_layers(tmp_path):
    torch.manual_seed(0)
    gpt = GPT(GPTConfig(n_layer=3, n_head=2, n_embd=16, block_size=16, vocab_size=64))
    with torch.no_grad():
        for p in gpt.parameters():
            p.add_(1.0)  # "pre-trained": unlike any fresh initialisation
    pretrained = {k: v.clone() for k, v in gpt.state_dict().items()}
    restart_layers(gpt, 1, seed=5)
    now = gpt.state_dict()
    for name, value in now.items():
        kept = name.startswith(("transformer.wte", "transformer.wpe", "lm_head", "transformer.h.0."))
        assert torch.equal(value, pretrained[name]) == kept, name
    assert torch.equal(now["transformer.ln_f.weight"], torch.ones(16))  # the final LayerNorm starts afresh too


# ----------------------------------------------------------------------------
# the task files


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_published_formats_are_read(tmp_path):
    qqp = _write(tmp_path / "qqp.tsv", "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n1\t2\t3\tHow?\tWhy?\t1\n4\t5\t6\tA?\tB?\t0\n")
    assert load_split(TASKS["qqp"], TASKS["qqp"].train, None, qqp)[0] == [Example(("How?", "Why?"), 1), Example(("A?", "B?"), 0)]
    mnli = _write(tmp_path / "mnli.tsv", "index\tpromptID\tpairID\tgenre\ts1b\ts2b\ts1p\ts2p\tsentence1\tsentence2\tlabel1\tgold_label\n"
                  "0\t1\t2\tfiction\tx\tx\tx\tx\tP.\tH.\tneutral\tneutral\n")
    assert load_split(TASKS["mnli-m"], TASKS["mnli-m"].train, None, mnli)[0] == [Example(("P.", "H."), 1)]
    qnli = _write(tmp_path / "qnli.tsv", "index\tquestion\tsentence\tlabel\n0\tQ?\tS.\tnot_entailment\n")
    assert load_split(TASKS["qnli"], TASKS["qnli"].train, None, qnli)[0] == [Example(("Q?", "S."), 1)]
    rte = _write(tmp_path / "rte.tsv", "index\tsentence1\tsentence2\tlabel\n0\tA.\tB.\tentailment\n")
    assert load_split(TASKS["rte"], TASKS["rte"].train, None, rte)[0] == [Example(("A.", "B."), 0)]
    snli = _write(tmp_path / "snli.jsonl", "\n".join(json.dumps({"gold_label": g, "sentence1": "P", "sentence2": h})
                                                   for g, h in [("contradiction", "H1"), ("-", "H2"), ("entailment", "H3")]) + "\n")
    assert load_split(TASKS["snli"], TASKS["snli"].train, None, snli)[0] == [Example(("P", "H1"), 2), Example(("P", "H3"), 0)]
    sci = _write(tmp_path / "sci.tsv", "Premise one.\tHypothesis.\tentails\nP2.\tH2.\tneutral\n")
    assert [e.label for e in load_split(TASKS["scitail"], TASKS["scitail"].train, None, sci)[0]] == [0, 1]
    race = tmp_path / "RACE" / "train" / "middle"
    _write(race / "1.txt", json.dumps({"article": "Art.", "questions": ["Q1?", "Q2?"], "options": [["a", "b", "c", "d"]] * 2, "answers": ["C", "A"]}))
    got = load_split(TASKS["race-m"], TASKS["race-m"].train, None, race)[0]
    assert got == [Example(("Art.", "Q1?"), 2, ("a", "b", "c", "d")), Example(("Art.", "Q2?"), 0, ("a", "b", "c", "d"))]


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("rte", "index\tsentence1\tsentence2\tlabel\n0\tA.\tB.\tmaybe\n", "rte.tsv:2: the label 'maybe' is not one of this task's labels"),
        ("rte", "index\tsentence1\tsentence2\tlabel\n0\tA.\n", "rte.tsv:2: 2 columns where the header has 4"),
        ("rte", "index\tpremise\tlabel\n", "has no column 'sentence1'"),
        ("snli", '{"gold_label": "neutral", "sentence1": "x"}\n{broken\n', "snli.tsv:1 is not an SNLI line"),
        ("snli", '{broken\n', "snli.tsv, line 1: not valid JSON"),
        ("scitail", "only two\tcolumns\n", "scitail.tsv:1 is not a row of 3 columns (premise, hypothesis, label"),
        ("stsb", "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n0\tg\tf\ty\to\ts\ts\tA\tB\thigh\n",
         "stsb.tsv:2: the score must be a number"),
        ("sst2", "sentence\tlabel\n", "holds no examples"),
    ],
)
def test_malformed_rows_name_the_file_and_line(tmp_path, name, text, message):
    path = _write(tmp_path / f"{name}.tsv", text)
    with pytest.raises(GPT2Error, match=message.replace("(", r"\(").replace("?", r"\?").replace("'", "'")):
        load_split(TASKS[name], TASKS[name].train, None, path)


def test_published_split_sizes_are_checked(tmp_path):
    """A copy of STS-B's dev set with a row missing is not the published split: named, with both counts."""
    ok, _ = load_split(TASKS["sst2"], TASKS["sst2"].eval, GLUE)
    assert len(ok) == 872 and sum(e.label for e in ok) == 444  # the published counts (PROVENANCE.md)
    lines = (GLUE / "STS-B" / "dev.tsv").read_text().splitlines(keepends=True)
    _write(tmp_path / "STS-B" / "dev.tsv", "".join(lines[:-1]))
    with pytest.raises(GPT2Error, match="holds 1,499 stsb examples, but the published dev split has 1,500"):
        load_split(TASKS["stsb"], TASKS["stsb"].eval, tmp_path)
    cola, _ = load_split(TASKS["cola"], TASKS["cola"].eval, GLUE)  # in-domain + out-of-domain dev: GLUE's 1,043
    assert len(cola) == 1043 and sum(e.label for e in cola) == 365 + 354


# ----------------------------------------------------------------------------
# whole runs


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide GPT with GPT-2's tokenizer, saved in the project's format."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("base") / "model"
    save_model(GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=64, vocab_size=50257, pad_vocab_to=64)), path,
               tokenizer=Tokenizer.load(GPT2_BPE))
    return path


def _cfg(model: Path, out: Path, **over) -> FinetuneConfig:
    base = {
        "task": "sst2", "model": str(model), "out": str(out), "threads": 1, "seed": 3, "batch_size": 8, "max_steps": 6,
        "dtype": "float32", "max_len": 48,
        "data": {"dir": str(GLUE), "max_train_examples": 40},
        "eval": {"interval": 3, "batch_size": 64},
        "log": {"plot": True, "peak_tflops": 1.0},
    }
    for k, v in over.items():
        base[k] = {**base[k], **v} if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return from_dict(FinetuneConfig, base, "test")


@pytest.fixture(scope="module")
def finished(tiny_model, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ft") / "run"
    finetune(_cfg(tiny_model, out))
    return out


def test_a_run_writes_model_metrics_predictions_and_plot(finished):
    report = json.loads((finished / "metrics.json").read_text())
    preds = [json.loads(line) for line in (finished / "predictions.jsonl").read_text().splitlines()]
    assert report["task"] == "sst2" and report["split"] == "dev" and report["examples"] == len(preds) == 872
    assert report["paper"] == {"accuracy": 91.3} and report["training_examples"] == 40 and report["step"] == 6
    gold = [e.label for e in load_split(TASKS["sst2"], TASKS["sst2"].eval, GLUE)[0]]
    assert [p["index"] for p in preds] == list(range(872)) and [("negative", "positive").index(p["label"]) for p in preds] == gold
    recomputed = 100 * sum(p["prediction"] == p["label"] for p in preds) / 872
    assert report["metrics"]["accuracy"] == pytest.approx(recomputed)
    assert all(abs(sum(p["probabilities"]) - 1) < 1e-4 and p["prediction"] == ("negative", "positive")[max(range(2), key=p["probabilities"].__getitem__)] for p in preds)
    model = finished / "model"
    assert {FINETUNE_JSON, HEAD_WEIGHTS, "model.safetensors", "bpe.json"} <= {p.name for p in model.iterdir()}
    assert (finished / "loss.png").stat().st_size > 10_000
    records = [json.loads(line) for line in (finished / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    assert len(train) == 6 and all(r["loss"] == pytest.approx(r["task_loss"] + 0.5 * r["lm_loss"], rel=1e-5) for r in train)
    assert [r["step"] for r in records if r["kind"] == "eval"] == [3, 6]
    lr = [r["lr"] for r in train]
    assert lr[0] == pytest.approx(6.25e-5) and lr[-1] < lr[0] and lr == sorted(lr, reverse=True)  # 1 warm-up step, then linear


def test_predict_labels_new_data_as_the_run_scored_it(finished, tmp_path, capsys):
    """`gpt2 finetune predict` on the dev file (the task's published tsv) gives the run's own predictions."""
    records = predict(FinetunePredictConfig(model=finished, input=GLUE / "SST-2" / "dev.tsv"))
    capsys.readouterr()
    run = [json.loads(line) for line in (finished / "predictions.jsonl").read_text().splitlines()]
    assert [r["prediction"] for r in records] == [r["prediction"] for r in run]
    assert max(abs(a - b) for r, q in zip(records, run) for a, b in zip(r["probabilities"], q["probabilities"])) < 1e-5
    lines = _write(tmp_path / "new.jsonl", '{"text": "a triumph"}\n{"text": "a mess", "label": "negative"}\n')
    out = predict(FinetunePredictConfig(model=finished / "model", input=lines, output=tmp_path / "p.jsonl"))
    assert [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()] == out
    assert out[0]["label"] is None and out[1]["label"] == "negative"
    model, spec, _, info = load_task_model(finished)
    assert spec.name == "sst2" and info["labels"] == ["negative", "positive"] and isinstance(model.head, heads.Classify)


def test_resume_is_exact(tiny_model, finished, tmp_path):
    """3 steps, then a resumed run to 6: the same weights, head and metrics as the uninterrupted run."""
    out = tmp_path / "run"
    finetune(_cfg(tiny_model, out, max_steps=6, eval={"interval": 3}))  # a second uninterrupted run: the same bits
    half = tmp_path / "half"
    shutil.copytree(out, half)
    shutil.rmtree(half / "checkpoints" / "step_0000006")
    finetune(_cfg(tiny_model, half, resume=True))
    for name in ("model.safetensors", HEAD_WEIGHTS):
        assert (half / "model" / name).read_bytes() == (finished / "model" / name).read_bytes() == (out / "model" / name).read_bytes()
    assert json.loads((half / "metrics.json").read_text())["metrics"] == json.loads((finished / "metrics.json").read_text())["metrics"]


def test_random_init_and_no_aux_lm(tiny_model, tmp_path):
    """Table 5's ablations run: 'w/o pre-training' starts from random weights, 'w/o aux LM' logs no LM loss."""
    summary = finetune(_cfg(tiny_model, tmp_path / "random", init="random", lm_coef=0.0, max_steps=2, eval={"interval": 0}))
    assert summary["steps"] == 2 and "accuracy" in summary
    records = [json.loads(line) for line in (tmp_path / "random" / "metrics.jsonl").read_text().splitlines()]
    assert all("lm_loss" not in r for r in records if r["kind"] == "train")
    base, _ = load_model(tiny_model)
    tuned, _ = load_model(tmp_path / "random" / "model")
    assert not torch.allclose(base.transformer.h[0].attn.c_attn.weight, tuned.transformer.h[0].attn.c_attn.weight, atol=1e-3)


def test_a_similarity_task_runs(tiny_model, tmp_path):
    """STS-B: both orders, a regression scored by Pearson and Spearman, end to end."""
    stsb = finetune(_cfg(tiny_model, tmp_path / "stsb", task="stsb", max_steps=2, eval={"interval": 0}))
    assert set(stsb) >= {"pearson", "spearman"} and all(math.isfinite(stsb[m]) for m in ("pearson", "spearman"))
    preds = [json.loads(line) for line in (tmp_path / "stsb" / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 1500 and isinstance(preds[0]["prediction"], float) and preds[0]["label"] == 5.0


@pytest.fixture(scope="module")
def cloze(tiny_model, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cloze") / "run"
    summary = finetune(_cfg(tiny_model, out, task="story-cloze", max_steps=2, data={"dir": str(SHARED / "story_cloze")}, eval={"interval": 0}))
    assert 0 <= summary["accuracy"] <= 100
    return out


def test_a_multiple_choice_model_exports_to_gpt2_double_heads(cli, cloze, finished, tmp_path):
    """Story Cloze end to end, then `gpt2 convert --to hf`: transformers' GPT2DoubleHeadsModel and its tokenizer, loaded
    from the export, give our answer logits. A classification model has no such class: refused, nothing written."""
    report = json.loads((cloze / "metrics.json").read_text())
    assert report["split"] == "test" and report["examples"] == 1871
    r = cli("convert", "--input", str(cloze), "--output", str(tmp_path / "hf"), "--to", "hf")
    assert r.returncode == 0, r.stderr
    hf = transformers.GPT2DoubleHeadsModel.from_pretrained(tmp_path / "hf").eval()
    hf_tok = transformers.GPT2Tokenizer.from_pretrained(tmp_path / "hf")
    model, spec, tok, info = load_task_model(cloze)
    examples = load_split(spec, spec.eval, SHARED / "story_cloze")[0][:4]
    encoded = [Transform(spec, tok, info["max_len"]).encode(e) for e in examples]
    batch = collate(encoded, tok.eot_token, regression=False)
    text = tok.decode(encoded[0].sequences[1])
    assert hf_tok(text)["input_ids"] == encoded[0].sequences[1]  # the added tokens are special tokens there too
    with torch.no_grad():
        ours = model.scores(batch["ids"], batch["extract"])
        theirs = hf(batch["ids"].view(4, 2, -1), mc_token_ids=batch["extract"]).mc_logits
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-5)
    r = cli("convert", "--input", str(finished), "--output", str(tmp_path / "hf-sst2"), "--to", "hf")
    assert r.returncode == 2 and "transformers has no class with GPT-1's classification head" in r.stderr
    assert not (tmp_path / "hf-sst2").exists()
    r = cli("convert", "--input", str(finished), "--output", str(tmp_path / "copy"))  # this project's format keeps the head
    assert r.returncode == 0 and (tmp_path / "copy" / HEAD_WEIGHTS).read_bytes() == (finished / "model" / HEAD_WEIGHTS).read_bytes()


# ----------------------------------------------------------------------------
# bad input: one line, nothing written


@pytest.mark.parametrize(
    "args, message",
    [
        (["finetune", "--task", "sts", "--model", "{model}", "--out", "{out}"], "unknown fine-tuning task 'sts'; choose one of cola, sst2"),
        (["finetune", "--task", "sst2", "--model", "{tmp}/nothing", "--out", "{out}"], "does not exist"),
        (["finetune", "--task", "rte", "--model", "{model}", "--out", "{out}", "--data.train", "{bad_label}", "--data.eval", "{bad_label}"],
         "bad.tsv:2: the label 'maybe' is not one of this task's labels"),
        (["finetune", "--task", "sst2", "--model", "{model}", "--out", "{out}", "--data.dir", "{tmp}/empty", "--max-steps", "1"],
         "GPT2_OFFLINE"),
        (["finetune", "--task", "sst2", "--model", "{model}", "--out", "{out}", "--transfer-layers", "9", "--data.dir", str(GLUE)],
         "--transfer-layers 9: the model has only 2 layers"),
        (["finetune", "predict", "--model", "{model}", "--input", "{bad_label}"], "is not a fine-tuned model (no finetune.json)"),
        (["finetune", "predict", "--model", "{finished}", "--input", "{bad_label}", "--task", "rte"], "was fine-tuned for sst2, not rte"),
        (["finetune", "predict", "--model", "{finished}", "--input", "{tmp}/none.jsonl"], "does not exist"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(cli, tiny_model, finished, tmp_path, args, message):
    (tmp_path / "empty").mkdir()
    _write(tmp_path / "bad.tsv", "index\tsentence1\tsentence2\tlabel\n0\tA.\tB.\tmaybe\n")
    values = {"model": tiny_model, "out": tmp_path / "out", "tmp": tmp_path, "bad_label": tmp_path / "bad.tsv", "finished": finished}
    r = cli(*[a.format(**values) for a in args])
    assert r.returncode == 2, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.startswith("gpt2 ")]
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "out").exists()


def test_a_head_of_another_kind_is_refused(finished, tmp_path):
    """A model directory whose head does not fit the task its finetune.json names (edited, or mixed up) is refused."""
    broken = tmp_path / "model"
    shutil.copytree(finished / "model", broken)
    info = json.loads((broken / FINETUNE_JSON).read_text())
    (broken / FINETUNE_JSON).write_text(json.dumps({**info, "task": "mnli-m"}))  # 3 classes; the saved head has 2
    with pytest.raises(GPT2Error, match="does not fit the mnli-m head"):
        load_task_model(broken)


def test_fine_tuning_leaves_the_heap_as_it_is(tiny_model, tmp_path, monkeypatch):
    """Fine-tuning batches change length every step: a heap that keeps freed memory would fragment and grow (a
    benchmark grew to 18 GB that way), so fine-tuning, unlike pre-training, does not ask for it."""
    from gpt2 import kernels

    calls = []
    monkeypatch.setattr(kernels, "retain_freed_memory", lambda: calls.append(1) or True)
    finetune(_cfg(tiny_model, tmp_path / "run", max_steps=1, eval={"interval": 0}))
    assert calls == []
