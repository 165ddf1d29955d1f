"""``ram``: a Rational Metareasoning model (arXiv 2410.05563): the adapter ``tokenskip metareason iterate``
trains (``OUT/round-N/adapter``), prompted as it was trained: the recorded preset, no ratio, no budget.

It runs on ``--adapter`` in ``bench`` (like ``tokenskip@γ``), ``infer --method ram --adapter DIR`` and the
server (``"method": "ram"`` with ``serve --adapter DIR``); the model decides itself how long to think.
"""

from __future__ import annotations

from tokenskip.methods.base import Method


class RaM(Method):
    kind = "ram"
    arg = None
    uses_adapter = True
