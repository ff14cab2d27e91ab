"""`gpt2 serve`: an OpenAI-compatible completion server with continuous batching, streaming and a web page.

    engine.py    one worker thread owns the model; requests join and leave the running batch at each step
    protocol.py  OpenAI's legacy Completions API: parsing requests, shaping responses and errors
    api.py       the FastAPI app: routes, request ids, API keys, size limit, CORS, metrics
    page.html    the playground page served at /

`serve_command` loads the model in the background (so /health says 503 until
it is ready), then serves with uvicorn until interrupted; on SIGINT / SIGTERM
it stops taking requests, lets running ones finish for `--shutdown-grace`
seconds and cancels the rest (uvicorn then re-raises the signal, so the
process ends as that signal says: 130 after Ctrl-C, killed by SIGTERM after
SIGTERM). See docs/serving.md.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


def load_engine(cfg, state) -> None:
    """Load the model and tokenizer named by `cfg` and start the engine; records a failure in `state`."""
    import torch

    from gpt2.decode import CPUBackend, default_backend
    from gpt2.device import choose_dtype, resolve_device
    from gpt2.serve.engine import BATCH_SIZES_KEPT, Engine
    from gpt2.weights import load_model_and_tokenizer

    try:
        device = resolve_device(cfg.device, mps=True)
        model, tokenizer = load_model_and_tokenizer(cfg.model, cfg.tokenizer, device=device, dtype=choose_dtype(cfg.dtype, device))
        backend = CPUBackend(threads=torch.get_num_threads(), keep=BATCH_SIZES_KEPT) if device.type == "cpu" else default_backend(model)
        engine = Engine(model, max_batch=cfg.max_batch, max_queue=cfg.max_queue, prefill_tokens=cfg.prefill_tokens,
                        backend=backend, vocab_size=tokenizer.n_vocab)
    except Exception as e:  # shown by /health and every request, and logged
        state.load_error = str(e)
        log.error("could not load %s: %s", cfg.model, e)
        return
    attach(state, engine, tokenizer)
    log.info("serving %s (%s parameters) with up to %d sequences at once", state.model_name, f"{model.num_params():,}", cfg.max_batch)


def attach(state, engine, tokenizer) -> None:
    """Make a started engine and its tokenizer the ones `state`'s app serves."""
    if state.ttft is not None:
        engine.stats.observe_first_token = state.ttft.observe
        engine.stats.observe_latency = state.latency.observe
    state.tokenizer = tokenizer
    state.engine = engine


def build_app(cfg, *, load: bool = True):
    """The app for `cfg` (a ServeConfig) and its State; with `load`, the model loads when the app starts."""
    from pathlib import Path

    from gpt2.serve.api import State, create_app

    keys = list(cfg.api_key) + [k for k in os.environ.get("GPT2_API_KEYS", "").split(",") if k.strip()]
    state = State(cfg.model_name or Path(cfg.model).resolve().name, request_timeout=cfg.request_timeout or None,
                  ui=not cfg.no_ui, metrics=cfg.metrics)

    def shutdown() -> None:
        if state.engine is not None:
            state.engine.shutdown(grace=cfg.shutdown_grace)

    app = create_app(state, api_keys=keys, cors_origins=cfg.cors_origin, max_body_bytes=cfg.max_body_bytes,
                     on_startup=(lambda: load_engine(cfg, state)) if load else None, on_shutdown=shutdown)
    return app, state


def graceful_server(config, state, grace: float):
    """A uvicorn.Server that, as it starts shutting down (SIGINT, SIGTERM or `should_exit`), closes the
    engine: no new requests, and those still running `grace` seconds later are cancelled (a stream gets
    an error chunk) so that uvicorn's wait for open connections ends."""
    import uvicorn

    class Server(uvicorn.Server):
        async def shutdown(self, sockets=None):
            if state.engine is not None:
                running = state.engine.stats.running + state.engine.stats.waiting
                log.info("stopping: no new requests; %d running or waiting may take %g s to finish", running, grace)
                state.engine.close(grace)
            await super().shutdown(sockets=sockets)
            log.info("stopped")

    return Server(config)


def serve_command(cfg) -> None:
    """`gpt2 serve`: serve a model over HTTP until interrupted."""
    import torch
    import uvicorn

    from gpt2.errors import GPT2Error

    if not os.path.exists(cfg.model):
        raise GPT2Error(f"model directory {cfg.model} does not exist")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)  # once, for the whole process
    app, state = build_app(cfg)
    if cfg.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("listening on %s: other machines can reach this server%s", cfg.host,
                    "" if cfg.api_key or os.environ.get("GPT2_API_KEYS") else " and no --api-key is set")
    try:  # a port in use is a one-line error, before the model loads
        with socket.create_server((cfg.host, cfg.port)):
            pass
    except OSError as e:
        raise GPT2Error(f"cannot listen on {cfg.host}:{cfg.port} ({e.strerror or e}); choose another --port or --host") from None
    config = uvicorn.Config(app, host=cfg.host, port=cfg.port, log_level="warning",
                            timeout_graceful_shutdown=int(cfg.shutdown_grace) + 5)
    server = graceful_server(config, state, cfg.shutdown_grace)
    log.info("gpt2 serve: http://%s:%d/ (loading %s)", cfg.host, cfg.port, cfg.model)
    server.run()
    if state.load_error is not None:
        raise GPT2Error(f"could not load the model: {state.load_error}")
