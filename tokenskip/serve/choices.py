"""How one choice of a request is answered: its method (from the registry), its prompt (built once), its run.

The prompt is tokenized once: the length check counts the same token ids the engine is then given.

Most methods only write a prompt and generate it once (:attr:`~tokenskip.methods.base.Method.single_generation`,
and every raw prompt): such a choice is built and generated on the event loop, straight through the server's
:class:`~tokenskip.serve.engines.Engine`. The others are synchronous and call the model themselves
(``prepare`` may generate, e.g. TALE's budget estimate; ``generate`` may call the model several times, e.g.
budget forcing), so they run on a request thread with a :class:`Bridge` as the method's generator: every
prompt the method generates goes to the engine on the event loop. Either way :meth:`Bridge.abort` cancels
whatever the choice is generating (client gone, timeout, shutdown).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tokenskip.data.datasets import Record
from tokenskip.data.prompts import split_cot
from tokenskip.errors import UserError
from tokenskip.inference.base import Generation, Generator, SamplingConfig, StreamCallback
from tokenskip.methods import Context, Method, Request, get_method
from tokenskip.serve.config import ServerConfig
from tokenskip.serve.engines import Engine
from tokenskip.serve.protocol import APIError
from tokenskip.serve.worker import QueueFull


class Aborted(Exception):
    """The choice was aborted while it generated."""


class Bridge(Generator):
    """The :class:`Generator` a method runs on inside the server (called from a request thread)."""

    name = "bridge"

    def __init__(self, engine: Engine, loop: asyncio.AbstractEventLoop) -> None:
        self.engine, self.loop = engine, loop
        self.tokenizer = engine.tokens.tokenizer
        self.known: dict[str, list[int]] = {}  # token ids of prompts already tokenized (the checked prompt)
        self._pending: set[concurrent.futures.Future | asyncio.Future] = set()
        self._lock = threading.Lock()
        self.aborted = False

    def count_tokens(self, text: str) -> int:
        ids = self.known.get(text)
        return len(ids) if ids is not None else self.engine.tokens.count(text)

    def generate(self, prompts: list[str], config: SamplingConfig) -> list[Generation]:
        return self._run(prompts, config, None)

    def generate_stream(
        self, prompts: list[str], config: SamplingConfig, on_text: StreamCallback
    ) -> list[Generation]:
        return self._run(prompts, config, on_text)

    def _run(
        self, prompts: list[str], config: SamplingConfig, on_text: StreamCallback | None
    ) -> list[Generation]:
        with self._lock:
            if self.aborted:
                raise Aborted
            futs = [
                asyncio.run_coroutine_threadsafe(
                    self.engine.generate(
                        p,
                        config,
                        None if on_text is None else functools.partial(on_text, i),
                        self.known.get(p),
                    ),
                    self.loop,
                )
                for i, p in enumerate(prompts)
            ]
            self._pending.update(futs)
        try:
            return [f.result() for f in futs]
        except concurrent.futures.CancelledError:
            raise Aborted from None
        except QueueFull as e:
            raise APIError(503, str(e), code="server_busy") from None
        finally:
            with self._lock:
                self._pending.difference_update(futs)
            for f in futs:
                f.cancel()  # after an error, nothing of this call keeps generating

    async def generate_here(
        self, prompt: str, config: SamplingConfig, on_text: Callable[[str], None] | None
    ) -> Generation:
        """One prompt generated from the event loop itself (no request thread; ``on_text`` runs on the loop)."""
        if self.aborted:
            raise Aborted
        task = asyncio.ensure_future(self.engine.generate(prompt, config, on_text, self.known.get(prompt)))
        self._pending.add(task)
        try:
            return await task  # cancelling the caller cancels the generation too
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if self.aborted and not (current is not None and current.cancelling()):
                raise Aborted from None
            raise
        except QueueFull as e:
            raise APIError(503, str(e), code="server_busy") from None
        finally:
            self._pending.discard(task)

    def abort(self) -> None:
        """Cancel every generation of this choice, now and later (generations started on the event loop
        are cancelled only when this is called there, as the server does)."""
        with self._lock:
            self.aborted = True
            for f in self._pending:
                f.cancel()


def make_method(spec: str, config: ServerConfig) -> Method:
    """A request's method from its registry spec (400 for unknown specs and methods the server cannot run)."""
    try:
        method = get_method(spec, **config.method_options())
    except UserError as e:
        raise APIError(400, str(e), "method") from None
    if method.needs_original:
        raise APIError(
            400, f"method '{method.name}' needs an original run's records; use it in bench", "method"
        )
    return method


