"""Generator interface and backends (``hf``; ``vllm`` when installed), the resumable runner, TALE's budget logic."""

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


__all__ = ["BACKENDS", "Generation", "Generator", "SamplingConfig", "make_generator"]
