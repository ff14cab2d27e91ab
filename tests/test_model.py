"""The network against its references: transformers' GPT2LMHeadModel / OpenAIGPTLMHeadModel on tiny random
weights (full, cached and left-padded forward passes), the released models' parameter counts, and GPT-2's init."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from gpt2.errors import ConfigError
from gpt2.model import GPT, PRESETS, GPTConfig, KVCache

transformers = pytest.importorskip("transformers")


pytestmark = pytest.mark.usefixtures("one_thread")

# (n_layer, n_head, n_embd, vocab_size, block_size, pad_vocab_to)
SHAPES = [(1, 1, 8, 17, 8, 1), (2, 4, 32, 101, 24, 64), (3, 2, 48, 257, 32, 1)]
CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def hf_gpt2(n_layer, n_head, n_embd, vocab_size, block_size, seed=0):
    """A transformers GPT-2 with weights large enough that every layer matters (the 0.02 init is nearly uniform)."""
    torch.manual_seed(seed)
    config = transformers.GPT2Config(
        n_layer=n_layer, n_head=n_head, n_embd=n_embd, vocab_size=vocab_size, n_positions=block_size,
        bos_token_id=0, eos_token_id=0, attn_implementation="eager",
    )
    model = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    return model


def ours_from_hf(hf, pad_vocab_to=1, norm="pre"):
    """Our GPT with hf's weights, copied here by hand (independently of gpt2.weights)."""
    c = hf.config
    model = GPT(GPTConfig(block_size=c.n_positions, vocab_size=c.vocab_size, n_layer=c.n_layer, n_head=c.n_head,
                          n_embd=c.n_embd, norm=norm, pad_vocab_to=pad_vocab_to)).eval()
    ours = model.state_dict()
    renames = {"transformer.tokens_embed.weight": "transformer.wte.weight", "transformer.positions_embed.weight": "transformer.wpe.weight"}
    with torch.no_grad():
        for name, t in hf.state_dict().items():
            if name == "lm_head.weight" or name.endswith(".attn.bias"):
                continue
            name = renames.get(name, name)
            if name.endswith(CONV1D):
                t = t.t()
            ours[name][: t.shape[0]].copy_(t)
    return model


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_logits_and_loss_match_transformers(shape):
    *dims, pad = shape
    hf = hf_gpt2(*dims)
    model = ours_from_hf(hf, pad_vocab_to=pad)
    V, T = dims[3], dims[4]
    idx = torch.randint(0, V, (3, T), generator=torch.Generator().manual_seed(1))
    targets = idx.roll(-1, dims=1)
    targets[0, 2] = -1  # ignored, as -100 is in transformers
    with torch.no_grad():
        logits, loss = model(idx, targets)
        ref = hf(idx).logits
    assert logits.shape == (3, T, V)
    torch.testing.assert_close(logits, ref, atol=1e-5, rtol=1e-5)
    ref_loss = F.cross_entropy(ref.reshape(-1, V), targets.reshape(-1), ignore_index=-1)
    torch.testing.assert_close(loss, ref_loss, atol=1e-5, rtol=1e-5)


