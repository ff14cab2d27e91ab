"""`gpt2 serve` against clients nobody here wrote: the `openai` package (completions, streaming, logprobs, echo,
errors as its exception types), 16 concurrent clients whose greedy completions equal the same requests run
alone by gpt2.sample.generate, cancellation, the 429 and shutdown paths, and the HTTP details (request ids,
API keys, size limit, CORS, metrics, the tokenizer endpoints lm-evaluation-harness reads).

Each server runs in this process on a loopback port, started and stopped by the test."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import torch
from conftest import GPT2_BPE

from gpt2.config import ServeConfig
from gpt2.model import GPT, GPTConfig
from gpt2.sample import generate
from gpt2.tokenizer import Tokenizer
from gpt2.weights import load_model_and_tokenizer, save_model

openai = pytest.importorskip("openai")
pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")

pytestmark = pytest.mark.usefixtures("one_thread")
NO_EOT = {"50256": -100}  # a request that must run to max_tokens never draws <|endoftext|>


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny random model with OpenAI's GPT-2 tokenizer, in the project's format."""
    directory = tmp_path_factory.mktemp("served")
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=128))
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.3)  # logits far apart: greedy choices do not hang on float rounding
    save_model(model, directory, Tokenizer.load(GPT2_BPE))
    return directory


@pytest.fixture(scope="module")
def reference(model_dir):
    return load_model_and_tokenizer(model_dir)


class Server:
    """`gpt2 serve`'s app on 127.0.0.1, in a thread of this process, until `stop`."""

    def __init__(self, model_dir, **settings):
        from gpt2.serve import build_app

        from gpt2.serve import graceful_server

        self.cfg = ServeConfig(model=model_dir, port=0, **settings)
        self.app, self.state = build_app(self.cfg)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        config = uvicorn.Config(self.app, log_level="warning", timeout_graceful_shutdown=int(self.cfg.shutdown_grace) + 5)
        self.server = graceful_server(config, self.state, self.cfg.shutdown_grace)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/health").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"the server did not become healthy: {self.state.load_error}")

    def client(self, **kwargs) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key=kwargs.pop("api_key", "none"), **kwargs)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)

    @property
    def engine(self):
        return self.state.engine


@contextlib.contextmanager
def slowed(engine, seconds: float = 0.02):
    """Each forward pass of the engine's model takes `seconds` longer (a model that is slow to generate),
    so that a request is still running while the test does something else."""
    hook = engine.model.transformer.wte.register_forward_pre_hook(lambda *args: time.sleep(seconds))
    try:
        yield
    finally:
        hook.remove()


@pytest.fixture(scope="module")
def server(model_dir):
    s = Server(model_dir, metrics=True, max_batch=16)
    yield s
    s.stop()


def greedy_text(reference, prompt: str, n: int) -> tuple[list[int], str]:
    model, tok = reference
    ids = generate(model, [tok.encode(prompt)], n, temperature=0, stop_ids=[tok.eot_token])[0]
    return ids, tok.decode(ids)


def test_completions_with_the_openai_client_equal_generate(server, reference):
    client = server.client()
    prompts = ["Hello, world", "The meaning of life is", "Paris"]
    r = client.completions.create(model="served", prompt=prompts, max_tokens=12, temperature=0)
    assert [c.index for c in r.choices] == [0, 1, 2]
    for prompt, choice in zip(prompts, r.choices):
        ids, text = greedy_text(reference, prompt, 12)
        assert choice.text == text
        assert choice.finish_reason == ("length" if len(ids) == 12 else "stop")
    tok = reference[1]
    assert r.usage.prompt_tokens == sum(len(tok.encode(p)) for p in prompts)
    assert r.usage.completion_tokens == sum(len(greedy_text(reference, p, 12)[0]) for p in prompts)
    assert r.object == "text_completion" and r.model == server.state.model_name and r.id.startswith("cmpl-")
    # token ids as the prompt give the same text
    ids = client.completions.create(model="served", prompt=tok.encode("Paris"), max_tokens=12, temperature=0)
    assert ids.choices[0].text == r.choices[2].text
    assert [m.id for m in client.models.list().data] == [server.state.model_name]