@dataclass
class Choice:
    """What one choice needs: its method, and the question (with earlier chat turns) or a raw prompt."""

    method: Method
    question: str | None = None
    history: list[dict[str, str]] = field(default_factory=list)
    raw: str | None = None
    field: str | None = None  # the request field that chose the method
    param: str = "messages"  # the request field its prompt comes from (for error messages)


class ChoiceRun:
    """One choice: :meth:`prepare` builds the prompt once, :meth:`run` (on a request thread) or, for a
    :attr:`direct` choice, :meth:`run_here` (on the event loop) generates."""

    def __init__(
        self, choice: Choice, engine: Engine, loop: asyncio.AbstractEventLoop, config: ServerConfig,
        sampling: SamplingConfig, rid: str,
    ) -> None:  # fmt: skip
        self.choice, self.config = choice, config
        self.bridge = Bridge(engine, loop)
        self.ctx = Context(self.bridge, config.prompt_preset(), sampling, model=config.model_name)
        self.record = Record(rid, choice.question or choice.raw or "", "")
        self.request: Request | None = None
        self.prompt_tokens = 0
        # one generation of the prompt, nothing that generates in between: no request thread needed
        self.direct = choice.raw is not None or choice.method.single_generation

    def prepare(self) -> None:
        """The method's pre-pass (e.g. TALE's budget estimate) and the prompt, checked against the limit."""
        c = self.choice
        with _user_errors():
            if c.raw is not None:
                self.request = Request(c.raw)
            else:
                assert c.question is not None
                fields = c.method.prepare(self.ctx, [self.record])[0]
                prompt = c.method.prompt(self.ctx, c.question, fields, c.history)
                self.request = Request(prompt, None, fields)
        ids = self.check_prompt(self.request.prompt)
        self.bridge.known[self.request.prompt] = ids  # the engine gets these ids, not the text again
        self.prompt_tokens = len(ids)

    def check_prompt(self, prompt: str) -> list[int]:
        """The prompt's token ids (tokenized once, here), if it is within the limit."""
        limit, param = self.config.max_prompt_tokens, self.choice.param
        if len(prompt) > limit * 32:  # cheap pre-check before tokenizing huge text
            raise APIError(400, f"prompt longer than {limit} tokens", param, "context_length_exceeded")
        ids = self.bridge.engine.tokens.ids(prompt)
        if len(ids) > limit:
            raise APIError(
                400,
                f"prompt is {len(ids)} tokens; this server accepts at most {limit}",
                param,
                "context_length_exceeded",
            )
        return ids

    def run(self, on_text: Callable[[str], None] | None = None) -> tuple[Generation, int, dict[str, Any]]:
        """Generate the choice; returns ``(generation, prompt tokens, the response's tokenskip info)``."""
        assert self.request is not None
        m, req = self.choice.method, self.request
        relay = None if on_text is None else (lambda _i, text: on_text(text))
        with _user_errors():
            (gen,) = m.generate(self.ctx, [req], relay)
            gen, extra = m.finish(self.ctx, self.record, req, gen)
        return gen, self.prompt_tokens, self.info(gen, extra)

    async def run_here(
        self, on_text: Callable[[str], None] | None = None
    ) -> tuple[Generation, int, dict[str, Any]]:
        """:meth:`run` of a :attr:`direct` choice, on the event loop: its one generation goes straight to
        the engine (what the base ``Method.generate`` does for one request; ``finish`` keeps it as it is)."""
        assert self.request is not None and self.direct
        gen = await self.bridge.generate_here(self.request.prompt, self.ctx.sampling, on_text)
        return gen, self.prompt_tokens, self.info(gen, {})

    def info(self, gen: Generation, extra: dict[str, Any]) -> dict[str, Any]:
        """The response's ``tokenskip`` object: the keys every response has, then the method's own
        (:meth:`~tokenskip.methods.base.Method.response_info`), then the choice's CoT tokens and timing."""
        m, f = self.choice.method, self.request.fields if self.request else {}
        info: dict[str, Any] = {
            "method": m.name if self.choice.raw is None else "raw",
            "compression_ratio": m.requested_ratio,
            "token_budget": None,
        }
        info.update(m.response_info(f, extra, gen, self.choice.field))
        return info | {
            "cot_tokens": self.bridge.count_tokens(split_cot(gen.text)),
            "latency_s": round(gen.latency_s, 4),
            "batch_size": gen.batch_size,
        }


class _user_errors:
    """A method's :class:`UserError` (bad spec for this request) is the client's 400."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> bool:
        if isinstance(exc, UserError):
            raise APIError(400, str(exc), "method") from None
        return False
