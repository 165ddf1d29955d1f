"""``budget-forcing@N``: s1's budget forcing (Muennighoff et al., arXiv 2501.19393) as a length-control method.

The CoT is generated with a cap of N tokens and the preset's end-of-thinking string as a stop string
(``</think>`` for thinking presets, ``"\\n\\nThe final answer is:"`` otherwise). Then:

* **cut** (N tokens reached): the CoT is closed by force with :func:`~tokenskip.data.prompts.forced_answer`
  (``"\\n</think>\\n\\nFinal Answer: $\\boxed{"`` for thinking presets, ``"\\n\\nThe final answer is:
  $\\boxed{"`` otherwise) and the model continues to the answer;
* **closed early** (the model wrote the end string): the end string is put back and the model continues to
  its answer. With ``+waitK`` (``budget-forcing@N+wait2``) the close is instead replaced by ``"Wait"`` up to
  K times while budget is left (s1's "ignore end-of-thinking"; off by default);
* **ended** (EOS or a run stop string): the output is kept as it is.

The answer phase is capped at ``max_new_tokens - N`` (so N must be below ``--max_new_tokens``) and every
phase is a string prompt (prompt + text so far), tokenized the same way on ``hf`` and ``vllm``, so greedy
outputs match across backends. Streaming sends the CoT, then the inserted text, then the answer: the
increments add up to the recorded output. Records gain ``thinking_budget``, ``forced`` (the CoT was cut),
``waits`` and ``thinking_generated`` (CoT tokens the model generated; exactly N when forced).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any, Literal

from tokenskip.data.datasets import Record
from tokenskip.data.prompts import forced_answer, thinking_end
from tokenskip.errors import UserError
from tokenskip.inference.base import Generation, StreamCallback
from tokenskip.methods.base import Context, FieldError, Method, Request, RequestField

WAIT = "Wait"
_SPEC = re.compile(r"^(\d+)(?:\+wait(\d*))?$")

Step = Literal["force", "close", "wait", "end"]


def next_step(gen: Generation, used: int, budget: int, waits_left: int, end: str) -> Step:
    """What follows a CoT segment ``gen`` once ``used`` of ``budget`` CoT tokens are spent.

    ``force``: the budget is spent (close by force); ``close``: the model wrote ``end`` (the end string goes
    back, or ``wait`` while waits and budget are left); ``end``: EOS or another stop string ended it.
    """
    if gen.finish_reason == "length":
        return "force"
    if gen.stop_string == end:
        return "wait" if waits_left > 0 and used < budget else "close"
    return "end"


@dataclass
class _Trace:
    """One request's progress through the phases."""

    prompt: str
    text: str = ""
    thinking: int = 0  # CoT tokens generated
    tokens: int = 0  # generated + inserted tokens
    latency: float = 0.0
    batch_size: int = 1
    finish_reason: str = "stop"
    forced: bool = False
    waits: int = 0

    def add(self, gen: Generation) -> None:
        self.text += gen.text
        self.tokens += gen.num_tokens
        self.latency += gen.latency_s
        self.finish_reason = gen.finish_reason

    def generation(self, budget: int) -> Generation:
        fields = {"thinking_budget": budget, "forced": self.forced, "waits": self.waits,
                  "thinking_generated": self.thinking}  # fmt: skip
        return Generation(self.text, self.tokens, self.finish_reason, self.latency, self.batch_size, fields)