def test_cached_decoding_matches_transformers():
    hf = hf_gpt2(2, 4, 32, 101, 24)
    model = ours_from_hf(hf)
    idx = torch.randint(0, 101, (2, 20), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = hf(idx).logits
        cache = KVCache(model.config, 2, 20)
        pieces = [model(idx[:, :7], cache=cache)[0]]  # prefill
        pieces.append(model(idx[:, 7:11], cache=cache)[0])  # a chunk after cached positions
        for t in range(11, 20):
            pieces.append(model(idx[:, t : t + 1], cache=cache)[0])
    assert cache.length == 20
    torch.testing.assert_close(torch.cat(pieces, dim=1), ref, atol=1e-5, rtol=1e-5)


def test_left_padded_batch_matches_transformers():
    hf = hf_gpt2(2, 4, 32, 101, 24)
    model = ours_from_hf(hf)
    lengths = [9, 4, 6]
    T = max(lengths)
    g = torch.Generator().manual_seed(3)
    idx = torch.randint(0, 101, (3, T), generator=g)
    mask = torch.tensor([[0] * (T - n) + [1] * n for n in lengths])
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    nxt = torch.randint(0, 101, (3, 1), generator=g)
    with torch.no_grad():
        ref = hf(idx, attention_mask=mask, position_ids=positions).logits
        ref_next = hf(torch.cat([idx, nxt], 1), attention_mask=torch.cat([mask, torch.ones(3, 1, dtype=torch.long)], 1),
                      position_ids=torch.cat([positions, torch.tensor(lengths)[:, None]], 1)).logits[:, -1]
        cache = KVCache(model.config, 3, T + 1)
        full_mask = torch.cat([mask, torch.ones(3, 1, dtype=torch.long)], 1)
        logits, _ = model(idx, cache=cache, attention_mask=full_mask, positions=positions)
        step, _ = model(nxt, cache=cache, attention_mask=full_mask, positions=torch.tensor(lengths)[:, None], last_only=True)
    real = mask.bool()
    torch.testing.assert_close(logits[real], ref[real], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(step[:, -1], ref_next, atol=1e-5, rtol=1e-5)


def test_gpt1_post_norm_matches_openai_gpt():
    torch.manual_seed(0)
    config = transformers.OpenAIGPTConfig(n_layer=2, n_head=4, n_embd=32, vocab_size=97, n_positions=16)
    hf = transformers.OpenAIGPTLMHeadModel(config).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.normal_(0.0, 0.3)
    model = ours_from_hf(hf, norm="post")
    assert isinstance(model.transformer.ln_f, torch.nn.Identity)
    idx = torch.randint(0, 97, (2, 16), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(model(idx)[0], hf(idx).logits, atol=1e-5, rtol=1e-5)


def test_padded_vocabulary_changes_nothing():
    hf = hf_gpt2(2, 4, 32, 101, 24)
    plain, padded = ours_from_hf(hf), ours_from_hf(hf, pad_vocab_to=128)
    assert padded.transformer.wte.weight.shape == (128, 32) and plain.transformer.wte.weight.shape == (101, 32)
    assert padded.num_params() == plain.num_params()
    idx = torch.randint(0, 101, (2, 24), generator=torch.Generator().manual_seed(5))
    a, loss_a = plain(idx, idx)
    b, loss_b = padded(idx, idx)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(loss_a, loss_b)
    fresh = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, vocab_size=50, block_size=8, pad_vocab_to=64))
    assert fresh.transformer.wte.weight[50:].abs().sum() == 0  # padding rows are never predicted


def test_last_only_and_tied_embeddings():
    model = ours_from_hf(hf_gpt2(2, 4, 32, 101, 24))
    assert model.lm_head.weight is model.transformer.wte.weight
    idx = torch.randint(0, 101, (2, 10), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        full, _ = model(idx)
        last, _ = model(idx, last_only=True)
    assert last.shape == (2, 1, 101)
    torch.testing.assert_close(last, full[:, -1:], atol=1e-6, rtol=1e-6)


def test_trunk_is_the_hidden_state_transformers_returns():
    """GPT.hidden is the trunk: equal to transformers' last hidden state (after ln_f), and forward is its head."""
    hf = hf_gpt2(2, 4, 32, 101, 24)
    model = ours_from_hf(hf, pad_vocab_to=64)
    idx = torch.randint(0, 101, (2, 12), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        h = model.hidden(idx)
        ref = hf(idx, output_hidden_states=True).hidden_states[-1]
        logits, _ = model(idx)
    assert h.shape == (2, 12, 32)
    torch.testing.assert_close(h, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model.logits(h), logits, atol=0, rtol=0)
    assert model.logits(h).shape[-1] == 101  # the embedding's padding rows are cut off


def test_cache_select_continues_each_row():
    model = ours_from_hf(hf_gpt2(2, 4, 32, 101, 24))
    g = torch.Generator().manual_seed(7)
    prefix = torch.randint(0, 101, (1, 6), generator=g)
    cont = torch.randint(0, 101, (3, 1), generator=g)
    with torch.no_grad():
        cache = KVCache(model.config, 1, 7)
        model(prefix, cache=cache)
        shared = cache.select(torch.zeros(3, dtype=torch.long))
        got, _ = model(cont, cache=shared)
        ref, _ = model(torch.cat([prefix.expand(3, -1), cont], 1))
    assert shared.length == 7
    torch.testing.assert_close(got[:, -1], ref[:, -1], atol=1e-5, rtol=1e-5)


def test_context_overflow_is_refused():
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, vocab_size=50, block_size=8))
    with pytest.raises(ValueError, match="longer than the context of 8"):
        model(torch.zeros(1, 9, dtype=torch.long))
    cache = KVCache(model.config, 1, 8)
    model(torch.zeros(1, 8, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match="9 tokens"):
        model(torch.zeros(1, 1, dtype=torch.long), cache=cache)


@pytest.mark.parametrize("name, millions", [("gpt2", 124), ("gpt2-medium", 355), ("gpt2-large", 774), ("gpt2-xl", 1558)])
def test_preset_parameter_counts_match_the_released_models(name, millions):
    config = GPTConfig.from_name(name)
    with torch.device("meta"):
        ours = GPT(config).num_params()
        hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(
            n_layer=config.n_layer, n_head=config.n_head, n_embd=config.n_embd)).num_parameters()
    assert ours == hf  # tied embedding counted once, as transformers counts it
    assert round(ours / 1e6) == millions  # the sizes OpenAI gives for its released checkpoints


def test_gpt1_preset():
    config = GPTConfig.from_name("gpt1")
    assert (config.block_size, config.vocab_size, config.norm) == (512, 40478, "post")
    with torch.device("meta"):
        ours = GPT(config).num_params()
        hf = transformers.OpenAIGPTLMHeadModel(transformers.OpenAIGPTConfig()).num_parameters()
    assert ours == hf


def test_initialisation_follows_gpt2():
    n_layer = 4
    model = GPT(GPTConfig(n_layer=n_layer, n_head=4, n_embd=256, vocab_size=3000, block_size=512))
    p = dict(model.named_parameters())
    assert abs(p["transformer.wte.weight"].std().item() - 0.02) < 0.001
    assert abs(p["transformer.wpe.weight"].std().item() - 0.01) < 0.0005
    assert abs(p["transformer.h.0.attn.c_attn.weight"].std().item() - 0.02) < 0.001
    scaled = 0.02 / math.sqrt(2 * n_layer)  # residual projections: 1/sqrt(N), N residual layers
    for name in ("transformer.h.1.attn.c_proj.weight", "transformer.h.3.mlp.c_proj.weight"):
        assert abs(p[name].std().item() - scaled) < 0.05 * scaled
    assert all(p[n].eq(0).all() for n in p if n.endswith(".bias"))
    assert p["transformer.h.2.ln_1.weight"].eq(1).all() and p["transformer.ln_f.weight"].eq(1).all()


def test_numbers_of_other_numeric_types_become_plain_ones():
    import numpy as np

    config = GPTConfig(n_layer=np.int64(2), dropout=0, layer_norm_epsilon=np.float32(1e-5))
    assert type(config.n_layer) is int and type(config.dropout) is float and type(config.layer_norm_epsilon) is float


def test_dropout_only_in_training():
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, vocab_size=50, block_size=16, dropout=0.2))
    idx = torch.randint(0, 50, (2, 16), generator=torch.Generator().manual_seed(8))
    model.train()
    assert not torch.equal(model(idx)[0], model(idx)[0])
    model.eval()
    assert torch.equal(model(idx)[0], model(idx)[0])


