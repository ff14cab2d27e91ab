"""Log-likelihood scoring (gpt2.evaluate.scoring) against an independent transformers.GPT2LMHeadModel computation.

The reference runs every sequence on its own through Hugging Face's GPT-2 with
the same (tiny, random) weights and takes log_softmax of the full logits: no
batching, no padding, no cache, no chunking. Ours must agree to 1e-4 relative
(in practice ~1e-6), and the greedy checks must agree exactly.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gpt2.errors import GPT2Error
from gpt2.evaluate.scoring import SHARE_MIN_CONTEXT, Scorer
from gpt2.model import GPT, GPTConfig

VOCAB = 300


pytestmark = pytest.mark.usefixtures("one_thread")


def hf_and_ours(vocab: int = VOCAB, block: int = 64, n_layer: int = 2, n_head: int = 2, n_embd: int = 32, seed: int = 0, std: float = 0.02):
    """A tiny random transformers GPT-2 and our GPT with the same weights (HF's Conv1D weights transposed)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    hf_config = GPT2Config(
        vocab_size=vocab, n_positions=block, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, initializer_range=std, bos_token_id=vocab - 1, eos_token_id=vocab - 1,
    )
    hf = GPT2LMHeadModel(hf_config).eval()
    ours = GPT(GPTConfig(block_size=block, vocab_size=vocab, n_layer=n_layer, n_head=n_head, n_embd=n_embd))
    hf_state = hf.state_dict()
    state = {}
    for name in ours.state_dict():
        t = hf_state[name]
        if name.endswith(("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")):
            t = t.t()
        state[name] = t
    ours.load_state_dict(state)
    return hf, ours.eval()


def hf_logprobs(hf, ids: list[int]) -> torch.Tensor:
    """log p(ids[t] | ids[:t]) for t >= 1, float64, one sequence through transformers."""
    with torch.no_grad():
        logits = hf(torch.tensor([ids[:-1]])).logits[0].double()  # the last token is only a target
    lp = torch.log_softmax(logits, dim=-1)
    return lp[torch.arange(len(ids) - 1), torch.tensor(ids[1:])]