def test_streaming_gives_the_same_text_in_pieces(server, reference):
    client = server.client()
    kwargs = dict(model="served", prompt="Once upon a time", max_tokens=20, temperature=0)
    whole = client.completions.create(**kwargs).choices[0].text
    chunks = list(client.completions.create(stream=True, stream_options={"include_usage": True}, **kwargs))
    pieces = [c.choices[0].text for c in chunks if c.choices]
    assert "".join(pieces) == whole and len([p for p in pieces if p]) > 1
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 20


def test_streaming_never_splits_a_character(server, reference):
    """Tokens that are single bytes of 'é' (0xC3 0xA9), made likely by logit_bias and sampled, split that
    character across tokens (each one's own text is U+FFFD): the streamed pieces still join into the text of
    the whole response, so no piece ended inside a character."""
    tok = reference[1]
    lead, tail = (tok.vocab.index(bytes([b])) for b in (0xC3, 0xA9))
    client = server.client()
    kwargs = dict(model="served", prompt="caf", max_tokens=40, temperature=1.0, seed=3, logit_bias={str(lead): 100, str(tail): 100})
    whole = client.completions.create(logprobs=0, **kwargs).choices[0]
    assert "é" in whole.text and all(t == "\ufffd" for t in whole.logprobs.tokens)
    pieces = [c.choices[0].text for c in client.completions.create(stream=True, **kwargs)]
    assert "".join(pieces) == whole.text and len(pieces) > 10


def test_logprobs_are_the_models_own(server, reference):
    model, tok = reference
    client = server.client()
    prompt = "The quick brown fox"
    r = client.completions.create(model="served", prompt=prompt, max_tokens=8, temperature=0, logprobs=3)
    lp = r.choices[0].logprobs
    ids = tok.encode(prompt)
    new = generate(model, [ids], 8, temperature=0, stop_ids=[tok.eot_token])[0]
    with torch.no_grad():
        logits = model(torch.tensor([ids + new]))[0][0].double().log_softmax(-1)
    want = logits[torch.arange(len(ids) - 1, len(ids) + len(new) - 1), torch.tensor(new)].tolist()
    assert lp.token_logprobs == pytest.approx(want, abs=1e-4)
    assert lp.tokens == [tok.decode([t]) for t in new]
    for chosen, top in zip(lp.token_logprobs, lp.top_logprobs):
        assert len(top) == 3 and max(top.values()) == pytest.approx(chosen, abs=1e-6)  # greedy: the top one
    text = r.choices[0].text
    assert lp.text_offset[0] == 0 and all(text[o:].startswith(t) for o, t in zip(lp.text_offset, lp.tokens) if "\ufffd" not in t)


def test_echo_scores_the_prompt(server, reference):
    """echo + logprobs + max_tokens 0 (how lm-evaluation-harness scores text): the prompt's tokens and their
    log-probabilities under the model, the first one null."""
    model, tok = reference
    client = server.client()
    prompt = "A prompt to be scored, token by token."
    r = client.completions.create(model="served", prompt=prompt, max_tokens=0, echo=True, logprobs=1, temperature=0)
    lp = r.choices[0].logprobs
    ids = tok.encode(prompt)
    with torch.no_grad():
        logits = model(torch.tensor([ids]))[0][0].double().log_softmax(-1)
    want = logits[torch.arange(len(ids) - 1), torch.tensor(ids[1:])].tolist()
    assert r.choices[0].text == prompt and lp.token_logprobs[0] is None
    assert lp.token_logprobs[1:] == pytest.approx(want, abs=1e-4)
    assert len(lp.tokens) == len(ids) and lp.top_logprobs[0] is None and all(len(t) == 1 for t in lp.top_logprobs[1:])
    # with new tokens, the prompt comes first
    both = client.completions.create(model="served", prompt=prompt, max_tokens=5, echo=True, temperature=0)
    assert both.choices[0].text == prompt + greedy_text(reference, prompt, 5)[1]


