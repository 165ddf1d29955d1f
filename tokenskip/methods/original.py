"""``original``: the model as it is: the run's preset, no ratio marker, no budget."""

from __future__ import annotations

from tokenskip.methods.base import Method


class Original(Method):
    kind = "original"
