"""Benchmark arithmetic and method rules on hand-made records (no model)."""

import json

import pytest

from tokenskip.data.prompts import PRESETS
from tokenskip.errors import UserError
from tokenskip.eval.metrics import act_ratio, bench_markdown, budget_adherence, method_summary, throughput
from tokenskip.methods import execution_order, get_method, parse_methods
from tokenskip.methods.truncation import truncation_budget


def test_parse_methods_and_order():
    ms = parse_methods("tokenskip@0.5, beconcise,truncation@0.5,tokenskip@0.5,lc-prompt@0.5,tale-ep")
    assert [m.name for m in ms] == [
        "tokenskip@0.5",
        "beconcise",
        "truncation@0.5",
        "lc-prompt@0.5",
        "tale-ep",
    ]
    order = [m.name for m in execution_order(ms)]
    assert order[0] == "original" and order[-1] == "tokenskip@0.5"
    for bad, msg in [
        ("tokenskip", "needs a ratio"),
        ("beconcise@0.5", "takes no argument"),
        ("foo", "unknown method"),
        ("tokenskip@1.5", r"\(0, 1\]"),
        ("", "empty"),
    ]:
        with pytest.raises(UserError, match=msg):
            parse_methods(bad)


def test_baseline_prompts_follow_the_paper():
    base = PRESETS["default"]
    lc = get_method("lc-prompt@0.5").preset(base)
    assert lc.instruction.endswith(" Please reduce 50% of the words in your Chain-of-Thought process.")
    assert (
        get_method("lc-prompt@0.7")
        .preset(base)
        .instruction.endswith("reduce 30% of the words in your Chain-of-Thought process.")
    )
    assert get_method("beconcise").preset(base).instruction.endswith(" Be concise.")
    assert get_method("onlynumbers").preset(base).instruction.endswith(" Only use numbers or equations.")
    assert (
        get_method("abbrewords").preset(base).instruction.endswith(" Abbreviate words as much as possible.")
    )
    assert get_method("tokenskip@0.5").preset(base) == base
    assert (
        get_method("tokenskip@0.5").prompt_ratio() == 0.5 and get_method("beconcise").prompt_ratio() is None
    )
    assert (
        truncation_budget(0.5, 101) == 50
        and truncation_budget(0.5, 1) == 1
        and truncation_budget(0.9, 0) == 1
    )


def test_act_ratio_uses_cot_tokens_not_output_tokens():
    # cot_tokens exclude the answer part ("\n\nThe final answer is: ..."), output_tokens include it
    original = [
        {"id": "a", "correct": True, "cot_tokens": 100, "output_tokens": 120, "latency_s": 2.0},
        {"id": "b", "correct": False, "cot_tokens": 200, "output_tokens": 220, "latency_s": 2.0},
    ]
    half = [
        {"id": "a", "correct": True, "cot_tokens": 40, "output_tokens": 60, "latency_s": 1.0},
        {"id": "b", "correct": True, "cot_tokens": 80, "output_tokens": 100, "latency_s": 1.0},
    ]
    orig = method_summary("original", original, None)
    assert orig["mean_cot_tokens"] == 150 and orig["act_ratio"] is None
    s = method_summary(
        "tokenskip@0.5",
        half,
        orig["mean_cot_tokens"],
        0.5,
        batch1_rows=[{"latency_s": 3.0}, {"latency_s": 5.0}],
        batch_size=8,
    )
    assert s["act_ratio"] == pytest.approx(60 / 150)
    assert s["accuracy"] == 1.0 and s["requested_ratio"] == 0.5
    assert s["latency_batch1_s"] == 4.0 and s["latency_batch1_n"] == 2
    assert s["latency_batched_s"] == 1.0 and s["batch_size"] == 8
    assert s["throughput_tok_s"] == pytest.approx(160 / 2.0)
    assert act_ratio(None, 10) is None and act_ratio(5, 0) is None


def test_budget_adherence_and_table_labels():
    rows = [{"budget": 50, "output_tokens": 40}, {"budget": 50, "output_tokens": 70}, {"output_tokens": 3}]
    assert budget_adherence(rows) == (0.5, 50.0)
    assert budget_adherence([{"output_tokens": 1}]) == (None, None)
    assert throughput([]) is None
    table = bench_markdown([method_summary("tale-ep", rows, 100.0)])
    assert "latency s/sample (batch 1)" in table and "latency s/sample (batched)" in table
    assert "throughput tok/s (batched)" in table and "| tale-ep |" in table


