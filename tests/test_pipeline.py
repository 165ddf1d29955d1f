"""`tokenskip pipeline` on the embedded model with a handful of questions: the correct-only filter and resuming
a killed run at the stage it stopped in (issue: TokenSkip trained on a model that reasons)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import REPO, run_cli

from tokenskip.data.jsonl import read_jsonl
from tokenskip.verbs.recipes import RECIPES, get_recipe

pytestmark = pytest.mark.slow
SAMPLE = REPO / "tokenskip" / "data" / "samples" / "grade_school.jsonl"
FAST = ["--limit", "6", "--max_new_tokens", "48", "--ratios", "0.5", "--max_steps", "2",
        "--infer_ratios", "0.5", "--infer_limit", "1"]  # fmt: skip


def _ids(path):
    return [str(r["id"]) for _, r in read_jsonl(path)]


def _dataset_with_some_right(tmp_path):
    """The first 6 bundled problems, with the reference answer of 3 of them set to what the embedded model
    answers (greedy, same batches as the pipeline's generate stage), so that some CoTs are graded correct."""
    probe = tmp_path / "probe.jsonl"
    proc = run_cli("generate", "--dataset", str(SAMPLE), "--limit", "6", "--max_new_tokens", "48",
                   "--out", str(probe))  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    answered = {r["question"]: r["prediction"] for _, r in read_jsonl(probe) if r.get("prediction")}
    rows, changed = [], 0
    for line in SAMPLE.read_text(encoding="utf-8").splitlines()[:6]:
        row = json.loads(line)
        if changed < 3 and row["question"] in answered:
            row["answer"] = str(answered[row["question"]])
            changed += 1
        rows.append(row)
    assert changed == 3
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return data


def test_filter_on_keeps_only_correct_cots_and_a_killed_run_resumes_at_its_stage(tmp_path):
    data = _dataset_with_some_right(tmp_path)
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "tokenskip.cli",
        "pipeline",
        "--out",
        str(out),
        "--dataset",
        str(data),
        *FAST,
    ]
    log = (tmp_path / "first.log").open("w")
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, text=True,
                            env=os.environ.copy(), start_new_session=True)  # fmt: skip
    state_file = out / "pipeline.json"
    killed_in = None
    try:
        deadline = time.monotonic() + 1200
        while time.monotonic() < deadline and proc.poll() is None:
            if state_file.exists():
                stages = json.loads(state_file.read_text(encoding="utf-8"))["stages"]
                if stages.get("build-sft", {}).get("done"):
                    os.killpg(proc.pid, signal.SIGKILL)  # during train, as a power cut would
                    killed_in = "train"
                    break
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        log.close()
    assert killed_in == "train", (tmp_path / "first.log").read_text(encoding="utf-8")[-3000:]
    before = json.loads(state_file.read_text(encoding="utf-8"))["stages"]
    assert [k for k, v in before.items() if v["done"]] == ["generate", "filter", "compress", "build-sft"]
    assert "train" not in before or not before["train"]["done"]

    # only correct CoTs passed the filter, and only those reached compress
    gen = {str(r["id"]): r for _, r in read_jsonl(out / "gen.jsonl")}
    correct = {i for i, r in gen.items() if r["correct"]}
    assert 0 < len(correct) < len(gen) == 6
    assert set(_ids(out / "kept.jsonl")) == {i for i in correct if gen[i]["cot_tokens"] <= 400}
    assert set(_ids(out / "compressed" / "compressed_0.5.jsonl")) <= correct
    gen_bytes = (out / "gen.jsonl").read_bytes()

    again = run_cli("pipeline", "--out", str(out), "--dataset", str(data), *FAST)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    for name in ("generate", "filter", "compress", "build-sft"):
        assert f"== {name} == done earlier" in again.stdout
    assert "== train ==" in again.stdout
    assert (out / "gen.jsonl").read_bytes() == gen_bytes  # nothing generated again
    after = json.loads(state_file.read_text(encoding="utf-8"))["stages"]
    assert all(v["done"] for v in after.values()) and after["train"]["runs"] == 1
    assert all(v["seconds"] > 0 for v in after.values())
    assert "| train | 2 |" in again.stdout  # the summary table, with each stage's wall time

    other = run_cli("pipeline", "--out", str(out), "--dataset", str(data), *FAST[:-2], "--infer_limit", "2")
    assert other.returncode == 2 and other.stderr.count("\n") == 1
    assert "infer_limit: 1 -> 2" in other.stderr


def test_a_model_that_gets_nothing_right_needs_the_explicit_flag(tmp_path):
    out = tmp_path / "run"
    proc = run_cli("pipeline", "--out", str(out), "--limit", "2", "--max_new_tokens", "16")
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("tokenskip: error:")]
    assert len(errors) == 1 and proc.stderr.rstrip().endswith(errors[0])  # one line, the last one
    assert "kept 0 of 2 CoTs" in errors[0] and "--keep_incorrect true" in errors[0]
    assert "Traceback" not in proc.stderr
    assert not (out / "compressed").exists()


def test_the_recipes_are_what_the_readme_says():
    r = get_recipe("tokenskip-gsm8k")
    assert (r.model, r.limit, r.max_cot_tokens, r.keep_incorrect) == ("qwen2.5-coder-0.5b", 3000, 500, False)
    assert r.ratios == "0.9,0.8,0.7,0.6,0.5" and r.scorer == "selfinfo" and not r.every_ratio
    assert r.final == "bench" and r.bench_limit == 200 and r.bench_methods.split(",")[0] == "original"
    methods, gammas = r.bench_methods.split(","), r.ratios.split(",")
    assert [m for m in methods if m.startswith("tokenskip@")] == [f"tokenskip@{g}" for g in ("1.0", *gammas)]
    assert [m for m in methods if m.startswith("truncation@")] == [f"truncation@{g}" for g in gammas]
    assert r.save_dtype == "bfloat16"  # the released adapter: bf16 on disk
    assert r.train_dtype == "bfloat16"  # measured faster than fp32 on the machine that trained it
    assert not RECIPES["quickstart"].keep_incorrect  # the quickstart script passes the flag itself
    assert "--keep_incorrect true" in (REPO / "scripts" / "quickstart.sh").read_text(encoding="utf-8")
