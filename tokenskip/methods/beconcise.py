"""``beconcise``: the instruction gains "Be concise." (TokenSkip paper, Table 3)."""

from __future__ import annotations

from tokenskip.methods.base import PromptSuffix


class BeConcise(PromptSuffix):
    kind = "beconcise"
    suffix = "Be concise."
