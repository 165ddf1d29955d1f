"""Thinking presets: exact prompt strings, the thinking switch, configurable tags, and bench's report columns."""

from __future__ import annotations

import json

import pytest
from jinja2 import Template

from tokenskip.data.prompts import PRESETS, PromptPreset, format_prompt, split_answer, split_cot
from tokenskip.eval.metrics import bench_markdown, method_summary

INSTR = "Please reason step by step, and put your final answer within \\boxed{}."

# The parts of the real templates that decide the prompt (DeepSeek-R1-Distill-Qwen's tokenizer_config.json
# and Qwen3's): R1 has no default system prompt and opens <think> in the generation prompt; Qwen3 writes
# an empty thinking block when enable_thinking is false and nothing otherwise.
R1_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'system' %}{{ m['content'] }}{% endif %}"
    "{% endfor %}{% for m in messages %}{% if m['role'] == 'user' %}{{ '<｜User｜>' + m['content'] }}"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<｜Assistant｜><think>\\n' }}{% endif %}"
)
QWEN3_TEMPLATE = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    "{% if enable_thinking is defined and enable_thinking is false %}{{ '<think>\\n\\n</think>\\n\\n' }}"
    "{% endif %}{% endif %}"
)


class JinjaTokenizer:
    """What ``render_chat`` uses of a tokenizer: ``apply_chat_template`` with extra template arguments."""

    def __init__(self, template: str, eos: str, bos: str = ""):
        self.chat_template, self.eos_token, self.bos_token = template, eos, bos

    def apply_chat_template(self, messages, tokenize, add_generation_prompt, **kwargs):
        assert tokenize is False
        return Template(self.chat_template).render(
            messages=messages, add_generation_prompt=add_generation_prompt, bos_token=self.bos_token, **kwargs
        )


def test_r1_distill_prompt_is_deepseeks_recommended_one():
    tok = JinjaTokenizer(R1_TEMPLATE, "<｜end▁of▁sentence｜>", "<｜begin▁of▁sentence｜>")
    assert format_prompt(tok, "Janet has 3 ducks.", None, "r1-distill") == (
        f"<｜begin▁of▁sentence｜><｜User｜>{INSTR}\nJanet has 3 ducks.<｜Assistant｜><think>\n"
    )
    # γ goes in the user turn, wrapped in the model's EOS token (no delimiter set)
    assert "ducks.<｜end▁of▁sentence｜>0.5<｜end▁of▁sentence｜><｜Assistant｜>" in format_prompt(
        tok, "Janet has 3 ducks.", 0.5, "r1-distill"
    )


def test_qwen3_thinking_switch_is_driven_by_the_preset():
    tok = JinjaTokenizer(QWEN3_TEMPLATE, "<|im_end|>")
    user = f"<|im_start|>user\n{INSTR}\nJanet has 3 ducks.<|im_end|>\n<|im_start|>assistant\n"
    assert format_prompt(tok, "Janet has 3 ducks.", None, "qwen3") == user
    assert format_prompt(tok, "Janet has 3 ducks.", None, "qwen3-nothink") == user + "<think>\n\n</think>\n\n"


def test_tags_are_configurable_per_preset():
    custom = PromptPreset(name="custom", think_open="<reasoning>", think_close="</reasoning>")
    out = "<reasoning>3 + 2 = 5</reasoning>The answer is \\boxed{5}."
    assert split_cot(out, custom) == "3 + 2 = 5"
    assert split_answer(out, custom) == ("3 + 2 = 5", "The answer is \\boxed{5}.")
    # R1: the template opened the block, so the output starts inside it; Qwen3: the model opens it
    r1 = "Let me add.\n</think>\n\nHe has \\boxed{5}."
    assert split_answer(r1, "r1-distill") == ("Let me add.\n", "\n\nHe has \\boxed{5}.")
    assert split_answer("<think>\n" + r1, "qwen3") == ("\nLet me add.\n", "\n\nHe has \\boxed{5}.")
    # the text after </think> is returned verbatim, even when it holds the answer separator or a second tag
    tail = "\n\nThe final answer is: $\\boxed{5}$ </think> x"
    assert split_answer("think" + "</think>" + tail, "r1-distill") == ("think", tail)
    assert split_cot("a\n\nThe final answer is: 5", PRESETS["default"]) == "a"


