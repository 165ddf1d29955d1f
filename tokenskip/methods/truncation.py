"""``truncation@γ``: the original model's answer cut to γ × that question's original output length.

Brute-force compression as the TokenSkip paper defines it: each question's budget is
``max(1, round(γ · original output tokens))`` from the ``original`` run on the same questions. A batch is
generated once up to its largest budget and each answer is cut at its own (greedy decoding makes this the
same as generating each answer with its own cap).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from tokenskip.data.datasets import Record
from tokenskip.errors import UserError
from tokenskip.inference.base import Generation, StreamCallback
from tokenskip.methods.base import Context, Method, Request


def truncation_budget(ratio: float, original_output_tokens: int) -> int:
    """γ × the original output length of that question, at least 1 token."""
    return max(1, round(ratio * original_output_tokens))


class Truncation(Method):
    kind = "truncation"
    arg = "ratio"
    needs_original = True
    marker = "s"

    def _original_tokens(self, ctx: Context, rec: Record) -> int:
        row = ctx.original.get(rec.id)
        if row is None:
            raise UserError(
                f"{self.name} needs the original run's record of '{rec.id}' (run `original` first)"
            )
        return int(row["output_tokens"])

    def order(self, ctx: Context, records: list[Record]) -> list[Record]:
        return sorted(records, key=lambda r: self._original_tokens(ctx, r))  # similar budgets together

    def prepare(self, ctx: Context, records: list[Record]) -> list[dict[str, Any]]:
        return [
            {"budget": truncation_budget(float(self.value), self._original_tokens(ctx, r))} for r in records
        ]

    def generate(
        self, ctx: Context, requests: list[Request], on_text: StreamCallback | None = None
    ) -> list[Generation]:
        cap = min(max(r.fields["budget"] for r in requests), ctx.sampling.max_new_tokens)
        return ctx.generator.generate([r.prompt for r in requests], replace(ctx.sampling, max_new_tokens=cap))

    def finish(
        self, ctx: Context, record: Record, request: Request, gen: Generation
    ) -> tuple[Generation, dict]:
        budget = request.fields["budget"]
        if gen.num_tokens <= budget:
            return gen, {}
        tok = ctx.generator.tokenizer
        ids = tok(gen.text, add_special_tokens=False)["input_ids"][:budget]
        text = tok.decode(ids, skip_special_tokens=True)
        return Generation(text, budget, "length", gen.latency_s, gen.batch_size), {}
