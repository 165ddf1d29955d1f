"""A length-control method: how a record becomes a prompt, and how an output becomes a record.

TokenSkip's γ, TALE's β and the prompting baselines are one idea. A :class:`Method` says

* ``prepare``: an optional pre-pass over a batch (TALE-EP's budget estimate) whose fields go into the record;
* ``messages``: the chat turns for one question (system, user), built from the run's prompt preset;
* ``generate``: how the requests are generated (one call by default; budget forcing calls twice);
* ``finish``: what happens to an output before it is recorded (truncation's cut), plus extra fields.

:meth:`Method.run_batch` chains them and writes one record per question with :func:`make_record`; the one
resumable loop (:func:`tokenskip.inference.runner.run_records`) calls it batch by batch. The same method object
builds the server's prompts, so ``bench``, ``infer`` and a request's ``method`` field mean the same thing.

A new method is one module with a :class:`Method` subclass and one line in
:data:`tokenskip.methods.REGISTRY`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from tokenskip.data.datasets import Record
from tokenskip.data.prompts import (
    PromptPreset,
    check_ratio,
    format_ratio,
    render_chat,
    split_answer,
    user_message,
)
from tokenskip.errors import UserError
from tokenskip.grading import extract_answer, grade
from tokenskip.inference.base import Generation, Generator, SamplingConfig, StreamCallback

ArgKind = Literal["ratio", "budget", "text"]


@dataclass(frozen=True)
class RequestField:
    """A server request field a method reads (the server's request types are built from these).

    Attributes:
        name: the JSON field, e.g. ``compression_ratio``.
        type: its JSON value as a Python type: ``int``, ``float`` (an integer or a number), ``str``, a
            ``Literal``, or a union of them; ``null`` (absent) is always allowed.
        picks: the field picks the method (at most one such field per request); False for a field that
            only refines the one that does (``thinking_wait`` needs ``thinking_budget``).
        minimum: the smallest number allowed (None: no lower bound); the server's schema documents it.
        maximum: the largest number allowed (None: no upper bound).
        exclusive_minimum: ``minimum`` itself is refused (γ in (0, 1]).
        description: one line for the server's OpenAPI schema.
    """

    name: str
    type: Any
    picks: bool = True
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    description: str = ""


class FieldError(UserError):
    """A request field's value is out of range (the server answers 400 naming ``field``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass
class Context:
    """What a method may use while it runs.

    Attributes:
        generator: the backend (its tokenizer writes and counts every prompt).
        preset: the run's prompt preset (the adapter's recorded one when there is an adapter).
        sampling: decoding settings of the run (``max_new_tokens`` is the cap for every method).
        original: ``id -> record`` of the ``original`` method's run, for methods that need it (truncation).
        model: the model name written into records.
    """

    generator: Generator
    preset: PromptPreset
    sampling: SamplingConfig
    original: dict[str, dict[str, Any]] = field(default_factory=dict)
    model: str = ""


@dataclass
class Request:
    """One record's generation request.

    Attributes:
        prompt: the full prompt text (chat template applied).
        max_new_tokens: a per-request cap below the run's (truncation's budget); None = the run's.
        fields: extra record fields the method wants written (budget, estimate_* ...).
    """

    prompt: str
    max_new_tokens: int | None = None
    fields: dict[str, Any] = field(default_factory=dict)


class Method:
    """Base class: the model as it is (``original``). Subclasses override what differs.

    Class attributes: ``kind`` (registry name), ``arg`` (what ``kind@X`` takes: a ratio γ, a token budget,
    free text, or None for no argument), ``uses_adapter`` (runs on the trained adapter in ``bench``),
    ``needs_original`` (needs the ``original`` run's records), ``request_fields`` (the server request
    fields that ask for it, turned into a spec by :meth:`from_request`), ``marker`` (its matplotlib marker
    in ``report``'s ratio-adherence figure, where every method that takes a ratio γ is drawn).
    """

    kind: ClassVar[str] = "original"
    arg: ClassVar[ArgKind | None] = None
    arg_required: ClassVar[bool] = True
    uses_adapter: ClassVar[bool] = False
    needs_original: ClassVar[bool] = False
    request_fields: ClassVar[tuple[RequestField, ...]] = ()
    marker: ClassVar[str] = "o"

    def __init__(self, value: Any = None, **options: Any) -> None:
        self.value = value
        self.options = options

    # ---------------------------------------------------------------------------------- naming
    @classmethod
    def parse(cls, text: str | None, **options: Any) -> Method:
        """``cls`` from the part of a spec after ``@`` (None when absent)."""
        if cls.arg is None:
            if text is not None:
                raise UserError(f"method '{cls.kind}' takes no argument (got '{cls.kind}@{text}')")
            return cls(None, **options)
        if text is None:
            if cls.arg_required:
                example = {"ratio": "0.5", "budget": "256", "text": "..."}[cls.arg]
                raise UserError(f"method '{cls.kind}' needs a {cls.arg}, e.g. {cls.kind}@{example}")
            return cls(None, **options)
        if cls.arg == "ratio":
            return cls(check_ratio(text), **options)
        if cls.arg == "budget":
            try:
                budget = int(text)
            except ValueError:
                raise UserError(f"method '{cls.kind}@{text}': the budget must be an integer") from None
            if budget < 1:
                raise UserError(f"method '{cls.kind}@{text}': the budget must be >= 1")
            return cls(budget, **options)
        return cls(text, **options)

    @classmethod
    def from_request(cls, values: dict[str, Any], max_tokens: int, max_budget: int) -> str:
        """The registry spec a server request asks for with this method's ``request_fields`` (``values``:
        each field's value, None when absent; called when the picking field is set). ``max_tokens`` is the
        request's output cap, ``max_budget`` the server's largest token budget. Raises :class:`FieldError`."""
        raise NotImplementedError(f"method '{cls.kind}' reads no request fields")

    @property
    def name(self) -> str:
        if self.value is None:
            return self.kind
        return f"{self.kind}@{format_ratio(self.value) if self.arg == 'ratio' else self.value}"

    @property
    def requested_ratio(self) -> float | None:
        """γ this method asks for (reported beside the achieved ActRatio)."""
        return self.value if self.arg == "ratio" else None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Method) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)

    def __repr__(self) -> str:
        return f"<method {self.name}>"

    def record_settings(self) -> dict[str, Any]:
        """Options besides :attr:`name` that change this method's records (TALE's estimator and template):
        recorded with every run, and a resumed run must match them."""
        return {}

    # ---------------------------------------------------------------------------------- prompts
    def preset(self, base: PromptPreset) -> PromptPreset:
        """The preset this method writes prompts with (prompting baselines extend the instruction)."""
        return base

    def prompt_ratio(self) -> float | None:
        """γ written into the prompt (only TokenSkip-trained models read it)."""
        return None

    def user_turn(self, question: str, preset: PromptPreset, eos: str | None, fields: dict[str, Any]) -> str:
        return user_message(question, self.prompt_ratio(), preset, eos)

    def messages(
        self, question: str, base: PromptPreset, eos: str | None, fields: dict[str, Any] | None = None
    ) -> list[dict[str, str]]:
        """The chat turns for one question: the preset's system message (if any) and the user turn."""
        p = self.preset(base)
        turns = [{"role": "system", "content": p.system}] if p.system is not None else []
        turns.append({"role": "user", "content": self.user_turn(question, p, eos, fields or {})})
        return turns

    def prompt(
        self,
        ctx: Context,
        question: str,
        fields: dict[str, Any] | None = None,
        history: list[dict[str, str]] | None = None,
    ) -> str:
        """The full prompt; ``history`` (the server's earlier chat turns) goes before the question's user
        turn, and a system message in it replaces the method's."""
        tok = ctx.generator.tokenizer
        turns = self.messages(question, ctx.preset, getattr(tok, "eos_token", None), fields)
        if history:
            has_system = any(m["role"] == "system" for m in history)
            turns = [t for t in turns[:-1] if not has_system] + list(history) + turns[-1:]
        return render_chat(tok, turns, self.preset(ctx.preset))

    # ---------------------------------------------------------------------------------- running
    @property
    def single_generation(self) -> bool:
        """Whether a request is one generation of its prompt, kept as it is: no pre-pass (``prepare``), one
        backend call (``generate``), no change after (``finish``) are the base class's. Only such methods run
        without a model of their own in the loop, so the server can generate them on its event loop."""
        cls = type(self)
        return all(getattr(cls, n) is getattr(Method, n) for n in ("prepare", "generate", "finish"))

    def setup(self, records: Sequence[Record]) -> None:
        """Check/load what the method needs for these records, before any model loads (fail fast)."""

    def order(self, ctx: Context, records: list[Record]) -> list[Record]:
        """The order to generate ``records`` in (e.g. similar lengths together)."""
        return records

    def prepare(self, ctx: Context, records: list[Record]) -> list[dict[str, Any]]:
        """A pre-pass over a batch; each dict is written into that record and given to ``messages``."""
        return [{} for _ in records]

    def requests(self, ctx: Context, records: list[Record]) -> list[Request]:
        return [
            Request(self.prompt(ctx, r.question, f), None, f)
            for r, f in zip(records, self.prepare(ctx, records), strict=True)
        ]

    def generate(
        self, ctx: Context, requests: list[Request], on_text: StreamCallback | None = None
    ) -> list[Generation]:
        """Generate every request (one backend call per distinct cap), streaming text to ``on_text``."""
        from dataclasses import replace

        caps = sorted({r.max_new_tokens or ctx.sampling.max_new_tokens for r in requests})
        out: list[Generation | None] = [None] * len(requests)
        for cap in caps:
            idx = [
                i for i, r in enumerate(requests) if (r.max_new_tokens or ctx.sampling.max_new_tokens) == cap
            ]
            cfg = replace(ctx.sampling, max_new_tokens=min(cap, ctx.sampling.max_new_tokens))
            prompts = [requests[i].prompt for i in idx]
            if on_text is None:
                gens = ctx.generator.generate(prompts, cfg)
            else:
                gens = ctx.generator.generate_stream(prompts, cfg, lambda j, t, idx=idx: on_text(idx[j], t))
            for i, g in zip(idx, gens, strict=True):
                out[i] = g
        return [g for g in out if g is not None]

    def finish(
        self, ctx: Context, record: Record, request: Request, gen: Generation
    ) -> tuple[Generation, dict]:
        """The generation to record (possibly changed) and extra record fields."""
        return gen, {}

    def response_info(
        self, fields: dict[str, Any], extra: dict[str, Any], gen: Generation, chosen_by: str | None
    ) -> dict[str, Any]:
        """What this method adds to a server response's ``tokenskip`` object, from the request's ``prepare``
        fields, ``finish``'s extra fields and the generation; ``chosen_by`` is the request field that picked
        the method (None: none did)."""
        return {}

    def run_batch(self, ctx: Context, records: list[Record]) -> list[dict[str, Any]]:
        """One record per question of the batch (the step the resumable runner calls)."""
        reqs = self.requests(ctx, records)
        gens = self.generate(ctx, reqs)
        rows = []
        for rec, req, gen in zip(records, reqs, gens, strict=True):
            gen, extra = self.finish(ctx, rec, req, gen)
            row = make_record(rec, req.prompt, gen, ctx.generator, ctx.model, ctx.preset)
            row.update(req.fields)
            row.update(extra)
            rows.append(row)
        return rows


