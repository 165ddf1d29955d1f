"""User-facing errors: one line on stderr naming the problem, exit status 2, never a traceback."""

import json

import pytest

from tests.conftest import run_cli


def assert_one_line_error(proc, *needles):
    assert proc.returncode == 2, proc.stderr
    err = [line for line in proc.stderr.splitlines() if line.strip()]
    assert "Traceback" not in proc.stderr
    assert len(err) == 1, proc.stderr
    assert err[0].startswith("tokenskip: error:")
    for n in needles:
        assert n in err[0], err[0]


def test_help_lists_verbs():
    proc = run_cli("--help")
    assert proc.returncode == 0
    for verb in ("generate", "filter", "eval", "models"):
        assert verb in proc.stdout


def test_missing_file(tmp_path):
    assert_one_line_error(
        run_cli("generate", "--dataset", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "o.jsonl")),
        "nope.jsonl",
        "not found",
    )


def test_malformed_jsonl_line(tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text('{"question": "q", "answer": "1", "output": "\\\\boxed{1}"}\n{"question": oops}\n')
    assert_one_line_error(
        run_cli("generate", "--dataset", str(f), "--out", str(tmp_path / "o.jsonl")),
        "bad.jsonl:2",
        "malformed",
    )
    assert_one_line_error(run_cli("eval", str(f)), "bad.jsonl:2")


def test_empty_file(tmp_path):
    f = tmp_path / "empty.jsonl"
    f.write_text("")
    assert_one_line_error(
        run_cli("generate", "--dataset", str(f), "--out", str(tmp_path / "o.jsonl")), "empty"
    )
    assert_one_line_error(run_cli("filter", "--input", str(f), "--out", str(tmp_path / "o.jsonl")), "empty")


def test_unknown_model_alias(tmp_path):
    proc = run_cli("generate", "--model", "smollm9-1t", "--out", str(tmp_path / "o.jsonl"), "--limit", "1")
    assert_one_line_error(proc, "unknown model 'smollm9-1t'")


def test_ratio_out_of_range(tmp_path):
    proc = run_cli("generate", "--ratio", "1.5", "--out", str(tmp_path / "o.jsonl"))
    assert_one_line_error(proc, "(0, 1]")


def test_dash_and_underscore_options_and_config_file(tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"out: {tmp_path / 'o.jsonl'}\nmax_new_tokens: 0\n")
    assert_one_line_error(run_cli("generate", "--config", str(cfg)), "max_new_tokens")
    assert_one_line_error(run_cli("generate", "--out", "x", "--max-new-tokens", "0"), "max_new_tokens")


def test_eval_and_filter_on_handmade_records(tmp_path):
    rows = [
        {
            "id": "a",
            "output": "x\n\nThe final answer is: $\\boxed{5}$",
            "answer": "5",
            "cot": "x",
            "cot_tokens": 10,
            "latency_s": 1.0,
        },
        {"id": "b", "output": "so 4", "answer": "5", "cot": "so 4", "cot_tokens": 30, "latency_s": 3.0},
        {
            "id": "c",
            "output": "\\boxed{7}",
            "answer": "7",
            "cot": "long",
            "cot_tokens": 900,
            "latency_s": 2.0,
        },
    ]
    f = tmp_path / "gen.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    proc = run_cli("eval", str(f), "--out", str(tmp_path / "m.json"))
    assert proc.returncode == 0, proc.stderr
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["n"] == 3
    assert m["accuracy"] == pytest.approx(2 / 3)
    assert m["mean_cot_tokens"] == pytest.approx(940 / 3)
    assert m["mean_latency_s"] == pytest.approx(2.0)
    assert "| 3 | 66.7% |" in proc.stdout
    proc = run_cli(
        "filter", "--input", str(f), "--out", str(tmp_path / "kept.jsonl"), "--max-cot-tokens", "500"
    )
    assert proc.returncode == 0, proc.stderr
    kept = [json.loads(line)["id"] for line in (tmp_path / "kept.jsonl").read_text().splitlines()]
    assert kept == ["a"]
