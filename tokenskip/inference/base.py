"""The one model interface every backend implements (lm-evaluation-harness style).

A :class:`Generator` turns finished prompt strings into :class:`Generation` records. Prompts are built
outside the backend by :func:`tokenskip.data.prompts.format_prompt`, so every backend sees the same text.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any


@dataclass
class SamplingConfig:
    """Decoding settings shared by all backends.

    Attributes:
        max_new_tokens: cap on generated tokens per prompt.
        temperature: 0 = greedy (default).
        top_p: nucleus sampling mass when temperature > 0.
        seed: random seed for sampling.
        stop: extra strings that end generation (the EOS token always does).
    """

    max_new_tokens: int = 512
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 42
    stop: tuple[str, ...] = ()


@dataclass
class Generation:
    """One completion.

    Attributes:
        text: generated text (special tokens and stop string removed).
        num_tokens: generated tokens, in the target model's tokenizer, EOS excluded.
        finish_reason: ``"stop"`` (EOS or stop string) or ``"length"`` (hit max_new_tokens).
        latency_s: wall time of the call that produced it divided by the prompts in that call.
        batch_size: prompts generated together with this one.
    """

    text: str
    num_tokens: int
    finish_reason: str
    latency_s: float
    batch_size: int = 1
    extra: dict[str, Any] = field(default_factory=dict)


class Generator(ABC):
    """A text-generation backend. ``tokenizer`` is the target model's (used for prompts and counting)."""

    name: str = "base"
    tokenizer: Any

    @abstractmethod
    def generate(self, prompts: list[str], config: SamplingConfig) -> list[Generation]:
        """Complete every prompt; returns one Generation per prompt, in order."""

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` in the target tokenizer (no special tokens added)."""
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the model (backends with engines or processes override this)."""
