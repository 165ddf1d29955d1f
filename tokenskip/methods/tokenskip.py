"""``tokenskip@γ``: a TokenSkip-trained model asked for ratio γ (arXiv 2502.12067).

The user turn ends with ``<delim>γ<delim>`` for γ < 1 (γ = 1.0 writes no marker), with the preset and
delimiter the adapter was trained with (read from its ``tokenskip_adapter.json``). In ``bench`` it runs on
``--adapter``; without one it prompts the base model with the marker (what an untrained model does with it).
"""

from __future__ import annotations

from typing import Any

from tokenskip.methods.base import FieldError, Method, RequestField


class TokenSkip(Method):
    kind = "tokenskip"
    arg = "ratio"
    uses_adapter = True
    request_fields = (
        RequestField(
            "compression_ratio",
            float,
            minimum=0,
            maximum=1,
            exclusive_minimum=True,
            description="TokenSkip: method tokenskip@γ, the chain of thought kept at ratio γ in (0, 1].",
        ),
    )

    @classmethod
    def from_request(cls, values: dict[str, Any], max_tokens: int, max_budget: int) -> str:
        gamma = values["compression_ratio"]
        if not 0 < gamma <= 1:
            raise FieldError("compression_ratio", f"compression_ratio must be in (0, 1], got {gamma}")
        return f"tokenskip@{gamma!r}"

    def prompt_ratio(self) -> float | None:
        return self.value
