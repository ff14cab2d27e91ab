"""`gpt2 sample`: generate text from a model on the command line (GPT-2 paper, section 3's samples).

Prompts come from --prompt, --prompt-file (one prompt, or one per line of a
.jsonl file), stdin, or --interactive input; one prompt is streamed as it is
generated, several are batched (gpt2.sample.generate). Escapes: in --stop
strings and in --interactive input, `\\n` is a line break, `\\t` a tab and
`\\\\` a backslash (a shell passes "\\n" as two characters); --prompt and
prompt files are taken as they are. With --stop-at-eot false, <|endoftext|>
(the boundary between documents) is shown as a line break.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path

import torch

from gpt2.errors import GPT2Error
from gpt2.sample import SamplingParams, TextStream, check_sampling, generate, iter_tokens

log = logging.getLogger(__name__)

_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\"}


def unescape(text: str) -> str:
    """`\\n`, `\\t` and `\\\\` as a line break, a tab and a backslash; any other backslash stays as it is."""
    out, i = [], 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text) and text[i + 1] in _ESCAPES:
            out.append(_ESCAPES[text[i + 1]])
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def read_prompts(cfg) -> list[str]:
    """--prompt, --prompt-file (.jsonl: one prompt per line) or stdin; [''] for unconditional samples."""
    from gpt2.textfile import json_lines, read_stdin, read_text

    if cfg.prompt is not None:
        return [cfg.prompt]
    if cfg.prompt_file is None:
        return [read_stdin()] if not sys.stdin.isatty() else [""]
    if str(cfg.prompt_file) == "-":
        return [read_stdin()]
    path = Path(cfg.prompt_file)
    text = read_text(path, "prompt file")
    if path.suffix != ".jsonl":
        return [text]
    prompts = []
    for lineno, item in json_lines(path, text.split("\n")):
        if isinstance(item, dict):
            item = item.get("prompt")
        if not isinstance(item, str):
            raise GPT2Error(f'{path} line {lineno}: expected a JSON string or an object with a "prompt" string')
        prompts.append(item)
    if not prompts:
        raise GPT2Error(f"{path} holds no prompts")
    return prompts


def encode_prompt(tokenizer, text: str) -> list[int]:
    """The prompt's ids; an empty prompt starts from <|endoftext|> (an unconditional sample)."""
    ids = tokenizer.encode(text, allowed_special="all")
    if ids:
        return ids
    if tokenizer.eot_token is None:
        raise GPT2Error("an empty prompt starts from <|endoftext|>, which this tokenizer lacks; give a prompt")
    return [tokenizer.eot_token]


def _shown(tokenizer, tokens: list[int]) -> list[int]:
    """The tokens as shown: <|endoftext|> as a line break."""
    eot = tokenizer.eot_token
    if eot is None or eot not in tokens:
        return tokens
    newline = tokenizer.encode_ordinary("\n")
    return [x for t in tokens for x in (newline if t == eot else [t])]


def _write_jsonl(path: Path, records: list[dict]) -> None:
    from gpt2.atomic import write_atomic

    write_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def sample_command(cfg) -> list[str]:
    """`gpt2 sample`: returns the samples' texts (also written to stdout and, with --output, to a JSON Lines file)."""
    from gpt2.config import check_output_file
    from gpt2.decode import CPUBackend, default_backend
    from gpt2.device import choose_dtype, resolve_device
    from gpt2.weights import load_model_and_tokenizer

    check_sampling(cfg.temperature, cfg.top_k, cfg.top_p)
    check_output_file(cfg.output, cfg.force)
    device = resolve_device(cfg.device, mps=True)
    model, tokenizer = load_model_and_tokenizer(cfg.model, cfg.tokenizer, device=device, dtype=choose_dtype(cfg.dtype, device))
    seed = cfg.seed if cfg.seed is not None else int.from_bytes(os.urandom(4), "little")
    if cfg.seed is None and cfg.temperature > 0:
        log.info("seed %d (pass --seed %d to repeat this run)", seed, seed)
    generator = torch.Generator(device=device).manual_seed(seed)
    params = SamplingParams(
        temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p,
        stop_ids=[tokenizer.eot_token] if cfg.stop_at_eot and tokenizer.eot_token is not None else [],
        stop_strings=[unescape(s) for s in cfg.stop],
    )
    backend = CPUBackend() if device.type == "cpu" else default_backend(model)
    out = sys.stdout
    records, texts = [], []
    t0, n_tokens = time.perf_counter(), 0

    def run_streaming(text: str) -> str:
        nonlocal n_tokens
        if cfg.echo:
            out.write(text)
        shown = TextStream(tokenizer, params.stop_strings)
        pieces = []
        for (token,) in iter_tokens(model, [encode_prompt(tokenizer, text)], cfg.max_new_tokens, params,
                                    tokenizer=tokenizer, generator=generator, backend=backend):
            if token is None:
                break
            n_tokens += 1
            for t in _shown(tokenizer, [token]):
                pieces.append(shown.push(t))
                out.write(pieces[-1])
            out.flush()
            if shown.stopped:
                break
        pieces.append(shown.flush())
        out.write(pieces[-1] + "\n")
        out.flush()
        return "".join(pieces)

    if cfg.interactive:
        while True:
            try:
                line = input("prompt> ")
            except EOFError:
                out.write("\n")
                break
            texts.append(run_streaming(unescape(line)))
    else:
        prompts = read_prompts(cfg)
        jobs = [(p, s) for p in range(len(prompts)) for s in range(cfg.num_samples)]
        if len(jobs) == 1:
            texts.append(run_streaming(prompts[0]))
            records.append({"prompt": prompts[0], "sample": 0, "text": texts[0]})
        else:
            encoded = [encode_prompt(tokenizer, p) for p in prompts]
            for start in range(0, len(jobs), cfg.batch_size):
                batch = jobs[start : start + cfg.batch_size]
                results = generate(model, [encoded[p] for p, _ in batch], cfg.max_new_tokens, params, tokenizer=tokenizer,
                                   generator=generator, backend=backend, progress=None)
                for (p, s), tokens in zip(batch, results):
                    n_tokens += len(tokens)
                    text = tokenizer.decode(_shown(tokenizer, tokens))
                    texts.append(text)
                    records.append({"prompt": prompts[p], "sample": s, "text": text, "tokens": len(tokens)})
                    title = f" prompt {p + 1} of {len(prompts)}, sample {s + 1} of {cfg.num_samples} "
                    out.write(f"{title:=^80}\n{prompts[p] if cfg.echo else ''}{text}\n")
                    out.flush()
    if cfg.output is not None and records:
        _write_jsonl(Path(cfg.output), [{**r, "seed": seed} for r in records])
    elapsed = time.perf_counter() - t0
    log.info("generated %d tokens in %.1f s (%.1f tokens/s)", n_tokens, elapsed, n_tokens / max(elapsed, 1e-9))
    return texts
