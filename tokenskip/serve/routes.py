"""The endpoints: ``/v1/chat/completions``, ``/v1/completions``, ``/v1/models``, ``/health``.

A request is validated (:mod:`~tokenskip.serve.protocol`), admitted or refused (503), turned into one
:class:`~tokenskip.serve.choices.Choice` per answer, and each choice's prompt is built once on a request
thread, before any response starts (so bad prompts are a plain 4xx, also for streams). Then the choices
generate; a stream sends their text as it arrives. A timeout (504), a disconnected client or a shutdown
aborts whatever the request still generates.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError
from starlette.background import BackgroundTask

from tokenskip.inference.base import SamplingConfig, TextDeltas
from tokenskip.serve.choices import Aborted, Choice, ChoiceRun, make_method
from tokenskip.serve.config import ServerConfig
from tokenskip.serve.engines import Engine
from tokenskip.serve.fields import invalid_text
from tokenskip.serve.protocol import (
    APIError,
    AssistantMessage,
    ChatChoice,
    ChatCompletion,
    ChatCompletionRequest,
    Completion,
    CompletionChoice,
    CompletionRequest,
    ModelCard,
    ModelList,
    OpenAIRequest,
    Usage,
    now,
)
from tokenskip.serve.stream import ChunkWriter, Pieces, sse

R = TypeVar("R", bound=OpenAIRequest)
GREEDY_BELOW = 1e-5  # temperatures below this decode greedily


@dataclass
class ServerState:
    """What the routes share: the engine, the limits, the request threads, and in-flight bookkeeping."""

    engine: Engine
    config: ServerConfig
    pool: concurrent.futures.ThreadPoolExecutor
    draining: bool = False  # set on SIGTERM: new requests get 503 while those in flight finish
    in_flight: int = 0  # choices admitted and not yet answered
    runs: set[ChoiceRun] = field(default_factory=set)

    @property
    def capacity(self) -> int:
        return self.config.queue_size + self.config.batch_size

    def admit(self, n: int) -> None:
        if self.draining:
            raise APIError(503, "server is shutting down", code="server_busy")
        if self.in_flight + n > self.capacity or not self.engine.has_room(n):
            raise APIError(503, f"server busy: {self.in_flight} requests in flight", code="server_busy")

    def abort_all(self) -> None:
        for run in list(self.runs):
            run.bridge.abort()


async def read_body(request: Any, kind: type[R], config: ServerConfig) -> R:
    """The JSON body (413 past ``max_body_bytes``, read in pieces), validated as ``kind``."""
    raw = bytearray()
    async for piece in request.stream():
        raw += piece
        if len(raw) > config.max_body_bytes:
            raise APIError(413, f"request body larger than {config.max_body_bytes} bytes")
    try:
        body = json.loads(bytes(raw))
    except (ValueError, UnicodeDecodeError) as e:
        raise APIError(400, f"malformed JSON body ({str(e).splitlines()[0][:100]})") from None
    except RecursionError:
        raise APIError(400, "malformed JSON body (nested too deeply)") from None
    if not isinstance(body, dict):
        raise APIError(400, "the JSON body must be an object")
    bad = invalid_text(body)
    if bad is not None:
        where, char = bad
        raise APIError(
            400, f"invalid request: {where}: must be valid Unicode text, got the lone surrogate {char}",
            where.split(".")[0].split("[")[0],
        )  # fmt: skip
    model = body.get("model")
    if model is not None and model != config.model_name:
        raise APIError(404, f"model '{model}' not found; this server serves '{config.model_name}'", "model")
    try:
        req = kind.model_validate(body)
    except ValidationError as e:
        err = e.errors()[0]
        where = "".join(f"[{x}]" if isinstance(x, int) else f".{x}" for x in err["loc"]).lstrip(".")
        param = str(err["loc"][0]) if err["loc"] else None
        raise APIError(400, f"invalid request: {where or 'body'}: {err['msg']}", param) from None
    refused = req.refused_field()
    if refused:
        raise APIError(400, f"'{refused}' is not supported by this server", refused)
    return req


def sampling(req: OpenAIRequest, config: ServerConfig, engine: Engine) -> SamplingConfig:
    """Decoding settings of a request, checked against the server's limits."""
    if req.ignore_eos and engine.name != "vllm":
        raise APIError(400, "ignore_eos needs the vllm backend", "ignore_eos")
    for name in ("max_tokens", "max_completion_tokens"):  # both checked, though the second one wins
        value = getattr(req, name)
        if value is not None and value > config.max_tokens_limit:
            raise APIError(400, f"{name} {value} exceeds this server's limit {config.max_tokens_limit}", name)
    max_tokens = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
    max_tokens = config.default_max_tokens if max_tokens is None else max_tokens
    # ranges are checked by the request's types (serve/fields.py); a temperature too small to divide the
    # logits by without overflow is greedy decoding (as in vLLM)
    temperature = 0.0 if req.temperature is None or req.temperature < GREEDY_BELOW else float(req.temperature)
    top_p = 1.0 if req.top_p is None else float(req.top_p)
    seed = 42 if req.seed is None else req.seed
    return SamplingConfig(max_tokens, temperature, top_p, seed, req.stop_strings(), req.ignore_eos)


