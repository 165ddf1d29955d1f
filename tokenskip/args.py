"""Argument groups shared by the verbs (litgpt's ``args.py``): documented dataclasses, defined once.

A verb takes whole groups (``data: DataArgs``, ``model: ModelArgs`` ...) instead of restating 20 flat
options. :func:`flat_options` keeps the command line flat and unchanged: every field of every group is an
option of the verb (``--dataset``, ``--limit``, ``--max_new_tokens`` ...), with its help text taken from the
group's ``Attributes:`` docstring, and the verb receives the built groups. Python callers may pass either the
flat fields or a ready group (``generate(out="x.jsonl", data=DataArgs(limit=8))``).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, fields, is_dataclass, replace
from typing import Any, Literal, TypeVar, get_type_hints

from tokenskip.errors import UserError
from tokenskip.models import DEFAULT_MODEL

Backend = Literal["hf", "vllm"]
OnErrorArg = Literal["raise", "skip"]


@dataclass
class DataArgs:
    """Which questions to run.

    Attributes:
        dataset: sample, gsm8k, math500, gsm8k-zero, a .jsonl/.json/.parquet file, or a hub dataset id.
        split: dataset split for named/hub datasets (ignored for files).
        limit: only the first N questions.
        column_map: rename columns of a custom file, e.g. {"question": "prompt", "answer": "target"}.
        on_error: a malformed row is fatal (raise) or skipped and counted (skip).
    """

    dataset: str | None = "sample"
    split: str = "test"
    limit: int | None = None
    column_map: dict[str, str] | None = None
    on_error: OnErrorArg = "raise"

    def check(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise UserError(f"--limit must be >= 1, got {self.limit}")

    def load(self, require_answer: bool = True, dataset: str | None = None) -> Any:
        """The records (skipped malformed rows are reported), and the number skipped."""
        from tokenskip.data.datasets import load_records

        records, stats = load_records(
            str(dataset or self.dataset), split=self.split, column_map=self.column_map, on_error=self.on_error,
            limit=self.limit, require_answer=require_answer,
        )  # fmt: skip
        for msg in stats.skipped:
            print(f"tokenskip: skipped {msg}")
        return records, len(stats)


@dataclass
class ModelArgs:
    """Which model generates, on which backend.

    Attributes:
        model: embedded alias (smollm2-135m), Hugging Face id, or local folder / .gguf file.
        adapter: optional peft LoRA adapter folder (e.g. from `tokenskip train`).
        backend: hf (transformers) or vllm.
        dtype: auto (bf16 on a GPU or an AMX CPU, else fp32), float32, bfloat16, float16.
        device: auto, cpu, cuda, cuda:N.
        trust_remote_code: allow custom model code from the hub (off by default).
    """

    model: str = DEFAULT_MODEL
    adapter: str | None = None
    backend: Backend = "hf"
    dtype: str = "auto"
    device: str = "auto"
    trust_remote_code: bool = False

    def check(self) -> None:
        if self.backend not in ("hf", "vllm"):
            raise UserError(f"unknown backend '{self.backend}' (hf, vllm)")

    def preset(self, name: str | None) -> Any:
        """The prompt preset: ``name``, or the one the adapter (or merged model) records it was trained with."""
        from tokenskip.data.adapters import resolve_preset

        return resolve_preset(name, self.adapter, self.model)

    def open(
        self,
        batch_size: int,
        engine: EngineArgs | None = None,
        adapter: str | None | bool = True,
        lora_rank: int | None = None,
    ) -> Any:
        """The :class:`~tokenskip.inference.base.Generator` for this model (``adapter=None``: without it).
        ``lora_rank`` (vllm): start the engine with LoRA up to that rank, so ``set_adapter`` can switch."""
        from tokenskip.inference import make_generator

        e = engine or EngineArgs()
        kwargs: dict[str, Any] = {
            "model": self.model,
            "adapter": self.adapter if adapter is True else (adapter or None),
            "merge_adapter": e.merge_adapter,
            "batch_size": batch_size,
            "dtype": self.dtype,
            "device": self.device,
            "trust_remote_code": self.trust_remote_code,
        }
        if self.backend == "vllm":
            kwargs.update(tensor_parallel_size=e.tensor_parallel_size, max_model_len=e.max_model_len)
            if lora_rank:
                kwargs["max_lora_rank"] = lora_rank
        return make_generator(self.backend, **kwargs)


@dataclass
class EngineArgs:
    """Backend tuning (defaults are right for most runs).

    Attributes:
        merge_adapter: merge the adapter into the weights instead of applying LoRA at run time (the same
            model, at the base model's speed; hf: in place; vllm: a temporary merged model folder, one engine
            per adapter). Records generated with it record ``adapter_merged``.
        tensor_parallel_size: vllm: GPUs to shard over (default: all visible GPUs).
        max_model_len: vllm: context length cap, prompt + output (default: the model's).
    """

    merge_adapter: bool = False
    tensor_parallel_size: int | None = None
    max_model_len: int | None = None


@dataclass
class SamplingArgs:
    """How to decode.

    Attributes:
        max_new_tokens: cap on generated tokens per answer.
        temperature: 0 = greedy decoding.
        top_p: nucleus mass when sampling.
        seed: random seed for sampling.
        stop: extra strings that end generation.
        batch_size: prompts per generate call (and per flush of the output); default 8 on hf, 64 on vllm.
    """

    max_new_tokens: int = 512
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 42
    stop: list[str] | None = None
    batch_size: int | None = None

    def check(self) -> None:
        if self.max_new_tokens < 1:
            raise UserError(f"--max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise UserError(f"--temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise UserError(f"--top_p must be in (0, 1], got {self.top_p}")
        if self.batch_size is not None and self.batch_size < 1:
            raise UserError(f"--batch_size must be >= 1, got {self.batch_size}")

    def batch(self, backend: str) -> int:
        """The batch size to use on ``backend`` (the default depends on it)."""
        return self.batch_size or (64 if backend == "vllm" else 8)

    def config(self) -> Any:
        """The backends' :class:`~tokenskip.inference.base.SamplingConfig`."""
        from tokenskip.inference.base import SamplingConfig

        return SamplingConfig(
            max_new_tokens=self.max_new_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            seed=self.seed,
            stop=tuple(self.stop or ()),
        )


@dataclass
class LoRAArgs:
    """The LoRA adapter to train.

    Attributes:
        lora_rank: LoRA rank r.
        lora_alpha: LoRA alpha (scale = alpha / r).
        lora_dropout: dropout on the LoRA branch.
        target_modules: all-linear (every linear layer but the LM head) or a comma list like q_proj,v_proj.
    """

    lora_rank: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    target_modules: str = "all-linear"

    def check(self) -> None:
        if self.lora_rank < 1 or self.lora_alpha < 1:
            raise UserError("--lora_rank and --lora_alpha must be >= 1")
        if not 0 <= self.lora_dropout < 1:
            raise UserError(f"--lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if not [t for t in self.target_modules.split(",") if t.strip()]:
            raise UserError("--target_modules is empty (all-linear, or a comma list like q_proj,v_proj)")


@dataclass
class OptimArgs:
    """How an adapter is trained: optimizer, schedule, batches, checkpoints (``train`` and TALE-PT).

    Attributes:
        learning_rate: peak learning rate.
        epochs: training epochs.
        max_steps: stop after this many optimizer steps (overrides --epochs when > 0).
        batch_size: examples per device per forward pass.
        grad_accum: gradient accumulation steps (effective batch = batch_size x grad_accum x devices).
        scheduler: learning-rate schedule (cosine, linear, constant, constant_with_warmup, ...).
        warmup: warmup as a fraction of the steps (< 1) or a number of steps (>= 1).
        weight_decay: AdamW weight decay.
        cutoff: maximum tokens per example (prompt + completion); longer completions are cut.
        save_steps: write a checkpoint every N optimizer steps.
        save_total_limit: keep at most N checkpoints.
        logging_steps: log the loss every N steps.
        seed: seed for LoRA init and data order.
        gradient_checkpointing: recompute activations in backward (less memory, slower).
    """

    learning_rate: float = 5e-5
    epochs: float = 3.0
    max_steps: int = -1
    batch_size: int = 4
    grad_accum: int = 4
    scheduler: str = "cosine"
    warmup: float = 0.1
    weight_decay: float = 0.0
    cutoff: int = 2048
    save_steps: int = 100
    save_total_limit: int = 2
    logging_steps: int = 10
    seed: int = 42
    gradient_checkpointing: bool = False

    def check(self) -> None:
        from transformers import SchedulerType

        checks = [
            (self.learning_rate > 0, f"--learning_rate must be > 0, got {self.learning_rate}"),
            (self.epochs > 0 or self.max_steps > 0, "need --epochs > 0 or --max_steps > 0"),
            (self.batch_size >= 1, f"--batch_size must be >= 1, got {self.batch_size}"),
            (self.grad_accum >= 1, f"--grad_accum must be >= 1, got {self.grad_accum}"),
            (self.cutoff >= 8, f"--cutoff must be >= 8, got {self.cutoff}"),
            (self.warmup >= 0 and (self.warmup < 1 or float(self.warmup).is_integer()),
             f"--warmup: a fraction < 1 or a number of steps, got {self.warmup}"),
            (self.save_steps >= 1, f"--save_steps must be >= 1, got {self.save_steps}"),
            (self.logging_steps >= 1, f"--logging_steps must be >= 1, got {self.logging_steps}"),
        ]  # fmt: skip
        for ok, msg in checks:
            if not ok:
                raise UserError(msg)
        known = [t.value for t in SchedulerType]
        if self.scheduler not in known:
            raise UserError(f"unknown --scheduler '{self.scheduler}' (one of: {', '.join(known)})")

    def trainer_kwargs(self) -> dict[str, Any]:
        """The matching ``transformers.TrainingArguments`` fields (shared by trl's SFTConfig and DPOConfig)."""
        return {
            "num_train_epochs": self.epochs,
            "max_steps": self.max_steps,
            "per_device_train_batch_size": self.batch_size,
            "per_device_eval_batch_size": self.batch_size,
            "gradient_accumulation_steps": self.grad_accum,
            "learning_rate": self.learning_rate,
            "lr_scheduler_type": self.scheduler,
            "warmup_steps": int(self.warmup) if self.warmup >= 1 else self.warmup,
            "weight_decay": self.weight_decay,
            "max_length": self.cutoff,
            "logging_steps": self.logging_steps,
            "logging_first_step": True,
            "save_strategy": "steps",
            "save_steps": self.save_steps,
            "save_total_limit": self.save_total_limit,
            "gradient_checkpointing": self.gradient_checkpointing,
            "seed": self.seed,
            "data_seed": self.seed,
        }


@dataclass
class RunArgs:
    """Where a training run executes and what it does with a previous run in --out.

    Attributes:
        dtype: auto (bf16 on a GPU or an AMX CPU, else fp32), float32, bfloat16 or float16.
        device: auto, cpu or cuda.
        resume: resume from the last complete checkpoint in OUT/checkpoints if there is one.
        overwrite: delete a previous run (adapter, checkpoints, log) in OUT and start over.
        keep_checkpoints: keep OUT/checkpoints after a successful run (deleted by default).
        save_dtype: dtype of the saved adapter weights: float32, bfloat16 (half the file; the weights
            rounded once, after training) or float16; default: the training dtype.
        trust_remote_code: allow model code from the hub (off by default).
        progress: bar shows a progress bar; none prints log lines only.
    """

    dtype: str = "auto"
    device: str = "auto"
    resume: bool = True
    overwrite: bool = False
    keep_checkpoints: bool = False
    save_dtype: str | None = None
    trust_remote_code: bool = False
    progress: Literal["bar", "none"] = "bar"


F = TypeVar("F", bound=Callable[..., Any])


def _field_docs(cls: type) -> dict[str, str]:
    """``name -> description`` from a dataclass's Google-style ``Attributes:`` section."""
    import docstring_parser

    doc = docstring_parser.parse(inspect.getdoc(cls) or "")
    return {p.arg_name: (p.description or "").replace("\n", " ") for p in doc.params}


def flat_options(**groups: Any) -> Callable[[F], F]:
    """Expose argument groups as flat options of a verb.

    ``@flat_options(data=DataArgs(split="train"), model=ModelArgs())`` on ``def generate(out, data, model, ...)``
    gives a function whose signature (what jsonargparse turns into the CLI) has ``out``, every field of
    ``DataArgs`` and ``ModelArgs`` with the given instances' values as defaults, and the verb's own options. The
    groups' field docs are appended to the docstring's ``Args:``. Calling it builds each group (running its
    ``check()``) and calls the verb with the groups.
    """
    defaults = {name: (g if is_dataclass(g) else g()) for name, g in groups.items()}

    def decorate(fn: F) -> F:
        sig = inspect.signature(fn)
        hints = get_type_hints(fn)
        own = [p for name, p in sig.parameters.items() if name not in defaults]
        flat: list[inspect.Parameter] = []
        docs: list[str] = []
        owner: dict[str, str] = {}
        for gname, inst in defaults.items():
            gh = get_type_hints(type(inst))
            described = _field_docs(type(inst))
            for f in fields(inst):
                if f.name in owner or (f.name in sig.parameters and f.name not in defaults):
                    raise TypeError(f"option '{f.name}' is defined twice in {fn.__name__}")
                owner[f.name] = gname
                flat.append(
                    inspect.Parameter(
                        f.name,
                        inspect.Parameter.KEYWORD_ONLY,
                        default=getattr(inst, f.name),
                        annotation=gh[f.name],
                    )
                )
                docs.append(f"        {f.name}: {described.get(f.name, '')}")
        params = [
            p.replace(kind=inspect.Parameter.KEYWORD_ONLY, annotation=hints.get(p.name, p.annotation))
            for p in own
        ]
        required = [p for p in params if p.default is inspect.Parameter.empty]
        optional = [p for p in params if p.default is not inspect.Parameter.empty]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if len(args) > len(own):
                raise TypeError(f"{fn.__name__} takes {len(own)} positional arguments at most")
            kwargs.update(zip([p.name for p in own], args, strict=False))
            built: dict[str, Any] = {}
            for gname, inst in defaults.items():
                given = kwargs.get(gname)
                base = inst
                if isinstance(given, type(inst)):  # a ready group (a field may share the group's name)
                    base = kwargs.pop(gname)
                values = {k: kwargs.pop(k) for k in [f.name for f in fields(inst)] if k in kwargs}
                group = replace(base, **values)
                if hasattr(group, "check"):
                    group.check()
                built[gname] = group
            return fn(**built, **kwargs)

        del wrapper.__wrapped__  # jsonargparse must see the flat signature, not the verb's
        wrapper.__signature__ = inspect.Signature(
            required + flat + optional, return_annotation=sig.return_annotation
        )  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in required + flat + optional}
        doc = inspect.getdoc(fn) or ""
        wrapper.__doc__ = _merge_docs(doc, docs)
        return wrapper  # type: ignore[return-value]

    return decorate


def _merge_docs(doc: str, group_lines: list[str]) -> str:
    """The verb's docstring with the groups' option docs appended to its ``Args:`` section."""
    extra = "\n".join(line.strip() for line in group_lines)
    indented = "\n".join("    " + line for line in extra.splitlines())
    if "Args:" in doc:
        return doc.rstrip() + "\n" + indented + "\n"
    return doc.rstrip() + "\n\nArgs:\n" + indented + "\n"
