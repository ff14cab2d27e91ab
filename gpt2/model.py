"""The GPT-2 Transformer language model (GPT-2 paper section 2.3, Table 2), and GPT-1's variant.

A decoder-only Transformer (Vaswani et al. 2017) as modified by GPT-2: LayerNorm
at the input of each sub-block and after the last block, learned position
embeddings, input and output embeddings tied, GELU, and residual projections
initialised with std 0.02 / sqrt(N) for N residual layers. GPT-1 (Radford et al.
2018) normalises after each sub-block instead and has no final LayerNorm.

Parameter names follow OpenAI's checkpoints as Hugging Face spells them
(transformer.wte, transformer.h.0.attn.c_attn, ...), so importing weights is a
rename-free copy (HF's Conv1D stores weights transposed; see weights.py).
This file holds the network only: no I/O, optimiser or distributed code.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import typing
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from gpt2.errors import ConfigError
from gpt2.kernels import causal_attention, gelu_tanh

# The paper's four sizes (Table 2; head counts from the released checkpoints) and GPT-1.
PRESETS: dict[str, dict] = {
    "gpt2": dict(n_layer=12, n_head=12, n_embd=768),  # 124M ("117M" in the paper)
    "gpt2-medium": dict(n_layer=24, n_head=16, n_embd=1024),  # 355M ("345M")
    "gpt2-large": dict(n_layer=36, n_head=20, n_embd=1280),  # 774M ("762M")
    "gpt2-xl": dict(n_layer=48, n_head=25, n_embd=1600),  # 1558M ("1542M")
    # GPT-1: 12 layers, 768 wide, 512 positions, 40,000 BPE merges (+478 base symbols).
    "gpt1": dict(n_layer=12, n_head=12, n_embd=768, block_size=512, vocab_size=40478, norm="post"),
}


@dataclass
class GPTConfig:
    block_size: int = 1024
    """context length: the number of learned positions"""
    vocab_size: int = 50257
    """tokens the model predicts (GPT-2's BPE: 50,257)"""
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    """dropout on embeddings, attention weights and residual branches (GPT-1 used 0.1)"""
    bias: bool = True
    """biases in Linear layers and LayerNorms, as in GPT-2"""
    norm: Literal["pre", "post"] = "pre"
    """'pre': LayerNorm at each sub-block's input plus a final one (GPT-2); 'post': after each residual add (GPT-1)"""
    layer_norm_epsilon: float = 1e-5
    pad_vocab_to: int = 1
    """round the embedding matrix up to a multiple of this (64 or 128 speeds up matmuls); logits are
    cut back to vocab_size, so results do not change"""

    def __post_init__(self) -> None:
        for name, kind in typing.get_type_hints(GPTConfig).items():  # settings read from JSON files come unchecked
            value = getattr(self, name)
            if kind is bool and not isinstance(value, bool):
                raise ConfigError(f"model.{name} must be true or false, got {value!r}")
            if kind is int and (isinstance(value, bool) or not isinstance(value, numbers.Integral)):
                raise ConfigError(f"model.{name} must be an integer, got {value!r}")
            if kind is float and (isinstance(value, bool) or not isinstance(value, numbers.Real)):
                raise ConfigError(f"model.{name} must be a number, got {value!r}")
            if kind in (int, float):
                setattr(self, name, kind(value))
        for name in ("block_size", "vocab_size", "n_layer", "n_head", "n_embd", "pad_vocab_to"):
            if getattr(self, name) < 1:
                raise ConfigError(f"model.{name} must be positive, got {getattr(self, name)}")
        if self.pad_vocab_to > 1 << 16:
            raise ConfigError(f"model.pad_vocab_to must be at most 65536 (64 or 128 are the useful values), got {self.pad_vocab_to}")
        if self.n_embd % self.n_head:
            raise ConfigError(f"model.n_embd ({self.n_embd}) must be divisible by model.n_head ({self.n_head})")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.dropout}")
        if self.norm not in ("pre", "post"):
            raise ConfigError(f"model.norm must be 'pre' or 'post', got {self.norm!r}")

    @property
    def padded_vocab_size(self) -> int:
        return math.ceil(self.vocab_size / self.pad_vocab_to) * self.pad_vocab_to

    @classmethod
    def from_name(cls, name: str, **overrides) -> GPTConfig:
        if name not in PRESETS:
            raise ConfigError(f"unknown model preset {name!r}; choose one of {', '.join(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})


class KVCache:
    """Keys and values of the positions seen so far, for every layer: (B, n_head, max_len, head_dim) buffers.

    Each forward pass with a cache attends to the cached positions plus the new
    ones and appends the new keys and values. `length` is the number of cached
    positions; `key_mask` (B, max_len), if set, marks which of them are real
    tokens rather than padding (batches of prompts of different lengths).
    """

    def __init__(self, config: GPTConfig, batch_size: int, max_len: int, device=None, dtype=torch.float32):
        shape = (config.n_layer, batch_size, config.n_head, max_len, config.n_embd // config.n_head)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.length = 0
        self.key_mask: torch.Tensor | None = None

    @property
    def max_len(self) -> int:
        return self.k.shape[3]

    def starts(self, device=None) -> torch.Tensor | None:
        """Each row's cached length (B,) where rows differ; None here, where every row holds `length`."""
        return None

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        end = self.length + k.shape[2]
        self.k[layer, :, :, self.length : end] = k
        self.v[layer, :, :, self.length : end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def advance(self, n: int) -> None:
        """Count `n` new positions as cached (after a forward pass wrote them)."""
        self.length += n

    def select(self, rows: torch.Tensor) -> KVCache:
        """A new cache holding rows `rows` of this one (e.g. one shared prefix repeated for each candidate)."""
        out = KVCache.__new__(KVCache)
        out.k, out.v, out.length = self.k[:, rows], self.v[:, rows], self.length
        out.key_mask = None if self.key_mask is None else self.key_mask[rows]
        return out


class SlotCache:
    """A KV cache of `slots` rows, each holding a sequence of its own length (continuous batching).

    A request claims a free slot, fills it with its prompt (one row, or a few
    rows at a time: `rows(first, stop)` is a view of consecutive slots sharing
    the buffers), and joins the decode steps over all slots; when it ends, its
    slot is released and another request takes it, while the other rows go on.
    A forward pass writes each row's new keys and values after that row's own
    positions, and each row attends only to its own (`starts`); rows of free
    slots compute nothing useful and are not counted. Buffers:
    (n_layer, slots, n_head, max_len, head_dim).
    """

    def __init__(self, config: GPTConfig, slots: int, max_len: int, device=None, dtype=torch.float32):
        shape = (config.n_layer, slots, config.n_head, max_len, config.n_embd // config.n_head)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.lengths = [0] * slots  # cached positions of each slot (host-side: no device syncs)
        self.used = [False] * slots
        self.first, self.stop = 0, slots
        self.live: list[bool] | None = None

    @property
    def max_len(self) -> int:
        return self.k.shape[3]

    @property
    def slots(self) -> int:
        return self.k.shape[1]

    def rows(self, first: int, stop: int, live: list[bool] | None = None) -> SlotCache:
        """The slots first..stop-1 as a cache of their own (views of the same buffers and lengths). With
        `live` (one flag per row), a forward pass counts new positions only for the rows flagged; the
        others' writes land past their lengths, where their next pass overwrites them."""
        if not 0 <= first < stop <= self.slots:
            raise ValueError(f"slots {first}..{stop - 1} are not within 0..{self.slots - 1}")
        out = SlotCache.__new__(SlotCache)
        out.k, out.v, out.lengths, out.used = self.k, self.v, self.lengths, self.used
        out.first, out.stop, out.live = first, stop, live
        return out

    def claim(self, slot: int) -> None:
        """Give the free slot `slot` to a new sequence (empty)."""
        if self.used[slot]:
            raise ValueError(f"slot {slot} is in use")
        self.used[slot], self.lengths[slot] = True, 0

    def release(self, slot: int) -> None:
        self.used[slot], self.lengths[slot] = False, 0

    def free_slots(self) -> list[int]:
        return [s for s, u in enumerate(self.used) if not u]

    @property
    def length(self) -> int:
        """The longest row of this view: attention spans this many cached positions plus the new ones."""
        return max(self.lengths[self.first : self.stop])

    def starts(self, device=None) -> torch.Tensor | None:
        lengths = self.lengths[self.first : self.stop]
        if all(n == lengths[0] for n in lengths):
            return None
        return torch.tensor(lengths, device=device)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        L, T = self.length, k.shape[2]
        if L + T > self.max_len:
            raise ValueError(f"{L + T} positions do not fit a slot of {self.max_len}")
        rows = slice(self.first, self.stop)
        starts = self.starts(k.device)
        if starts is None:  # every row at the same length: one slice
            self.k[layer, rows, :, L : L + T] = k
            self.v[layer, rows, :, L : L + T] = v
        else:  # row b writes positions starts[b] .. starts[b] + T - 1
            b = torch.arange(self.first, self.stop, device=k.device)[:, None]  # (B, 1)
            pos = starts[:, None] + torch.arange(T, device=k.device)  # (B, T)
            self.k[layer, b, :, pos] = k.transpose(1, 2)  # indexed (B, T, nh, hs)
            self.v[layer, b, :, pos] = v.transpose(1, 2)
        return self.k[layer, rows, :, : L + T], self.v[layer, rows, :, : L + T]

    def advance(self, n: int) -> None:
        for i, s in enumerate(range(self.first, self.stop)):
            if self.used[s] and (self.live is None or self.live[i]):
                self.lengths[s] += n


def attention_inputs(
    idx: torch.Tensor, cache: KVCache | SlotCache | None, attention_mask: torch.Tensor | None, positions: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Position ids (B or 1, T) and the attention mask (B or 1, 1, T, L + T) -- None for plain causal
    attention -- of new tokens `idx` (B, T) after the L positions of `cache` (see `GPT.hidden`)."""
    T = idx.shape[1]
    L = cache.length if cache is not None else 0
    starts = cache.starts(idx.device) if cache is not None else None  # rows of a SlotCache at different lengths
    new = torch.arange(T, device=idx.device)
    q_pos = (L + new)[None, :] if starts is None else starts[:, None] + new  # (1 or B, T): each query's position
    if positions is None:
        positions = q_pos
    if attention_mask is None and starts is None and not (L > 0 and T > 1):
        return positions, None
    # query i (position q_pos[b, i]) sees keys j <= q_pos[b, i] that are real tokens; every query
    # also sees itself so that rows of padding stay finite
    k_pos = torch.arange(L + T, device=idx.device)
    mask = k_pos[None, None, :] <= q_pos[:, :, None]  # (1 or B, T, L + T)
    if attention_mask is not None:
        mask = mask & attention_mask[:, None, : L + T].bool()
        mask = mask | (k_pos[None, None, :] == q_pos[:, :, None])
    return positions, mask[:, None]  # (1 or B, 1, T, L + T)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head = config.n_head
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v for all heads
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, cache: KVCache | SlotCache | None, layer: int) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        if cache is not None:
            k, v = cache.update(layer, k, v)  # (B, nh, L + T, hs)
        dropout = self.dropout if self.training else 0.0
        if mask is None and T > 1 and dropout == 0.0:
            y = causal_attention(q, k, v)  # plain causal attention over these T positions
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=mask is None and T > 1)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # re-assemble the heads side by side
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # GPT-2 used the tanh approximation of GELU (Hendrycks & Gimpel 2016)
        return self.dropout(self.c_proj(gelu_tanh(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.pre_norm = config.norm == "pre"
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x, mask=None, cache=None, layer=0):
        if self.pre_norm:  # GPT-2
            x = x + self.attn(self.ln_1(x), mask, cache, layer)
            return x + self.mlp(self.ln_2(x))
        x = self.ln_1(x + self.attn(x, mask, cache, layer))  # GPT-1
        return self.ln_2(x + self.mlp(x))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        V = config.padded_vocab_size
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(V, config.n_embd),
                wpe=nn.Embedding(config.block_size, config.n_embd),
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
                ln_f=(
                    nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon, bias=config.bias)
                    if config.norm == "pre"
                    else nn.Identity()
                ),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, V, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # tied input and output embeddings
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """GPT-2's initialisation (openai/gpt-2 model.py): N(0, 0.02), positions N(0, 0.01), biases 0,
        and the two projections that write into the residual stream scaled by 1/sqrt(N), N = 2 * n_layer."""
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * self.config.n_layer))
            elif name == "transformer.wpe.weight":
                nn.init.normal_(p, 0.0, 0.01)
            elif name.endswith(".weight") and p.dim() == 2:
                nn.init.normal_(p, 0.0, 0.02)
            elif name.endswith(".weight"):  # LayerNorm gains
                nn.init.ones_(p)
            else:
                nn.init.zeros_(p)
        self.transformer.wte.weight[self.config.vocab_size :].zero_()  # padding rows are never predicted

    @torch.no_grad()
    def grow_vocab(self, vocab_size: int, generator: torch.Generator | None = None) -> None:
        """Make room for tokens added to the tokenizer after training, such as fine-tuning's start, delimiter and
        extract tokens (GPT-1 section 3.3): the token embedding, tied to the output layer, gains rows drawn
        from N(0, 0.02); the rows of the tokens it had are unchanged."""
        old = self.config.vocab_size
        if vocab_size < old:
            raise ValueError(f"the vocabulary can only grow: {vocab_size} < {old}")
        self.config = dataclasses.replace(self.config, vocab_size=vocab_size)
        weight = self.transformer.wte.weight
        grown = weight.new_zeros(self.config.padded_vocab_size, self.config.n_embd)
        grown[:old] = weight[:old]
        new_rows = torch.randn(vocab_size - old, self.config.n_embd, generator=generator, device=generator.device if generator else None)
        grown[old:vocab_size] = 0.02 * new_rows.to(grown)
        self.transformer.wte.weight = nn.Parameter(grown, requires_grad=weight.requires_grad)
        self.transformer.wte.num_embeddings = grown.shape[0]
        self.lm_head.weight = self.transformer.wte.weight  # still tied
        self.lm_head.out_features = grown.shape[0]

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameters as the released models count them (tied embeddings once, padding rows excluded)."""
        n = sum(p.numel() for p in self.parameters())
        n -= (self.config.padded_vocab_size - self.config.vocab_size) * self.config.n_embd
        if non_embedding:
            n -= self.config.vocab_size * self.config.n_embd + self.transformer.wpe.weight.numel()
        return n

    def hidden(
        self,
        idx: torch.Tensor,
        *,
        cache: KVCache | SlotCache | None = None,
        attention_mask: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The trunk: final hidden states (B, T, n_embd) for token ids `idx` (B, T), before the output layer.

        With a `cache`, `idx` continues the cached positions (with a `SlotCache`,
        each row its own). `attention_mask`
        (B, L + T), 1 for real tokens and 0 for padding, lets a batch hold
        sequences of different lengths (left-padded for generation); then
        `positions` (B, T) gives each token's position id. The language-model
        head (`logits`), the training loss and the fine-tuning heads all read
        these states.
        """
        n = idx.shape[1] + (cache.length if cache is not None else 0)
        if n > self.config.block_size:
            raise ValueError(f"sequence of {n} tokens is longer than the context of {self.config.block_size}")
        positions, mask = attention_inputs(idx, cache, attention_mask, positions)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(positions))
        for i, block in enumerate(self.transformer.h):
            x = block(x, mask, cache, i)
        if cache is not None:
            cache.advance(idx.shape[1])
        return self.transformer.ln_f(x)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The language-model head: hidden states (..., n_embd) -> logits (..., vocab_size), padding rows cut off."""
        logits = self.lm_head(hidden)
        if self.config.padded_vocab_size != self.config.vocab_size:
            logits = logits[..., : self.config.vocab_size]
        return logits

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        *,
        cache: KVCache | SlotCache | None = None,
        attention_mask: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
        last_only: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits (B, T, vocab_size) for token ids `idx` (B, T) -- `logits(hidden(idx))` -- and the mean
        cross-entropy if `targets` are given (positions with target -1 are ignored).

        `cache`, `attention_mask` and `positions` are those of `hidden`;
        `last_only` computes logits for the last position only (sampling).
        """
        x = self.hidden(idx, cache=cache, attention_mask=attention_mask, positions=positions)
        if last_only:
            x = x[:, -1:, :]
        logits = self.logits(x)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1), ignore_index=-1)
        return logits, loss
