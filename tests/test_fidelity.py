"""`tokenskip fidelity`: answer stripping, selection, per-cell arithmetic (no model), and a tiny end-to-end
run on the embedded model."""

import json

import pytest

from tokenskip.errors import UserError
from tokenskip.eval.fidelity import (
    FULL,
    NONE,
    fidelity_markdown,
    label,
    parse_scorers,
    plot_fidelity,
    select_records,
    strip_final_answer,
    summarize_cell,
)

COT = "Natalia sold 48/2 = 24 clips in May.\nIn total 48 + 24 = 72 clips."


@pytest.mark.parametrize(
    ("cot", "want"),
    [
        (COT + "\nSo she sold \\(\\boxed{72}\\) clips.", COT),
        (COT + "\n\nThe final answer is:\n\\[\n\\boxed{72}\n\\]", COT),
        (COT + "\n\nThe final answer is: $\\boxed{72}$", COT),
        ("She sold 48 + 24 = 72. The answer is \\boxed{72}.", "She sold 48 + 24 = 72."),
        ("\\boxed{72}", ""),
        (COT + "\n\n", COT),  # no box: only trailing space goes
        ("First \\boxed{1} then\n48 + 24 = 72\nTotal: \\boxed{72}", "First \\boxed{1} then\n48 + 24 = 72"),
    ],
)
def test_strip_final_answer(cot, want):
    assert strip_final_answer(cot) == want


def test_select_records_keeps_correct_cots_in_order():
    rows = [
        {"id": "a", "question": "q", "answer": "72", "cot": COT + "\n\\boxed{72}", "correct": True},
        {"id": "b", "question": "q", "answer": "1", "cot": "wrong", "correct": False},
        {"id": "c", "question": "q", "answer": "1", "cot": "\\boxed{1}", "correct": True},  # nothing left
        {"id": "d", "question": "q", "answer": "2", "cot": None, "correct": True},
        {"id": 5, "question": "q", "answer": "3", "cot": "1 + 2 = 3", "correct": True, "task": "gsm8k"},
        {"id": "f", "question": "q", "answer": "4", "cot": "2 + 2 = 4", "correct": True},
    ]
    got = select_records(rows)
    assert [r["id"] for r in got] == ["a", "5", "f"]
    assert got[0]["cot"] == COT and got[0]["source_cot"].endswith("\\boxed{72}")
    assert [r["id"] for r in select_records(rows, limit=2)] == ["a", "5"]


def test_parse_scorers_and_labels():
    got = parse_scorers("selfinfo, selfinfo:qwen2.5-coder-0.5b,random,truncation,llmlingua2?,random")
    assert got == [
        ("selfinfo", None, False),
        ("selfinfo", "qwen2.5-coder-0.5b", False),
        ("random", None, False),
        ("truncation", None, False),
        ("llmlingua2", None, True),
    ]
    assert label("selfinfo", "qwen2.5-coder-0.5b") == "selfinfo-qwen2.5-coder-0.5b"
    assert label("selfinfo", "/models/My Model/") == "selfinfo-My_Model"
    for bad, msg in (("foo", "unknown scorer"), ("random:x", "no checkpoint"), (" , ", "empty")):
        with pytest.raises(UserError, match=msg):
            parse_scorers(bad)


def test_summarize_cell_arithmetic():
    rows = [
        {"correct": True, "original_tokens": 100, "compressed_tokens": 50, "achieved_ratio": 0.5},
        {"correct": True, "original_tokens": 300, "compressed_tokens": 150, "achieved_ratio": 0.5},
        {"correct": False, "original_tokens": 100, "compressed_tokens": 60, "achieved_ratio": 0.6},
        {"correct": True, "original_tokens": 100, "compressed_tokens": 40, "achieved_ratio": 0.4},
    ]
    c = summarize_cell("random", 0.5, rows)
    assert (c["n"], c["correct"], c["accuracy"]) == (4, 3, 0.75)
    assert c["accuracy_low"] == pytest.approx(0.3006418, abs=1e-6)  # Wilson 3/4
    assert c["accuracy_high"] == pytest.approx(0.9544127, abs=1e-6)
    assert c["mean_achieved_ratio"] == pytest.approx(0.5)
    assert c["token_weighted_ratio"] == pytest.approx(300 / 600)
    assert c["mean_compressed_tokens"] == pytest.approx(75.0)
    empty = summarize_cell("random", 0.9, [])
    assert empty["n"] == 0 and empty["accuracy"] is None and empty["token_weighted_ratio"] is None


