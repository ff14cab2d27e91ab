"""The HTTP side of `gpt2 serve`: a FastAPI app around the engine (OpenAI's legacy Completions API).

Routes: `POST /v1/completions` (whole responses or server-sent events),
`GET /v1/models`, `GET /health` (503 until the model is loaded),
`POST /tokenize`, `POST /detokenize` and `GET /tokenizer_info` (the
tokenizer endpoints lm-evaluation-harness's remote tokenizer reads, shaped as
vLLM's), `GET /metrics` (Prometheus, opt-in) and `GET /` (the playground page,
gpt2/serve/page.html, unless turned off).

Around the routes, one small ASGI layer (`Gate`) gives every response an
`X-Request-Id` (the client's, or a new one), refuses bodies over the size
limit (413) and, when API keys are set, requests without one of them (401;
compared in constant time; `/health` and the page stay open). CORS, when
origins are configured, is Starlette's middleware, outside everything else.
Errors have OpenAI's shape: {"error": {"message", "type", "param", "code"}}.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from gpt2.errors import GPT2Error
from gpt2.serve import engine as E
from gpt2.serve.protocol import APIError, Choice, Completion, parse_completion

log = logging.getLogger(__name__)

PAGE = Path(__file__).with_name("page.html")
OPEN_PATHS = ("/health", "/")  # reachable without an API key


class State:
    """What the routes share: the engine and tokenizer once loaded (None before), and the settings."""

    def __init__(self, model_name: str, *, request_timeout: float | None, ui: bool, metrics: bool):
        self.model_name = model_name
        self.request_timeout = request_timeout
        self.ui, self.metrics = ui, metrics
        self.engine: E.Engine | None = None
        self.tokenizer = None
        self.load_error: str | None = None
        self.created = int(time.time())
        self.registry = None
        self.ttft = self.latency = self.requests = None

    @property
    def ready(self) -> bool:
        return self.engine is not None


def _error(e: APIError, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status, headers={**(e.headers or {}), **(headers or {})})


class Gate:
    """Request ids, the body size limit and API keys, as a plain ASGI layer (streaming passes through untouched)."""

    def __init__(self, app, *, api_keys: list[str], max_body_bytes: int):
        self.app = app
        self.keys = [k.encode() for k in api_keys]
        self.max_body = max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        given = headers.get(b"x-request-id", b"").decode("latin-1").strip()
        request_id = given[:128] if given and given.isprintable() else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode("latin-1"))]
            await send(message)

        async def refuse(e: APIError, extra: dict | None = None):
            await _error(e, headers=extra)(scope, receive, send_with_id)

        if self.keys and scope["path"] not in OPEN_PATHS and scope["method"] != "OPTIONS":
            auth = headers.get(b"authorization", b"")
            token = auth[7:].strip() if auth[:7].lower() == b"bearer " else b""
            # compare with every key, in constant time, whatever matches
            if not sum(hmac.compare_digest(token, k) for k in self.keys):
                return await refuse(APIError(401, "missing or wrong API key: send 'Authorization: Bearer KEY'",
                                             code="invalid_api_key"), {"WWW-Authenticate": "Bearer"})
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            return await refuse(APIError(413, f"the request body is larger than {self.max_body} bytes", code="payload_too_large"))
        seen = 0

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    raise _TooLarge()
            return message

        try:
            await self.app(scope, limited_receive, send_with_id)
        except _TooLarge:
            await refuse(APIError(413, f"the request body is larger than {self.max_body} bytes", code="payload_too_large"))


class _TooLarge(Exception):
    pass


def create_app(
    state: State, *, api_keys: list[str] = (), cors_origins: list[str] = (), max_body_bytes: int = 1 << 20,
    on_startup: Callable[[], None] | None = None, on_shutdown: Callable[[], None] | None = None,
) -> FastAPI:
    """The app. `on_startup` runs in a thread when the server starts (loading the model there keeps
    /health answering 503 meanwhile); `on_shutdown` when it stops."""
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app):
        if on_startup is not None:
            threading.Thread(target=on_startup, name="gpt2-load", daemon=True).start()
        yield
        if on_shutdown is not None:
            await asyncio.to_thread(on_shutdown)

    app = FastAPI(title="gpt2 serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.gpt2 = state
    _metrics(state)

    @app.exception_handler(APIError)
    async def api_error(request: Request, e: APIError):
        return _error(e)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException):
        return _error(APIError(e.status_code, str(e.detail)))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, e: RequestValidationError):
        return _error(APIError(400, str(e)))

    def engine() -> E.Engine:
        if state.load_error is not None:
            raise APIError(503, f"the model could not be loaded: {state.load_error}")
        if state.engine is None:
            raise APIError(503, "the model is still loading; try again shortly", code="model_loading")
        if state.engine.closing:
            raise APIError(503, "the server is shutting down", code="shutting_down")
        return state.engine

    async def json_body(request: Request) -> object:
        try:
            return json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise APIError(400, f"the request body is not valid JSON ({e})") from None

    @app.get("/health")
    async def health():
        if state.load_error is not None:
            return JSONResponse({"status": "error", "message": state.load_error}, status_code=503)
        if not state.ready:
            return JSONResponse({"status": "loading"}, status_code=503)
        if state.engine.closing:
            return JSONResponse({"status": "shutting down"}, status_code=503)
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models():
        eng = engine()
        return {"object": "list", "data": [{"id": state.model_name, "object": "model", "created": state.created,
                                            "owned_by": "gpt2", "max_model_len": eng.config.block_size}]}

    @app.post("/tokenize")
    async def tokenize(request: Request):
        eng, body = engine(), await json_body(request)
        if not isinstance(body, dict) or not isinstance(body.get("prompt"), str):
            raise APIError(400, 'send {"prompt": "text"}', param="prompt")
        tokens = state.tokenizer.encode(body["prompt"], allowed_special="all")
        return {"tokens": tokens, "count": len(tokens), "max_model_len": eng.config.block_size}

    @app.post("/detokenize")
    async def detokenize(request: Request):
        engine()
        body = await json_body(request)
        tokens = body.get("tokens") if isinstance(body, dict) else None
        if not isinstance(tokens, list) or not all(isinstance(t, int) and 0 <= t < state.tokenizer.n_vocab for t in tokens):
            raise APIError(400, f'send {{"tokens": [ids]}} with ids in 0..{state.tokenizer.n_vocab - 1}', param="tokens")
        return {"prompt": state.tokenizer.decode(tokens)}

    @app.get("/tokenizer_info")
    async def tokenizer_info():
        eng = engine()
        tok = state.tokenizer
        eot = None if tok.eot_token is None else tok.decode([tok.eot_token])
        return {"tokenizer_class": "GPT2BPE", "vocab_size": tok.n_vocab, "model_max_length": eng.config.block_size,
                "eos_token": eot, "bos_token": eot, "pad_token": None, "add_bos_token": False, "chat_template": None}

    @app.get("/metrics")
    async def metrics():
        if not state.metrics:
            raise APIError(404, "metrics are off; start the server with --metrics")
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(state.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", response_class=HTMLResponse)
    async def page():
        if not state.ui:
            raise APIError(404, "the web page is off (--no-ui)")
        return HTMLResponse(PAGE.read_text(encoding="utf-8"))

    @app.post("/v1/completions")
    async def completions(request: Request):
        eng, body = engine(), await json_body(request)
        req = parse_completion(body, state.tokenizer, eng.config.block_size)
        request_id = request.scope.get("state", {}).get("request_id") or uuid.uuid4().hex
        run = _Run(state, eng, req, request_id)
        run.start()
        if req.stream:
            return StreamingResponse(run.events(request), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        return JSONResponse(await run.whole(request))

    app.add_middleware(Gate, api_keys=list(api_keys), max_body_bytes=max_body_bytes)
    if cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["GET", "POST", "OPTIONS"],
                           allow_headers=["*"], expose_headers=["X-Request-Id"], max_age=600)
    return app


class _Run:
    """One API request: its choices submitted to the engine, their events gathered on an asyncio queue."""

    def __init__(self, state: State, engine: E.Engine, req: Completion, request_id: str):
        self.state, self.engine, self.req = state, engine, req
        self.id = f"cmpl-{request_id}"
        self.created = int(time.time())
        self.loop = asyncio.get_running_loop()
        self.inbox: asyncio.Queue = asyncio.Queue()
        self.requests: list[E.Request] = []
        self.choices: list[Choice] = []
        self.prompt_of: list[int] = []

    def start(self) -> None:
        req, tok = self.req, self.state.tokenizer
        deadline = None if self.state.request_timeout is None else time.monotonic() + self.state.request_timeout
        requests = []
        for p, prompt in enumerate(req.prompts):
            for _ in range(req.n):
                index = len(requests)

                def deliver(event, index=index):
                    self.loop.call_soon_threadsafe(self.inbox.put_nowait, (index, event))

                self.choices.append(Choice(index, tok, req.params.stop_strings, req.logprobs is not None))
                self.prompt_of.append(p)
                requests.append(E.Request(
                    prompt, req.max_tokens, req.params, seed=None if req.seed is None else req.seed + index,
                    logprobs=req.logprobs, prompt_logprobs=req.echo and req.logprobs is not None, deadline=deadline,
                    on_event=deliver, tokenizer=tok))
        try:
            self.requests = self.engine.submit(*requests)  # together: choices that share a prompt read it once
        except E.QueueFull as e:
            raise APIError(429, str(e), code="queue_full", headers={"Retry-After": "1"}) from None
        except E.ShuttingDown as e:
            raise APIError(503, str(e), code="shutting_down") from None
        except GPT2Error as e:
            raise APIError(400, str(e)) from None
        self._counted("accepted")

    def cancel(self) -> None:
        for r in self.requests:
            self.engine.cancel(r)

    def _counted(self, outcome: str) -> None:
        if self.state.requests is not None:
            self.state.requests.labels(outcome=outcome).inc()

    def _echo(self, index: int, prompt_event: E.Prompt | None) -> dict:
        prompt = self.req.prompts[self.prompt_of[index]]
        if prompt_event is None:
            return self.choices[index].echo(prompt, None, None)
        return self.choices[index].echo(prompt, prompt_event.logprobs, prompt_event.top)

    async def _next(self, http: Request) -> tuple[int, object]:
        """The next event; cancels everything if the client has gone."""
        while True:
            try:
                return await asyncio.wait_for(self.inbox.get(), timeout=0.5)
            except TimeoutError:
                if await http.is_disconnected():
                    self.cancel()
                    raise asyncio.CancelledError from None

    async def _flow(self, http: Request) -> AsyncIterator[tuple[int, dict | None, E.Finished | None]]:
        """(choice index, piece of that choice, Finished or None) as events come; echo first where asked."""
        open_ = set(range(len(self.choices)))
        waiting_prompt = {i for i in open_ if self.req.echo and self.req.logprobs is not None}
        if self.req.echo:
            for i in open_ - waiting_prompt:
                yield i, self._echo(i, None), None
        while open_:
            i, event = await self._next(http)
            choice = self.choices[i]
            if isinstance(event, E.Prompt):
                waiting_prompt.discard(i)
                yield i, self._echo(i, event), None
            elif isinstance(event, E.Token):
                yield i, choice.add(event.id, event.logprob, event.top), None
            elif isinstance(event, E.Finished):
                open_.discard(i)
                reason = "stop" if event.reason == "stop" else "length"
                yield i, choice.finish(reason), event

    def _usage(self) -> dict:
        prompt = sum(len(self.req.prompts[p]) for p in sorted(set(self.prompt_of)))
        completion = sum(c.completion_tokens for c in self.choices)
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def _shape(self, choices: list[dict]) -> dict:
        return {"id": self.id, "object": "text_completion", "created": self.created, "model": self.state.model_name,
                "choices": choices}

    @staticmethod
    def _failure(event: E.Finished) -> APIError | None:
        if event.reason == "timeout":
            return APIError(408, "the request ran past the server's time limit (--request-timeout)", code="timeout")
        if event.reason == "cancelled":
            return APIError(503, "the request was cancelled (the server is shutting down)", code="cancelled")
        if event.reason == "error":
            return APIError(500, event.message or "generation failed", code="internal_error")
        return None

    async def whole(self, http: Request) -> dict:
        try:
            async for _, _, finished in self._flow(http):
                if finished is not None and (error := self._failure(finished)) is not None:
                    self.cancel()
                    self._counted(error.code)
                    raise error
        except asyncio.CancelledError:
            self.cancel()
            self._counted("disconnected")
            raise
        self._counted("completed")
        return {**self._shape([c.whole() for c in self.choices]), "usage": self._usage()}

    async def events(self, http: Request) -> AsyncIterator[str]:
        def sse(data: dict) -> str:
            return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"

        try:
            async for _, piece, finished in self._flow(http):
                if finished is not None and (error := self._failure(finished)) is not None:
                    self.cancel()
                    self._counted(error.code)
                    yield sse(error.body())  # an error after the stream has started: a chunk of its own
                    return
                if piece["text"] or piece["logprobs"] or piece["finish_reason"]:
                    yield sse(self._shape([piece]))
            if self.req.include_usage:
                yield sse({**self._shape([]), "usage": self._usage()})
            yield "data: [DONE]\n\n"
            self._counted("completed")
        except (asyncio.CancelledError, GeneratorExit):
            self.cancel()  # the client went away: its slots are freed at the next step
            self._counted("disconnected")
            raise
        finally:
            self.cancel()


def _metrics(state: State) -> None:
    """Prometheus metrics in a registry of this app's own (several apps in one process stay apart)."""
    if not state.metrics:
        return
    from prometheus_client import CollectorRegistry, Counter, Histogram
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    registry = state.registry = CollectorRegistry()
    buckets = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
    state.ttft = Histogram("gpt2_time_to_first_token_seconds", "time from arrival to the first new token", buckets=buckets, registry=registry)
    state.latency = Histogram("gpt2_request_latency_seconds", "time from arrival to the end of a sequence", buckets=buckets, registry=registry)
    state.requests = Counter("gpt2_requests", "completion requests by outcome", ["outcome"], registry=registry)

    class EngineCollector:
        def collect(self):
            stats = state.engine.stats if state.engine is not None else E.Stats()
            yield GaugeMetricFamily("gpt2_requests_running", "sequences in the batch", value=stats.running)
            yield GaugeMetricFamily("gpt2_requests_waiting", "sequences waiting for a slot", value=stats.waiting)
            yield CounterMetricFamily("gpt2_prompt_tokens", "prompt tokens read", value=stats.prompt_tokens)
            yield CounterMetricFamily("gpt2_generation_tokens", "tokens generated", value=stats.generated_tokens)

    registry.register(EngineCollector())
