"""GPT-1's tokenizer (gpt2/gpt1_tokenizer.py) against transformers' OpenAIGPTTokenizer, on a vocabulary learned here
in GPT-1's layout (vocab.json + merges.txt with `</w>` word ends) by the `tokenizers` library: no download."""

from __future__ import annotations

import pytest

from conftest import SHARED, read_text
from gpt2.gpt1_tokenizer import Gpt1Tokenizer, normalize
from gpt2.tokenizer import Tokenizer

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

TEXTS = [
    "Hello, World! It's a test-case: 3.14 apples cost $5.00...",
    "Ça va? Naïve café, résumé — “quotes” and ‘single’ «guillemets».",
    "中文字符 mixed with English, and 日本語 too.",
    "tabs\tand\nnewlines\r\nand\u00a0no-break\u200bzero-width \x07 bell",
    "UPPER lower MiXeD don't won't y'all O'Neil e-mail @user #tag 100% a_b",
    "an unseenword xyzzyq and emoji 🙂 ½",
]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A 1,200-symbol GPT-1-style vocabulary learned from Botchan, written as GPT-1's files."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import models, normalizers, pre_tokenizers, trainers

    hf = HFTokenizer(models.BPE(unk_token="<unk>", end_of_word_suffix="</w>"))
    hf.normalizer = normalizers.BertNormalizer(lowercase=True)
    hf.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.BpeTrainer(vocab_size=1200, special_tokens=["<unk>"], end_of_word_suffix="</w>", show_progress=False)
    hf.train_from_iterator(read_text(SHARED / "botchan" / "botchan.txt").splitlines(), trainer)
    folder = tmp_path_factory.mktemp("gpt1")
    hf.model.save(str(folder))  # vocab.json + merges.txt
    return folder


def test_ids_equal_transformers(files):
    ours = Tokenizer.load(files)  # GPT-1's files are told from GPT-2's by their `</w>` word ends
    assert isinstance(ours, Gpt1Tokenizer) and ours.n_vocab >= 1000
    theirs = transformers.OpenAIGPTTokenizer.from_pretrained(files)
    lines = [line for line in read_text(SHARED / "botchan" / "botchan.txt").splitlines() if line.strip()][:400]
    for text in TEXTS + lines:
        assert ours.encode_ordinary(text) == theirs(text, add_special_tokens=False)["input_ids"], text
    assert ours.decode(ours.encode_ordinary("Hello, World!")) == theirs.decode(theirs("Hello, World!")["input_ids"])


def test_normalisation_is_berts(files):
    from tokenizers import normalizers

    bert = normalizers.BertNormalizer(lowercase=True)
    for text in TEXTS:
        assert normalize(text) == bert.normalize_str(text), text


def test_added_tokens_are_kept_whole_and_saved(files, tmp_path):
    tok = Tokenizer.load(files)
    ids = tok.add_special_tokens(["<|start|>", "<|extract|>"])
    assert ids == [tok.n_vocab - 2, tok.n_vocab - 1] and tok.add_special_tokens(["<|extract|>"]) == [ids[1]]
    assert tok.encode("<|start|> hi <|extract|>", allowed_special="all") == [ids[0], *tok.encode_ordinary("hi"), ids[1]]
    assert ids[0] not in tok.encode_ordinary("<|start|>")
    again = Tokenizer.load(tok.save(tmp_path / "saved"))
    assert again.special_tokens == tok.special_tokens and again.encode_ordinary(TEXTS[0]) == tok.encode_ordinary(TEXTS[0])


