"""``tokenskip serve``: an OpenAI-compatible HTTP API over any :class:`~tokenskip.inference.base.Generator`.

Endpoints: ``POST /v1/chat/completions``, ``POST /v1/completions``, ``GET /v1/models``, ``GET /health``.
Two request-body extensions (send them with the ``openai`` client's ``extra_body``):

* ``compression_ratio`` (γ in (0, 1]): TokenSkip's ``<delim>γ<delim>`` is appended to the question, exactly
  as training wrote it (:func:`tokenskip.data.prompts.user_message`);
* ``token_budget`` (β, an integer or ``"auto"``): TALE-EP's "use less than β tokens" prompt; ``"auto"``
  first asks the model for its own budget estimate (a second, short generation).

The last user message (chat) or the prompt (completions) is the *question*: it is written into the served
model's training prompt (preset instruction, chat template), so a TokenSkip model always sees the format it
was trained on. ``raw_prompt: true`` on ``/v1/completions`` sends the prompt text verbatim instead.

Generation runs on ONE worker thread that owns the model: requests wait in a bounded queue (full -> 503),
and the worker takes up to ``batch_size`` queued requests with identical sampling settings into one
``generate`` call. Limits: request body size (413), prompt tokens and ``max_tokens`` (400), queue (503),
time per request (504). ``stream: true`` speaks the OpenAI SSE protocol: content chunks are sent as the
model writes them (:meth:`~tokenskip.inference.base.Generator.generate_stream`, token by token on the hf and
vllm backends), then one chunk with ``finish_reason`` and the ``tokenskip`` extension info.
"""

import asyncio
import concurrent.futures
import copy
import hmac
import json
import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import astuple, dataclass
from typing import Any, Literal

from tokenskip.data.prompts import PromptPreset, check_ratio, format_prompt, get_preset, user_message
from tokenskip.errors import UserError
from tokenskip.inference.base import Generation, Generator, SamplingConfig, TextDeltas
from tokenskip.models import DEFAULT_MODEL

API_KEY_ENV = "TOKENSKIP_API_KEY"
log = logging.getLogger("tokenskip.serve")

# request fields this server refuses (400) unless they carry one of these no-op values
UNSUPPORTED: dict[str, tuple] = {
    "tools": (None, []),
    "functions": (None, []),
    "logprobs": (None, False),
    "top_logprobs": (None, 0),
    "echo": (None, False),
    "suffix": (None, ""),
    "best_of": (None, 1),
}


# ------------------------------------------------------------------------------------------- config


@dataclass
class ServerConfig:
    """Limits and defaults of one server.

    Attributes:
        model_name: the id reported by ``/v1/models`` and accepted in the ``model`` field.
        preset: prompt preset used to write questions: a name (``default``, ``tokenskip``) or a
            :class:`~tokenskip.data.prompts.PromptPreset` (e.g. read from an adapter).
        tale_template: TALE template for ``token_budget`` prompts (``tale`` or ``tale-boxed``).
        api_key: required ``Authorization: Bearer`` key on ``/v1/*``; None = no authentication.
        max_prompt_tokens: longest accepted prompt (after formatting), in the model's tokens.
        max_tokens_limit: largest accepted ``max_tokens``.
        default_max_tokens: ``max_tokens`` when the request has none.
        queue_size: requests waiting for the model beyond which new ones get 503.
        batch_size: most requests generated together.
        batch_wait_s: how long the worker waits for more requests to fill a batch.
        request_timeout_s: a request not finished in this time gets 504.
        max_body_bytes: larger request bodies get 413.
        estimate_max_tokens: cap on the ``token_budget: "auto"`` estimation reply.
        max_budget: ``token_budget`` values above this are rejected (estimates are clamped to it).
    """

    model_name: str = DEFAULT_MODEL
    preset: PromptPreset | str = "default"
    tale_template: str = "tale"
    api_key: str | None = None
    max_prompt_tokens: int = 2048
    max_tokens_limit: int = 2048
    default_max_tokens: int = 512
    queue_size: int = 64
    batch_size: int = 8
    batch_wait_s: float = 0.01
    request_timeout_s: float = 600.0
    max_body_bytes: int = 1_000_000
    estimate_max_tokens: int = 64
    max_budget: int = 4096

    def check(self) -> None:
        for name in (
            "max_prompt_tokens",
            "max_tokens_limit",
            "default_max_tokens",
            "queue_size",
            "batch_size",
        ):
            if getattr(self, name) < 1:
                raise UserError(f"--{name} must be >= 1, got {getattr(self, name)}")
        if self.default_max_tokens > self.max_tokens_limit:
            raise UserError(
                f"--default_max_tokens {self.default_max_tokens} > --max_tokens_limit {self.max_tokens_limit}"
            )
        if self.request_timeout_s <= 0:
            raise UserError(f"--request_timeout must be > 0, got {self.request_timeout_s}")
        if self.api_key is not None and not self.api_key.strip():
            raise UserError("--api_key is empty")
        get_preset(self.preset)
        from tokenskip.inference.tale_budget import get_template

        try:
            get_template(self.tale_template)
        except ValueError as e:
            raise UserError(str(e)) from None


