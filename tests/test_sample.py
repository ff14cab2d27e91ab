"""Generation against its references: greedy decoding equal to transformers' `generate` on tiny random weights,
the sampling distributions equal to transformers' logits warpers, a no-cache recomputation for long contexts,
and the `gpt2 sample` command."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import GPT2_BPE

from gpt2.cli import main
from gpt2.errors import GPT2Error
from gpt2.model import GPT, GPTConfig
from gpt2 import batching
from gpt2.batching import shared_prefixes
from gpt2.sample import candidates, generate, iter_tokens, sample_next, stream
from gpt2.tokenizer import Tokenizer
from gpt2.weights import load_model, save_model

transformers = pytest.importorskip("transformers")


pytestmark = pytest.mark.usefixtures("one_thread")


def random_hf(seed=0, **config):
    torch.manual_seed(seed)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(bos_token_id=0, eos_token_id=0, **config)).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.normal_(0.0, 0.3)  # large enough that greedy continuations vary
    return hf


def hf_and_ours(tmp_path, seed=0, **config):
    hf = random_hf(seed, **config)
    hf.save_pretrained(tmp_path / f"hf{seed}")
    return hf, load_model(tmp_path / f"hf{seed}")[0]


def random_prompts(lengths, vocab, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab, (n,), generator=g).tolist() for n in lengths]


@pytest.mark.parametrize(
    "config, lengths",
    [
        (dict(n_layer=1, n_head=1, n_embd=8, vocab_size=17, n_positions=32), [5]),
        (dict(n_layer=2, n_head=4, n_embd=32, vocab_size=101, n_positions=48), [7, 3, 12, 1]),
        (dict(n_layer=3, n_head=2, n_embd=48, vocab_size=300, n_positions=64), [20, 20]),
    ],
    ids=["1-layer", "ragged-batch", "equal-lengths"],
)
def test_greedy_equals_transformers_generate(tmp_path, config, lengths):
    hf, model = hf_and_ours(tmp_path, **config)
    prompts = random_prompts(lengths, config["vocab_size"])
    ours = generate(model, prompts, 24, temperature=0)
    P = max(lengths)
    ids = torch.tensor([[0] * (P - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (P - len(p)) + [1] * len(p) for p in prompts])
    with torch.no_grad():
        out = hf.generate(ids, attention_mask=mask, max_new_tokens=24, do_sample=False, pad_token_id=0, eos_token_id=None)
    assert ours == out[:, P:].tolist()
    assert len({tuple(o) for o in ours}) == len(set(map(tuple, prompts)))  # the rows really differ


def test_shared_prefixes_group_prompts_that_begin_alike():
    g = torch.Generator().manual_seed(0)
    base, other = (torch.randint(0, 100, (n,), generator=g).tolist() for n in (60, 45))
    prompts = [base + [1, 2], other, base, [5] * 10, base[:40] + [7] * 30, other + [9], base[:20] + [8] * 50]
    groups = {tuple(sorted(rows)): m for m, rows in shared_prefixes(prompts)}
    # base, base + [1, 2] and base[:40] + ... share 40 tokens (two rows saving 40 each beat one saving 59);
    # `other` is wholly a prefix of other + [9], minus the token that starts its generation;
    # 20 common tokens are below the minimum, and a group of one shares nothing
    assert groups == {(0, 2, 4): 40, (1, 5): 44, (3,): 0, (6,): 0}
    assert shared_prefixes([base, base + [3]]) == [(59, [0, 1])]  # identical up to the last token
    assert shared_prefixes([base, base], min_shared=60) == [(0, [0]), (0, [1])]


def test_shared_prefixes_run_once_and_generate_what_transformers_does(tmp_path, monkeypatch):
    """Prompts that begin alike: their common beginning runs once (fewer prompt tokens through the model),
    and greedy decoding still equals transformers' (left-padded, every prompt run whole)."""
    config = dict(n_layer=2, n_head=2, n_embd=32, vocab_size=101, n_positions=160)
    hf, model = hf_and_ours(tmp_path, **config)
    g = torch.Generator().manual_seed(1)
    base, other = (torch.randint(0, 101, (n,), generator=g).tolist() for n in (70, 50))
    prompts = [base + [1, 2, 3], base, other, base[:50] + [5] * 9, other + [7], [3, 4]]
    run: list[int] = []
    model.register_forward_pre_hook(lambda m, args: run.append(args[0].numel()) if args[0].shape[1] > 1 else None)
    ours, lp = generate(model, prompts, 30, temperature=0, return_logprobs=True)
    shared_tokens, run[:] = sum(run), []
    monkeypatch.setattr(batching, "SHARE_MIN_PREFIX", 10**9)  # sharing off: every prompt runs whole
    plain, lp_plain = generate(model, prompts, 30, temperature=0, return_logprobs=True)
    assert sum(run) == len(prompts) * max(len(p) for p in prompts)
    assert shared_tokens < 0.6 * sum(run)
    assert ours == plain
    assert [x for row in lp for x in row] == pytest.approx([x for row in lp_plain for x in row], abs=1e-5)
    P = max(len(p) for p in prompts)
    ids = torch.tensor([[0] * (P - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (P - len(p)) + [1] * len(p) for p in prompts])
    with torch.no_grad():
        out = hf.generate(ids, attention_mask=mask, max_new_tokens=30, do_sample=False, pad_token_id=0, eos_token_id=None)
    assert ours == out[:, P:].tolist()


def test_gpt1_greedy_equals_transformers(tmp_path):
    torch.manual_seed(0)
    hf = transformers.OpenAIGPTLMHeadModel(transformers.OpenAIGPTConfig(n_layer=2, n_head=2, n_embd=16, vocab_size=60, n_positions=32)).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.normal_(0.0, 0.3)
    hf.save_pretrained(tmp_path)
    model, _ = load_model(tmp_path)
    prompts = random_prompts([6, 6], 60)
    with torch.no_grad():
        out = hf.generate(torch.tensor(prompts), max_new_tokens=12, do_sample=False, pad_token_id=0, eos_token_id=None)
    assert generate(model, prompts, 12, temperature=0) == out[:, 6:].tolist()


def reference_window_greedy(model: GPT, prompt: list[int], n: int) -> list[int]:
    """Greedy decoding without a cache that recomputes the documented window for every token."""
    B, half = model.config.block_size, model.config.block_size // 2
    seq, out, remaining = list(prompt), [], n
    while remaining:
        keep = B - min(remaining, half)
        context = seq[-keep:]
        span = min(remaining, B - len(context))
        for _ in range(span):
            with torch.no_grad():
                logits, _ = model(torch.tensor([context]))
            t = int(logits[0, -1].argmax())
            context.append(t)
            seq.append(t)
            out.append(t)
            remaining -= 1
    return out


def test_long_prompts_and_generations_slide_the_window(tmp_path, caplog):
    _, model = hf_and_ours(tmp_path, n_layer=2, n_head=2, n_embd=16, vocab_size=50, n_positions=16)
    prompts = random_prompts([30, 3], 50)  # the first is longer than the context of 16
    with caplog.at_level("WARNING"):
        got = generate(model, prompts, 40, temperature=0)
    assert "keeping its last" in caplog.text
    assert got == [reference_window_greedy(model, p, 40) for p in prompts]


def test_a_prompt_that_shares_nothing_keeps_sharing_on_for_the_others(tmp_path, monkeypatch):
    _, model = hf_and_ours(tmp_path, n_layer=2, n_head=2, n_embd=32, vocab_size=101, n_positions=128)
    base, other = random_prompts([45, 40], 101, seed=4)
    prompts = [base + [1], base + [2, 3], other]
    run: list[tuple[int, int]] = []
    model.register_forward_pre_hook(lambda m, args: run.append(tuple(args[0].shape)))
    shared = generate(model, prompts, 20, temperature=0)
    # the pair's 45 tokens and the lone prompt's first 38 in one prefix pass (2 rows); then the rests, 2 tokens at most
    assert run[:2] == [(2, 45), (3, 2)]
    monkeypatch.setattr(batching, "SHARE_MIN_PREFIX", 10**9)
    assert shared == generate(model, prompts, 20, temperature=0)


def test_one_prompt_sampled_several_times_runs_once_without_a_mask(tmp_path):
    _, model = hf_and_ours(tmp_path, n_layer=2, n_head=2, n_embd=32, vocab_size=101, n_positions=128)
    prompt = random_prompts([50], 101, seed=5)[0]
    masks: list = []
    model.register_forward_pre_hook(lambda m, args, kw: masks.append((tuple(args[0].shape), kw.get("attention_mask"))), with_kwargs=True)
    gens = [torch.Generator().manual_seed(i) for i in range(3)]
    out = generate(model, [prompt] * 3, 10, temperature=1.0, generator=gens)
    assert masks[0][0] == (1, 49) and masks[1][0] == (3, 1)  # the prompt once, then its last token in each row
    assert all(mask is None for _, mask in masks[2:])  # decode steps: no padding, so no mask
    alone = [generate(model, [prompt], 10, temperature=1.0, generator=torch.Generator().manual_seed(i))[0] for i in range(3)]
    assert out == alone


def test_shared_prefixes_with_a_sliding_window(tmp_path, monkeypatch):
    """Rows that share a beginning, generating past the context: each equals the no-cache recomputation."""
    _, model = hf_and_ours(tmp_path, n_layer=2, n_head=2, n_embd=16, vocab_size=50, n_positions=64)
    monkeypatch.setattr(batching, "SHARE_MIN_PREFIX", 4)
    base = random_prompts([20], 50, seed=3)[0]
    prompts = [base + [1], base + [2, 3, 4], base[:12] + [5] * 6]
    assert shared_prefixes(prompts) == [(12, sorted(range(3), key=lambda i: prompts[i]))]
    run: list[tuple[int, int]] = []
    model.register_forward_pre_hook(lambda m, args: run.append(tuple(args[0].shape)))
    got = generate(model, prompts, 60, temperature=0)  # the first window makes 41 tokens, a second one the rest
    assert run[:2] == [(1, 12), (3, 11)]  # the shared beginning once, then the rest of each prompt
    assert got == [reference_window_greedy(model, p, 60) for p in prompts]


def test_sampling_distribution_equals_transformers_warpers():
    from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    logits = torch.randn(4, 500, generator=torch.Generator().manual_seed(0)) * 3
    for temperature, top_k, top_p in [(1.0, None, None), (0.7, 40, None), (1.3, None, 0.9), (0.8, 50, 0.5), (1.0, 1, None), (2.0, None, 0.01)]:
        scores = TemperatureLogitsWarper(temperature)(None, logits.clone())
        if top_k is not None:
            scores = TopKLogitsWarper(top_k)(None, scores)
        if top_p is not None:
            scores = TopPLogitsWarper(top_p)(None, scores)
        expected = scores.softmax(-1)
        probs, ids = candidates(logits, temperature, top_k, top_p)
        got = probs if ids is None else torch.zeros_like(expected).scatter_(-1, ids, probs)
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)