def test_bench_table_splits_thinking_and_answer_tokens():
    rows = [
        {"correct": True, "cot_tokens": 90, "thinking_tokens": 90, "answer_tokens": 10, "output_tokens": 100},
        {"correct": False, "cot_tokens": 50, "thinking_tokens": 50, "answer_tokens": 30, "output_tokens": 80},
    ]
    bf = [{**r, "forced": f, "thinking_budget": 64} for r, f in zip(rows, (True, False), strict=True)]
    orig = method_summary("original", rows, None)
    s = method_summary("budget-forcing@64", bf, orig["mean_cot_tokens"])
    assert (s["mean_thinking_tokens"], s["mean_answer_tokens"], s["forced_share"]) == (70.0, 20.0, 0.5)
    assert orig["forced_share"] is None
    plain = bench_markdown([orig])
    assert "thinking tokens" not in plain and "forced" not in plain
    thinking = bench_markdown([orig], thinking=True)
    assert "| CoT tokens | thinking tokens | answer tokens |" in thinking and "forced" not in thinking
    both = bench_markdown([orig, s])
    assert "answer tokens" in both and both.splitlines()[0].endswith("| thinking cut (forced) |")
    assert both.splitlines()[-1].endswith("| 50.0% |")


def test_report_of_a_thinking_run(tmp_path):
    from tokenskip.eval.report import render

    root = tmp_path / "run"
    (root / "records").mkdir(parents=True)
    meta = {"model": "m", "dataset": "d", "methods": ["original", "budget-forcing@8"], "batch_size": 2,
            "max_new_tokens": 32, "latency_samples": 0, "preset": "r1-distill", "thinking": True}  # fmt: skip
    (root / "run.json").write_text(json.dumps(meta))
    rec = {"id": "a", "correct": True, "cot_tokens": 20, "thinking_tokens": 20, "answer_tokens": 6,
           "output_tokens": 26, "latency_s": 1.0}  # fmt: skip
    (root / "records" / "original.jsonl").write_text(json.dumps(rec) + "\n")
    forced = {**rec, "thinking_tokens": 9, "cot_tokens": 9, "answer_tokens": 12, "forced": True}
    (root / "records" / "budget-forcing@8.jsonl").write_text(json.dumps(forced) + "\n")
    rows = render([root], root)
    assert [r["method"] for r in rows] == ["original", "budget-forcing@8"]
    assert rows[1]["mean_thinking_tokens"] == 9 and rows[1]["forced_share"] == 1.0
    md = (root / "results.md").read_text()
    assert "thinking tokens" in md and "answer tokens" in md and "thinking cut (forced)" in md
    header = (root / "results.csv").read_text().splitlines()[0].split(",")
    assert header[-3:] == ["mean_thinking_tokens", "mean_answer_tokens", "forced_share"]


@pytest.mark.parametrize("name", ["r1-distill", "qwen3", "qwen3-nothink"])
def test_presets_survive_the_adapter_record(name):
    p = PRESETS[name]
    assert PromptPreset.from_dict(json.loads(json.dumps(p.to_dict()))) == p


def test_an_adapter_record_without_the_thinking_fields_keeps_them():
    """``tokenskip train`` records name, delimiter, system, instruction and answer template only."""
    p = PRESETS["r1-distill"]
    record = {"name": "r1-distill", "delimiter": "<|im_end|>", "system": None, "instruction": p.instruction,
              "answer_template": p.answer_template}  # fmt: skip
    got = PromptPreset.from_dict(record)
    assert got.think_close == "</think>" and got.answer_cue == p.answer_cue and got.delimiter == "<|im_end|>"
    assert PromptPreset.from_dict({"name": "mine", "delimiter": "#"}).think_close is None
