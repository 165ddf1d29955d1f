"""The server's vLLM engine: ``AsyncLLM`` schedules every request itself (continuous batching).

Each prompt is one vLLM request with its own id, tokenized exactly like the offline backend
(:func:`~tokenskip.inference.vllm_backend.token_prompt`) and with the same ``SamplingParams``, so greedy
answers match ``infer --backend vllm``. Outputs arrive as deltas; a cancelled request (client gone,
timeout, shutdown) is aborted in the engine, which frees its KV cache and batch slot at once.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from types import SimpleNamespace
from typing import Any

from tokenskip.errors import UserError
from tokenskip.inference.base import Generation, SamplingConfig, TextDeltas
from tokenskip.inference.vllm_backend import (
    build_engine_kwargs,
    first_line,
    lora_request_for,
    sampling_kwargs,
    to_generation,
    token_prompt,
)
from tokenskip.models import load_tokenizer
from tokenskip.serve.engines import Engine, TextSink, Tokens
from tokenskip.serve.worker import QueueFull


class VLLMEngine(Engine):
    """``vllm.v1.engine.async_llm.AsyncLLM`` with per-request ids and abort.

    Admits up to ``max_active`` requests at once (more -> 503); vLLM decides which of them run together.
    ``options`` are :func:`~tokenskip.inference.vllm_backend.build_engine_kwargs` arguments.
    """

    name = "vllm"

    def __init__(
        self, model: str, adapter: str | None = None, max_active: int = 72, trust_remote_code: bool = False,
        **options: Any,
    ) -> None:  # fmt: skip
        self.model = model
        self.kwargs, self.on_cpu = build_engine_kwargs(
            model, adapter, trust_remote_code=trust_remote_code, **options
        )
        self.tokens = Tokens(load_tokenizer(model, trust_remote_code=trust_remote_code))
        self.lora_request = lora_request_for(adapter)
        self.max_active = max_active
        self.llm: Any = None
        self.active = 0
        self.completed = 0
        self.aborted = 0
        eos = self.tokens.tokenizer.eos_token_id
        self._eos = set(eos) if isinstance(eos, list) else {eos}

    async def start(self) -> None:
        if self.llm is not None:
            return
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        args = AsyncEngineArgs(**self.kwargs, disable_log_stats=True)
        try:
            self.llm = AsyncLLM.from_engine_args(args)
        except (ValueError, OSError) as e:
            raise UserError(f"vLLM could not load '{self.model}': {first_line(e)}") from None

    async def stop(self) -> None:
        if self.llm is not None:
            self.llm.shutdown()
            self.llm = None

    @property
    def alive(self) -> bool:
        return self.llm is not None and not self.llm.errored

    def has_room(self, n: int) -> bool:
        return self.active + n <= self.max_active

    async def generate(
        self,
        prompt: str,
        config: SamplingConfig,
        on_text: TextSink | None = None,
        ids: list[int] | None = None,
    ) -> Generation:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        if self.llm is None or not self.has_room(1):
            raise QueueFull(f"server busy: {self.active} requests in the engine")
        params = SamplingParams(**sampling_kwargs(config), output_kind=RequestOutputKind.DELTA)
        inputs = token_prompt(self.tokens, prompt) if ids is None else TokensPrompt(prompt_token_ids=ids)
        deltas = TextDeltas(config.stop)
        text, out_ids, last = "", [], None
        batch = self.active + 1
        self.active += 1
        t0 = time.perf_counter()
        try:
            async for out in self.llm.generate(
                inputs, params, f"tokenskip-{uuid.uuid4().hex}", lora_request=self.lora_request
            ):
                last = out.outputs[0]
                text += last.text
                out_ids.extend(last.token_ids)
                if on_text is not None:
                    delta = deltas.update(text)
                    if delta:
                        on_text(delta)
        except asyncio.CancelledError:  # AsyncLLM.generate aborts the request in the engine on the way out
            self.aborted += 1
            raise
        finally:
            self.active -= 1
        self.completed += 1
        if last is None:
            raise RuntimeError("vLLM returned no output")
        out = SimpleNamespace(
            text=text, token_ids=out_ids, finish_reason=last.finish_reason, stop_reason=last.stop_reason
        )
        gen = to_generation(out, self._eos, self.tokens.count, time.perf_counter() - t0, batch)
        if on_text is not None:
            rest = deltas.finish(gen.text)
            if rest:
                on_text(rest)
        return gen

    def stats(self) -> dict[str, Any]:
        return {
            "active": self.active,
            "engine_unfinished": self.llm.get_num_unfinished_requests() if self.llm is not None else 0,
            "completed": self.completed,
            "aborted": self.aborted,
        }
