"""One run session: the model a verb generates with, opened once, and only when something is left to do.

Every verb that generates (``generate``, ``infer``, ``bench``, ``fidelity``, ``tale estimate``/``run``/
``search``, ``metareason iterate``) runs its methods through a :class:`Session`::

    with Session(model, sampling, preset, engine, on_error=data.on_error) as session:
        result = session.run(method, records, out)

:meth:`Session.run` is the only caller of :func:`tokenskip.inference.runner.run_records` for methods. For each
run it

1. records the run's settings in every record and refuses an ``out`` written with other ones
   (:meth:`Session.settings`, :mod:`tokenskip.data.resume`): model, adapter (path and content hash),
   method (and its options), preset, backend, dtype, max_new_tokens, sampling;
2. checks every remaining prompt against the model's context (minus ``max_new_tokens``) with the tokenizer
   alone, before the model opens: too long is a one-line error naming file, line and length (exit 2), or a
   skipped and counted row under ``--on_error skip``;
3. opens the model when the first batch is left to generate (vLLM: once, with LoRA enabled when the session
   switches adapters), switches adapters between runs (vLLM per request, hf by reloading), and closes it
   at the end.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import Any

from tokenskip.args import EngineArgs, ModelArgs, SamplingArgs
from tokenskip.data.adapters import adapter_sha256
from tokenskip.data.datasets import Record
from tokenskip.data.prompts import PromptPreset
from tokenskip.data.resume import check_records
from tokenskip.errors import UserError
from tokenskip.inference.base import Generation, Generator, SamplingConfig
from tokenskip.inference.runner import RunResult, run_records
from tokenskip.methods import Context, Method
from tokenskip.models import release_memory

MODEL_ADAPTER: Any = object()  # the adapter of ``--adapter`` (``adapter=None`` is the base model)


class TokenizerOnly(Generator):
    """The tokenizer of a model that is not open: what prompts are written and counted with before it opens."""

    name = "tokenizer-only"

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def generate(self, prompts: list[str], config: SamplingConfig) -> list[Generation]:
        raise RuntimeError("the model is not open yet")


class Session:
    """The model of one verb's run: opened lazily, shared by every method run, adapters switched, closed.

    Args:
        model: which model, adapter, backend, dtype and device.
        sampling: decoding settings (a run may override them, e.g. greedy evaluation).
        preset: the prompt preset's name (None: the adapter's recorded one, else default), or a preset.
        engine: backend tuning.
        on_error: a prompt longer than the context is fatal (raise) or skipped and counted (skip).
        lora_rank: vLLM: start the engine with LoRA up to this rank, so adapters switch per request (also
            enabled, at the adapter's rank, whenever ``--adapter`` is given), unless ``engine.merge_adapter``:
            then each adapter is merged into the weights of its own engine (switching restarts it).
    """

    def __init__(
        self,
        model: ModelArgs,
        sampling: SamplingArgs,
        preset: str | PromptPreset | None = None,
        engine: EngineArgs | None = None,
        on_error: str = "raise",
        lora_rank: int | None = None,
    ) -> None:
        if on_error not in ("raise", "skip"):
            raise UserError(f"--on_error must be 'raise' or 'skip', got '{on_error}'")
        self.model, self.sampling, self.engine = model, sampling, engine or EngineArgs()
        self.preset = preset if isinstance(preset, PromptPreset) else model.preset(preset)
        self.on_error = on_error
        self.vllm = model.backend == "vllm"
        # vLLM runs adapters as LoRA (switched per request), or each merged into its own engine
        self.merged = bool(self.engine.merge_adapter)
        if self.vllm and model.adapter and not self.merged:
            from tokenskip.inference.vllm_backend import adapter_rank

            lora_rank = max(lora_rank or 0, adapter_rank(model.adapter))
        self.lora_rank = lora_rank if self.vllm and not self.merged else None
        self.gen: Generator | None = None
        self.loaded: str | None = None  # the adapter the open generator runs with
        self.starts = 0  # generators opened (vLLM: engine starts)
        self._hashes: dict[str, str | None] = {}
        self._tokenizer: Any = None

    # ------------------------------------------------------------------------------------ settings
    @cached_property
    def dtype(self) -> str:
        """The dtype the model runs in (``auto`` resolved for this machine)."""
        from tokenskip.models import dtype_name

        return dtype_name(self.model.dtype, self.model.device)

    def _adapter(self, adapter: Any) -> str | None:
        return self.model.adapter if adapter is MODEL_ADAPTER else (adapter or None)

    def adapter_hash(self, adapter: str | None) -> str | None:
        if adapter and adapter not in self._hashes:
            self._hashes[adapter] = adapter_sha256(adapter)
        return self._hashes.get(adapter) if adapter else None

    def base_settings(
        self, adapter: Any = MODEL_ADAPTER, sampling: SamplingArgs | None = None
    ) -> dict[str, Any]:
        """The settings of the session that change records: model, adapter (+ content hash), preset, backend,
        dtype, max_new_tokens, sampling (a run folder's settings file records these)."""
        s = sampling or self.sampling
        adapter = self._adapter(adapter)
        return {
            "model": self.model.model, "adapter": adapter, "adapter_sha256": self.adapter_hash(adapter),
            "preset": self.preset.name, "backend": self.model.backend, "dtype": self.dtype,
            "max_new_tokens": s.max_new_tokens, "temperature": s.temperature, "top_p": s.top_p, "seed": s.seed,
            "stop": list(s.stop or []),
            **({"adapter_merged": self.merged} if adapter else {}),
        }  # fmt: skip

    def settings(
        self,
        method: Method,
        adapter: Any = MODEL_ADAPTER,
        sampling: SamplingArgs | None = None,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The settings that change a run's records, written into each of them: :meth:`base_settings`, the
        method (and its options), and ``extra`` (the verb's own)."""
        options = method.record_settings()
        return {
            **self.base_settings(adapter, sampling),
            "method": method.name,
            **({"method_options": options} if options else {}),
            **(extra or {}),
        }

    # ------------------------------------------------------------------------------------ the model
    def tokenizer(self) -> Any:
        """The model's tokenizer (the open generator's, else loaded alone: no weights)."""
        if self.gen is not None:
            return self.gen.tokenizer
        if self._tokenizer is None:
            from tokenskip.models import load_tokenizer

            self._tokenizer = load_tokenizer(self.model.model, trust_remote_code=self.model.trust_remote_code)
        return self._tokenizer

    @cached_property
    def context_window(self) -> int | None:
        """Prompt + output tokens the model takes (``--max_model_len`` caps it on vLLM); None if unknown."""
        from tokenskip.models import context_length

        n = context_length(self.model.model, self.model.trust_remote_code)
        cap = self.engine.max_model_len if self.vllm else None
        return min(x for x in (n, cap) if x) if (n or cap) else None

    def generator(self, adapter: Any = MODEL_ADAPTER) -> Generator:
        """The open generator, running ``adapter`` (opened now if needed; switched per request on vLLM with
        LoRA enabled, else reopened)."""
        adapter = self._adapter(adapter)
        if self.gen is not None and self.loaded != adapter and not self.lora_rank:
            self.close()
        if self.gen is None:
            batch = self.sampling.batch(self.model.backend)
            self.gen = self.model.open(batch, self.engine, adapter=adapter, lora_rank=self.lora_rank)
            self.starts += 1
        elif self.loaded != adapter:
            self.gen.set_adapter(adapter)  # type: ignore[attr-defined]
        self.loaded = adapter
        return self.gen

    def context(
        self,
        adapter: Any = MODEL_ADAPTER,
        sampling: SamplingArgs | None = None,
        original: dict[str, dict[str, Any]] | None = None,
        open_model: bool = True,
    ) -> Context:
        """A method's context: the open generator (``open_model``), else the tokenizer alone."""
        gen = self.generator(adapter) if open_model else (self.gen or TokenizerOnly(self.tokenizer()))
        cfg = (sampling or self.sampling).config()
        return Context(gen, self.preset, cfg, original=original or {}, model=self.model.model)

    def release(self) -> None:
        """Free the generator's memory for transformers (scoring, training), unless it is a vLLM engine on
        a CPU (its KV cache is fixed there, and restarting it costs more than it frees)."""
        if self.gen is not None and not (self.vllm and getattr(self.gen, "on_cpu", False)):
            self.close()

    def close(self) -> None:
        if self.gen is not None:
            gen, self.gen, self.loaded = self.gen, None, None
            gen.close()
            del gen
            release_memory()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------------ running
    def screen(
        self, method: Method, records: list[Record], sampling: SamplingArgs | None = None
    ) -> list[Record]:
        """The records whose prompts fit the context with ``max_new_tokens`` to spare. A longer one raises a
        one-line UserError naming where it was read and its length, or (``on_error="skip"``) is reported
        and left out. Written with the tokenizer alone: no model is opened and nothing is generated. The
        prompt is the method's own when it has no pre-pass; else the question's prompt without the
        pre-pass's fields (a budget in the prompt adds a few tokens)."""
        window = self.context_window
        if window is None:
            return records
        max_new = (sampling or self.sampling).max_new_tokens
        limit = window - max_new
        if limit < 1:
            raise UserError(
                f"--max_new_tokens {max_new} leaves no room for a prompt: {self.model.model} takes "
                f"{window} tokens (prompt + output)"
            )
        ctx = self.context(open_model=False, sampling=sampling)
        if type(method).prepare is Method.prepare:
            prompts = [r.prompt for r in method.requests(ctx, records)]
        else:
            prompts = [method.prompt(ctx, r.question, {}) for r in records]
        lengths = [
            len(ids) for ids in ctx.generator.tokenizer(prompts, add_special_tokens=False)["input_ids"]
        ]
        kept = []
        for rec, n in zip(records, lengths, strict=True):
            if n <= limit:
                kept.append(rec)
                continue
            msg = (
                f"{rec.where or f'question {rec.id!r}'}: prompt is {n} tokens; {self.model.model} takes at most "
                f"{limit} ({window} context - {max_new} max_new_tokens)"
            )
            if self.on_error == "raise":
                raise UserError(msg)
            print(f"tokenskip: skipped {msg}")
        return kept

    def check(
        self,
        method: Method,
        out: str | Any,
        adapter: Any = MODEL_ADAPTER,
        sampling: SamplingArgs | None = None,
        settings: dict[str, Any] | None = None,
    ) -> None:
        """Refuse now an ``out`` written with other settings than :meth:`run` would write (a verb with several
        outputs checks them all before the first run starts)."""
        check_records(out, self.settings(method, adapter, sampling, settings))

    def run(
        self,
        method: Method,
        records: Sequence[Record],
        out: str | Any | None,
        *,
        adapter: Any = MODEL_ADAPTER,
        sampling: SamplingArgs | None = None,
        settings: dict[str, Any] | None = None,
        original: dict[str, dict[str, Any]] | None = None,
        batch_size: int | None = None,
        desc: str | None = None,
        progress: bool = True,
        needs_model: bool = True,
    ) -> RunResult:
        """Run ``method`` over ``records`` into ``out`` (JSONL, resumable; None: in memory).

        Args:
            adapter: the adapter to generate with (default ``--adapter``; None: the base model).
            sampling: this run's decoding settings (default: the session's).
            settings: the verb's own settings, recorded and checked with the session's.
            original: ``id -> record`` of the ``original`` run (truncation).
            batch_size: questions per step (default: ``--batch_size`` or the backend's).
            desc: progress-bar label (default: the method's name).
            progress: show a progress bar.
            needs_model: False when the method only needs the tokenizer (a regression budget estimate).
        """
        method.setup(records)
        run_settings = self.settings(method, adapter, sampling, settings)

        def step(batch: list[Record]) -> list[dict[str, Any]]:
            return method.run_batch(self.context(adapter, sampling, original, open_model=needs_model), batch)

        def order(todo: list[Record]) -> list[Record]:  # before the model opens: the tokenizer is enough
            return method.order(self.context(sampling=sampling, original=original, open_model=False), todo)

        return run_records(
            records, step, out, batch_size or self.sampling.batch(self.model.backend), run_settings,
            order=order, desc=desc or method.name, progress=progress,
            screen=lambda todo: self.screen(method, todo, sampling),
        )  # fmt: skip
