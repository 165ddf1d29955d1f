"""The generator of one ``metareason iterate`` run, opened as few times as its backend allows.

* ``vllm``: ONE engine for the whole run, started with LoRA up to the run's rank (``--lora_rank``, or the
  starting ``--adapter``'s when larger). Each round's adapter is switched in per request (a ``LoRARequest``
  with a new id and name per adapter folder), so round r's evaluation and round r+1's rollouts run on the
  adapter round r trained without restarting the engine. On CPU the engine stays up while transformers
  scores and trains (its KV cache is the fixed ``VLLM_CPU_KVCACHE_SPACE``); on a GPU, where it holds
  ``gpu_memory_utilization`` of the memory, it is closed before scoring and training and started again when
  generation resumes.
* ``hf``: the model with the adapter in its weights; kept while the adapter stays the same (round r's
  evaluation and round r+1's rollouts), scored with its own weights, closed before training.
"""

from __future__ import annotations

from typing import Any

from tokenskip.args import EngineArgs, ModelArgs, SamplingArgs
from tokenskip.methods import Context


class Generators:
    """Hands out a :class:`Context` for an adapter, reusing the open generator when it can."""

    def __init__(self, model: ModelArgs, engine: EngineArgs, preset: Any, lora_rank: int) -> None:
        self.model, self.engine, self.preset = model, engine, preset
        self.vllm = model.backend == "vllm"
        if self.vllm and model.adapter:
            from tokenskip.inference.vllm_backend import adapter_rank

            lora_rank = max(lora_rank, adapter_rank(model.adapter))
        self.lora_rank = lora_rank
        self.gen: Any = None
        self.adapter: str | None = None
        self.starts = 0  # generators opened (vLLM: engine starts)

    def context(self, adapter: str | None, sampling: SamplingArgs) -> Context:
        """A context that generates with ``adapter`` (None: the base model) and ``sampling``."""
        adapter = adapter or None
        if self.gen is not None and self.adapter != adapter and not self.vllm:
            self.close()
        if self.gen is None:
            batch = sampling.batch(self.model.backend)
            self.gen = self.model.open(
                batch, self.engine, adapter=adapter, lora_rank=self.lora_rank if self.vllm else None
            )
            self.starts += 1
        elif self.adapter != adapter:
            self.gen.set_adapter(adapter)
        self.adapter = adapter
        return Context(self.gen, self.preset, sampling.config(), model=self.model.model)

    def scorer(self, adapter: str | None, cfg: Any, batch_size: int) -> Any:
        """A :class:`~tokenskip.metareason.score.Scorer` for ``adapter``: the open hf generator's own weights
        when it has that adapter, else the model loaded for scoring (after :meth:`release`)."""
        from tokenskip.metareason.score import Scorer, open_scorer

        if self.gen is not None and not self.vllm and self.adapter == (adapter or None):
            return Scorer(self.gen.model, self.gen.tokenizer, self.preset, cfg, batch_size)
        self.release()
        m = self.model
        return open_scorer(m.model, adapter, self.preset.name, cfg, batch_size, m.dtype, m.device)

    def release(self) -> None:
        """Free the generator's memory for transformers (scoring, training), unless it is a vLLM engine on CPU."""
        if self.gen is not None and not (self.vllm and self.gen.on_cpu):
            self.close()

    def close(self) -> None:
        if self.gen is not None:
            gen, self.gen, self.adapter = self.gen, None, None
            gen.close()