def test_sampling_options_and_stop(server, reference):
    client = server.client()
    kwargs = dict(model="served", prompt="Seeds", max_tokens=16, temperature=1.0, top_p=0.9, n=3, seed=5)
    a = [c.text for c in client.completions.create(**kwargs).choices]
    b = [c.text for c in client.completions.create(**kwargs).choices]
    assert a == b and len(set(a)) > 1  # a seed repeats; the choices differ
    model, tok = reference
    full = greedy_text(reference, "Stop", 30)[1]
    stop = full[10:13]
    r = client.completions.create(model="served", prompt="Stop", max_tokens=30, temperature=0, stop=[stop, "zzzz"])
    assert r.choices[0].text == full[: full.index(stop)] and r.choices[0].finish_reason == "stop"
    # a bias of 100 on one token makes it the greedy choice; a penalty changes what repeats
    biased = client.completions.create(model="served", prompt="Bias", max_tokens=4, temperature=0, logit_bias={"464": 100})
    assert biased.choices[0].text == tok.decode([464] * 4)
    plain = client.completions.create(model="served", prompt="Repeat", max_tokens=24, temperature=0).choices[0].text
    penalised = client.completions.create(model="served", prompt="Repeat", max_tokens=24, temperature=0,
                                          frequency_penalty=2.0, presence_penalty=2.0).choices[0].text
    assert plain != penalised


