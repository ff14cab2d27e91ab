"""The legacy Completions API of OpenAI, as `gpt2 serve` speaks it: request parsing and response shapes.

GPT-2 is a base model, so the server speaks the completions protocol (a
prompt in, its continuation out), not the chat one. `parse_completion` turns a
JSON body into the engine's requests or raises `APIError` naming the
parameter; `Choice` assembles one choice's text, log-probabilities and finish
reason from the engine's events, for a whole response or chunk by chunk.
Field meanings follow OpenAI's API reference for `POST /v1/completions`.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field

from gpt2.sample import SamplingParams, TextStream

MAX_STOP = 4
MAX_LOGPROBS = 5


class APIError(Exception):
    """An error answered as {"error": {"message", "type", "param", "code"}} with an HTTP status."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None, type: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.headers = headers
        self.type = type or {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
                             408: "timeout_error", 413: "invalid_request_error", 429: "rate_limit_error",
                             503: "service_unavailable"}.get(status, "server_error")

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


@dataclass
class Completion:
    """A parsed `POST /v1/completions` body."""

    prompts: list[list[int]]
    max_tokens: int
    params: SamplingParams
    n: int
    seed: int | None
    logprobs: int | None
    echo: bool
    stream: bool
    include_usage: bool
    model: str | None


def _number(body: dict, name: str, default, *, lo=None, hi=None, integer=False):
    value = body.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or (integer and not float(value).is_integer()):
        raise APIError(400, f"{name} must be {'an integer' if integer else 'a number'}, got {value!r}", param=name)
    if not math.isfinite(value) or (lo is not None and value < lo) or (hi is not None and value > hi):
        raise APIError(400, f"{name} must be between {lo} and {hi}, got {value}", param=name)
    return int(value) if integer else float(value)


def _prompts(body: dict, tokenizer, eot: int | None) -> list[list[int]]:
    """prompt: a string, a list of strings, a list of ids or a list of id lists (absent: <|endoftext|>)."""
    prompt = body.get("prompt")
    if prompt is None:
        if eot is None:
            raise APIError(400, "prompt is required: this tokenizer has no <|endoftext|> to start from", param="prompt")
        return [[eot]]
    if isinstance(prompt, str):
        items = [prompt]
    elif isinstance(prompt, list) and prompt and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
        items = [prompt]
    elif isinstance(prompt, list) and prompt and all(isinstance(p, (str, list)) for p in prompt):
        items = prompt
    else:
        raise APIError(400, "prompt must be a string, a list of strings, a list of token ids or a list of lists of ids", param="prompt")
    out = []
    for p in items:
        if isinstance(p, str):
            ids = tokenizer.encode(p, allowed_special="all") if p else ([eot] if eot is not None else [])
        elif all(isinstance(t, int) and not isinstance(t, bool) for t in p):
            ids = list(p)
            bad = [t for t in ids if not 0 <= t < tokenizer.n_vocab]
            if bad:
                raise APIError(400, f"prompt holds token id {bad[0]}, outside the vocabulary (0..{tokenizer.n_vocab - 1})", param="prompt")
        else:
            raise APIError(400, "a prompt given as a list must hold only token ids", param="prompt")
        if not ids:
            raise APIError(400, "a prompt is empty", param="prompt")
        out.append(ids)
    return out


