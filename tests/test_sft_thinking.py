"""build-sft for thinking models: the compressed thinking goes back inside the preset's think tags, the ratio
marker where the preset puts it, and the text after ``</think>`` is the original output's, byte for byte
(synthetic records of 200 to 16,000 tokens; no model)."""

from __future__ import annotations

import json

import pytest
from test_training import compress_words

from tokenskip.data.prompts import get_preset, split_answer
from tokenskip.training.sft import thinking_target
from tokenskip.verbs.build_sft import build_sft

ANSWERS = [
    "\n\nThe total is **42**.\n\n$\\boxed{42}$",
    "\n\nSo she has $7$ apples left — ünïcødé, tabs\tand CRLF\r\n\r\nFinal Answer: $\\boxed{7}$  \n",
    "Final: \\boxed{3}",  # no blank line after the tag
]


def thinking(n_words: int, seed: int) -> str:
    return " ".join(f"step {i}: add {i * seed % 97} to the running total, which gives {i * 3 + seed}." if i % 9 == 0
                    else f"w{i}" for i in range(n_words))  # fmt: skip


def write_records(root, preset_name: str, sizes=(45, 600, 2200)):
    """generate-style records (id, question, answer, cot = the thinking, output) and a compressed folder."""
    preset = get_preset(preset_name)
    opens = preset_name == "qwen3"  # Qwen3 writes <think> itself; R1's template already opened it
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, n in enumerate(sizes):
        think = "\n" + thinking(n, i + 1) + "\n"
        output = ("<think>" if opens else "") + think + preset.think_close + ANSWERS[i % len(ANSWERS)]
        assert split_answer(output, preset)[0] == think
        rows.append(
            {"id": f"r{i}", "question": f"Question {i}?", "answer": str(i), "cot": think, "output": output}
        )
    rows.append(
        {"id": "cut", "question": "Cut?", "answer": "1", "cot": "never closed", "output": "never closed"}
    )
    (root / "records.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
    )
    comp = root / "compressed"
    comp.mkdir()
    with (comp / "compressed_0.5.jsonl").open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps({"id": r["id"], "compressed_cot": compress_words(r["cot"], 0.5)}) + "\n")
    return root / "records.jsonl", comp, {r["id"]: r for r in rows}


@pytest.mark.parametrize("preset_name", ["r1-distill", "qwen3"])
def test_thinking_sft_keeps_the_text_after_the_thinking_byte_for_byte(
    tmp_path, preset_name, embedded_tokenizer
):
    original, comp, by_id = write_records(tmp_path / "in", preset_name)
    sizes = [len(embedded_tokenizer(r["cot"], add_special_tokens=False)["input_ids"]) for r in by_id.values()]
    assert min(sizes[:3]) >= 200 and max(sizes) <= 16_000 and max(sizes) > 8_000
    info = build_sft(str(original), str(comp), str(tmp_path / "sft"), preset=preset_name, delimiter="<|d|>",
                     every_ratio=True)  # fmt: skip
    assert info["issues"] == {"unclosed_thinking": 1, "unmatched_0.5": 1}  # the cut record is left out
    preset = get_preset(preset_name)
    rows = [json.loads(x) for x in (tmp_path / "sft" / "sft.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [(r["id"], r["ratio"]) for r in rows] == [(f"r{i}", g) for i in range(3) for g in (1.0, 0.5)]
    for r in rows:
        orig = by_id[r["id"]]["output"]
        after = orig.partition(preset.think_close)[2]
        assert r["output"].partition(preset.think_close)[2].encode() == after.encode()  # byte-identical
        assert r["output"].startswith("<think>") == orig.startswith("<think>")
        if r["ratio"] == 1.0:
            assert r["output"] == orig and r["input"] == r["question"]
        else:
            want = compress_words(by_id[r["id"]]["cot"], 0.5)
            assert split_answer(r["output"], preset) == ("\n" + want + "\n", after)
            assert r["input"] == r["question"] + "<|d|>0.5<|d|>"  # the marker ends the user turn


def test_thinking_target_keeps_what_surrounds_the_thinking():
    p = get_preset("qwen3")
    assert (
        thinking_target("  <think>\n\nlong one\n</think>\n\nA", "short", p)
        == "  <think>\n\nshort\n</think>\n\nA"
    )
    assert thinking_target("long one  </think>A</think>B", " s ", p) == "s  </think>A</think>B"
    with pytest.raises(ValueError, match="never closes"):
        thinking_target("<think>no end", "s", p)
