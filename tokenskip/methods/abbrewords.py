"""``abbrewords``: the instruction gains "Abbreviate words as much as possible." (TokenSkip paper, Table 3)."""

from __future__ import annotations

from tokenskip.methods.base import PromptSuffix


class AbbreWords(PromptSuffix):
    kind = "abbrewords"
    suffix = "Abbreviate words as much as possible."