def test_errors_have_openais_shape_and_exception_types(server, model_dir):
    client = server.client(max_retries=0)
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="served", prompt="x", max_tokens=1000)
    assert e.value.status_code == 400 and e.value.body["param"] == "max_tokens" and e.value.code == "context_length_exceeded"
    for bad, param in [(dict(temperature=-1), "temperature"), (dict(logprobs=9), "logprobs"), (dict(stop=["a"] * 5), "stop"),
                       (dict(n=0), "n"), (dict(top_p=0), "top_p"), (dict(prompt=[[1, 10**7]]), "prompt")]:
        with pytest.raises(openai.BadRequestError) as e:
            client.completions.create(**{"model": "served", "prompt": "x", "max_tokens": 2, **bad})
        assert e.value.body["param"] == param, bad
    r = httpx.post(server.url + "/v1/completions", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and set(r.json()["error"]) == {"message", "type", "param", "code"}
    assert httpx.get(server.url + "/v1/nothing").json()["error"]["type"] == "not_found_error"


def test_api_keys_cors_request_ids_and_size_limit(model_dir):
    s = Server(model_dir, api_key=["secret-one", "secret-two"], cors_origin=["http://example.test"], max_body_bytes=2000)
    try:
        with pytest.raises(openai.AuthenticationError):
            s.client(api_key="wrong", max_retries=0).completions.create(model="m", prompt="x", max_tokens=1)
        assert s.client(api_key="secret-two").completions.create(model="m", prompt="x", max_tokens=2).choices
        assert httpx.get(s.url + "/health").status_code == 200  # open without a key
        assert httpx.get(s.url + "/v1/models").status_code == 401
        r = httpx.get(s.url + "/v1/models", headers={"Authorization": "Bearer secret-one", "X-Request-Id": "abc-123"})
        assert r.status_code == 200 and r.headers["x-request-id"] == "abc-123"
        assert len(httpx.get(s.url + "/health").headers["x-request-id"]) == 32  # one is made when none is sent
        pre = httpx.options(s.url + "/v1/completions", headers={
            "Origin": "http://example.test", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type,x-stainless-lang"})
        assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == "http://example.test"
        assert "x-stainless-lang" in pre.headers["access-control-allow-headers"].lower()
        other = httpx.options(s.url + "/v1/completions", headers={"Origin": "http://evil.test", "Access-Control-Request-Method": "POST"})
        assert "access-control-allow-origin" not in other.headers
        big = httpx.post(s.url + "/v1/completions", headers={"Authorization": "Bearer secret-one"},
                         json={"prompt": "x" * 5000, "max_tokens": 1})
        assert big.status_code == 413 and big.json()["error"]["code"] == "payload_too_large"
    finally:
        s.stop()


def test_tokenizer_endpoints_health_and_metrics(server, reference):
    tok = reference[1]
    r = httpx.post(server.url + "/tokenize", json={"prompt": "Hello world<|endoftext|>", "add_special_tokens": False}).json()
    assert r["tokens"] == tok.encode("Hello world<|endoftext|>", allowed_special="all") and r["max_model_len"] == 128
    assert httpx.post(server.url + "/detokenize", json={"tokens": r["tokens"]}).json()["prompt"] == "Hello world<|endoftext|>"
    info = httpx.get(server.url + "/tokenizer_info").json()
    assert info["eos_token"] == "<|endoftext|>" and info["vocab_size"] == 50257
    assert httpx.get(server.url + "/health").json() == {"status": "ok"}
    server.client().completions.create(model="m", prompt="count me", max_tokens=3, temperature=0)
    text = httpx.get(server.url + "/metrics").text
    values = {line.split()[0]: float(line.split()[1]) for line in text.splitlines() if line and not line.startswith("#")}
    assert values["gpt2_requests_running"] == 0 and values["gpt2_generation_tokens_total"] >= 3
    assert values["gpt2_time_to_first_token_seconds_count"] >= 1 and values['gpt2_requests_total{outcome="completed"}'] >= 1
    assert "gpt2_request_latency_seconds_bucket" in text and "gpt2_requests_waiting" in text


def test_sixteen_concurrent_clients_get_what_each_gets_alone(server, reference):
    """16 clients at once, prompts and lengths all different: continuous batching runs them together (the
    batch holds several at a time) and every greedy completion equals gpt2.sample.generate on it alone; the
    short requests finish before the long one that started first."""
    model, tok = reference
    prompts = [f"Client number {i} says" + " and more" * (i % 5) for i in range(16)]
    lengths = [100] + [4 + 3 * (i % 6) for i in range(1, 16)]
    seen_running = []
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            seen_running.append(server.engine.stats.running)
            time.sleep(0.002)

    def ask(i):
        client = server.client()
        t0 = time.monotonic()
        text = client.completions.create(model="m", prompt=prompts[i], max_tokens=lengths[i], temperature=0).choices[0].text
        return text, time.monotonic() - t0

    watcher = threading.Thread(target=watch)
    watcher.start()
    with ThreadPoolExecutor(16) as pool:
        long_job = pool.submit(ask, 0)
        time.sleep(0.05)
        rest = list(pool.map(ask, range(1, 16)))
        long_text, long_time = long_job.result()
    stop.set()
    watcher.join()
    results = [(long_text, long_time), *rest]
    for i, (text, _) in enumerate(results):
        assert text == greedy_text(reference, prompts[i], lengths[i])[1], i
    assert max(seen_running) >= 4
    assert max(t for _, t in rest) < long_time  # a long request does not hold up short ones


def test_a_client_that_disconnects_frees_its_slot(server):
    before = server.engine.stats.finished.get("cancelled", 0)
    with slowed(server.engine), httpx.stream("POST", server.url + "/v1/completions", timeout=30,
                      json={"prompt": "never read to the end", "max_tokens": 120, "stream": True, "logit_bias": NO_EOT}) as r:
        lines = r.iter_lines()
        assert next(line for line in lines if line.startswith("data: "))
    deadline = time.monotonic() + 5
    while server.engine.stats.running and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.engine.stats.running == 0 and server.engine.stats.finished.get("cancelled", 0) == before + 1


def test_a_full_queue_answers_429_with_retry_after(model_dir):
    s = Server(model_dir, max_batch=1, max_queue=0)
    client = s.client(max_retries=0)
    try:
        with slowed(s.engine, 0.05), httpx.stream("POST", s.url + "/v1/completions", timeout=30,
                          json={"prompt": "occupy the only slot", "max_tokens": 120, "stream": True, "logit_bias": NO_EOT}) as r:
            lines = r.iter_lines()  # kept: a dropped iterator closes the response, which cancels the request
            next(line for line in lines if line.startswith("data: "))
            with pytest.raises(openai.RateLimitError) as e:
                client.completions.create(model="m", prompt="no room", max_tokens=2)
            assert e.value.response.headers["retry-after"] == "1" and e.value.code == "queue_full"
        deadline = time.monotonic() + 5
        while s.engine.stats.running and time.monotonic() < deadline:
            time.sleep(0.01)
        assert s.client().completions.create(model="m", prompt="room again", max_tokens=2).choices[0].finish_reason
    finally:
        s.stop()


@pytest.mark.parametrize("grace", [20.0, 0.3])
def test_shutdown_finishes_running_requests_and_refuses_new_ones(model_dir, reference, grace):
    """SIGINT / SIGTERM (uvicorn's should_exit): no new requests; a running stream finishes within the grace
    period, or is cancelled with an error chunk when it runs past it; the server then stops."""
    s = Server(model_dir, shutdown_grace=grace)
    client = s.client(max_retries=0)
    prompt = "finish me before you go"
    received = []
    with slowed(s.engine, 0.01 if grace > 1 else 0.05), httpx.stream(
        "POST", s.url + "/v1/completions", timeout=60, json={"prompt": prompt, "max_tokens": 100, "stream": True, "temperature": 0}
    ) as r:
        lines = r.iter_lines()
        received.append(next(line for line in lines if line.startswith("data: ")))
        s.server.should_exit = True  # what SIGINT / SIGTERM do
        deadline = time.monotonic() + 10
        while not s.engine.closing and time.monotonic() < deadline:
            time.sleep(0.01)
        with pytest.raises((httpx.TransportError, openai.APIConnectionError, openai.InternalServerError)):
            client.completions.create(model="m", prompt="too late", max_tokens=2)
        received += [line for line in lines if line.startswith("data: ")]
    s.thread.join(timeout=30)
    assert not s.thread.is_alive()
    chunks = [json.loads(line[6:]) for line in received if line != "data: [DONE]"]
    if grace > 1:
        assert received[-1] == "data: [DONE]"
        text = "".join(c["choices"][0]["text"] for c in chunks)
        assert text == greedy_text(reference, prompt, 100)[1] and chunks[-1]["choices"][0]["finish_reason"] in ("length", "stop")
    else:
        assert chunks[-1]["error"]["code"] == "cancelled" and "shutting down" in chunks[-1]["error"]["message"]
        assert 1 < len(chunks) < 100


def test_health_is_503_until_the_model_is_loaded(model_dir):
    from fastapi.testclient import TestClient

    from gpt2.serve import attach, build_app

    app, state = build_app(ServeConfig(model=model_dir), load=False)
    with TestClient(app) as client:
        assert client.get("/health").status_code == 503
        r = client.post("/v1/completions", json={"prompt": "x"})
        assert r.status_code == 503 and r.json()["error"]["code"] == "model_loading"
        from gpt2.serve.engine import Engine

        model, tok = load_model_and_tokenizer(model_dir)
        engine = Engine(model, max_batch=2)
        attach(state, engine, tok)
        try:
            assert client.get("/health").status_code == 200
            assert client.post("/v1/completions", json={"prompt": "x", "max_tokens": 2}).status_code == 200
        finally:
            engine.shutdown()
        assert client.get("/health").status_code == 503  # shutting down


def test_requests_admitted_together_read_a_shared_beginning_once(reference):
    """The engine alone: choices of one prompt and prompts that begin alike, submitted together, read their
    common beginning once (gpt2.batching.shared_prefixes) and still generate what each does alone."""
    from gpt2.sample import SamplingParams
    from gpt2.serve.engine import Engine, Finished, Request, Token

    model, tok = reference
    base = tok.encode("A long shared beginning, " * 8)
    prompts = [base, base, base + tok.encode(" and a tail"), tok.encode("Something else entirely")]
    results, done = {}, threading.Semaphore(0)

    def receiver(i):
        out = []

        def on_event(event):
            if isinstance(event, Token):
                out.append(event.id)
            elif isinstance(event, Finished):
                results[i] = out
                done.release()

        return on_event

    engine = Engine(model, max_batch=4, prefill_tokens=16)
    try:
        engine.submit(*[Request(p, 10, SamplingParams(temperature=0, stop_ids=(tok.eot_token,)), on_event=receiver(i))
                        for i, p in enumerate(prompts)])
        for _ in prompts:
            assert done.acquire(timeout=60)
    finally:
        engine.shutdown()
    for i, p in enumerate(prompts):
        assert results[i] == generate(model, [p], 10, temperature=0, stop_ids=[tok.eot_token])[0], i
    shared = len(base) - 1
    assert engine.stats.shared_prompt_tokens == 2 * shared
    assert engine.stats.prompt_tokens == sum(len(p) for p in prompts) - 2 * shared


def test_a_request_past_its_time_limit_ends_with_408(model_dir):
    s = Server(model_dir, request_timeout=0.3, no_ui=True)
    try:
        with slowed(s.engine, 0.05), pytest.raises(openai.APIStatusError) as e:
            s.client(max_retries=0).completions.create(model="m", prompt="slow", max_tokens=100, logit_bias=NO_EOT)
        assert e.value.status_code == 408 and e.value.code == "timeout"
        assert httpx.get(s.url + "/").status_code == 404  # --no-ui
        assert httpx.get(s.url + "/metrics").json()["error"]["message"].startswith("metrics are off")
    finally:
        s.stop()


def test_the_serve_command_serves_and_stops_on_sigterm(model_dir, reference):
    """`gpt2 serve` as a user runs it: /health turns 200 once loaded, a completion, then SIGTERM ends it
    after a graceful shutdown (no traceback); a second server on the same port is a one-line error."""
    import os
    import signal
    import subprocess
    import sys

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "GPT2_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "gpt2", "serve", "--model", str(model_dir), "--port", str(port), "--threads", "1"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        r = httpx.post(url + "/v1/completions", json={"prompt": "Hello", "max_tokens": 5, "temperature": 0}).json()
        assert r["choices"][0]["text"] == greedy_text(reference, "Hello", 5)[1]
        again = subprocess.run([sys.executable, "-m", "gpt2", "serve", "--model", str(model_dir), "--port", str(port)],
                               env=env, capture_output=True, text=True, timeout=60)
        assert again.returncode == 2 and again.stderr.strip().splitlines()[-1].startswith(f"gpt2 serve: error: cannot listen on 127.0.0.1:{port}")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    # uvicorn shuts down gracefully, then re-raises the signal so that the exit status says what ended it
    assert proc.returncode == -signal.SIGTERM and "Traceback" not in err, err
    assert f"http://127.0.0.1:{port}/" in err and "stopping: no new requests" in err and err.rstrip().endswith("stopped")


def test_the_serve_command_errors_are_one_line(tmp_path, cli):
    r = cli("serve", "--model", str(tmp_path / "missing"))
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1] == f"gpt2 serve: error: model directory {tmp_path / 'missing'} does not exist"
    r = cli("serve", "--model", str(tmp_path), "--max-batch", "0")
    assert r.returncode == 2 and "--max-batch must be at least 1" in r.stderr and "Traceback" not in r.stderr