def make_record(
    rec: Record,
    prompt: str,
    gen: Generation,
    generator: Generator,
    model: str,
    preset: PromptPreset | None = None,
) -> dict[str, Any]:
    """The output record of one question (every verb that generates writes these fields).

    A question without a reference answer (``infer`` on bare questions) gets ``answer``/``correct`` None and
    the extracted ``prediction``. ``cot`` is the thinking block for thinking presets (else the text before
    "The final answer is:"); ``thinking_tokens`` (= ``cot_tokens``) and ``answer_tokens`` count it and the
    answer part (after ``</think>``, else from "The final answer is:" on) in the target tokenizer.
    """
    if rec.answer:
        prediction, correct = grade(gen.text, rec.answer, rec.task)
    else:
        prediction, correct = extract_answer(gen.text, rec.task), None
    cot, answer_part = split_answer(gen.text, preset)
    cot_tokens = generator.count_tokens(cot)
    return {
        "id": rec.id,
        "question": rec.question,
        "answer": rec.answer or None,
        "task": rec.task,
        "prompt": prompt,
        "output": gen.text,
        "cot": cot,
        "prediction": prediction,
        "correct": correct,
        "cot_tokens": cot_tokens,
        "output_tokens": gen.num_tokens,
        "thinking_tokens": cot_tokens,
        "answer_tokens": generator.count_tokens(answer_part),
        "finish_reason": gen.finish_reason,
        "latency_s": round(gen.latency_s, 4),
        "batch_size": gen.batch_size,
        "model": model,
    }


class PromptSuffix(Method):
    """A prompting baseline: the preset's instruction gains one sentence (``suffix``)."""

    suffix: ClassVar[str] = ""

    def preset(self, base: PromptPreset) -> PromptPreset:
        from dataclasses import replace

        return replace(base, instruction=f"{base.instruction} {self.suffix}")
