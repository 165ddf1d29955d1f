"""``lc-prompt@γ``: the length-control prompt of the TokenSkip paper.

The instruction gains "Please reduce (1-γ)·100% of the words in your Chain-of-Thought process." (γ = 0.5 gives
the paper's "Please reduce 50% of the words ...").
"""

from __future__ import annotations

from dataclasses import replace

from tokenskip.data.prompts import PromptPreset
from tokenskip.methods.base import Method


class LCPrompt(Method):
    kind = "lc-prompt"
    arg = "ratio"
    marker = "^"

    def preset(self, base: PromptPreset) -> PromptPreset:
        pct = round((1 - float(self.value)) * 100)
        extra = f" Please reduce {pct}% of the words in your Chain-of-Thought process."
        return replace(base, instruction=base.instruction + extra)
