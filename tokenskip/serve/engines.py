"""What the server generates with: an :class:`Engine` takes one prompt at a time, asynchronously.

Cancelling the task that awaits :meth:`Engine.generate` aborts that generation: :class:`WorkerEngine` (the
``hf`` backend, or any :class:`~tokenskip.inference.base.Generator`) drops the job from the worker's queue or
stops its row at the next token; :class:`~tokenskip.serve.vllm_engine.VLLMEngine` aborts the request in
vLLM's own scheduler. Both count what they aborted (``/health``).
"""

from __future__ import annotations

import asyncio
import copy
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from tokenskip.inference.base import Generation, Generator, SamplingConfig
from tokenskip.serve.worker import BatchWorker, QueueFull

TextSink = Callable[[str], None]


class Tokens:
    """A private copy of the tokenizer for the server's threads (one at a time: a fast tokenizer used from
    two threads at once fails with "Already borrowed"); the generating thread keeps the original."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = copy.deepcopy(tokenizer)
        self._lock = threading.Lock()

    def __call__(self, text: str, **kwargs: Any) -> Any:
        with self._lock:
            return self.tokenizer(text, **kwargs)

    def ids(self, text: str) -> list[int]:
        return self(text, add_special_tokens=False)["input_ids"]

    def count(self, text: str) -> int:
        return len(self.ids(text))


class Engine(ABC):
    """The server's view of a backend. ``tokens`` counts and encodes on the server's side."""

    name = "engine"
    tokens: Tokens

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Called once the event loop runs (engines that need the loop start here)."""

    async def stop(self) -> None:  # noqa: B027 - optional hook
        """Release the model's runner (the verb closes the model itself)."""

    @property
    @abstractmethod
    def alive(self) -> bool: ...

    @abstractmethod
    def has_room(self, n: int) -> bool:
        """Whether ``n`` more requests may be admitted now (else the server answers 503)."""

    @abstractmethod
    async def generate(
        self,
        prompt: str,
        config: SamplingConfig,
        on_text: TextSink | None = None,
        ids: list[int] | None = None,
    ) -> Generation:
        """Generate one prompt; ``on_text`` gets the text as it is produced (any thread). ``ids`` are the
        prompt's token ids when the caller has them (``tokens.ids(prompt)``), so it is not tokenized again.
        Raises :class:`QueueFull` when there is no room; cancelling the awaiting task aborts the generation."""

    @abstractmethod
    def stats(self) -> dict[str, Any]:
        """Counters for ``/health`` (queued, running, completed, aborted, ...)."""


class WorkerEngine(Engine):
    """Any :class:`Generator` behind one :class:`BatchWorker` thread (the ``hf`` backend)."""

    name = "worker"

    def __init__(
        self,
        generator: Generator,
        batch_size: int = 8,
        queue_size: int = 64,
        batch_wait_s: float = 0.01,
        worker: BatchWorker | None = None,
    ) -> None:
        self.generator = generator
        self.queue_size = queue_size
        self.worker = worker or BatchWorker(generator, batch_size, queue_size, batch_wait_s)
        self.tokens = Tokens(generator.tokenizer)

    async def start(self) -> None:
        if not self.worker.alive:
            self.worker.start()

    async def stop(self) -> None:
        await asyncio.to_thread(self.worker.stop)

    @property
    def alive(self) -> bool:
        return self.worker.alive

    def has_room(self, n: int) -> bool:
        return self.worker.depth + n <= self.queue_size

    async def generate(
        self,
        prompt: str,
        config: SamplingConfig,
        on_text: TextSink | None = None,
        ids: list[int] | None = None,
    ) -> Generation:  # the generator tokenizes its batches itself (padded together): ``ids`` go unused
        job = self.worker.submit_job(prompt, config, on_text)
        try:
            return await asyncio.wrap_future(job.future)
        except asyncio.CancelledError:
            self.worker.abort(job)
            raise

    def stats(self) -> dict[str, Any]:
        w = self.worker
        return {
            "queued": w.depth,
            "running": w.running,
            "batches": w.batches,
            "completed": w.completed,
            "aborted": w.aborted,
        }


__all__ = ["Engine", "QueueFull", "Tokens", "WorkerEngine"]
