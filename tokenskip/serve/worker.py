"""The batching worker of the ``hf`` backend: one thread owns the model.

Requests wait in a bounded queue (full -> :class:`QueueFull`, answered 503); the worker takes up to
``batch_size`` queued jobs with identical sampling settings into one ``generate`` call. A job can be
aborted at any time (:meth:`BatchWorker.abort`): still queued, it is never generated; already generating,
the backend stops its row at the next token (generators with ``supports_abort``, e.g. ``hf``) while the
rest of the batch goes on.
"""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import astuple, dataclass, field

from tokenskip.inference.base import Generator, SamplingConfig

log = logging.getLogger("tokenskip.serve")


@dataclass
class Job:
    prompt: str
    config: SamplingConfig
    future: concurrent.futures.Future
    on_text: Callable[[str], None] | None = None  # streaming requests: receives text as it is generated
    aborted: threading.Event = field(default_factory=threading.Event)


class QueueFull(Exception):
    """The worker's queue is at capacity (or the worker is not running)."""


class BatchWorker:
    """One thread that owns the generator and runs queued prompts in batches of equal sampling settings."""

    def __init__(
        self, generator: Generator, batch_size: int = 8, queue_size: int = 64, batch_wait_s: float = 0.01
    ):
        self.generator = generator
        self.batch_size = batch_size
        self.batch_wait_s = batch_wait_s
        self._queue: queue.Queue[Job | None] = queue.Queue(maxsize=queue_size)
        self._thread = threading.Thread(target=self._loop, name="tokenskip-generate", daemon=True)
        self._stopping = False
        self.batches = 0  # generate calls made (for /health and tests)
        self.completed = 0
        self.aborted = 0  # jobs aborted while queued or generating
        self.running = 0  # jobs in the batch being generated now

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
        return self.submit_job(prompt, config, on_text).future

    def submit_job(
        self, prompt: str, config: SamplingConfig, on_text: Callable[[str], None] | None = None
    ) -> Job:
        """:meth:`submit`, returning the :class:`Job` (its ``future``, and a handle for :meth:`abort`)."""
        if self._stopping or not self.alive:
            raise QueueFull("the generation worker is not running")
        job = Job(prompt, config, concurrent.futures.Future(), on_text)
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise QueueFull(f"server busy: {self._queue.maxsize} requests already queued") from None
        return job

    def abort(self, job: Job) -> None:
        """Stop ``job``: dropped if still queued, its row stopped at the next token if generating."""
        if not job.aborted.is_set():
            job.aborted.set()
            self.aborted += 1
        job.future.cancel()

    def _take_batch(self, first: Job) -> tuple[list[Job], bool]:
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
            groups: dict[tuple, list[Job]] = {}
            for job in batch:
                groups.setdefault(astuple(job.config), []).append(job)
            for jobs in groups.values():
                # a job whose request timed out, disconnected or was aborted is cancelled: skip it
                live = [j for j in jobs if not j.aborted.is_set() and j.future.set_running_or_notify_cancel()]
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

    def _run(self, jobs: list[Job]) -> None:
        def on_text(i: int, text: str) -> None:
            sink = jobs[i].on_text
            if sink is not None and not jobs[i].aborted.is_set():
                try:
                    sink(text)
                except Exception:  # a gone client must not stop the batch
                    log.debug("stream sink failed", exc_info=True)

        prompts = [j.prompt for j in jobs]
        self.running = len(jobs)
        try:
            if getattr(self.generator, "supports_abort", False):
                gens = self.generator.generate_stream(
                    prompts, jobs[0].config, on_text, aborted=lambda i: jobs[i].aborted.is_set()
                )
            elif any(j.on_text is not None for j in jobs):
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
        finally:
            self.running = 0
        self.batches += 1
        self.completed += sum(not j.aborted.is_set() for j in jobs)
        for j, g in zip(jobs, gens, strict=True):
            j.future.set_result(g)