@pytest.mark.parametrize(
    "kwargs, message",
    [(dict(n_embd=30, n_head=4), "divisible"), (dict(n_layer=0), "n_layer"), (dict(dropout=1.0), "dropout"), (dict(norm="mid"), "norm"),
     (dict(n_layer="1"), "n_layer must be an integer, got '1'"), (dict(n_embd=48.0), "n_embd must be an integer"),
     (dict(n_layer=True), "n_layer must be an integer"), (dict(dropout="0.1"), "dropout must be a number"),
     (dict(bias=1), "bias must be true or false"), (dict(pad_vocab_to=10**6), "at most 65536")],
)
def test_invalid_configs_are_refused(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        GPTConfig(**kwargs)
    with pytest.raises(ConfigError, match="unknown model preset"):
        GPTConfig.from_name("gpt3")


def test_presets_are_the_papers_sizes():
    assert [(PRESETS[n]["n_layer"], PRESETS[n]["n_embd"]) for n in ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")] == [
        (12, 768), (24, 1024), (36, 1280), (48, 1600)
    ]  # Table 2 of the GPT-2 paper


def test_slot_cache_rows_at_their_own_lengths_equal_separate_caches():
    """Continuous batching's cache: sequences of different lengths in slots of one SlotCache, read in
    chunks and stepped together (a free slot among them), give the logits each gets alone."""
    from gpt2.decode import Backend, CPUBackend
    from gpt2.model import KVCache, SlotCache

    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, vocab_size=97, block_size=64)).eval()
    g = torch.Generator().manual_seed(1)
    prompts = {0: torch.randint(0, 97, (1, 11), generator=g), 2: torch.randint(0, 97, (1, 4), generator=g),
               3: torch.randint(0, 97, (1, 23), generator=g)}
    steps = torch.randint(0, 97, (5, 4), generator=g)  # tokens fed at each step, one per slot
    slots = SlotCache(model.config, 4, 64)
    with torch.no_grad():
        for s, p in prompts.items():
            slots.claim(s)
            model(p[:, :3], cache=slots.rows(s, s + 1))  # a prompt read in two chunks
            model(p[:, 3:], cache=slots.rows(s, s + 1))
        assert slots.lengths == [11, 0, 4, 23]
        for backend in (Backend(), CPUBackend()):
            lengths = list(slots.lengths)
            for k in range(2):
                got = backend.step(model, steps[k][:, None], slots.rows(0, 4, live=[True, False, True, True]))
                for s, p in prompts.items():
                    alone = KVCache(model.config, 1, 64)
                    want = model(torch.cat([p, steps[:k + 1, s][None]], dim=1), cache=alone)[0][:, -1]
                    torch.testing.assert_close(got[s : s + 1], want, atol=1e-5, rtol=1e-5)
            assert slots.lengths == [lengths[0] + 2, 0, lengths[2] + 2, lengths[3] + 2]  # the free slot is not counted
            for s in prompts:
                slots.lengths[s] -= 2  # the second backend repeats the same steps
    slots.release(2)
    assert slots.free_slots() == [1, 2] and slots.lengths[2] == 0