def test_draws_follow_the_distribution_and_the_seed():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, 0.5, 1.5]]).expand(20000, -1)
    draws = sample_next(logits, temperature=1.0, generator=torch.Generator().manual_seed(1))
    freq = torch.bincount(draws, minlength=6).float() / len(draws)
    expected = logits[0].softmax(-1)
    assert (freq - expected).abs().max() < 0.015  # ~5 standard errors
    top2 = sample_next(logits, top_k=2, generator=torch.Generator().manual_seed(1))
    assert set(top2.tolist()) == {0, 5}
    assert abs((top2 == 0).float().mean().item() - expected[0] / (expected[0] + expected[5])) < 0.015
    a = sample_next(logits[:50], generator=torch.Generator().manual_seed(7))
    b = sample_next(logits[:50], generator=torch.Generator().manual_seed(7))
    c = sample_next(logits[:50], generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(sample_next(logits[:3], temperature=0), torch.zeros(3, dtype=torch.long))


def test_seeded_generation_is_reproducible(tmp_path):
    _, model = hf_and_ours(tmp_path, n_layer=2, n_head=2, n_embd=16, vocab_size=50, n_positions=32)
    prompts = random_prompts([4, 2, 6], 50)

    def run(seed):
        return generate(model, prompts, 15, top_k=10, top_p=0.95, generator=torch.Generator().manual_seed(seed))

    assert run(3) == run(3) and run(3) != run(4)
    assert all(len(o) == 15 for o in run(3))


@pytest.mark.parametrize("sampling", [dict(temperature=0), dict(top_k=5, temperature=0.7)])
def test_returned_logprobs_are_the_models_own(tmp_path, sampling):
    """Each new token's log-probability, recomputed with one forward pass over prompt + continuation."""
    _, model = hf_and_ours(tmp_path, n_layer=2, n_head=2, n_embd=16, vocab_size=50, n_positions=32)
    prompts = random_prompts([4, 2, 6], 50, seed=5)
    g = [torch.Generator().manual_seed(i) for i in range(3)]
    tokens, logprobs = generate(model, prompts, 9, stop_ids=[7], generator=g, return_logprobs=True, **sampling)
    assert tokens == generate(model, prompts, 9, stop_ids=[7], generator=[torch.Generator().manual_seed(i) for i in range(3)], **sampling)
    for prompt, new, lp in zip(prompts, tokens, logprobs):
        assert len(lp) == len(new)
        with torch.no_grad():
            logits = model(torch.tensor([prompt + new]))[0][0].double()
        want = logits.log_softmax(-1)[torch.arange(len(prompt) - 1, len(prompt) + len(new) - 1), torch.tensor(new)]
        assert lp == pytest.approx(want.tolist(), rel=1e-5, abs=1e-5)


def test_stop_ids_end_only_their_row(tmp_path):
    _, model = hf_and_ours(tmp_path, n_layer=2, n_head=4, n_embd=32, vocab_size=101, n_positions=32)
    prompts = random_prompts([4, 5], 101, seed=2)
    free = generate(model, prompts, 12, temperature=0)
    stop = next(t for t in free[0][1:] if t != free[0][0])
    got = generate(model, prompts, 12, temperature=0, stop_ids=[stop])
    for row, full in zip(got, free):
        assert row == (full[: full.index(stop)] if stop in full else full)  # the stop id is not returned
    assert len(got[0]) != len(got[1]) and len(got[0]) < 12


@pytest.fixture(scope="module")
def small_tokenizer():
    text = "Der Bär aß Käse. 日本語のテキスト。 Emoji 🙂🙃 and ASCII words, words, words. " * 30
    return Tokenizer.train([text], vocab_size=300, special_tokens=("<|endoftext|>",))


@pytest.fixture(scope="module")
def small_model(small_tokenizer):
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, vocab_size=small_tokenizer.n_vocab, block_size=64)).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.5)
    return model