def hf_greedy(hf, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        logits = hf(torch.tensor([ids[:-1]])).logits[0]
    return logits.argmax(-1) == torch.tensor(ids[1:])


def close(a: float, b: float, rel: float = 1e-4) -> bool:
    return abs(a - b) <= rel * abs(b)


@pytest.fixture(scope="module")
def pair():
    return hf_and_ours()


def rand(g: torch.Generator, n: int, high: int = VOCAB - 1) -> list[int]:
    return torch.randint(0, high, (n,), generator=g).tolist()


# ----------------------------------------------------------------------------- documents


def reference_documents(hf, docs, bos, block, stride):
    """Straightforward windows: for targets e+1..., run s[max(0, e-block) : e] and keep the new ones."""
    nll, n = 0.0, 0
    for doc in docs:
        s = [bos] + doc
        scored_up_to = 0  # targets 1..scored_up_to are done
        while scored_up_to < len(s) - 1:
            end = min(len(s) - 1, scored_up_to + (block if scored_up_to == 0 else stride))
            start = scored_up_to if stride == block else max(0, end - block)
            lp = hf_logprobs(hf, s[start : end + 1])
            nll -= lp[scored_up_to - start :].sum().item()
            n += end - scored_up_to
            scored_up_to = end
    return nll, n


@pytest.mark.parametrize("stride", [64, 16, 5])
def test_documents_match_transformers(pair, stride):
    hf, ours = pair
    g = torch.Generator().manual_seed(1)
    docs = [rand(g, n) for n in (1, 10, 63, 64, 65, 200)]
    got = Scorer(ours, batch_tokens=150).score_documents(docs, bos=VOCAB - 1, stride=stride)
    nll, n = reference_documents(hf, docs, VOCAB - 1, 64, stride)
    assert got.n_tokens == n == sum(len(d) for d in docs)
    assert close(got.nll, nll)


def test_windows_cover_every_target_once():
    _, ours = hf_and_ours(block=8)
    scorer = Scorer(ours)
    for n_tokens in (1, 2, 8, 9, 10, 17, 40):
        for stride in (1, 3, 8):
            covered = []
            for start, length, scored in scorer.windows(n_tokens, stride):
                assert 1 <= scored <= length <= 8 and start >= 0
                first = start + length - scored + 1  # first scored target index
                covered += range(first, start + length + 1)
                # sliding: every scored target after the first window sees at least block - stride tokens
                if start > 0 and stride < 8:
                    assert first - start >= 8 - stride
            assert covered == list(range(1, n_tokens))


def test_disjoint_windows_every_token_scored_once_with_eot_first(pair):
    """stride = block: the first window starts with <|endoftext|>, later windows restart context."""
    _, ours = pair
    s = Scorer(ours)
    assert s.windows(130, 64) == [(0, 64, 64), (64, 64, 64), (128, 1, 1)]


# ----------------------------------------------------------------------------- continuations


def make_requests(g, spec):
    return [([VOCAB - 1] + rand(g, k), [rand(g, c) for c in conts]) for k, conts in spec]


SPEC = [
    (40, [3, 1, 5]),  # shared context, mixed lengths
    (4, [2]),  # flat
    (SHARE_MIN_CONTEXT + 5, [1, 1]),  # shared, single-token continuations (no cache needed)
    (33, [4, 4, 2, 7]),
    (2, [1, 3]),  # short context: flattened
    (60, [6, 2]),  # context truncated so that the longest continuation fits the block
    (10, [1, 1, 1]),  # short context, single tokens: shared without a cache
]


@pytest.mark.parametrize("batch_tokens", [1, 64, 100_000])
def test_continuations_match_transformers(pair, batch_tokens):
    hf, ours = pair
    g = torch.Generator().manual_seed(2)
    requests = make_requests(g, SPEC)
    got = Scorer(ours, batch_tokens=batch_tokens).score(requests)
    for (context, conts), row in zip(requests, got):
        assert len(row) == len(conts)
        for cont, s in zip(conts, row):
            keep = 64 - max(len(c) for c in conts) + 1 if len(conts) > 1 and len(context) >= SHARE_MIN_CONTEXT else 64 - len(cont) + 1
            ids = context[-keep:] + cont
            ref = hf_logprobs(hf, ids)[-len(cont) :]
            assert s.n_tokens == len(cont)
            np.testing.assert_allclose(s.logprobs, ref.numpy(), rtol=1e-4, atol=1e-6)
            assert close(s.total, ref.sum().item())
            np.testing.assert_array_equal(s.greedy, hf_greedy(hf, ids)[-len(cont) :].numpy())


def test_greedy_flags_on_the_models_own_continuation(pair):
    """A continuation the reference model generates greedily is all-greedy; changing one token breaks it there."""
    hf, ours = pair
    g = torch.Generator().manual_seed(3)
    context = [VOCAB - 1] + rand(g, 20)
    with torch.no_grad():
        out = hf.generate(torch.tensor([context]), max_new_tokens=6, do_sample=False, pad_token_id=0)[0, len(context) :].tolist()
    wrong = list(out)
    wrong[3] = (wrong[3] + 1) % (VOCAB - 1)
    scored = Scorer(ours).score([(context, [out, wrong])])[0]
    assert scored[0].all_greedy and scored[0].greedy.tolist() == [True] * 6
    assert scored[1].greedy.tolist()[:3] == [True] * 3 and not scored[1].greedy[3]


def test_banned_tokens_filter_only_the_first_position(pair):
    hf, ours = pair
    g = torch.Generator().manual_seed(4)
    while True:  # a context where the top choice after `second` is none of the first position's top three
        context = [VOCAB - 1] + rand(g, 12)
        with torch.no_grad():
            logits = hf(torch.tensor([context])).logits[0, -1]
            top, second, third = logits.argsort(descending=True).tolist()[:3]
            nxt = hf(torch.tensor([context + [second]])).logits[0, -1].argmax().item()
        if nxt not in (top, second, third):
            break
    requests = [(context, [[top], [second, nxt], [third], [top, nxt]])]
    plain, = Scorer(ours).score(requests)
    banned, = Scorer(ours).score(requests, banned=[top, nxt])
    assert [s.all_greedy for s in plain] == [True, False, False, False]
    assert plain[0].greedy_filtered is None
    # with `top` banned, `second` is the top choice; `nxt` is banned only at the first position
    assert [bool(s.greedy_filtered.all()) for s in banned] == [False, True, False, False]
    np.testing.assert_array_equal(banned[1].logprobs, plain[1].logprobs)  # the filter never changes probabilities


def test_shared_context_runs_once(pair):
    """A long context shared by 4 continuations is run once; with batch 1 it would be run 4 times."""
    _, ours = pair
    g = torch.Generator().manual_seed(5)
    context = [VOCAB - 1] + rand(g, 49)
    conts = [rand(g, 3) for _ in range(4)]
    scorer = Scorer(ours)
    scorer.score([(context, conts)])
    assert scorer.tokens_run == 50 + 4 * 2  # the context once, then each continuation minus its last token
    separate = Scorer(ours)
    separate.score([(context, [c]) for c in conts])
    assert separate.tokens_run >= 4 * 52


def test_scores_are_deterministic_and_independent_of_batching(pair):
    _, ours = pair
    g = torch.Generator().manual_seed(6)
    requests = make_requests(g, SPEC * 3)
    a = Scorer(ours, batch_tokens=200).score(requests)
    b = Scorer(ours, batch_tokens=200).score(requests)
    c = Scorer(ours, batch_tokens=5000).score(requests)
    for ra, rb, rc in zip(a, b, c):
        for x, y, z in zip(ra, rb, rc):
            assert x.logprobs.tobytes() == y.logprobs.tobytes()  # bit-identical on a rerun
            np.testing.assert_allclose(x.logprobs, z.logprobs, rtol=1e-5, atol=1e-6)


def test_hidden_states_reproduce_the_models_logits(pair):
    _, ours = pair
    idx = torch.randint(0, VOCAB, (3, 17))
    with torch.no_grad():
        logits, _ = ours(idx)
        h = Scorer(ours).hidden(idx)
        torch.testing.assert_close(ours.lm_head(h), logits, rtol=0, atol=0)


def test_padded_vocabulary_and_bfloat16():
    """A vocabulary padded for speed never leaks into the probabilities; bf16 stays close to float32."""
    hf, ours = hf_and_ours(vocab=VOCAB)
    padded = GPT(GPTConfig(block_size=64, vocab_size=VOCAB, n_layer=2, n_head=2, n_embd=32, pad_vocab_to=64))
    with torch.no_grad():
        for name, p in padded.named_parameters():
            src = ours.state_dict()[name]
            p.zero_()
            p[tuple(slice(0, n) for n in src.shape)] = src
    padded.eval()
    g = torch.Generator().manual_seed(7)
    requests = make_requests(g, SPEC)
    a = Scorer(ours).score(requests)
    b = Scorer(padded).score(requests)
    c = Scorer(ours.to(torch.bfloat16)).score(requests)
    for ra, rb, rc in zip(a, b, c):
        for x, y, z in zip(ra, rb, rc):
            np.testing.assert_allclose(x.logprobs, y.logprobs, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(x.logprobs, z.logprobs, rtol=0.05, atol=0.05)
            assert math.isfinite(z.total)


def test_bad_requests_are_user_errors(pair):
    _, ours = pair
    s = Scorer(ours)
    with pytest.raises(GPT2Error, match="at least one token"):
        s.score([([], [[1]])])
    with pytest.raises(GPT2Error, match="empty continuation"):
        s.score([([1], [[1], []])])
    with pytest.raises(GPT2Error, match="does not fit"):
        s.score([([1], [list(range(65))])])
    with pytest.raises(GPT2Error, match="stride"):
        s.score_documents([[1, 2]], bos=0, stride=65)