class Responder:
    """Runs the choices of one request and writes its response (JSON, or an SSE stream)."""

    def __init__(
        self,
        state: ServerState,
        endpoint: str,
        req: OpenAIRequest,
        choices: list[Choice],
        cfg: SamplingConfig,
    ) -> None:
        state.admit(len(choices))
        self.state, self.endpoint, self.req = state, endpoint, req
        self.rid = ("chatcmpl-" if endpoint == "chat" else "cmpl-") + uuid.uuid4().hex[:24]
        loop = asyncio.get_running_loop()
        self.runs = [ChoiceRun(c, state.engine, loop, state.config, cfg, self.rid) for c in choices]
        self.deadline = time.monotonic() + state.config.request_timeout
        state.in_flight += len(self.runs)
        state.runs.update(self.runs)
        self.released = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.state.in_flight -= len(self.runs)
            self.state.runs.difference_update(self.runs)
            for run in self.runs:
                run.bridge.abort()  # a no-op for finished runs; stops the rest

    async def stream_ended(self) -> None:
        """:meth:`release` once the stream is over, as a coroutine (starlette would run a function on a thread)."""
        self.release()

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.state.pool, fn, *args)

    async def prepare(self, run: ChoiceRun) -> None:
        """Build and check the choice's prompt: on the event loop when it needs no generation."""
        if run.direct:
            run.prepare()
        else:
            await self.call(run.prepare)

    def answer(self, run: ChoiceRun, on_text: Callable[[str], None] | None = None) -> Awaitable[Any]:
        """Generate the choice: a direct one from the event loop, the others on a request thread."""
        return run.run_here(on_text) if run.direct else self.call(run.run, on_text)

    async def guarded(self, aw: Awaitable[Any]) -> Any:
        """``aw`` within the request's deadline; model errors are 500s, a timeout 504."""
        try:
            return await asyncio.wait_for(aw, max(self.deadline - time.monotonic(), 0.001))
        except TimeoutError:
            raise APIError(
                504, f"request timed out after {self.state.config.request_timeout:g}s", code="timeout"
            ) from None
        except Aborted:
            raise APIError(
                503, "the request was aborted (server shutting down)", code="server_busy"
            ) from None
        except APIError:
            raise
        except Exception as e:
            raise APIError(500, f"generation failed: {type(e).__name__}: {str(e)[:200]}") from None

    async def respond(self) -> Any:
        try:
            await self.guarded(asyncio.gather(*[self.prepare(r) for r in self.runs]))
            if self.req.stream:
                headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
                return StreamingResponse(  # release: also if the stream never starts (client gone)
                    self.stream(),
                    media_type="text/event-stream",
                    headers=headers,
                    background=BackgroundTask(self.stream_ended),
                )
            results = await self.guarded(asyncio.gather(*[self.answer(r) for r in self.runs]))
        except BaseException:
            self.release()
            raise
        self.release()
        return self.body(results).model_dump()

    def body(self, results: list[tuple[Any, int, dict]]) -> ChatCompletion | Completion:
        usage = Usage.of(sum(r[1] for r in results), sum(r[0].num_tokens for r in results))
        name = self.state.config.model_name
        if self.endpoint == "chat":
            ((gen, _, info),) = results
            choice = ChatChoice(
                index=0, message=AssistantMessage(content=gen.text), finish_reason=gen.finish_reason
            )
            return ChatCompletion(id=self.rid, model=name, choices=[choice], usage=usage, tokenskip=info)
        choices = [
            CompletionChoice(index=i, text=g.text, finish_reason=g.finish_reason)
            for i, (g, _, _) in enumerate(results)
        ]
        info = [r[2] for r in results] if len(results) > 1 else results[0][2]
        return Completion(id=self.rid, model=name, choices=choices, usage=usage, tokenskip=info)

    async def stream(self) -> AsyncIterator[str]:
        """SSE events: a content chunk per piece of text as it arrives, then each choice's finish chunk."""
        out = ChunkWriter(self.endpoint, self.rid, now(), self.state.config.model_name)
        pieces = Pieces(asyncio.get_running_loop())
        tasks = [
            asyncio.ensure_future(self.guarded(self.answer(r, pieces.sink(i))))
            for i, r in enumerate(self.runs)
        ]
        for task in tasks:
            task.add_done_callback(pieces.wake)
        pending = {task: i for i, task in enumerate(tasks)}
        sent = [TextDeltas() for _ in tasks]  # what each choice has streamed, to send the rest at its end
        try:
            if self.endpoint == "chat":
                yield out.role()
            total_p = total_c = 0
            while pending:
                await pieces.wait()
                done = [t for t in pending if t.done()]  # their text is all in pieces by now: sent first
                events = []
                for i, text in pieces.take():  # pieces are already safe increments (TextDeltas in the engine)
                    sent[i].sent += text
                    events.append(out.text(i, text))
                if events:  # one write for whatever arrived together
                    yield "".join(events)
                for task in done:
                    i = pending.pop(task)
                    try:
                        gen, n_prompt, info = task.result()
                    except APIError as e:
                        yield sse(e.body())
                        return
                    total_p, total_c = total_p + n_prompt, total_c + gen.num_tokens
                    rest = sent[i].finish(gen.text)
                    if rest:
                        yield out.text(i, rest)
                    yield out.chunk(i, "", gen.finish_reason, info)
            if self.req.include_usage:
                yield out.event([], usage=Usage.of(total_p, total_c))
            yield "data: [DONE]\n\n"
        finally:  # also when the client disconnects: abort what is still generating
            for task in tasks:
                task.cancel()
            self.release()