def test_table_and_plot(tmp_path):
    ok = {"correct": True, "original_tokens": 10, "compressed_tokens": 10, "achieved_ratio": 1.0}
    cells = [
        summarize_cell(FULL, 1.0, [ok] * 9 + [{**ok, "correct": False}]),
        summarize_cell(
            NONE, 0.0, [{**ok, "correct": False, "compressed_tokens": 0, "achieved_ratio": 0}] * 10
        ),
        summarize_cell("truncation", 0.5, [{**ok, "compressed_tokens": 5, "achieved_ratio": 0.5}] * 10),
        summarize_cell("random", 0.5, []),
    ]
    table = fidelity_markdown(cells)
    lines = table.splitlines()
    assert lines[0].startswith("| scorer | γ | n | answer accuracy | 95% CI |")
    assert lines[2] == "| full | 1 | 10 | 90.0% | 59.6-98.2% | 1.000 | 1.000 | 10.0 |"
    assert lines[3].startswith("| none | 0 | 10 | 0.0% | 0.0-27.8% |")
    assert lines[5] == "| random | 0.5 | 0 | - | - | - | - | - |"
    plot_fidelity(cells, tmp_path / "f.png")
    assert (tmp_path / "f.png").stat().st_size > 0


@pytest.mark.slow
def test_fidelity_end_to_end_on_embedded_model(tmp_path, embedded_model_dir):
    from tests.conftest import run_cli

    records = [
        {"id": "a", "question": "What is 2 + 3?", "answer": "5", "correct": True,
         "cot": "We add 2 and 3.\n2 + 3 = 5.\nSo the answer is \\boxed{5}."},
        {"id": "b", "question": "What is 4 * 2?", "answer": "8", "correct": True,
         "cot": "Four times two: 4 * 2 = 8, which is the product."},
        {"id": "c", "question": "What is 9 - 1?", "answer": "8", "correct": False, "cot": "9 - 1 = 7."},
    ]  # fmt: skip
    src = tmp_path / "gen.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "fid"
    args = ["fidelity", "--input", str(src), "--out", str(out), "--scorers", "selfinfo,random,truncation,llmlingua2?",
            "--ratios", "0.5", "--chunk", "1", "--max-new-tokens", "6", "--batch-size", "2"]  # fmt: skip
    proc = run_cli(*args, env={"HF_HUB_OFFLINE": "1"}, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads((out / "fidelity.json").read_text())
    cells = {(c["scorer"], c["ratio"]): c for c in data["cells"]}
    assert set(cells) == {(FULL, 1.0), (NONE, 0.0), ("selfinfo", 0.5), ("random", 0.5), ("truncation", 0.5)}
    assert all(c["n"] == 2 for c in cells.values())
    assert "llmlingua2" in data["skipped_scorers"]  # no weights offline: skipped, not fatal
    assert sorted(p["scorer"] for p in data["paired"]) == ["selfinfo", "truncation"]  # each vs random
    assert all(p["n"] == 2 and p["baseline"] == "random" for p in data["paired"])
    assert 0.3 < cells[("truncation", 0.5)]["mean_achieved_ratio"] < 0.7
    assert cells[(NONE, 0.0)]["mean_compressed_tokens"] == 0
    rows = [json.loads(x) for x in (out / "answers" / "truncation@0.5.jsonl").read_text().splitlines()]
    assert {r["id"] for r in rows} == {"a", "b"}
    for r in rows:
        assert "\\boxed{5}" not in r["cot"] and r["output"].endswith(r["answer_text"])
        assert "The final answer is: $\\boxed{" in r["output"] and r["output_tokens"] <= 6
    assert (out / "fidelity.png").stat().st_size > 0
    assert "| truncation | 0.5 | 2 |" in (out / "fidelity.md").read_text()
    again = run_cli(*args, env={"HF_HUB_OFFLINE": "1"}, timeout=900)  # resumes: nothing left to generate
    assert again.returncode == 0, again.stderr[-3000:]
    assert len((out / "answers" / "truncation@0.5.jsonl").read_text().splitlines()) == 2
    bad = run_cli(*args[:-4], "--max-new-tokens", "7", "--batch-size", "2")
    assert bad.returncode == 2 and "other settings" in bad.stderr


def test_cache_order_puts_prefix_sharing_cells_together():
    from tokenskip.verbs.fidelity import cache_order

    cells = [(FULL, 1.0), (NONE, 0.0), ("selfinfo", 0.9), ("truncation", 0.9), ("random", 0.5)]
    got = [c[0] for c in sorted([(n, r, None, None) for n, r in cells], key=cache_order)]
    assert got == [FULL, "truncation", "selfinfo", "random", NONE]


def test_mcnemar_and_pairs():
    from tokenskip.eval.fidelity import mcnemar_exact, paired, paired_markdown

    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(5, 0) == pytest.approx(2 / 32)
    assert mcnemar_exact(10, 2) == pytest.approx(2 * (1 + 12 + 66) / 4096)
    assert mcnemar_exact(3, 3) == 1.0 and mcnemar_exact(2, 10) == mcnemar_exact(10, 2)
    a = [{"id": i, "correct": c} for i, c in enumerate([True, True, True, False, False])]
    b = [{"id": i, "correct": c} for i, c in enumerate([True, False, False, True])]  # id 4 not answered
    p = paired("selfinfo", 0.5, a, "random", b)
    assert (p["n"], p["only_scorer"], p["only_baseline"]) == (4, 2, 1)
    assert p["p_value"] == pytest.approx(1.0)
    assert "| selfinfo | random | 0.5 | 4 | 2 | 1 | 1 |" in paired_markdown([p])
