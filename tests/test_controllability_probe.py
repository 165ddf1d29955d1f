"""The controllability benchmark's ratio-sensitivity probe on the embedded model (CPU, a few seconds)."""

import importlib.util
import math

import pytest
from conftest import REPO


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location(
        "controllability", REPO / "benchmarks" / "controllability.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rows(pid: str, question: str, targets: dict[float, str]) -> list[dict]:
    return [{"id": pid, "ratio": r, "question": question, "output": t} for r, t in targets.items()]


def test_ratio_sensitivity_scores_every_target_under_every_ratio(bench, embedded_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tokenskip.data.prompts import format_prompt

    q = "Tom has 3 apples and buys 4 more. How many apples does he have?"
    targets = {1.0: "Tom has 3 + 4 = 7 apples.\n\nThe final answer is: $\\boxed{7}$",
               0.9: "Tom has 3 + 4 = 7 apples\n\nThe final answer is: $\\boxed{7}$",
               0.7: "3 + 4 = 7 apples\n\nThe final answer is: $\\boxed{7}$",
               0.5: "3 + 4 = 7\n\nThe final answer is: $\\boxed{7}$"}  # fmt: skip
    rows = _rows("p0", q, targets) + _rows("p1", "What is 2 + 2?", {0.9: "2 + 2 = 4", 1.0: "2 + 2 = 4."})
    got = bench.ratio_sensitivity(embedded_model_dir, rows, "default", n=5)
    # γ = 1.0 rows are not probed; p1 lacks 0.7 and 0.5, so only p0 counts
    assert list(got) == ["0.9", "0.7", "0.5"] and all(list(r) == ["0.9", "0.7", "0.5"] for r in got.values())
    assert all(math.isfinite(v) and v > 0 for r in got.values() for v in r.values())

    tok = AutoTokenizer.from_pretrained(embedded_model_dir)
    model = AutoModelForCausalLM.from_pretrained(embedded_model_dir, dtype=torch.float32).eval()

    def nll(target: str, ratio: float) -> float:  # the summed NLL of the target, scored on its own
        prompt = tok(format_prompt(tok, q, ratio, "default"), add_special_tokens=False).input_ids
        ids = tok(target, add_special_tokens=False).input_ids
        with torch.inference_mode():
            logp = model(torch.tensor([prompt + ids])).logits[0].log_softmax(-1)
        return -sum(logp[len(prompt) - 1 + i, t].item() for i, t in enumerate(ids))

    assert got["0.5"]["0.9"] == pytest.approx(nll(targets[0.5], 0.9), abs=0.01)
    assert got["0.9"]["0.5"] == pytest.approx(nll(targets[0.9], 0.5), abs=0.01)
    assert got["0.5"]["0.7"] != got["0.9"]["0.7"]  # rows are the targets: different texts, different costs


def test_ratio_sensitivity_needs_a_problem_with_every_ratio(bench, tmp_path):
    # a drawn mixture (one γ per problem) has nothing to compare: a clear error before any model loads
    rows = _rows("p0", "q0", {0.9: "a"}) + _rows("p1", "q1", {0.7: "b"}) + _rows("p2", "q2", {0.5: "c"})
    with pytest.raises(ValueError, match="no problem has a target at every γ"):
        bench.ratio_sensitivity(tmp_path / "no-model-here", rows, "default", n=4)


def test_diagonal_margin_and_general_rows(bench, tmp_path):
    m = bench.diagonal_margin({"0.9": {"0.9": 10.0, "0.7": 12.0, "0.5": 14.0},
                               "0.5": {"0.9": 5.0, "0.7": 5.0, "0.5": 6.0}})  # fmt: skip
    assert m == {"0.9": 3.0, "0.5": -1.0, "mean": 1.0}
    # TELL's general rows (no γ) are not probed: still no problem with every γ
    general = [{"id": "general-1", "ratio": None, "question": "q", "output": "o"}]
    rows = _rows("p0", "q0", {0.9: "a"}) + _rows("p1", "q1", {0.5: "b"}) + general
    with pytest.raises(ValueError, match="no problem has a target at every γ"):
        bench.ratio_sensitivity(tmp_path / "no-model-here", rows, "default", n=4)


def test_probe_script_on_a_pipeline_runs_files(tmp_path, embedded_model_dir):
    """benchmarks/probe.py end to end on a run's files (kept CoTs + a compress folder), base model as control."""
    import json

    from tokenskip.cli import main

    spec = importlib.util.spec_from_file_location("probe", REPO / "benchmarks" / "probe.py")
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    kept = tmp_path / "kept.jsonl"
    cots = ["Tom has 3 apples. He buys 4 more apples. So he has 3 + 4 = 7 apples in total now.",
            "A box holds 6 eggs. Two boxes hold 6 + 6 = 12 eggs. So there are 12 eggs in the boxes."]  # fmt: skip
    kept.write_text("".join(json.dumps({"id": f"p{i}", "question": f"Question {i}?", "cot": c, "answer": "7"}) + "\n"
                            for i, c in enumerate(cots)))  # fmt: skip
    assert main(["compress", "--input", str(kept), "--scorer", "random", "--ratios", "0.9,0.5",
                 "--out", str(tmp_path / "comp"), "--progress", "false"]) == 0  # fmt: skip
    out = tmp_path / "probe.json"
    result = probe.main(["--model", "smollm2-135m", "--adapter", "none", "--original", str(kept),
                         "--compressed", str(tmp_path / "comp"), "--n", "2", "--work", str(tmp_path / "work"),
                         "--json", str(out)])  # fmt: skip
    saved = json.loads(out.read_text())
    assert saved["adapter"] is None and saved["n"] == 2
    assert list(saved["ratio_sensitivity"]) == ["0.9", "0.5"] and "mean" in saved["diagonal_margin"]
    assert result["diagonal_margin"] == saved["diagonal_margin"]