def test_stop_strings_are_cut_and_never_streamed(small_model, small_tokenizer):
    tok = small_tokenizer
    prompt = tok.encode("The")
    free = generate(small_model, [prompt], 60, temperature=0.8, generator=torch.Generator().manual_seed(5))[0]
    text = tok.decode(free)
    middle = next(i for i in range(len(text) // 2, len(text)) if "\ufffd" not in text[i : i + 2])
    stop = text[middle : middle + 2]  # a stop string that does occur
    start = text.index(stop)
    got = generate(small_model, [prompt], 60, temperature=0.8, generator=torch.Generator().manual_seed(5), stop_strings=[stop], tokenizer=tok)[0]
    assert got == free[: len(got)] and stop not in tok.decode(got)
    assert len(tok.decode(got)) <= start and text.startswith(tok.decode(got))
    pieces = list(stream(small_model, prompt, 60, tokenizer=tok, temperature=0.8, generator=torch.Generator().manual_seed(5), stop_strings=[stop]))
    assert "".join(pieces) == text[:start]


def test_streaming_emits_whole_characters(small_model, small_tokenizer):
    tok = small_tokenizer
    prompt = tok.encode("Der")
    tokens = generate(small_model, [prompt], 80, temperature=1.5, generator=torch.Generator().manual_seed(0))[0]
    assert any(len(tok.decode_bytes([t])) == 1 and tok.decode_bytes([t])[0] >= 0x80 for t in tokens)  # split characters occur
    pieces = list(stream(small_model, prompt, 80, tokenizer=tok, temperature=1.5, generator=torch.Generator().manual_seed(0)))
    assert "".join(pieces) == tok.decode(tokens)
    whole = tok.decode(tokens)
    assert all("\ufffd" not in p for p in pieces) or "\ufffd" in whole


def test_iter_tokens_reports_finished_rows(small_model, small_tokenizer):
    V = small_tokenizer.n_vocab

    def run(stop_ids=()):
        return list(iter_tokens(small_model, [[1, 2], [3]], 6, temperature=1.5, stop_ids=stop_ids,
                                generator=torch.Generator().manual_seed(0)))

    free = run()
    assert len(free) == 6 and all(t is not None for step in free for t in step)
    assert run(stop_ids=range(V)) == [[None, None]]
    stops = {free[0][0]} - {step[1] for step in free}  # ends the first row at once, never the second
    assert stops and run(stop_ids=stops) == [[None, step[1]] for step in free]


def test_vocab_size_limits_the_ids(small_model):
    out = generate(small_model, [[1, 2, 3]] * 4, 30, temperature=2.0, vocab_size=40, generator=torch.Generator().manual_seed(0))
    assert max(max(o) for o in out) < 40


def test_compiled_models_generate_like_their_module(small_model):
    assert generate(torch.compile(small_model), [[1, 2]], 5, temperature=0) == generate(small_model, [[1, 2]], 5, temperature=0)


def test_training_mode_is_restored(small_model):
    small_model.train()
    try:
        generate(small_model, [[1]], 2, temperature=0)
        assert small_model.training
    finally:
        small_model.eval()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(temperature=-0.1), "temperature must be"),
        (dict(temperature=float("nan")), "temperature must be"),
        (dict(top_k=0), "top_k must be"),
        (dict(top_p=0.0), r"top_p must be in \(0, 1\]"),
        (dict(top_p=1.5), r"top_p must be in \(0, 1\]"),
        (dict(max_new_tokens=-1), "max_new_tokens"),
        (dict(prompts=[[1], []]), "prompt 1 is empty"),
        (dict(prompts=[[1, 999]]), "token id 999"),
        (dict(stop_strings=["x"]), "need the tokenizer"),
    ],
)
def test_bad_sampling_input_is_refused(small_model, kwargs, message):
    args = dict(prompts=[[1, 2]], max_new_tokens=3)
    args.update(kwargs)
    with pytest.raises(GPT2Error, match=message):
        generate(small_model, args.pop("prompts"), args.pop("max_new_tokens"), **args)


