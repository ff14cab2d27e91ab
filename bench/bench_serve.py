"""Serving under concurrent clients: `gpt2 serve` (continuous batching) against itself one request at a time and
against `transformers serve` (its OpenAI-compatible server, without and with its continuous batching).

Every server is started here as a subprocess on 127.0.0.1 with the same GPT-2 124M-shaped model (random
weights, seed 0: ours in the project's format, transformers' the same weights exported by
gpt2.weights.export_hf) and stopped before the next starts, so only one runs at a time. Each client
(a thread) sends its requests one after another to POST /v1/completions: a different prompt of about
`--prompt-tokens` tokens (lines of Tiny Shakespeare when ../shared has it), `--new-tokens` new tokens,
greedy, streamed, so that the time to the first token is seen. For 1, 4 and 16 concurrent clients:

    throughput   generated tokens / wall time of the whole run (tokens counted by re-encoding the text)
    latency      p50 / p95 of each request's time from sending to its last byte
    TTFT         p50 / p95 of the time to the first streamed text

Rounds alternate the servers (the machine is shared and its speed varies), and the medians over rounds
are reported, with the ratios the issue asks for.

    python bench/bench_serve.py                    # the figures in bench/RESULTS.md
    python bench/bench_serve.py --rounds 1 --clients 1 4 --servers ours transformers   # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = Path(os.environ.get("GPT2_SHARED_DATASETS", REPO.parent / "shared" / "datasets"))

SERVERS = {
    "ours": "gpt2 serve, continuous batching (--max-batch 16)",
    "ours-one-at-a-time": "gpt2 serve --max-batch 1",
    "transformers": "transformers serve",
    "transformers-cb": "transformers serve --continuous-batching",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(name: str, models: Path, port: int, threads: int, dtype: str) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "GPT2_OFFLINE": "1"}
    if name.startswith("ours"):
        cmd = [sys.executable, "-m", "gpt2", "-q", "serve", "--model", str(models / "ours"), "--port", str(port),
               "--model-name", "bench", "--max-batch", "1" if name == "ours-one-at-a-time" else "16", "--max-queue", "256",
               "--dtype", dtype]
        if threads:
            cmd += ["--threads", str(threads)]
    else:
        exe = Path(sys.executable).with_name("transformers")
        cmd = [str(exe), "serve", str(models / "hf"), "--port", str(port), "--host", "127.0.0.1", "--dtype", dtype]
        if name == "transformers-cb":
            cmd.append("--continuous-batching")
        if threads:
            env["OMP_NUM_THREADS"] = str(threads)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited: {proc.stderr.read()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"{name} did not start")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def one_request(url: str, model: str, prompt: str, new_tokens: int) -> tuple[float, float, str]:
    """(latency, time to first text, text) of one streamed greedy completion."""
    body = {"model": model, "prompt": prompt, "max_tokens": new_tokens, "temperature": 0, "stream": True}
    t0 = time.perf_counter()
    first, pieces = None, []
    with httpx.stream("POST", url + "/v1/completions", json=body, timeout=600) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if "error" in chunk:
                raise RuntimeError(chunk["error"])
            text = "".join(c.get("text") or "" for c in chunk.get("choices", []))
            if text and first is None:
                first = time.perf_counter() - t0
            pieces.append(text)
    latency = time.perf_counter() - t0
    return latency, first if first is not None else latency, "".join(pieces)


def load(url: str, model: str, prompts: list[str], clients: int, per_client: int, new_tokens: int, tokenizer) -> dict:
    """`clients` threads, each sending `per_client` requests in turn; the run's figures."""
    results: list[tuple[float, float, str]] = []
    errors: list[str] = []
    lock = threading.Lock()

    def client(c: int) -> None:
        for k in range(per_client):
            try:
                out = one_request(url, model, prompts[(c * per_client + k) % len(prompts)], new_tokens)
            except Exception as e:  # reported, and the run fails below
                errors.append(repr(e))
                return
            with lock:
                results.append(out)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"{len(errors)} requests failed, e.g. {errors[0]}")
    latencies = sorted(r[0] for r in results)
    firsts = sorted(r[1] for r in results)
    tokens = sum(len(tokenizer.encode_ordinary(r[2])) for r in results)

    def pct(xs, q):
        return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]

    return {"tok_s": tokens / wall, "p50": pct(latencies, 0.5), "p95": pct(latencies, 0.95), "ttft50": pct(firsts, 0.5),
            "ttft95": pct(firsts, 0.95), "requests": len(results), "tokens": tokens, "wall": wall,
            "texts": [r[2] for r in results]}


