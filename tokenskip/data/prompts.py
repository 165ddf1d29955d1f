"""Prompt presets: the one place where the question, the ratio and the answer suffix become text.

Training (build-sft), inference (generate/infer/serve) and the benchmark all call :func:`format_prompt`
and :func:`format_target`, so a model is always served with exactly the prompt it was trained on.

TokenSkip's format (arXiv 2502.12067): the user message is ``instruction + "\\n" + question``; for a
ratio γ < 1 the message ends with ``<delim>γ<delim>`` (γ written like ``0.5``). The target is the
(compressed) CoT followed by ``"\\n\\nThe final answer is: $\\boxed{ANSWER}$"``.

Thinking models (DeepSeek-R1-Distill, Qwen3 with ``enable_thinking``, QwQ) write their CoT inside
``<think>…</think>``; their presets name the tags, and the CoT is the thinking block (:func:`split_thinking`).
``docs/thinking.md`` lists every preset's exact prompt strings.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from tokenskip.errors import UserError

COT_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
ANSWER_SEPARATOR = "\n\nThe final answer is:"
# what a thinking preset's forced answer opens with, after "</think>" (s1's "Final Answer:", then a box)
THINKING_ANSWER_CUE = "Final Answer: $\\boxed{"


@dataclass(frozen=True)
class PromptPreset:
    """How prompts and targets are written.

    Attributes:
        name: preset name used on the command line (``--preset``).
        instruction: text placed before the question (empty string for none).
        system: system message; ``None`` keeps the chat template's own default.
        delimiter: wraps γ in the prompt; ``None`` means the tokenizer's EOS token.
        answer_template: appended to the CoT in training targets; ``{answer}`` is the final answer.
        anchor: TELL's anchor prompt (arXiv 2404.00914): one fixed instruction put before the task prompt
            of every task example; ``None`` for none.
        think_open / think_close: the tags around a thinking model's reasoning (``<think>``/``</think>``);
            ``None`` for models without a thinking block (the CoT then ends at the answer separator).
        chat_template_kwargs: extra arguments for the tokenizer's chat template (e.g. Qwen3's
            ``{"enable_thinking": true}``).
        answer_cue: the text that opens a forced answer (budget forcing): appended to a CoT cut at its
            budget, after the closed thinking block for thinking presets (see :func:`forced_answer`). It
            ends in ``\\boxed{`` so the forced answer is gradeable.
    """

    name: str
    instruction: str = COT_INSTRUCTION
    system: str | None = None
    delimiter: str | None = None
    answer_template: str = ANSWER_SEPARATOR + " $\\boxed{{{answer}}}$"
    anchor: str | None = None
    think_open: str | None = None
    think_close: str | None = None
    chat_template_kwargs: dict[str, Any] = field(default_factory=dict)
    answer_cue: str = ANSWER_SEPARATOR + " $\\boxed{"

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict (what ``tokenskip_adapter.json`` records)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PromptPreset:
        """A preset from a recorded dict; fields this version does not know are ignored, and fields the
        record lacks (a record written before they existed) come from the built-in preset of that name."""
        from dataclasses import replace

        known = {f.name for f in fields(cls)}
        given = {k: v for k, v in d.items() if k in known}
        base = PRESETS.get(str(given.get("name")))
        return replace(base, **given) if base is not None else cls(**given)


PRESETS: dict[str, PromptPreset] = {
    # The model's own chat template and system prompt; γ wrapped in the model's EOS token.
    "default": PromptPreset(name="default"),
    # Byte-for-byte the prompt of the original TokenSkip release (and its published LoRA adapters for
    # Qwen2.5-3B/7B/14B-Instruct on GSM8K): fixed system prompt and the literal <|eot_id|> delimiter for
    # every model family.
    "tokenskip": PromptPreset(
        name="tokenskip", system="You are a helpful assistant.", delimiter="<|eot_id|>"
    ),
    # DeepSeek-R1-Distill-Qwen/Llama (and any model whose template opens <think>, e.g. QwQ): DeepSeek's usage
    # recommendations: no system prompt, the math directive in the user turn. The chat template's
    # generation prompt already ends in "<｜Assistant｜><think>\n": the output is thinking, "</think>", answer.
    "r1-distill": PromptPreset(
        name="r1-distill",
        think_open="<think>",
        think_close="</think>",
        answer_cue=THINKING_ANSWER_CUE,
    ),
    # Qwen3 with thinking on (enable_thinking=True, the template's default): the model opens <think> itself.
    "qwen3": PromptPreset(
        name="qwen3",
        think_open="<think>",
        think_close="</think>",
        chat_template_kwargs={"enable_thinking": True},
        answer_cue=THINKING_ANSWER_CUE,
    ),
    # Qwen3 with thinking off: the template writes an empty "<think>\n\n</think>\n\n" into the prompt, and
    # the output is a plain CoT that ends in the answer (no thinking block).
    "qwen3-nothink": PromptPreset(name="qwen3-nothink", chat_template_kwargs={"enable_thinking": False}),
}


def get_preset(name: PromptPreset | str) -> PromptPreset:
    """A preset by name (a :class:`PromptPreset` passes through unchanged, e.g. one read from an adapter)."""
    if isinstance(name, PromptPreset):
        return name
    if name not in PRESETS:
        raise UserError(f"unknown prompt preset '{name}' (known: {', '.join(PRESETS)})")
    return PRESETS[name]


def check_ratio(ratio: float) -> float:
    """Validate γ: a float in (0, 1]."""
    try:
        value = float(ratio)
    except (TypeError, ValueError):
        raise UserError(f"compression ratio must be a number in (0, 1], got {ratio!r}") from None
    if not 0.0 < value <= 1.0:
        raise UserError(f"compression ratio must be in (0, 1], got {ratio}")
    return value


def format_ratio(ratio: float) -> str:
    """γ as TokenSkip writes it: ``0.5``, ``0.9`` (no trailing zeros beyond one decimal)."""
    return repr(round(float(ratio), 4))


def user_message(question: str, ratio: float | None, preset: PromptPreset, eos_token: str | None) -> str:
    """The user turn: anchor, instruction, question and, for γ < 1, ``<delim>γ<delim>``."""
    text = f"{preset.instruction}\n{question}" if preset.instruction else question
    if preset.anchor:
        text = f"{preset.anchor}\n\n{text}"
    if ratio is not None and check_ratio(ratio) < 1.0:
        delim = preset.delimiter if preset.delimiter is not None else eos_token
        if not delim:
            raise UserError("the tokenizer has no EOS token: set a delimiter in the prompt preset")
        text += f"{delim}{format_ratio(ratio)}{delim}"
    return text


def chat_messages(
    question: str,
    ratio: float | None = None,
    preset: PromptPreset | str = "default",
    eos_token: str | None = None,
) -> list[dict[str, str]]:
    p = get_preset(preset)
    messages = []
    if p.system is not None:
        messages.append({"role": "system", "content": p.system})
    messages.append({"role": "user", "content": user_message(question, ratio, p, eos_token)})
    return messages


def format_prompt(
    tokenizer: Any, question: str, ratio: float | None = None, preset: PromptPreset | str = "default"
) -> str:
    """The full prompt string (chat template applied, generation prompt added)."""
    p = get_preset(preset)
    return render_chat(tokenizer, chat_messages(question, ratio, p, getattr(tokenizer, "eos_token", None)), p)


def render_chat(
    tokenizer: Any, messages: list[dict[str, str]], preset: PromptPreset | str = "default"
) -> str:
    """Messages as one prompt string: the chat template (generation prompt added, the preset's template
    arguments passed), or plain text turns for models without a template."""
    if getattr(tokenizer, "chat_template", None):
        kwargs = get_preset(preset).chat_template_kwargs
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, **kwargs)
    return "\n\n".join(m["content"] for m in messages) + "\n\n"


def format_target(cot: str, answer: str, preset: PromptPreset | str = "default") -> str:
    """Training target: the (compressed) CoT, then the never-compressed final-answer sentence."""
    p = get_preset(preset)
    return cot.rstrip() + p.answer_template.format(answer=answer)


def split_thinking(output: str, preset: PromptPreset) -> tuple[str, str] | None:
    """``(thinking, after)`` of a thinking model's output, or None for presets without thinking tags.

    The thinking is the text between the open tag (which the chat template's generation prompt may already
    hold, so it may be absent from the output) and the close tag; ``after`` is everything after the close
    tag, verbatim. An output whose thinking never closed (cut at the token limit) is all thinking.
    """
    if not preset.think_close:
        return None
    text = output
    if preset.think_open:
        stripped = text.lstrip()
        if stripped.startswith(preset.think_open):
            text = stripped[len(preset.think_open) :]
    thinking, closed, after = text.partition(preset.think_close)
    return (thinking, after) if closed else (text, "")


def split_cot(output: str, preset: PromptPreset | str | None = None) -> str:
    """The CoT part of a model output: the thinking block for thinking presets, else everything before
    ``"\\n\\nThe final answer is:"`` (TokenSkip)."""
    if preset is not None:
        parts = split_thinking(output, get_preset(preset))
        if parts is not None:
            return parts[0]
    return output.split(ANSWER_SEPARATOR)[0]


def split_answer(output: str, preset: PromptPreset | str | None = None) -> tuple[str, str]:
    """``(cot, answer)``: the CoT as :func:`split_cot` gives it, and the answer part of the output: the text
    after the close tag for thinking presets, else everything from ``"\\n\\nThe final answer is:"`` on."""
    if preset is not None:
        parts = split_thinking(output, get_preset(preset))
        if parts is not None:
            return parts
    cot = split_cot(output)
    return cot, output[len(cot) :]


def thinking_end(preset: PromptPreset | str) -> str:
    """The text that ends the CoT when the model ends it itself: the close tag, else the answer separator."""
    p = get_preset(preset)
    return p.think_close or ANSWER_SEPARATOR


def forced_answer(preset: PromptPreset | str) -> str:
    """What budget forcing appends to a CoT cut at its budget: ``"\\n" + close tag + "\\n\\n"`` and the
    answer cue for thinking presets (``"\\n</think>\\n\\nFinal Answer: $\\boxed{"``), the answer cue alone
    otherwise (``"\\n\\nThe final answer is: $\\boxed{"``)."""
    p = get_preset(preset)
    if p.think_close:
        return f"\n{p.think_close}\n\n{p.answer_cue}"
    return p.answer_cue