# ---- the command ----------------------------------------------------------------


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A small model with OpenAI's GPT-2 tokenizer, in the project's format."""
    directory = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=64))
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.3)
    save_model(model, directory, Tokenizer.load(GPT2_BPE))
    return directory


def test_sample_command_greedy_matches_generate(model_dir, capsys, tmp_path):
    assert main(["sample", "--model", str(model_dir), "--prompt", "Hello, world", "--temperature", "0",
                 "--max-new-tokens", "12", "--stop-at-eot", "false", "--output", str(tmp_path / "s.jsonl")]) == 0
    out = capsys.readouterr().out
    model, tok = load_model(model_dir)
    expected = tok.decode(generate(model, [tok.encode("Hello, world")], 12, temperature=0)[0])
    assert out == "Hello, world" + expected + "\n"
    record = json.loads((tmp_path / "s.jsonl").read_text())
    assert record["text"] == expected and record["prompt"] == "Hello, world"


def test_sample_command_prompts_from_a_file_with_seeds(model_dir, capsys, tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('"One"\n{"prompt": "Two"}\n')
    args = ["sample", "--model", str(model_dir), "--prompt-file", str(prompts), "--num-samples", "2", "--seed", "11",
            "--max-new-tokens", "8", "--echo", "false", "--batch-size", "3"]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert main(args) == 0
    assert capsys.readouterr().out == first  # same seed, same samples
    assert first.count("sample 1 of 2") == 2 and "prompt 2 of 2" in first


def test_sample_command_errors_are_one_line(model_dir, tmp_path, cli, capsys):
    other = tmp_path / "other_tok"
    Tokenizer.train(["a small corpus of words " * 10], vocab_size=280).save(other)
    cases = [
        (["--model", str(tmp_path / "missing")], "does not exist"),
        (["--model", str(model_dir), "--top-p", "0"], "--top-p must be in (0, 1]"),
        (["--model", str(model_dir), "--temperature", "-1"], "--temperature must be >= 0"),
        (["--model", str(model_dir), "--top-k", "0"], "--top-k must be at least 1"),
        (["--model", str(model_dir), "--tokenizer", str(other)], "differs from the tokenizer saved with the model"),
        (["--model", str(model_dir), "--output", str(model_dir / "model.safetensors")], "exists; pass --force to replace it"),
        (["--model", str(model_dir), "--output", str(tmp_path)], "is a directory"),
        (["--model", str(model_dir), "--seed", str(2**70)], "must fit in 64 bits"),
        (["--model", str(model_dir), "--seed", "-5"], "--seed must be between 0 and 2**63 - 1"),
        (["--model", str(model_dir), "--device", "cuda:7" if torch.cuda.is_available() else "cuda"], "--device cuda"),
    ]
    weights = (model_dir / "model.safetensors").read_bytes()
    for args, message in cases:
        capsys.readouterr()
        assert main(["sample", *args, "--prompt", "x"]) == 2, args
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if line.startswith("gpt2 sample: error: ")]
        assert len(errors) == 1 and message in errors[0] and "Traceback" not in err, err
    assert (model_dir / "model.safetensors").read_bytes() == weights  # nothing overwritten
    r = cli("sample", "--model", str(tmp_path / "missing"), "--prompt", "x")
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [f"gpt2 sample: error: model directory {tmp_path / 'missing'} does not exist"]
    r = cli("sample", "--model", str(model_dir), "--interactive", "--max-new-tokens", "3", "--temperature", "0", input="Hi\nThere\n")
    assert r.returncode == 0, r.stderr
    model, tok = load_model(model_dir)
    for prompt in ("Hi", "There"):
        assert prompt + tok.decode(generate(model, [tok.encode(prompt)], 3, temperature=0, stop_ids=[tok.eot_token])[0]) in r.stdout


def prepacked_kernels(dtype: torch.dtype) -> bool:
    """Whether this torch build and CPU have the oneDNN / MKL kernels that `CPUBackend` prepacks for."""
    if not torch.backends.mkldnn.is_available():
        return False
    # oneDNN's bfloat16 kernels need AVX-512 (BW, VL, DQ) or AVX-NE-CONVERT: an AVX2-only CPU has none
    return dtype != torch.bfloat16 or torch.ops.mkldnn._is_mkldnn_bf16_supported()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("batch", [1, 3])
def test_prepacked_weights_match_the_plain_path(dtype, batch):
    from gpt2.decode import Backend, CPUBackend
    from gpt2.model import KVCache

    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_head=4, n_embd=64, vocab_size=300, block_size=32)).eval().to(dtype)
    backend = CPUBackend()
    packed = backend._weights(model, batch)
    if not prepacked_kernels(dtype):
        assert packed.forwards == {} and packed.kernel == "plain"  # nothing to prepack with: the plain path
        pytest.skip(f"this torch build or CPU has no oneDNN / MKL kernels for {dtype}")
    assert len(packed.forwards) == 2 * 4 + 1  # every Linear, the tied output layer included
    idx = torch.randint(0, 300, (batch, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        cache = KVCache(model.config, batch, 10, dtype=dtype)
        model(idx[:, :8], cache=cache)
        plain = Backend().step(model, idx[:, 8:], cache)
        cache.length = 8
        fast = backend.step(model, idx[:, 8:], cache)
    assert cache.length == 9
    assert all("forward" not in m.__dict__ for m in model.modules())  # the model is left as it was
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(fast, plain, atol=tol * plain.abs().max().item(), rtol=tol)


def test_prepacked_weights_follow_weight_updates(tmp_path):
    _, model = hf_and_ours(tmp_path, n_layer=2, n_head=4, n_embd=32, vocab_size=101, n_positions=32)
    prompts = random_prompts([5], 101)
    before = generate(model, prompts, 10, temperature=0)
    with torch.no_grad():  # as an optimizer step would
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    after = generate(model, prompts, 10, temperature=0)
    assert after == generate(model, prompts, 10, temperature=0, fast=False) and after != before


def test_generation_under_autocast_runs_in_its_dtype(tmp_path):
    """fp32 weights under bf16 autocast (as sampling during training does): the prepacked fp32 kernels
    would bypass autocast, so the plain modules run, and the tokens are those of the plain path."""
    _, model = hf_and_ours(tmp_path, n_layer=2, n_head=4, n_embd=32, vocab_size=101, n_positions=32)
    prompts = random_prompts([5, 3], 101)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fast = generate(model, prompts, 12, temperature=0)
        plain = generate(model, prompts, 12, temperature=0, fast=False)
        logits = model(torch.tensor([prompts[0]]))[0]
    assert logits.dtype == torch.bfloat16  # autocast really was on
    assert fast == plain


def test_sample_command_unconditional(model_dir, capsys):
    assert main(["sample", "--model", str(model_dir), "--prompt", "", "--temperature", "0", "--max-new-tokens", "6",
                 "--stop-at-eot", "false"]) == 0
    model, tok = load_model(model_dir)
    assert capsys.readouterr().out == tok.decode(generate(model, [[tok.eot_token]], 6, temperature=0)[0]) + "\n"


@pytest.mark.slow
@pytest.mark.parametrize("batch", [1, 3])
def test_greedy_equals_transformers_at_gpt2_size(tmp_path, batch):
    """The 124M shape (random weights), where the prepacked kernels run on the real matrix sizes."""
    from gpt2.weights import export_hf

    torch.manual_seed(0)
    model = GPT(GPTConfig.from_name("gpt2")).eval()
    export_hf(model, tmp_path)
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    prompts = random_prompts([12, 5, 9][:batch], 50257)
    P = max(len(p) for p in prompts)
    ids = torch.tensor([[0] * (P - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (P - len(p)) + [1] * len(p) for p in prompts])
    with torch.no_grad():
        out = hf.generate(ids, attention_mask=mask, max_new_tokens=32, do_sample=False, pad_token_id=0, eos_token_id=None)
    assert generate(model, prompts, 32, temperature=0) == out[:, P:].tolist()


def test_single_row_kernel_choice_never_changes_the_output(monkeypatch):
    import gpt2.decode
    from gpt2.decode import CPUBackend, _PackedWeights

    monkeypatch.setattr(gpt2.decode, "gemv_supported", lambda: False)  # the choice made without the AVX512-BF16 kernel

    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_head=4, n_embd=64, vocab_size=300, block_size=64)).eval().to(torch.bfloat16)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.3)
    outputs, kernels = [], []
    for faster in (True, False):
        monkeypatch.setattr(_PackedWeights, "_addmv_is_faster", lambda self, params, faster=faster: faster)
        backend = CPUBackend()
        kernels.append(backend.kernel(model, 1))
        outputs.append(generate(model, [[1, 2, 3]], 30, temperature=1.0, generator=torch.Generator().manual_seed(0), backend=backend))
    outputs.append(generate(model, [[1, 2, 3]], 30, temperature=1.0, generator=torch.Generator().manual_seed(0), fast=False))
    assert kernels == (["addmv", "onednn-packed"] if prepacked_kernels(torch.bfloat16) else ["plain", "plain"])
    assert outputs[0] == outputs[1] == outputs[2]


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_greedy_on_the_gpu_equals_transformers(tmp_path, dtype):
    """The CUDA path (SDPA kernels, the KV cache on the device): in float32 the greedy tokens equal transformers'
    on the CPU; in bfloat16 the logits stay within 2e-2 of them."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    config = dict(n_layer=2, n_head=4, n_embd=32, vocab_size=101, n_positions=48)
    hf, model = hf_and_ours(tmp_path, **config)
    prompts = random_prompts([7, 3, 12, 1], config["vocab_size"])
    precision = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")  # no TF32: float32 must be float32 for exact greedy ties
    try:
        model = model.to("cuda", dtype)
        ours = generate(model, prompts, 24, temperature=0)
        with torch.no_grad():
            logits = model(torch.tensor([prompts[2]], device="cuda"))[0][0]
    finally:
        torch.set_float32_matmul_precision(precision)
    P = max(len(p) for p in prompts)
    ids = torch.tensor([[0] * (P - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (P - len(p)) + [1] * len(p) for p in prompts])
    with torch.no_grad():
        out = hf.generate(ids, attention_mask=mask, max_new_tokens=24, do_sample=False, pad_token_id=0, eos_token_id=None)
        ref = hf(torch.tensor([prompts[2]])).logits[0]
    assert logits.device.type == "cuda" and logits.dtype == dtype
    err = ((logits.float().cpu() - ref).norm() / ref.norm()).item()
    assert err < (1e-5 if dtype == torch.float32 else 2e-2), err
    if dtype == torch.float32:  # bfloat16 rounding may break near-ties differently from float32
        assert ours == out[:, P:].tolist()


# ---- what a newcomer met: escapes, the seed line, <|endoftext|> shown as a line break


def model_that_says(tmp_path, text: str):
    """A tiny model with GPT-2's tokenizer whose greedy choice is always the token of `text`: with the final
    LayerNorm's bias b and that token's (tied) embedding row 100 b, its logit is 100 |b|^2 plus nothing (the
    normalised part has zero mean), far above every other token's."""
    tok = Tokenizer.load(GPT2_BPE)
    (token,) = tok.encode(text, allowed_special="all")
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=1, n_embd=8, block_size=32))
    with torch.no_grad():
        model.transformer.ln_f.bias.fill_(1.0)
        model.lm_head.weight[token] = 100.0
    save_model(model, tmp_path / "says", tok, overwrite=True)
    return tmp_path / "says"


