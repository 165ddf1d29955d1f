"""95% Wilson intervals of accuracies in eval/bench/report (pure arithmetic; no model)."""

import csv
import json

import pytest

from tokenskip.eval.metrics import (
    accuracy_fields,
    bench_markdown,
    format_interval,
    markdown_table,
    method_summary,
    summarize,
    wilson_interval,
)
from tokenskip.eval.report import csv_columns, error_bars


@pytest.mark.parametrize(
    ("k", "n", "low", "high"),
    [
        # reference values: the roots p of (k/n - p)^2 = z^2 p (1 - p) / n (the score test inverted)
        (0, 10, 0.0, 0.2775328),
        (10, 10, 0.7224672, 1.0),
        (5, 10, 0.2365931, 0.7634069),
        (53, 200, 0.2086815, 0.3301758),
        (1, 1, 0.2065493, 1.0),
        (0, 1, 0.0, 0.7934507),
        (500, 1000, 0.4690696, 0.5309304),
    ],
)
def test_wilson_known_values(k, n, low, high):
    lo, hi = wilson_interval(k, n)
    assert lo == pytest.approx(low, abs=1e-6) and hi == pytest.approx(high, abs=1e-6)
    assert 0.0 <= lo <= k / n <= hi <= 1.0


def test_wilson_edges_and_bad_input():
    assert wilson_interval(0, 0) is None
    lo, hi = wilson_interval(53, 200)
    assert lo < 53 / 200 < hi
    # symmetric: k of n vs n - k of n
    a, b = wilson_interval(3, 17), wilson_interval(14, 17)
    assert a[0] == pytest.approx(1 - b[1]) and a[1] == pytest.approx(1 - b[0])
    narrow, wide = wilson_interval(50, 100), wilson_interval(5, 10)
    assert narrow[1] - narrow[0] < wide[1] - wide[0]
    for k, n in ((-1, 5), (6, 5), (0, -1)):
        with pytest.raises(ValueError):
            wilson_interval(k, n)


def test_accuracy_fields_and_summaries():
    assert accuracy_fields([]) == {
        "accuracy": None,
        "accuracy_low": None,
        "accuracy_high": None,
        "n_graded": 0,
    }
    f = accuracy_fields([True] * 5 + [False] * 5)
    assert f["accuracy"] == 0.5 and f["accuracy_low"] == pytest.approx(0.2365931, abs=1e-6)
    rows = [{"correct": True, "cot_tokens": 10}, {"correct": False, "cot_tokens": 30}, {"cot_tokens": 5}]
    s = summarize(rows)
    assert s["n"] == 3 and s["n_graded"] == 2 and s["accuracy"] == 0.5
    assert s["accuracy_low"] == pytest.approx(wilson_interval(1, 2)[0])
    m = method_summary("original", rows, None)
    assert (m["accuracy_low"], m["accuracy_high"]) == (s["accuracy_low"], s["accuracy_high"])
    assert format_interval(0.2086815, 0.3301758) == "20.9-33.0%" and format_interval(None, 1) == "-"


def test_tables_show_the_interval():
    rows = [{"correct": c} for c in [True] * 53 + [False] * 147]
    table = bench_markdown([method_summary("original", rows, None)])
    header, _, row = table.splitlines()
    assert header.startswith("| method | n | accuracy | 95% CI | CoT tokens |")
    assert row.startswith("| original | 200 | 26.5% | 20.9-33.0% |")
    plain = markdown_table({"f.jsonl": summarize(rows)})
    assert "| accuracy | 95% CI |" in plain and "| 26.5% | 20.9-33.0% |" in plain
    assert "| - |" in bench_markdown([method_summary("x", [{"cot_tokens": 1}], None)])


def test_error_bars_and_csv_columns():
    rows = [{"accuracy": 0.5, "accuracy_low": 0.25, "accuracy_high": 0.8}, {"accuracy": 1.0}]
    lows, highs = error_bars(rows)
    assert lows == pytest.approx([25.0, 0.0]) and highs == pytest.approx([30.0, 0.0])
    cols = csv_columns()
    assert cols[:4] == ["run", "n", "accuracy", "accuracy_low"] and "accuracy_ci" not in cols


def test_report_writes_intervals(tmp_path):
    from tokenskip.eval.report import render

    root = tmp_path / "run"
    (root / "records").mkdir(parents=True)
    (root / "run.json").write_text(json.dumps({"model": "m", "dataset": "d", "methods": ["original"]}))
    recs = [{"id": str(i), "correct": i < 5, "cot_tokens": 10, "output_tokens": 12} for i in range(10)]
    (root / "records" / "original.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    render([root], root)
    row = json.loads((root / "results.json").read_text())["runs"][0]["methods"][0]
    assert row["accuracy_low"] == pytest.approx(0.2365931, abs=1e-6)
    with (root / "results.csv").open() as f:
        got = next(csv.DictReader(f))
    assert float(got["accuracy_high"]) == pytest.approx(0.7634069, abs=1e-6)
    assert "23.7-76.3%" in (root / "results.md").read_text()
    assert (root / "accuracy_vs_tokens.png").stat().st_size > 0