def test_report_renders_saved_results(tmp_path):
    from tests.conftest import run_cli

    root = tmp_path / "run"
    (root / "records").mkdir(parents=True)
    (root / "run.json").write_text(
        json.dumps(
            {
                "model": "m",
                "dataset": "d",
                "methods": ["original", "tokenskip@0.5", "truncation@0.5"],
                "batch_size": 4,
                "max_new_tokens": 64,
                "latency_samples": 1,
            }
        )
    )

    def write(name, rows):
        (root / "records" / name).write_text("".join(json.dumps(r) + "\n" for r in rows))

    write(
        "original.jsonl",
        [{"id": "a", "correct": True, "cot_tokens": 100, "output_tokens": 110, "latency_s": 1.0}],
    )
    write(
        "tokenskip@0.5.jsonl",
        [{"id": "a", "correct": False, "cot_tokens": 55, "output_tokens": 65, "latency_s": 0.5}],
    )
    write(
        "tokenskip@0.5.b1.jsonl",
        [{"id": "a", "correct": False, "cot_tokens": 55, "output_tokens": 65, "latency_s": 0.9}],
    )
    write(
        "original.b1.jsonl",
        [{"id": "a", "correct": True, "cot_tokens": 100, "output_tokens": 110, "latency_s": 1.8}],
    )
    proc = run_cli("report", str(root), str(root), "--out", str(tmp_path / "both"))
    assert proc.returncode == 0, proc.stderr
    data = json.loads((tmp_path / "both" / "results.json").read_text())
    methods = data["runs"][0]["methods"]
    assert [m["method"] for m in methods] == ["original", "tokenskip@0.5"]  # truncation has no records yet
    assert methods[1]["act_ratio"] == pytest.approx(0.55) and methods[1]["latency_batch1_s"] == 0.9
    assert methods[1]["speedup_batch1"] == pytest.approx(2.0)  # original's batch-1 latency over the method's
    assert "speedup vs original (batch 1)" in (tmp_path / "both" / "results.md").read_text()
    assert len(data["runs"]) == 2
    for f in ("results.md", "results.csv", "accuracy_vs_tokens.png", "ratio_adherence.png"):
        assert (tmp_path / "both" / f).stat().st_size > 0
    bad = run_cli("report", str(tmp_path))
    assert bad.returncode == 2 and "no run.json" in bad.stderr


def test_ratio_adherence_lines_come_from_the_methods():
    from tokenskip.eval.report import ratio_points
    from tokenskip.methods import method_class

    rows = [
        {"method": m, "requested_ratio": g, "act_ratio": a}
        for m, g, a in [
            ("original", None, 1.0), ("tokenskip@0.9", 0.9, 0.8), ("tokenskip@0.5", 0.5, 0.6),
            ("truncation@0.5", 0.5, 0.5), ("lc-prompt@0.5", 0.5, None), ("beconcise", None, 0.7),
            ("budget-forcing@8+wait2", None, 0.4),
        ]
    ]  # fmt: skip
    lines = ratio_points(rows)
    assert lines == {
        method_class("tokenskip"): [(0.5, 0.6), (0.9, 0.8)],
        method_class("truncation"): [(0.5, 0.5)],
    }
    assert [cls.marker for cls in lines] == ["o", "s"] and method_class("lc-prompt").marker == "^"


@pytest.mark.slow
def test_bench_end_to_end_on_embedded_model(tmp_path, embedded_model_dir):
    from tests.conftest import run_cli

    out = tmp_path / "bench"
    args = [
        "bench",
        "--dataset",
        "sample",
        "--limit",
        "2",
        "--max-new-tokens",
        "16",
        "--batch-size",
        "2",
        "--latency-samples",
        "1",
        "--methods",
        "tokenskip@0.5,truncation@0.5,beconcise,tale-ep",
        "--out",
        str(out),
    ]
    proc = run_cli(*args, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads((out / "results.json").read_text())
    names = [m["method"] for m in data["runs"][0]["methods"]]
    assert names == ["original", "truncation@0.5", "beconcise", "tale-ep", "tokenskip@0.5"]
    for f in ("results.md", "results.csv", "accuracy_vs_tokens.png", "ratio_adherence.png"):
        assert (out / f).stat().st_size > 0
    orig = {
        json.loads(line)["id"]: json.loads(line)
        for line in (out / "records" / "original.jsonl").read_text().splitlines()
    }
    for line in (out / "records" / "truncation@0.5.jsonl").read_text().splitlines():
        r = json.loads(line)
        assert r["budget"] == max(1, round(0.5 * orig[r["id"]]["output_tokens"]))
        assert r["output_tokens"] <= r["budget"]
    tale = [json.loads(line) for line in (out / "records" / "tale-ep.jsonl").read_text().splitlines()]
    assert all(r["budget"] >= 1 and r["total_output_tokens"] >= r["output_tokens"] for r in tale)
    # resume: drop one method's last record, re-run, and only that record is generated again
    p = out / "records" / "beconcise.jsonl"
    lines = p.read_text().splitlines()
    p.write_text("\n".join(lines[:-1]) + "\n")
    again = run_cli(*args, timeout=1500)
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(p.read_text().splitlines()) == 2
    assert [json.loads(x)["id"] for x in p.read_text().splitlines()] == [json.loads(x)["id"] for x in lines]
