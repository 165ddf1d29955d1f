"""The one model interface every backend implements (lm-evaluation-harness style).

A :class:`Generator` turns finished prompt strings into :class:`Generation` records. Prompts are built
outside the backend by :func:`tokenskip.data.prompts.format_prompt`, so every backend sees the same text.

:meth:`Generator.generate_stream` is the streaming form of ``generate``: it also hands each prompt's text to a
callback as it is produced (token by token on the ``hf`` and ``vllm`` backends). :class:`TextDeltas` turns
the growing decoded text into safe increments: never a half UTF-8 character, never text a stop string will
remove, so the increments always add up to the final ``Generation.text``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# on_text(prompt_index, new_text): called from the generating thread as text arrives
StreamCallback = Callable[[int, str], None]


@dataclass
class SamplingConfig:
    """Decoding settings shared by all backends.

    Attributes:
        max_new_tokens: cap on generated tokens per prompt.
        temperature: 0 = greedy (default).
        top_p: nucleus sampling mass when temperature > 0.
        seed: random seed for sampling.
        stop: extra strings that end generation (the EOS token always does, unless ``ignore_eos``).
        ignore_eos: generate exactly ``max_new_tokens`` (vllm only; for fixed-length benchmarks).
    """

    max_new_tokens: int = 512
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 42
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False


@dataclass
class Generation:
    """One completion.

    Attributes:
        text: generated text (special tokens and stop string removed).
        num_tokens: generated tokens, in the target model's tokenizer, EOS excluded.
        finish_reason: ``"stop"`` (EOS or stop string) or ``"length"`` (hit max_new_tokens).
        latency_s: wall time of the call that produced it divided by the prompts in that call.
        batch_size: prompts generated together with this one.
        extra: backend- or method-specific details.
        stop_string: which of ``SamplingConfig.stop`` ended it (cut from ``text``); None when EOS or the
            token limit did (budget forcing tells a closed thinking block from an EOS this way).
    """

    text: str
    num_tokens: int
    finish_reason: str
    latency_s: float
    batch_size: int = 1
    extra: dict[str, Any] = field(default_factory=dict)
    stop_string: str | None = None


def first_stop(text: str, stop: tuple[str, ...] | list[str]) -> tuple[int, str] | None:
    """``(position, stop string)`` of the stop string that occurs first in ``text`` (None if none does)."""
    hits = [(pos, s) for s in stop if s and (pos := text.find(s)) >= 0]
    return min(hits, key=lambda h: h[0]) if hits else None


class TextDeltas:
    """Turns a growing decoded text into increments that are always a prefix of the final text.

    ``update(text)`` takes the whole text decoded so far and returns what is new and safe to send. It holds
    back a trailing U+FFFD (a multi-byte character whose remaining bytes are still to come), any tail that
    could be the start of a stop string, and everything from a stop string on. ``finish(final)`` returns
    the rest of the final text. Pure logic, no model.
    """

    def __init__(self, stop: tuple[str, ...] | list[str] = ()) -> None:
        self.stop = tuple(s for s in stop if s)
        self.sent = ""
        self.stopped = False

    def update(self, text: str) -> str:
        if self.stopped:
            return ""
        for s in self.stop:
            pos = text.find(s)
            if pos >= 0:
                text, self.stopped = text[:pos], True
        end = len(text)
        while end > 0 and text[end - 1] == "\ufffd":
            end -= 1
        if not self.stopped:
            for s in self.stop:  # keep back a tail that may grow into a stop string
                for k in range(min(len(s) - 1, end), 0, -1):
                    if text.endswith(s[:k], 0, end):
                        end -= k
                        break
        safe = text[:end]
        if len(safe) <= len(self.sent) or not safe.startswith(self.sent):
            return ""  # nothing new, or decoding revised sent text: wait for the final text
        delta, self.sent = safe[len(self.sent) :], safe
        return delta

    def finish(self, final: str) -> str:
        """What is left of ``final`` after the increments already returned ("" if they diverged)."""
        rest = final[len(self.sent) :] if final.startswith(self.sent) else ""
        self.sent, self.stopped = final, True
        return rest


class Generator(ABC):
    """A text-generation backend. ``tokenizer`` is the target model's (used for prompts and counting)."""

    name: str = "base"
    tokenizer: Any

    @abstractmethod
    def generate(self, prompts: list[str], config: SamplingConfig) -> list[Generation]:
        """Complete every prompt; returns one Generation per prompt, in order."""

    def generate_stream(
        self, prompts: list[str], config: SamplingConfig, on_text: StreamCallback
    ) -> list[Generation]:
        """``generate``, also calling ``on_text(i, new_text)`` as prompt ``i``'s text is produced.

        The increments of each prompt add up to its ``Generation.text``. This default sends each whole
        text once it is finished; backends that can do better (``hf``, ``vllm``) send it token by token.
        """
        gens = self.generate(prompts, config)
        for i, g in enumerate(gens):
            if g.text:
                on_text(i, g.text)
        return gens

    def eos_ids(self) -> set[int]:
        """The target tokenizer's end-of-sequence id(s): a generation ends at the first of them."""
        eos = self.tokenizer.eos_token_id
        return set(eos) if isinstance(eos, list) else {eos}

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` in the target tokenizer (no special tokens added)."""
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the model (backends with engines or processes override this)."""
