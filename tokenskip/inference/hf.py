"""transformers backend: batched, left-padded ``generate``; optional peft adapter (loaded or merged)."""

from __future__ import annotations

import time
from typing import Any

from tokenskip.errors import UserError
from tokenskip.inference.base import Generation, Generator, SamplingConfig
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

    def _generate_batch(self, prompts: list[str], config: SamplingConfig) -> list[Generation]:
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
        t0 = time.perf_counter()
        with torch.inference_mode():
            seqs = self.model.generate(**enc, **kwargs)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - t0
        new = seqs[:, enc["input_ids"].shape[1] :].tolist()
        per = elapsed / len(prompts)
        return [self._finish(ids, config, per, len(prompts)) for ids in new]

    def _finish(self, ids: list[int], config: SamplingConfig, latency: float, bs: int) -> Generation:
        tok = self.tokenizer
        eos = tok.eos_token_id
        eos_ids = set(eos) if isinstance(eos, list) else {eos}
        n, reason = len(ids), "length"
        for i, t in enumerate(ids):
            if t in eos_ids:
                n, reason = i, "stop"
                break
        ids = ids[:n]
        text = tok.decode(ids, skip_special_tokens=True)
        for s in config.stop:
            pos = text.find(s)
            if pos >= 0:
                text, reason = text[:pos], "stop"
                n = self.count_tokens(text)
        return Generation(text=text, num_tokens=n, finish_reason=reason, latency_s=latency, batch_size=bs)


def load_adapter(model: Any, adapter: str, merge: bool = False) -> Any:
    """Apply a peft adapter folder to ``model`` (merged into the weights when ``merge``)."""
    from pathlib import Path

    from peft import PeftModel

    if not (Path(adapter) / "adapter_config.json").exists():
        raise UserError(f"--adapter {adapter}: not a peft adapter folder (no adapter_config.json)")
    peft_model = PeftModel.from_pretrained(model, adapter)
    peft_model.eval()
    return peft_model.merge_and_unload() if merge else peft_model
