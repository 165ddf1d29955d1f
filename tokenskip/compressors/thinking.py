"""Thinking-aware compression of any text field (pure: no I/O, no model).

Reasoning datasets written by other tools hold a thinking model's whole output in one field:
``<think>\\n…thinking…\\n</think>\\n\\nanswer``. :func:`split_think` cuts such a text into three parts:

* ``head``: everything before the thinking, kept verbatim: text before the open tag, the open tag and the
  whitespace after it (an output whose chat template opened the block has no open tag: the head is then
  only leading whitespace);
* ``thinking``: what ``compress`` prunes and what γ and ``achieved_ratio`` count;
* ``tail``: everything after the thinking, kept verbatim: the whitespace before the close tag, the close
  tag and the answer after it.

An open tag without a close tag (a generation cut at its token limit) makes the rest of the text thinking.
Only the first thinking block counts: everything after its close tag, later tags included, is the tail.
:meth:`ThinkSplit.join` puts a (compressed) thinking back between the head and the tail.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tokenskip.errors import UserError


@dataclass(frozen=True)
class ThinkTags:
    """The tags around a thinking block."""

    open: str
    close: str

    def to_list(self) -> list[str]:
        return [self.open, self.close]


DEFAULT_TAGS = ThinkTags("<think>", "</think>")
OFF = ("none", "off", "")


def resolve_think_tags(think_tags: str | Sequence[str] | None = None, preset: Any = None) -> ThinkTags | None:
    """The tags to look for: ``think_tags`` (``"OPEN,CLOSE"`` or a pair; ``none`` turns detection off), else
    the preset's (a name or a PromptPreset) ``think_open``/``think_close`` (none for a preset without
    thinking tags), else
    ``<think>``/``</think>``."""
    if think_tags is not None:
        if isinstance(think_tags, str):
            if think_tags.strip().lower() in OFF:
                return None
            parts = [t.strip() for t in think_tags.split(",")]
        else:
            parts = [str(t).strip() for t in think_tags]
        if len(parts) != 2 or not all(parts) or parts[0] == parts[1]:
            raise UserError(
                f"--think_tags must be two different tags, open and close, e.g. '<think>,</think>' "
                f"(or 'none'), got {think_tags!r}"
            )
        return ThinkTags(parts[0], parts[1])
    if preset is not None:
        from tokenskip.data.prompts import get_preset

        p = get_preset(preset)
        if not p.think_close:
            return None
        return ThinkTags(p.think_open or DEFAULT_TAGS.open, p.think_close)
    return DEFAULT_TAGS


@dataclass(frozen=True)
class ThinkSplit:
    """A text cut around its thinking: ``head + thinking + tail == text``."""

    head: str
    thinking: str
    tail: str
    closed: bool

    def join(self, thinking: str) -> str:
        """The text with its thinking replaced by ``thinking`` (the head and the tail verbatim)."""
        return self.head + thinking + self.tail

    def surrounds(self, text: str) -> bool:
        """Whether ``text`` keeps this head and tail around its (compressed) thinking."""
        fits = len(text) >= len(self.head) + len(self.tail)
        return fits and text.startswith(self.head) and text.endswith(self.tail)


def split_think(text: str, tags: ThinkTags | None) -> ThinkSplit | None:
    """``text`` cut around its thinking block, or None when it holds neither tag (or ``tags`` is None).

    The open tag counts when it comes before the first close tag; a close tag without an open tag before
    it (the chat template opened the block) makes everything before it thinking.
    """
    if tags is None:
        return None
    o = text.find(tags.open)
    c = text.find(tags.close)
    if o >= 0 and (c < 0 or o < c):
        start = o + len(tags.open)
        c = text.find(tags.close, start)
    elif c >= 0:
        start = 0
    else:
        return None
    end = c if c >= 0 else len(text)
    inner = text[start:end]
    lead = len(inner) - len(inner.lstrip())
    thinking = inner.strip()
    head = text[: start + lead]
    tail = text[start + lead + len(thinking) :]
    return ThinkSplit(head, thinking, tail, c >= 0)


@dataclass(frozen=True)
class ReadSpec:
    """How ``compress`` reads a row's text: which generations of the field (``pick``, see
    :mod:`tokenskip.data.generations`) and the think tags to look for (None: no thinking detection)."""

    pick: str = "all"
    correct_field: str | None = None
    tags: ThinkTags | None = DEFAULT_TAGS