def prompts_for(tokenizer, n: int, length: int) -> list[str]:
    corpus = SHARED / "tinyshakespeare" / "input.txt"
    words = (corpus.read_text(encoding="utf-8") if corpus.exists() else "the quick brown fox jumps over the lazy dog " * 4000).split()
    out, start = [], 0
    for _ in range(n):
        text, k = "", start
        while len(tokenizer.encode_ordinary(text)) < length:
            text += words[k % len(words)] + " "
            k += 1
        out.append(text.strip())
        start = k + 97
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--servers", nargs="+", default=list(SERVERS), choices=list(SERVERS))
    p.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--requests", type=int, default=32, help="requests per run at the highest client count; with c clients, "
                                                           "requests * c / highest, at least one per client and 4 in all")
    p.add_argument("--prompt-tokens", type=int, default=32)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=0, help="torch threads of each server (0: its default)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="precision of the weights in every server")
    args = p.parse_args()

    import torch
    import transformers

    from gpt2.model import GPT, GPTConfig
    from gpt2.tokenizer import Tokenizer, load_tokenizer
    from gpt2.train import cpu_name
    from gpt2.weights import export_hf, save_model

    print("command: python " + " ".join(sys.argv))
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start")
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, python {platform.python_version()}")
    print(f"task: GPT-2 124M shape, random weights, {args.dtype}, prompts of ~{args.prompt_tokens} tokens, {args.new_tokens} new tokens, "
          f"greedy, streamed; {args.rounds} rounds, servers alternating\n", flush=True)
    local = SHARED / "gpt2_bpe"  # OpenAI's files, where ../shared has them (else the cache or a download)
    tokenizer = Tokenizer.load(local) if (local / "encoder.json").exists() else load_tokenizer("gpt2")
    per_client = {c: max(1, -(-max(4, args.requests * c // max(args.clients)) // c)) for c in args.clients}
    prompts = prompts_for(tokenizer, max(c * per_client[c] for c in args.clients), args.prompt_tokens)
    runs: dict[tuple[str, int], list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp)
        torch.manual_seed(0)
        model = GPT(GPTConfig.from_name("gpt2")).eval()
        save_model(model, models / "ours", tokenizer)
        export_hf(model, models / "hf", tokenizer)
        del model
        for r in range(args.rounds):
            order = args.servers if r % 2 == 0 else list(reversed(args.servers))
            for name in order:
                port = free_port()
                proc = start(name, models, port, args.threads, args.dtype)
                url = f"http://127.0.0.1:{port}"
                model_id = "bench" if name.startswith("ours") else str(models / "hf")
                try:
                    one_request(url, model_id, prompts[0], 4)  # warm up
                    for c in args.clients:
                        res = load(url, model_id, prompts, c, per_client[c], args.new_tokens, tokenizer)
                        runs.setdefault((name, c), []).append(res)
                        print(f"round {r + 1} {name:20s} {c:2d} clients: {res['tok_s']:7.1f} tok/s, latency p50 {res['p50']:.2f} s "
                              f"p95 {res['p95']:.2f} s, TTFT p50 {res['ttft50']:.2f} s p95 {res['ttft95']:.2f} s "
                              f"({res['requests']} requests, {res['wall']:.1f} s)", flush=True)
                finally:
                    stop(proc)

    med = {k: {f: statistics.median(x[f] for x in v) for f in ("tok_s", "p50", "p95", "ttft50", "ttft95")} for k, v in runs.items()}
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end\n")
    print("| server | clients | tok/s | latency p50 | latency p95 | TTFT p50 | TTFT p95 |")
    print("|---|---|---|---|---|---|---|")
    for name in args.servers:
        for c in args.clients:
            m = med[(name, c)]
            print(f"| {SERVERS[name]} | {c} | {m['tok_s']:.1f} | {m['p50']:.2f} s | {m['p95']:.2f} s | {m['ttft50']:.2f} s | {m['ttft95']:.2f} s |")
    top, one = max(args.clients), min(args.clients)
    if "ours" in args.servers:
        ours = med[("ours", top)]
        for peer in [s for s in args.servers if s != "ours"]:
            print(f"throughput at {top} clients, ours / {peer}: {ours['tok_s'] / med[(peer, top)]['tok_s']:.2f}x")
        print(f"ours: p95 latency at {top} clients / p50 latency at {one} client: {ours['p95'] / med[('ours', one)]['p50']:.2f}x")
    same = {name: runs[(name, one)][0]["texts"] for name in args.servers}
    print("greedy texts at 1 client equal across servers: " + ", ".join(
        f"{name} {'yes' if texts == same[args.servers[0]] else 'no'}" for name, texts in same.items()))


if __name__ == "__main__":
    main()
