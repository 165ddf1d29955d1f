"""tokenskip: controllable chain-of-thought compression.

Pipeline: generate CoT -> score & prune (compress) -> build SFT mixture -> LoRA train -> infer/serve -> bench.
"""

from tokenskip.errors import UserError

__version__ = "0.1.0"
__all__ = ["UserError", "__version__"]
