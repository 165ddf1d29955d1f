"""Generator interface and backends (``hf``; ``vllm`` when installed), plus generation workflows."""

from tokenskip.data.prompts import PromptPreset
from tokenskip.inference.base import Generation, Generator, SamplingConfig

BACKENDS = ("hf", "vllm")


def make_generator(backend: str = "hf", **kwargs) -> Generator:
    """Build a backend by name; ``kwargs`` go to its constructor (model, adapter, batch_size, ...)."""
    from tokenskip.errors import UserError

    if backend == "hf":
        from tokenskip.inference.hf import HFGenerator

        return HFGenerator(**kwargs)
    if backend == "vllm":
        from tokenskip.inference.vllm_backend import VLLMGenerator

        return VLLMGenerator(**kwargs)
    raise UserError(f"unknown backend '{backend}' (available: {', '.join(BACKENDS)})")


def resolve_preset(preset: str | None, adapter: str | None = None, model: str | None = None) -> PromptPreset:
    """The prompt preset to generate with: the one a TokenSkip model was trained with, when it says so.

    An adapter from ``tokenskip train`` (or a model folder from ``tokenskip merge``) records its preset,
    including a custom ``build-sft --delimiter``, in ``tokenskip_adapter.json``. ``preset=None`` uses that
    record (else ``default``); a preset named like the record also gets the record's exact fields; another
    name is used as asked, with a warning that it differs from training.
    """
    import os

    from tokenskip.data.prompts import get_preset
    from tokenskip.training.train import read_adapter_preset

    trained = None
    for folder in (adapter, model):
        if folder and os.path.isdir(folder):
            trained = read_adapter_preset(folder)
            if trained is not None:
                break
    if preset is None:
        return trained or get_preset("default")
    chosen = get_preset(preset)
    if trained is not None and trained.name == chosen.name:
        return trained
    if trained is not None:
        print(
            f"tokenskip: warning: --preset {preset} differs from the preset the model was trained with "
            f"({trained.name}, delimiter {trained.delimiter!r}); prompts will not match training"
        )
    return chosen


__all__ = ["BACKENDS", "Generation", "Generator", "SamplingConfig", "make_generator", "resolve_preset"]
