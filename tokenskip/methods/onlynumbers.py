"""``onlynumbers``: the instruction gains "Only use numbers or equations." (TokenSkip paper, Table 3)."""

from __future__ import annotations

from tokenskip.methods.base import PromptSuffix


class OnlyNumbers(PromptSuffix):
    kind = "onlynumbers"
    suffix = "Only use numbers or equations."
