"""transformers backend: batched, left-padded ``generate``; optional peft adapter (loaded or merged)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from tokenskip.errors import UserError
from tokenskip.inference.base import (
    Generation,
    Generator,
    SamplingConfig,
    StreamCallback,
    TextDeltas,
    first_stop,
)
from tokenskip.models import DEFAULT_MODEL, load_model


class HFGenerator(Generator):
    """Generate with ``transformers``.

    Args:
        model: alias, hub id or local folder (see :func:`tokenskip.models.resolve_model`).
        adapter: optional peft adapter folder; applied on top of the model.
        merge_adapter: merge the adapter into the weights (faster generation, same outputs).
        batch_size: prompts per ``generate`` call.
        dtype / device: see :func:`tokenskip.models.load_model`.
    """

    name = "hf"
    supports_abort = True  # generate_stream(..., aborted=) stops a row at the next token

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        adapter: str | None = None,
        merge_adapter: bool = False,
        batch_size: int = 8,
        dtype: str = "auto",
        device: str = "auto",
        trust_remote_code: bool = False,
    ) -> None:
        if batch_size < 1:
            raise UserError(f"--batch-size must be >= 1, got {batch_size}")
        self.model, self.tokenizer = load_model(
            model, dtype=dtype, device=device, trust_remote_code=trust_remote_code
        )
        if adapter:
            self.model = load_adapter(self.model, adapter, merge=merge_adapter)
        self.tokenizer.padding_side = "left"
        self.batch_size = batch_size
        self.device = next(self.model.parameters()).device

    def generate(self, prompts: list[str], config: SamplingConfig) -> list[Generation]:
        out: list[Generation] = []
        for start in range(0, len(prompts), self.batch_size):
            out.extend(self._generate_batch(prompts[start : start + self.batch_size], config))
        return out

    def generate_stream(
        self,
        prompts: list[str],
        config: SamplingConfig,
        on_text: StreamCallback,
        aborted: Callable[[int], bool] | None = None,
    ) -> list[Generation]:
        """``generate`` with each new token's text handed to ``on_text`` (a transformers streamer).

        ``aborted(i)`` (optional) is asked at every step: once it is true, row ``i`` stops (its generation
        is cut there, ``finish_reason`` ``"abort"``) while the other rows go on.
        """
        out: list[Generation] = []
        for start in range(0, len(prompts), self.batch_size):
            batch = prompts[start : start + self.batch_size]
            stop = None if aborted is None else (lambda i, o=start: aborted(o + i))
            out.extend(self._generate_batch(batch, config, lambda i, d, o=start: on_text(o + i, d), stop))
        return out

    def _generate_batch(
        self,
        prompts: list[str],
        config: SamplingConfig,
        on_text: StreamCallback | None = None,
        aborted: Callable[[int], bool] | None = None,
    ) -> list[Generation]:
        import torch

        tok = self.tokenizer
        # prompts already contain the chat template's special tokens: add none
        enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        kwargs: dict[str, Any] = {
            "max_new_tokens": config.max_new_tokens,
            "pad_token_id": tok.pad_token_id,
            "eos_token_id": tok.eos_token_id,
        }
        if config.temperature > 0:
            kwargs.update(do_sample=True, temperature=config.temperature, top_p=config.top_p)
            torch.manual_seed(config.seed)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if config.stop:
            kwargs.update(stop_strings=list(config.stop), tokenizer=tok)
        if aborted is not None:
            kwargs["stopping_criteria"] = [_AbortRows(aborted)]
        streamer = (
            _BatchStreamer(tok, len(prompts), self.eos_ids(), config.stop, on_text) if on_text else None
        )
        t0 = time.perf_counter()
        with torch.inference_mode():
            seqs = self.model.generate(**enc, **kwargs, streamer=streamer)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - t0
        new = seqs[:, enc["input_ids"].shape[1] :].tolist()
        per = elapsed / len(prompts)
        gens = [self._finish(ids, config, per, len(prompts)) for ids in new]
        if aborted is not None:
            for i, g in enumerate(gens):
                if aborted(i):
                    g.finish_reason = "abort"
        if streamer is not None:
            streamer.finish([g.text for g in gens])
        return gens

    def _finish(self, ids: list[int], config: SamplingConfig, latency: float, bs: int) -> Generation:
        tok = self.tokenizer
        eos_ids = self.eos_ids()
        n, reason = len(ids), "length"
        for i, t in enumerate(ids):
            if t in eos_ids:
                n, reason = i, "stop"
                break
        ids = ids[:n]
        text = tok.decode(ids, skip_special_tokens=True)
        stop_string = None
        hit = first_stop(text, config.stop)
        if hit is not None:
            pos, stop_string = hit
            text, reason = text[:pos], "stop"
            n = self.count_tokens(text)
        return Generation(
            text=text,
            num_tokens=n,
            finish_reason=reason,
            latency_s=latency,
            batch_size=bs,
            stop_string=stop_string,
        )


class _AbortRows:
    """A stopping criterion that ends the rows whose request was aborted (the others go on)."""

    def __init__(self, aborted: Callable[[int], bool]) -> None:
        self.aborted = aborted

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        rows = input_ids.shape[0]
        return torch.tensor([self.aborted(i) for i in range(rows)], dtype=torch.bool, device=input_ids.device)


class _BatchStreamer:
    """A transformers streamer for a whole batch: ``put`` gets one new token per row at every step.

    Each row's tokens up to its EOS are decoded exactly as ``HFGenerator._finish`` decodes them, and
    :class:`TextDeltas` decides what of the growing text is safe to send.
    """

    def __init__(
        self, tok: Any, rows: int, eos_ids: set[int], stop: tuple[str, ...], on_text: StreamCallback
    ):
        self.tok, self.eos_ids, self.on_text = tok, eos_ids, on_text
        self.ids: list[list[int]] = [[] for _ in range(rows)]
        self.ended = [False] * rows
        self.deltas = [TextDeltas(stop) for _ in range(rows)]
        self.prompt_seen = False

    def put(self, value: Any) -> None:
        if not self.prompt_seen:  # generate first hands over the prompt ids
            self.prompt_seen = True
            return
        for row, token in enumerate(value.reshape(len(self.ids), -1)[:, -1].tolist()):
            if self.ended[row]:
                continue
            if token in self.eos_ids:
                self.ended[row] = True
                continue
            self.ids[row].append(token)
            delta = self.deltas[row].update(self.tok.decode(self.ids[row], skip_special_tokens=True))
            if delta:
                self.on_text(row, delta)

    def end(self) -> None:
        pass

    def finish(self, texts: list[str]) -> None:
        """Send what the final texts hold beyond the increments already sent."""
        for row, text in enumerate(texts):
            rest = self.deltas[row].finish(text)
            if rest:
                self.on_text(row, rest)


def load_adapter(model: Any, adapter: str, merge: bool = False) -> Any:
    """Apply a peft adapter folder to ``model`` (merged into the weights when ``merge``)."""
    from pathlib import Path

    from peft import PeftModel

    if not (Path(adapter) / "adapter_config.json").exists():
        raise UserError(f"--adapter {adapter}: not a peft adapter folder (no adapter_config.json)")
    peft_model = PeftModel.from_pretrained(model, adapter)
    peft_model.eval()
    return peft_model.merge_and_unload() if merge else peft_model


def merged_model_folder(
    model: str, adapter: str, out: str, dtype: str = "auto", trust_remote_code: bool = False
) -> str:
    """Fold ``adapter`` into ``model`` on the CPU and save a plain safetensors model folder (weights,
    config, tokenizer) at ``out``: what an engine without LoRA kernels serves instead of base + LoRA."""
    from tokenskip.models import load_model

    base, tok = load_model(model, dtype=dtype, device="cpu", trust_remote_code=trust_remote_code)
    merged = load_adapter(base, adapter, merge=True)
    merged.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out