class APIError(Exception):
    """An error answered as OpenAI's ``{"error": {...}}`` body with an HTTP status."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def body(self) -> dict[str, Any]:
        kind = {401: "authentication_error", 404: "not_found_error", 429: "rate_limit_error"}.get(
            self.status, "invalid_request_error" if self.status < 500 else "server_error"
        )
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}


# ------------------------------------------------------------------------------------- batch worker


@dataclass
class _Job:
    prompt: str
    config: SamplingConfig
    future: concurrent.futures.Future
    on_text: Callable[[str], None] | None = None  # streaming requests: receives text as it is generated


class QueueFull(Exception):
    """The worker's queue is at capacity."""


class BatchWorker:
    """One thread that owns the generator and runs queued prompts in batches of equal sampling settings."""

    def __init__(
        self, generator: Generator, batch_size: int = 8, queue_size: int = 64, batch_wait_s: float = 0.01
    ):
        self.generator = generator
        self.batch_size = batch_size
        self.batch_wait_s = batch_wait_s
        self._queue: queue.Queue[_Job | None] = queue.Queue(maxsize=queue_size)
        self._thread = threading.Thread(target=self._loop, name="tokenskip-generate", daemon=True)
        self._stopping = False
        self.batches = 0  # generate calls made (for /health and tests)
        self.completed = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stopping = True
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    def submit(
        self, prompt: str, config: SamplingConfig, on_text: Callable[[str], None] | None = None
    ) -> concurrent.futures.Future:
        """Queue one prompt; raises :class:`QueueFull` when the queue is at capacity.

        ``on_text`` (optional) is called on the worker thread with each piece of text as it is generated.
        """
        if self._stopping or not self.alive:
            raise QueueFull("the generation worker is not running")
        fut: concurrent.futures.Future = concurrent.futures.Future()
        try:
            self._queue.put_nowait(_Job(prompt, config, fut, on_text))
        except queue.Full:
            raise QueueFull(f"server busy: {self._queue.maxsize} requests already queued") from None
        return fut

    def _take_batch(self, first: _Job) -> tuple[list[_Job], bool]:
        batch, stop = [first], False
        deadline = time.monotonic() + self.batch_wait_s
        while len(batch) < self.batch_size:
            remaining = deadline - time.monotonic()
            try:
                job = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                stop = True
                break
            batch.append(job)
        return batch, stop

    def _loop(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                break
            batch, stop = self._take_batch(first)
            groups: dict[tuple, list[_Job]] = {}
            for job in batch:
                groups.setdefault(astuple(job.config), []).append(job)
            for jobs in groups.values():
                # a job whose request already timed out or disconnected is cancelled: skip it
                live = [j for j in jobs if j.future.set_running_or_notify_cancel()]
                if live:
                    self._run(live)
        # fail whatever is still queued so no request waits forever
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not None and job.future.set_running_or_notify_cancel():
                job.future.set_exception(QueueFull("server is shutting down"))

    def _run(self, jobs: list[_Job]) -> None:
        def on_text(i: int, text: str) -> None:
            sink = jobs[i].on_text
            if sink is not None and not jobs[i].future.cancelled():
                try:
                    sink(text)
                except Exception:  # a gone client must not stop the batch
                    log.debug("stream sink failed", exc_info=True)

        prompts = [j.prompt for j in jobs]
        try:
            if any(j.on_text is not None for j in jobs):
                gens = self.generator.generate_stream(prompts, jobs[0].config, on_text)
            else:
                gens = self.generator.generate(prompts, jobs[0].config)
            if len(gens) != len(jobs):
                raise RuntimeError(f"backend returned {len(gens)} generations for {len(jobs)} prompts")
        except Exception as e:  # the model failed: every request of the batch gets a 500, the server lives
            log.exception("generation failed for a batch of %d", len(jobs))
            for j in jobs:
                j.future.set_exception(e)
            return
        self.batches += 1
        self.completed += len(jobs)
        for j, g in zip(jobs, gens, strict=True):
            j.future.set_result(g)


# ----------------------------------------------------------------------------------- prompt building


def message_text(content: Any) -> str:
    """Text of an OpenAI message ``content``: a string or a list of ``{"type": "text"}`` parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if (
                not isinstance(part, dict)
                or part.get("type") != "text"
                or not isinstance(part.get("text"), str)
            ):
                raise APIError(400, "only text content parts are supported", "messages")
            parts.append(part["text"])
        return "".join(parts)
    if content is None:
        return ""
    raise APIError(400, "message content must be a string or a list of text parts", "messages")


def question_message(
    question: str,
    ratio: float | None,
    budget: int | None,
    preset: PromptPreset,
    tale_template: str,
    eos: str | None,
) -> str:
    """The user turn for a question: TokenSkip (preset + optional γ) or TALE-EP (budget β)."""
    if budget is not None:
        from tokenskip.inference.tale_budget import get_template

        return get_template(tale_template).user_message(question, budget)
    return user_message(question, ratio, preset, eos)


def build_chat_prompt(
    tokenizer: Any,
    messages: list[dict[str, str]],
    ratio: float | None = None,
    budget: int | None = None,
    preset: PromptPreset | str = "default",
    tale_template: str = "tale",
) -> str:
    """Prompt for a chat request: earlier turns as sent, the last user turn written as a question.

    A single user message (no system message) gives exactly :func:`format_prompt`'s text (or, with a
    budget, TALE's :func:`~tokenskip.methods.tale_ep.chat_prompt`'s). A client system message replaces the
    preset's.
    """
    if not messages:
        raise APIError(400, "messages must not be empty", "messages")
    last = messages[-1]
    if last["role"] != "user":
        raise APIError(400, "the last message must have role 'user' (it is the question)", "messages")
    question = last["content"]
    if not question.strip():
        raise APIError(400, "the last user message is empty", "messages")
    p = get_preset(preset)
    if len(messages) == 1:
        if budget is not None:
            from tokenskip.methods.tale_ep import chat_prompt

            return chat_prompt(tokenizer, question_message(question, None, budget, p, tale_template, None))
        return format_prompt(tokenizer, question, ratio, p)
    eos = getattr(tokenizer, "eos_token", None)
    history = [dict(m) for m in messages[:-1]]
    if budget is None and p.system is not None and not any(m["role"] == "system" for m in history):
        history.insert(0, {"role": "system", "content": p.system})
    turns = history + [
        {"role": "user", "content": question_message(question, ratio, budget, p, tale_template, eos)}
    ]
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
    return "\n\n".join(m["content"] for m in turns) + "\n\n"


def parse_stop(stop: Any) -> tuple[str, ...]:
    if stop is None:
        return ()
    items = [stop] if isinstance(stop, str) else stop
    if not isinstance(items, list) or not all(isinstance(s, str) and s for s in items):
        raise APIError(400, "stop must be a non-empty string or a list of them", "stop")
    if len(items) > 4:
        raise APIError(400, "at most 4 stop sequences", "stop")
    return tuple(items)


def parse_token_budget(value: Any, max_budget: int) -> int | Literal["auto"] | None:
    """``token_budget`` from a request: None, ``"auto"`` or an integer in [1, max_budget]."""
    if value is None or value == "auto":
        return value
    if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
        raise APIError(
            400, f"token_budget must be a positive integer or 'auto', got {value!r}", "token_budget"
        )
    if not 1 <= int(value) <= max_budget:
        raise APIError(400, f"token_budget must be in [1, {max_budget}], got {value}", "token_budget")
    return int(value)


def parse_ratio(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise APIError(
            400, f"compression_ratio must be a number in (0, 1], got {value!r}", "compression_ratio"
        )
    try:
        return check_ratio(value)
    except UserError as e:
        raise APIError(400, str(e), "compression_ratio") from None


# -------------------------------------------------------------------------------------------- the app


def _now() -> int:
    return int(time.time())


def create_app(generator: Generator, config: ServerConfig, worker: BatchWorker | None = None) -> Any:
    """The FastAPI application. The worker starts with the app (lifespan) and stops with it."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, StreamingResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    config.check()
    worker = worker or BatchWorker(generator, config.batch_size, config.queue_size, config.batch_wait_s)
    # The worker thread tokenizes inside generate(); a fast (Rust) tokenizer used from two threads at
    # once fails with "Already borrowed". Requests are formatted and counted on the event-loop thread
    # with a private copy.
    tok = copy.deepcopy(generator.tokenizer)

    def count_tokens(text: str) -> int:
        return len(tok(text, add_special_tokens=False)["input_ids"])

    @asynccontextmanager
    async def lifespan(app: Any):
        if not worker.alive:
            worker.start()
        yield
        worker.stop()

    app = FastAPI(title="tokenskip", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.worker = worker
    app.state.config = config

    def error(status: int, message: str, param: str | None = None, code: str | None = None, headers=None):
        return JSONResponse(
            APIError(status, message, param, code).body(), status_code=status, headers=headers
        )

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError):
        headers = {"Retry-After": "1"} if exc.status == 503 else None
        return error(exc.status, exc.message, exc.param, exc.code, headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        return error(400, f"invalid request: {exc.errors()[0].get('msg', 'bad value')}")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        return error(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception):
        return error(500, f"internal error: {type(exc).__name__}")

    @app.middleware("http")
    async def _guard(request: Request, call_next):
        path = request.url.path
        if path.startswith("/v1/"):
            if config.api_key is not None:
                auth = request.headers.get("authorization", "")
                scheme, _, key = auth.partition(" ")
                if scheme.lower() != "bearer" or not hmac.compare_digest(
                    key.strip().encode(), config.api_key.encode()
                ):
                    return error(
                        401, "missing or invalid API key (Authorization: Bearer ...)", code="invalid_api_key"
                    )
            length = request.headers.get("content-length")
            if length is not None and (not length.isdigit() or int(length) > config.max_body_bytes):
                return error(413, f"request body larger than {config.max_body_bytes} bytes")
        return await call_next(request)

    async def read_body(request: Request) -> dict[str, Any]:
        raw = await request.body()
        if len(raw) > config.max_body_bytes:
            raise APIError(413, f"request body larger than {config.max_body_bytes} bytes")
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            raise APIError(400, f"malformed JSON body ({str(e).splitlines()[0][:100]})") from None
        if not isinstance(body, dict):
            raise APIError(400, "the JSON body must be an object")
        model = body.get("model")
        if model is not None and model != config.model_name:
            raise APIError(
                404, f"model '{model}' not found; this server serves '{config.model_name}'", "model"
            )
        for name, harmless in UNSUPPORTED.items():
            if body.get(name) not in harmless:
                raise APIError(400, f"'{name}' is not supported by this server", name)
        if body.get("n", 1) != 1:
            raise APIError(400, "only n = 1 is supported", "n")
        return body

    def sampling(body: dict[str, Any]) -> SamplingConfig:
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        if max_tokens is None:
            max_tokens = config.default_max_tokens
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise APIError(400, f"max_tokens must be a positive integer, got {max_tokens!r}", "max_tokens")
        if max_tokens > config.max_tokens_limit:
            raise APIError(
                400,
                f"max_tokens {max_tokens} exceeds this server's limit {config.max_tokens_limit}",
                "max_tokens",
            )
        temperature = body.get("temperature", 0.0)
        top_p = body.get("top_p", 1.0)
        seed = body.get("seed", 42)
        if temperature is None:
            temperature = 0.0
        if top_p is None:
            top_p = 1.0
        if seed is None:
            seed = 42
        if (
            isinstance(temperature, bool)
            or not isinstance(temperature, int | float)
            or not 0 <= temperature <= 2
        ):
            raise APIError(400, f"temperature must be in [0, 2], got {temperature!r}", "temperature")
        if isinstance(top_p, bool) or not isinstance(top_p, int | float) or not 0 < top_p <= 1:
            raise APIError(400, f"top_p must be in (0, 1], got {top_p!r}", "top_p")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise APIError(400, f"seed must be an integer, got {seed!r}", "seed")
        return SamplingConfig(
            max_new_tokens=max_tokens,
            temperature=float(temperature),
            top_p=float(top_p),
            seed=seed,
            stop=parse_stop(body.get("stop")),
        )

    def check_prompt(prompt: str, param: str) -> int:
        if len(prompt) > config.max_prompt_tokens * 32:  # cheap pre-check before tokenizing huge text
            raise APIError(
                400, f"prompt longer than {config.max_prompt_tokens} tokens", param, "context_length_exceeded"
            )
        n = count_tokens(prompt)
        if n > config.max_prompt_tokens:
            raise APIError(
                400,
                f"prompt is {n} tokens; this server accepts at most {config.max_prompt_tokens}",
                param,
                "context_length_exceeded",
            )
        return n

    async def run_job(
        prompt: str, cfg: SamplingConfig, deadline: float, on_text: Callable[[str], None] | None = None
    ) -> Generation:
        try:
            fut = worker.submit(prompt, cfg, on_text)
        except QueueFull as e:
            raise APIError(503, str(e), code="server_busy") from None
        wrapped = asyncio.wrap_future(fut)
        try:
            return await asyncio.wait_for(wrapped, max(deadline - time.monotonic(), 0.001))
        except TimeoutError:
            fut.cancel()  # still queued: never generated; already running: the result is dropped
            raise APIError(
                504, f"request timed out after {config.request_timeout_s:g}s", code="timeout"
            ) from None
        except QueueFull as e:
            raise APIError(503, str(e), code="server_busy") from None
        except APIError:
            raise
        except Exception as e:
            raise APIError(500, f"generation failed: {type(e).__name__}: {str(e)[:200]}") from None

    class Plan:
        """What one choice needs: the question (None for raw prompts), γ, β, and its answer prompt."""

        def __init__(self, question: str | None, messages: list[dict[str, str]] | None, raw: str | None):
            self.question, self.messages, self.raw = question, messages, raw

    def prompt_for(plan: Plan, ratio: float | None, budget: int | None) -> str:
        if plan.raw is not None:
            return plan.raw
        if plan.messages is not None:
            return build_chat_prompt(tok, plan.messages, ratio, budget, config.preset, config.tale_template)
        assert plan.question is not None
        return build_chat_prompt(
            tok,
            [{"role": "user", "content": plan.question}],
            ratio,
            budget,
            config.preset,
            config.tale_template,
        )

    async def answer(
        plan: Plan,
        ratio: float | None,
        budget: Any,
        cfg: SamplingConfig,
        deadline: float,
        on_text: Callable[[str], None] | None = None,
    ):
        """Generate one choice; returns (generation, prompt_tokens, extension info).

        ``on_text`` receives the answer's text as it is generated (not the budget estimate's).
        """
        info: dict[str, Any] = {"compression_ratio": ratio}
        estimate_tokens = 0
        if budget == "auto":
            from tokenskip.inference.tale_budget import estimation_message, parse_budget
            from tokenskip.methods.tale_ep import chat_prompt

            question = plan.question if plan.question is not None else plan.messages[-1]["content"]
            est_prompt = chat_prompt(tok, estimation_message(question))
            check_prompt(est_prompt, "messages")
            est_cfg = SamplingConfig(max_new_tokens=config.estimate_max_tokens, temperature=0.0)
            est = await run_job(est_prompt, est_cfg, deadline)
            parsed = parse_budget(est.text, max_budget=config.max_budget)
            budget = parsed.budget
            estimate_tokens = est.num_tokens
            info["budget_source"] = parsed.source
            info["estimate_output"] = est.text
            info["estimate_tokens"] = est.num_tokens
        elif budget is not None:
            info["budget_source"] = "request"
        info["token_budget"] = budget
        prompt = prompt_for(plan, ratio, budget)
        n_prompt = check_prompt(prompt, "messages" if plan.messages is not None else "prompt")
        gen = await run_job(prompt, cfg, deadline, on_text)
        from tokenskip.data.prompts import split_cot

        info["cot_tokens"] = count_tokens(split_cot(gen.text))
        info["latency_s"] = round(gen.latency_s, 4)
        info["batch_size"] = gen.batch_size
        if estimate_tokens:
            info["total_tokens_with_estimate"] = estimate_tokens + gen.num_tokens
        return gen, n_prompt, info

    def extensions(body: dict[str, Any], raw: bool) -> tuple[float | None, Any]:
        ratio = parse_ratio(body.get("compression_ratio"))
        budget = parse_token_budget(body.get("token_budget"), config.max_budget)
        if ratio is not None and budget is not None:
            raise APIError(400, "compression_ratio and token_budget cannot be combined", "token_budget")
        if raw and (ratio is not None or budget is not None):
            raise APIError(
                400, "raw_prompt cannot be combined with compression_ratio or token_budget", "raw_prompt"
            )
        return ratio, budget

    def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
        return {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }

    def sse(obj: Any) -> str:
        return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"

    async def stream(
        kind: str, rid: str, tasks: list[asyncio.Task], pieces: asyncio.Queue, include_usage: bool
    ) -> AsyncIterator[str]:
        """SSE events: a content chunk per piece of text as it arrives, then each choice's finish chunk."""
        obj = "chat.completion.chunk" if kind == "chat" else "text_completion"
        base = {"id": rid, "object": obj, "created": _now(), "model": config.model_name}

        def content(i: int, text: str) -> str:
            if kind == "chat":
                return sse(
                    {**base, "choices": [{"index": i, "delta": {"content": text}, "finish_reason": None}]}
                )
            return sse(
                {**base, "choices": [{"index": i, "text": text, "finish_reason": None, "logprobs": None}]}
            )

        pending = {task: i for i, task in enumerate(tasks)}
        sent = [TextDeltas() for _ in tasks]  # what each choice has streamed, to send the rest at its end
        getter: asyncio.Future | None = None
        try:
            if kind == "chat":
                yield sse(
                    {
                        **base,
                        "choices": [
                            {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
                        ],
                    }
                )
            total_p = total_c = 0
            while pending:
                if getter is None:
                    getter = asyncio.ensure_future(pieces.get())
                await asyncio.wait([getter, *pending], return_when=asyncio.FIRST_COMPLETED)
                items = []
                if getter.done():
                    items.append(getter.result())
                    getter = None
                while not pieces.empty():  # text queued before a task finished is sent before its end
                    items.append(pieces.get_nowait())
                for i, text in items:  # pieces are already safe increments (TextDeltas in the worker)
                    sent[i].sent += text
                    yield content(i, text)
                for task in [t for t in pending if t.done()]:
                    i = pending.pop(task)
                    try:
                        gen, n_prompt, info = task.result()
                    except APIError as e:
                        yield sse(e.body())
                        return
                    total_p, total_c = total_p + n_prompt, total_c + gen.num_tokens
                    rest = sent[i].finish(gen.text)
                    if rest:
                        yield content(i, rest)
                    if kind == "chat":
                        done = {"index": i, "delta": {}, "finish_reason": gen.finish_reason}
                    else:
                        done = {"index": i, "text": "", "finish_reason": gen.finish_reason, "logprobs": None}
                    yield sse({**base, "choices": [done], "tokenskip": info})
            if include_usage:
                yield sse({**base, "choices": [], "usage": usage(total_p, total_c)})
            yield "data: [DONE]\n\n"
        finally:
            if getter is not None:
                getter.cancel()
            for task in tasks:
                if not task.done():
                    task.cancel()

    def respond(kind: str, body: dict[str, Any], plans: list[Plan], ratio, budget, cfg: SamplingConfig):
        deadline = time.monotonic() + config.request_timeout_s
        # validate every prompt before queueing anything (4xx before any work, also for streams)
        for plan in plans:
            if budget != "auto":
                check_prompt(prompt_for(plan, ratio, budget), "messages" if kind == "chat" else "prompt")
        if worker.depth + len(plans) > config.queue_size:
            raise APIError(503, f"server busy: {worker.depth} requests queued", code="server_busy")
        prefix = "chatcmpl-" if kind == "chat" else "cmpl-"
        rid = prefix + uuid.uuid4().hex[:24]
        if body.get("stream"):
            loop = asyncio.get_running_loop()
            pieces: asyncio.Queue = asyncio.Queue()

            def sink(i: int) -> Callable[[str], None]:
                # called on the worker thread: hand the text to the event loop
                return lambda text: loop.call_soon_threadsafe(pieces.put_nowait, (i, text))

            tasks = [
                asyncio.ensure_future(answer(p, ratio, budget, cfg, deadline, sink(i)))
                for i, p in enumerate(plans)
            ]
            opts = body.get("stream_options") or {}
            include_usage = bool(opts.get("include_usage")) if isinstance(opts, dict) else False
            return StreamingResponse(
                stream(kind, rid, tasks, pieces, include_usage),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        tasks = [asyncio.ensure_future(answer(p, ratio, budget, cfg, deadline)) for p in plans]
        return tasks, rid

    async def collect(tasks: list[asyncio.Task]):
        try:
            return await asyncio.gather(*tasks)
        except BaseException:
            for t in tasks:
                t.cancel()
            raise

    @app.get("/health")
    async def health():
        if not worker.alive:
            return error(503, "the generation worker is not running")
        return {
            "status": "ok",
            "model": config.model_name,
            "queued": worker.depth,
            "batches": worker.batches,
            "completed": worker.completed,
        }

    @app.get("/v1/models")
    async def list_models():
        return {
            "object": "list",
            "data": [
                {"id": config.model_name, "object": "model", "created": _now(), "owned_by": "tokenskip"}
            ],
        }

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        body = await read_body(request)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise APIError(400, "messages must be a non-empty list", "messages")
        clean = []
        for m in messages:
            if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant", "developer"):
                raise APIError(400, "each message needs a role: system, user or assistant", "messages")
            role = "system" if m["role"] == "developer" else m["role"]
            clean.append({"role": role, "content": message_text(m.get("content"))})
        ratio, budget = extensions(body, raw=False)
        cfg = sampling(body)
        plan = Plan(None, clean, None)
        build_chat_prompt(tok, clean, None, None, config.preset, config.tale_template)  # validates the turns
        out = respond("chat", body, [plan], ratio, budget, cfg)
        if not isinstance(out, tuple):
            return out
        tasks, rid = out
        ((gen, n_prompt, info),) = await collect(tasks)
        return {
            "id": rid,
            "object": "chat.completion",
            "created": _now(),
            "model": config.model_name,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": gen.text},
                    "finish_reason": gen.finish_reason,
                    "logprobs": None,
                }
            ],
            "usage": usage(n_prompt, gen.num_tokens),
            "tokenskip": info,
        }

    @app.post("/v1/completions")
    async def completions(request: Request):
        body = await read_body(request)
        prompt = body.get("prompt")
        prompts = [prompt] if isinstance(prompt, str) else prompt
        if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
            raise APIError(400, "prompt must be a string or a non-empty list of strings", "prompt")
        if len(prompts) > config.batch_size:
            raise APIError(400, f"at most {config.batch_size} prompts per request", "prompt")
        if any(not p.strip() for p in prompts):
            raise APIError(400, "prompt is empty", "prompt")
        raw = body.get("raw_prompt", False)
        if not isinstance(raw, bool):
            raise APIError(400, "raw_prompt must be true or false", "raw_prompt")
        ratio, budget = extensions(body, raw=raw)
        cfg = sampling(body)
        plans = [Plan(None, None, p) if raw else Plan(p, None, None) for p in prompts]
        out = respond("completion", body, plans, ratio, budget, cfg)
        if not isinstance(out, tuple):
            return out
        tasks, rid = out
        results = await collect(tasks)
        return {
            "id": rid,
            "object": "text_completion",
            "created": _now(),
            "model": config.model_name,
            "choices": [
                {"index": i, "text": g.text, "finish_reason": g.finish_reason, "logprobs": None}
                for i, (g, _, _) in enumerate(results)
            ],
            "usage": usage(sum(r[1] for r in results), sum(r[0].num_tokens for r in results)),
            "tokenskip": [r[2] for r in results] if len(results) > 1 else results[0][2],
        }

    return app


# ------------------------------------------------------------------------------------------- the verb


def _is_loopback(host: str) -> bool:
    return host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")


def serve(
    model: str = DEFAULT_MODEL,
    adapter: str | None = None,
    backend: Literal["hf", "vllm"] = "hf",
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    served_model_name: str | None = None,
    preset: str | None = None,
    tale_template: str = "tale",
    batch_size: int = 8,
    max_prompt_tokens: int = 2048,
    max_tokens_limit: int = 2048,
    default_max_tokens: int = 512,
    queue_size: int = 64,
    request_timeout: float = 600.0,
    merge_adapter: bool = False,
    dtype: str = "auto",
    device: str = "auto",
    trust_remote_code: bool = False,
    log_level: str = "info",
) -> None:
    """Serve a model over an OpenAI-compatible HTTP API with TokenSkip's compression_ratio and TALE's token_budget.

    Args:
        model: embedded alias (smollm2-135m), Hugging Face id, or local folder / .gguf file.
        adapter: optional peft LoRA adapter folder (e.g. from `tokenskip train`).
        backend: hf (transformers) or vllm.
        host: interface to bind; 127.0.0.1 (default) is reachable from this machine only.
        port: TCP port.
        api_key: require `Authorization: Bearer KEY` on /v1/*; default: the TOKENSKIP_API_KEY variable.
        served_model_name: model id reported by /v1/models and expected in requests (default: --model).
        preset: prompt preset the model was trained with: default or tokenskip. Default: the preset the
            adapter's (or merged model's) tokenskip_adapter.json records, including its delimiter; else default.
        tale_template: TALE template for token_budget requests: tale or tale-boxed.
        batch_size: most requests generated together.
        max_prompt_tokens: longest accepted prompt, in model tokens (longer -> HTTP 400).
        max_tokens_limit: largest accepted max_tokens (larger -> HTTP 400).
        default_max_tokens: max_tokens for requests that send none.
        queue_size: requests allowed to wait for the model; more -> HTTP 503 with Retry-After.
        request_timeout: seconds before a request is answered HTTP 504.
        merge_adapter: merge the adapter into the weights (hf backend).
        dtype: auto (bf16 on GPU, fp32 on CPU), float32, bfloat16, float16.
        device: auto, cpu, cuda, cuda:N.
        trust_remote_code: allow custom model code from the hub (off by default).
        log_level: uvicorn log level (debug, info, warning, error).
    """
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError as e:
        raise UserError(
            f"tokenskip serve needs fastapi and uvicorn ({e}): pip install fastapi uvicorn"
        ) from None
    if not 0 < port < 65536:
        raise UserError(f"--port must be in 1..65535, got {port}")
    if api_key is None:
        api_key = os.environ.get(API_KEY_ENV) or None
    from tokenskip.data.adapters import resolve_preset
    from tokenskip.inference import make_generator

    config = ServerConfig(
        model_name=served_model_name or model,
        preset=resolve_preset(preset, adapter, model),
        tale_template=tale_template,
        api_key=api_key,
        max_prompt_tokens=max_prompt_tokens,
        max_tokens_limit=max_tokens_limit,
        default_max_tokens=default_max_tokens,
        queue_size=queue_size,
        batch_size=batch_size,
        request_timeout_s=request_timeout,
    )
    config.check()
    if not _is_loopback(host) and api_key is None:
        print(f"tokenskip: warning: serving on {host} without an API key: anyone who can reach it can use it")

    generator = make_generator(
        backend,
        model=model,
        adapter=adapter,
        merge_adapter=merge_adapter,
        batch_size=batch_size,
        dtype=dtype,
        device=device,
        trust_remote_code=trust_remote_code,
    )
    try:
        app = create_app(generator, config)
        print(f"tokenskip: serving {config.model_name} ({backend}) on http://{host}:{port}/v1", flush=True)
        uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5)
    finally:
        generator.close()
