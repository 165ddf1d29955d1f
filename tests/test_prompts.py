import pytest

from tokenskip.data.prompts import (
    PRESETS,
    chat_messages,
    check_ratio,
    format_prompt,
    format_ratio,
    format_target,
    split_cot,
)
from tokenskip.errors import UserError

INSTR = "Please reason step by step, and put your final answer within \\boxed{}."


def test_tokenskip_preset_messages_match_original_release():
    msgs = chat_messages("What is 2+2?", 0.5, "tokenskip")
    assert msgs == [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": f"{INSTR}\nWhat is 2+2?<|eot_id|>0.5<|eot_id|>"},
    ]
    assert chat_messages("Q", 1.0, "tokenskip")[1]["content"] == f"{INSTR}\nQ"
    assert chat_messages("Q", None, "tokenskip")[1]["content"] == f"{INSTR}\nQ"


def test_default_preset_uses_eos_delimiter():
    msgs = chat_messages("Q", 0.7, "default", eos_token="</s>")
    assert msgs == [{"role": "user", "content": f"{INSTR}\nQ</s>0.7</s>"}]
    with pytest.raises(UserError, match="EOS"):
        chat_messages("Q", 0.7, "default", eos_token=None)


def test_ratio_validation_and_format():
    assert [format_ratio(r) for r in (0.5, 0.9, 0.70000001, 1.0)] == ["0.5", "0.9", "0.7", "1.0"]
    for bad in (0, -0.1, 1.5, "abc", float("nan")):
        with pytest.raises(UserError, match=r"\(0, 1\]"):
            check_ratio(bad)
    with pytest.raises(UserError, match="unknown prompt preset"):
        chat_messages("Q", None, "nope")


def test_target_and_split():
    t = format_target("Step 1.\nStep 2.\n", "18")
    assert t == "Step 1.\nStep 2.\n\nThe final answer is: $\\boxed{18}$"
    assert split_cot(t) == "Step 1.\nStep 2."
    assert set(PRESETS) >= {"default", "tokenskip"}


def test_qwen_chat_template_reproduces_tokenskip_prompt():
    """With Qwen2.5's chat template, the tokenskip preset gives TokenSkip's evaluation prompt byte for byte."""
    from jinja2 import Template

    qwen = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )

    class Tok:
        eos_token = "<|im_end|>"
        chat_template = qwen

        def apply_chat_template(self, messages, tokenize, add_generation_prompt):
            return Template(qwen).render(messages=messages, add_generation_prompt=add_generation_prompt)

    expected = (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        f"{INSTR}\nJanet has 3 ducks.<|eot_id|>0.6<|eot_id|><|im_end|>\n<|im_start|>assistant\n"
    )
    assert format_prompt(Tok(), "Janet has 3 ducks.", 0.6, "tokenskip") == expected


@pytest.mark.slow
def test_embedded_tokenizer_prompt(embedded_tokenizer):
    p = format_prompt(embedded_tokenizer, "What is 1+1?", 0.5)
    assert p.endswith("What is 1+1?<|im_end|>0.5<|im_end|><|im_end|>\n<|im_start|>assistant\n")