class BudgetForcing(Method):
    kind = "budget-forcing"
    arg = "budget"
    request_fields = (
        RequestField(
            "thinking_budget",
            int,
            minimum=1,
            description="Budget forcing: method budget-forcing@N, "
            "at most N thinking tokens (N < max_tokens).",
        ),
        RequestField(
            "thinking_wait",
            int,
            picks=False,
            minimum=0,
            description="Budget forcing: K extra 'Wait' continuations (needs thinking_budget).",
        ),
    )

    @classmethod
    def from_request(cls, values: dict[str, Any], max_tokens: int, max_budget: int) -> str:
        """``thinking_budget`` N (below ``max_tokens``: the answer gets the rest) and ``thinking_wait`` K."""
        n, k = values["thinking_budget"], values.get("thinking_wait") or 0
        if n < 1:
            raise FieldError("thinking_budget", f"thinking_budget must be >= 1, got {n}")
        if n >= max_tokens:
            raise FieldError(
                "thinking_budget",
                f"thinking_budget {n} must be below max_tokens {max_tokens} (the answer gets the rest)",
            )
        if k < 0:
            raise FieldError("thinking_wait", f"thinking_wait must be >= 0, got {k}")
        return f"budget-forcing@{n}" + (f"+wait{k}" if k else "")

    def response_info(
        self, fields: dict[str, Any], extra: dict[str, Any], gen: Generation, chosen_by: str | None
    ) -> dict[str, Any]:
        return {k: extra[k] for k in ("thinking_budget", "forced", "waits", "thinking_generated")}

    def __init__(self, value: Any = None, wait: int = 0, **options: Any) -> None:
        super().__init__(value, **options)
        try:
            self.wait = int(wait)
        except (TypeError, ValueError):
            raise UserError(f"budget-forcing: wait must be an integer >= 0, got {wait!r}") from None
        if self.wait < 0:
            raise UserError(f"budget-forcing: wait must be an integer >= 0, got {wait!r}")

    @classmethod
    def parse(cls, text: str | None, **options: Any) -> Method:
        """``N`` or ``N+waitK`` (``+wait`` = one "Wait")."""
        m = _SPEC.match((text or "").strip())
        if m is None:
            raise UserError(
                f"method 'budget-forcing@{text}': give the thinking budget N (e.g. budget-forcing@512, "
                "or budget-forcing@512+wait2 to append 'Wait' up to 2 times when the model stops early)"
            )
        budget = int(m.group(1))
        if budget < 1:
            raise UserError(f"method 'budget-forcing@{text}': the budget must be >= 1")
        if m.group(2) is not None:  # the spec's +waitK wins over a ``wait`` option
            options = {**options, "wait": int(m.group(2) or 1)}
        return cls(budget, **options)

    @property
    def name(self) -> str:
        return f"{self.kind}@{self.value}" + (f"+wait{self.wait}" if self.wait else "")

    def _round(
        self, ctx: Context, idx: list[int], traces: list[_Trace], caps: list[int], stop: tuple[str, ...],
        on_text: StreamCallback | None,
    ) -> list[Generation]:  # fmt: skip
        """One backend pass over the traces ``idx`` (grouped by cap), each continuing its text so far."""
        sub = replace(ctx, sampling=replace(ctx.sampling, stop=stop))
        reqs = [Request(traces[i].prompt + traces[i].text, cap) for i, cap in zip(idx, caps, strict=True)]
        relay = None if on_text is None else (lambda j, t: on_text(idx[j], t))
        return super().generate(sub, reqs, relay)

    def generate(
        self, ctx: Context, requests: list[Request], on_text: StreamCallback | None = None
    ) -> list[Generation]:
        budget, cap = int(self.value), ctx.sampling.max_new_tokens
        if budget >= cap:
            raise UserError(
                f"{self.name}: --max_new_tokens ({cap}) must be above the thinking budget {budget} "
                "(the answer gets max_new_tokens - N tokens)"
            )
        preset = self.preset(ctx.preset)
        end, close = thinking_end(preset), forced_answer(preset)
        count = ctx.generator.count_tokens
        traces = [_Trace(r.prompt) for r in requests]
        answer: list[int] = []
        active = list(range(len(requests)))
        first = True
        while active:
            caps = [budget - traces[i].thinking for i in active]
            gens = self._round(ctx, active, traces, caps, (*ctx.sampling.stop, end), on_text)
            still = []
            for i, gen in zip(active, gens, strict=True):
                t = traces[i]
                t.add(gen)
                t.thinking += gen.num_tokens
                if first:
                    t.batch_size = gen.batch_size
                step = next_step(gen, t.thinking, budget, self.wait - t.waits, end)
                if step == "end":
                    continue
                insert = {"force": close, "close": end, "wait": WAIT}[step]
                t.text += insert
                t.tokens += count(insert)
                t.forced = step == "force"
                if on_text is not None:
                    on_text(i, insert)
                if step == "wait":
                    t.waits += 1
                    still.append(i)
                else:
                    answer.append(i)
            active, first = still, False
        if answer:
            answer.sort()
            gens = self._round(ctx, answer, traces, [cap - budget] * len(answer), ctx.sampling.stop, on_text)
            for i, gen in zip(answer, gens, strict=True):
                traces[i].add(gen)
        return [t.generation(budget) for t in traces]

    def finish(
        self, ctx: Context, record: Record, request: Request, gen: Generation
    ) -> tuple[Generation, dict]:
        return gen, dict(gen.extra)