def test_stop_escapes_follow_one_rule_with_interactive_input(tmp_path, capsys, cli):
    """--stop "\\n" from a shell arrives as a backslash and an n; it means a line break, as in --interactive input."""
    from gpt2.sample_cli import unescape

    assert unescape(r"\n\n") == "\n\n" and unescape(r"a\tb\\n") == "a\tb\\n" and unescape(r"C:\path") == r"C:\path"
    says = model_that_says(tmp_path, "\n")
    args = ["sample", "--model", str(says), "--prompt", "A", "--temperature", "0", "--max-new-tokens", "4"]
    assert main(args) == 0
    assert capsys.readouterr().out == "A" + "\n" * 4 + "\n"
    assert main([*args, "--stop", r"\n"]) == 0
    assert capsys.readouterr().out == "A\n"  # the first new token was the stop: nothing after the prompt
    r = cli("sample", "--model", str(says), "--interactive", "--max-new-tokens", "1", "--stop", r"\n\n", input="A\\nB\n")
    assert r.returncode == 0 and "A\nB\n" in r.stdout, r.stdout


def test_the_seed_line_only_when_it_helps(model_dir, capsys):
    base = ["sample", "--model", str(model_dir), "--prompt", "x", "--max-new-tokens", "2"]
    for extra, shown in [([], True), (["--seed", "3"], False), (["--temperature", "0"], False)]:
        capsys.readouterr()
        assert main([*base, *extra]) == 0
        assert ("pass --seed" in capsys.readouterr().err) == shown, extra


def test_endoftext_is_shown_as_a_line_break(tmp_path, capsys):
    says = model_that_says(tmp_path, "<|endoftext|>")
    args = ["sample", "--model", str(says), "--prompt", "A", "--temperature", "0", "--max-new-tokens", "3", "--stop-at-eot", "false"]
    assert main(args) == 0
    assert capsys.readouterr().out == "A\n\n\n\n"
    assert main([*args, "--num-samples", "2", "--output", str(tmp_path / "s.jsonl")]) == 0
    assert "<|endoftext|>" not in capsys.readouterr().out
    assert [json.loads(line)["text"] for line in (tmp_path / "s.jsonl").read_text().splitlines()] == ["\n\n\n"] * 2
    assert main(args[:-2]) == 0  # stopping there (the default): nothing is generated
    assert capsys.readouterr().out == "A\n"