def parse_completion(body: object, tokenizer, block_size: int) -> Completion:
    """Check every field and turn prompts into token ids; APIError(400, ...) naming the parameter otherwise."""
    if not isinstance(body, dict):
        raise APIError(400, "the request body must be a JSON object")
    if body.get("suffix") is not None:
        raise APIError(400, "suffix is not supported by this server (GPT-2 only continues text)", param="suffix")
    if body.get("best_of") not in (None, 1):
        raise APIError(400, "best_of is not supported by this server; use n", param="best_of")
    eot = tokenizer.eot_token
    prompts = _prompts(body, tokenizer, eot)
    echo = bool(body.get("echo", False))
    max_tokens = _number(body, "max_tokens", 16, lo=0, hi=2**31, integer=True)
    if max_tokens == 0 and not echo:
        raise APIError(400, "max_tokens must be at least 1 (0 only with echo)", param="max_tokens")
    for p in prompts:
        if len(p) + max_tokens > block_size:
            raise APIError(400, f"this model's context is {block_size} tokens; the prompt ({len(p)} tokens) plus max_tokens "
                                f"({max_tokens}) exceeds it: shorten the prompt or lower max_tokens", param="max_tokens",
                           code="context_length_exceeded")
    temperature = _number(body, "temperature", 1.0, lo=0, hi=2)
    top_p = _number(body, "top_p", 1.0, lo=0, hi=1)
    if top_p == 0:
        raise APIError(400, "top_p must be above 0", param="top_p")
    top_k = _number(body, "top_k", None, lo=-1, hi=tokenizer.n_vocab, integer=True)
    if top_k in (0, -1):
        top_k = None  # 0 and -1 mean no limit (as in vLLM)
    n = _number(body, "n", 1, lo=1, hi=16, integer=True)
    seed = _number(body, "seed", None, lo=-(2**63), hi=2**63 - 1, integer=True)
    logprobs = _number(body, "logprobs", None, lo=0, hi=MAX_LOGPROBS, integer=True)
    stop = body.get("stop")
    if stop is None:
        stop = []
    elif isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop) or len(stop) > MAX_STOP:
        raise APIError(400, f"stop must be a string or a list of at most {MAX_STOP} strings", param="stop")
    if any(not s for s in stop):
        raise APIError(400, "stop strings must not be empty", param="stop")
    bias = body.get("logit_bias") or {}
    if not isinstance(bias, dict):
        raise APIError(400, "logit_bias must map token ids to numbers", param="logit_bias")
    logit_bias = []
    for key, value in bias.items():
        try:
            token = int(key)
        except (TypeError, ValueError):
            raise APIError(400, f"logit_bias key {key!r} is not a token id", param="logit_bias") from None
        if not 0 <= token < tokenizer.n_vocab or isinstance(value, bool) or not isinstance(value, numbers.Real) or not -100 <= value <= 100:
            raise APIError(400, f"logit_bias: token {key} must be a token id and its bias a number in [-100, 100]", param="logit_bias")
        logit_bias.append((token, float(value)))
    stream = bool(body.get("stream", False))
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise APIError(400, "stream_options must be an object", param="stream_options")
    if options and not stream:
        raise APIError(400, "stream_options is only allowed with stream", param="stream_options")
    params = SamplingParams(
        temperature=temperature, top_k=top_k, top_p=None if top_p >= 1 else top_p,
        stop_ids=() if eot is None else (eot,), stop_strings=tuple(stop), vocab_size=tokenizer.n_vocab,
        logit_bias=tuple(logit_bias),
        presence_penalty=_number(body, "presence_penalty", 0.0, lo=-2, hi=2),
        frequency_penalty=_number(body, "frequency_penalty", 0.0, lo=-2, hi=2),
    )
    model = body.get("model")
    return Completion(prompts, max_tokens, params, n, seed, logprobs, echo, stream, bool(options.get("include_usage")),
                      model if isinstance(model, str) else None)


@dataclass
class Choice:
    """One choice's text and log-probabilities, built from engine events."""

    index: int
    tokenizer: object
    stops: tuple[str, ...]
    want_logprobs: bool
    text: list[str] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)
    token_logprobs: list[float | None] = field(default_factory=list)
    top_logprobs: list[dict[str, float] | None] = field(default_factory=list)
    text_offset: list[int] = field(default_factory=list)
    completion_tokens: int = 0
    finish_reason: str | None = None
    chars: int = 0  # characters of text so far, for text_offset

    def __post_init__(self) -> None:
        self.stream = TextStream(self.tokenizer, self.stops)

    def echo(self, prompt: list[int], logprobs: list[float | None] | None, top: list | None) -> dict:
        """The prompt as the start of the text (and of the log-probabilities); returns the piece added."""
        decoder = self.tokenizer.stream_decoder()
        mark = len(self.tokens)
        pieces = []
        for i, t in enumerate(prompt):
            if self.want_logprobs:
                self._token(t, logprobs[i] if logprobs else None, top[i] if top else None)
            piece = decoder.push(t)
            pieces.append(piece)
            self.chars += len(piece)
        pieces.append(decoder.flush())
        self.chars += len(pieces[-1])
        self.text.append("".join(pieces))
        return self._piece(self.text[-1], mark)

    def add(self, token: int, logprob: float | None, top: list | None) -> dict:
        """A new token; returns the piece of the choice it adds (text possibly "" while held back)."""
        self.completion_tokens += 1
        mark = len(self.tokens)
        if self.want_logprobs:
            self._token(token, logprob, top)
        piece = self.stream.push(token)
        self.text.append(piece)
        self.chars += len(piece)
        return self._piece(piece, mark)

    def finish(self, reason: str) -> dict:
        rest = self.stream.flush()
        self.text.append(rest)
        self.finish_reason = reason
        return self._piece(rest, len(self.tokens))

    def _token(self, token: int, logprob: float | None, top: list | None) -> None:
        self.text_offset.append(self.chars)
        self.tokens.append(self.tokenizer.decode([token]))
        self.token_logprobs.append(logprob)
        self.top_logprobs.append(None if top is None else {self.tokenizer.decode([t]): lp for t, lp in top})

    def _logprobs(self, start: int) -> dict | None:
        if not self.want_logprobs:
            return None
        return {"tokens": self.tokens[start:], "token_logprobs": self.token_logprobs[start:],
                "top_logprobs": self.top_logprobs[start:], "text_offset": self.text_offset[start:]}

    def _piece(self, text: str, start: int) -> dict:
        return {"index": self.index, "text": text, "logprobs": self._logprobs(start), "finish_reason": self.finish_reason}

    def whole(self) -> dict:
        return {"index": self.index, "text": "".join(self.text), "logprobs": self._logprobs(0), "finish_reason": self.finish_reason}