def test_gpt1_itself_is_fine_tuned(files, tmp_path):
    """An `openai-gpt` Hugging Face directory with GPT-1's tokenizer files: `gpt2 finetune` adds the three tokens to
    GPT-1's vocabulary, trains, saves, and `predict` reloads the model with GPT-1's tokenizer and the added tokens."""
    import torch

    from gpt2.config import FinetuneConfig, FinetunePredictConfig, from_dict
    from gpt2.finetune.run import finetune, load_task_model, predict

    vocab = Tokenizer.load(files).n_vocab
    torch.manual_seed(0)
    hf = transformers.OpenAIGPTLMHeadModel(transformers.OpenAIGPTConfig(n_layer=2, n_head=2, n_embd=32, vocab_size=vocab, n_positions=64))
    hf.save_pretrained(tmp_path / "gpt1")
    for name in ("vocab.json", "merges.txt"):
        (tmp_path / "gpt1" / name).write_bytes((files / name).read_bytes())
    cfg = from_dict(FinetuneConfig, {
        "task": "sst2", "model": str(tmp_path / "gpt1"), "out": str(tmp_path / "run"), "threads": 1, "dtype": "float32",
        "batch_size": 8, "max_steps": 2, "data": {"dir": str(SHARED / "glue"), "max_train_examples": 16},
        "eval": {"interval": 0}, "log": {"plot": False, "peak_tflops": 1.0},
    }, "test")
    finetune(cfg)
    model, spec, tok, _ = load_task_model(tmp_path / "run")
    assert isinstance(tok, Gpt1Tokenizer) and tok.n_vocab == vocab + 3 and model.gpt.config.norm == "post"
    assert tok.special_tokens == {"<|start|>": vocab, "<|delim|>": vocab + 1, "<|extract|>": vocab + 2}
    (tmp_path / "in.jsonl").write_text('{"text": "a triumph"}\n')
    assert predict(FinetunePredictConfig(model=tmp_path / "run", input=tmp_path / "in.jsonl", output=tmp_path / "out.jsonl"))[0]["prediction"] in spec.labels


def test_a_fine_tuned_gpt1_exports_to_openai_gpt_double_heads(files, tmp_path, cli):
    """GPT-1 fine-tuned on Story Cloze, then `gpt2 convert --to hf`: transformers' OpenAIGPTDoubleHeadsModel and
    OpenAIGPTTokenizer, loaded from the export, give our answer logits and our ids (the added tokens kept whole)."""
    import torch

    from gpt2.config import FinetuneConfig, from_dict
    from gpt2.finetune.run import finetune, load_task_model
    from gpt2.finetune.tasks import load_split
    from gpt2.finetune.transforms import Transform, collate

    vocab = Tokenizer.load(files).n_vocab
    torch.manual_seed(0)
    hf = transformers.OpenAIGPTLMHeadModel(transformers.OpenAIGPTConfig(n_layer=2, n_head=2, n_embd=32, vocab_size=vocab, n_positions=128))
    hf.save_pretrained(tmp_path / "gpt1")
    for name in ("vocab.json", "merges.txt"):
        (tmp_path / "gpt1" / name).write_bytes((files / name).read_bytes())
    finetune(from_dict(FinetuneConfig, {
        "task": "story-cloze", "model": str(tmp_path / "gpt1"), "out": str(tmp_path / "run"), "threads": 1, "dtype": "float32",
        "batch_size": 8, "max_steps": 2, "data": {"dir": str(SHARED / "story_cloze")}, "eval": {"interval": 0},
        "log": {"plot": False, "peak_tflops": 1.0},
    }, "test"))
    r = cli("convert", "--input", str(tmp_path / "run"), "--output", str(tmp_path / "hf"), "--to", "hf")
    assert r.returncode == 0, r.stderr
    theirs = transformers.OpenAIGPTDoubleHeadsModel.from_pretrained(tmp_path / "hf").eval()
    their_tok = transformers.OpenAIGPTTokenizer.from_pretrained(tmp_path / "hf")
    model, spec, tok, info = load_task_model(tmp_path / "run")
    encoded = [Transform(spec, tok, info["max_len"]).encode(e) for e in load_split(spec, spec.eval, SHARED / "story_cloze")[0][:3]]
    batch = collate(encoded, 0, regression=False)
    assert their_tok(tok.decode(encoded[0].sequences[0]), add_special_tokens=False)["input_ids"] == encoded[0].sequences[0]
    with torch.no_grad():
        ours = model.scores(batch["ids"], batch["extract"])
        hf_logits = theirs(batch["ids"].view(3, 2, -1), mc_token_ids=batch["extract"]).mc_logits
    torch.testing.assert_close(hf_logits, ours, atol=1e-5, rtol=1e-5)
