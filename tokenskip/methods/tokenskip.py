"""``tokenskip@γ``: a TokenSkip-trained model asked for ratio γ (arXiv 2502.12067).

The user turn ends with ``<delim>γ<delim>`` for γ < 1 (γ = 1.0 writes no marker), with the preset and
delimiter the adapter was trained with (read from its ``tokenskip_adapter.json``). In ``bench`` it runs on
``--adapter``; without one it prompts the base model with the marker (what an untrained model does with it).
"""

from __future__ import annotations

from tokenskip.methods.base import Method


class TokenSkip(Method):
    kind = "tokenskip"
    arg = "ratio"
    uses_adapter = True

    def prompt_ratio(self) -> float | None:
        return self.value