def chat_choice(req: ChatCompletionRequest, config: ServerConfig, max_tokens: int) -> Choice:
    turns = [m.turn() for m in req.messages]
    if turns[-1]["role"] != "user":
        raise APIError(400, "the last message must have role 'user' (it is the question)", "messages")
    if not turns[-1]["content"].strip():
        raise APIError(400, "the last user message is empty", "messages")
    spec, chosen = req.method_spec(max_tokens, config.max_budget)
    return Choice(make_method(spec, config), turns[-1]["content"], turns[:-1], field=chosen)


def completion_choices(req: CompletionRequest, config: ServerConfig, max_tokens: int) -> list[Choice]:
    prompts = req.prompts
    if not prompts:
        raise APIError(400, "prompt must be a string or a non-empty list of strings", "prompt")
    if len(prompts) > config.batch_size:
        raise APIError(400, f"at most {config.batch_size} prompts per request", "prompt")
    if any(not p.strip() for p in prompts):
        raise APIError(400, "prompt is empty", "prompt")
    spec, chosen = req.method_spec(max_tokens, config.max_budget)
    if req.raw_prompt:
        if chosen is not None:
            raise APIError(400, f"raw_prompt cannot be combined with {chosen}", "raw_prompt")
        method = make_method("original", config)
        return [Choice(method, raw=p, param="prompt") for p in prompts]
    return [Choice(make_method(spec, config), p, field=chosen, param="prompt") for p in prompts]


def register(app: Any, state: ServerState) -> None:
    config = state.config

    @app.get("/health")
    async def health():
        if state.draining or not state.engine.alive:
            why = "server is shutting down" if state.draining else "the generation engine is not running"
            return JSONResponse(APIError(503, why).body(), status_code=503)
        return {"status": "ok", "model": config.model_name, "backend": state.engine.name,
                "in_flight": state.in_flight, **state.engine.stats()}  # fmt: skip

    @app.get("/v1/models")
    async def list_models():
        return ModelList(data=[ModelCard(id=config.model_name)]).model_dump()

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        req = await read_body(request, ChatCompletionRequest, config)
        cfg = sampling(req, config, state.engine)
        choices = [chat_choice(req, config, cfg.max_new_tokens)]
        return await Responder(state, "chat", req, choices, cfg).respond()

    @app.post("/v1/completions")
    async def completions(request: Request):
        req = await read_body(request, CompletionRequest, config)
        cfg = sampling(req, config, state.engine)
        choices = completion_choices(req, config, cfg.max_new_tokens)
        return await Responder(state, "completion", req, choices, cfg).respond()
