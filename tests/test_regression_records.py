"""Greedy records are identical to those recorded before the Methods redesign (tests/fixtures).

Every method of ``bench``, plus ``generate`` (with and without --ratio), ``infer`` and the TALE verbs, on the
embedded model, 8 sample questions, 48 new tokens: prompt, output, cot, prediction and correct (and TALE's
budgets) must match the fixture written by the pre-redesign code (commit 5b77b14).
"""

import json
from pathlib import Path

import pytest

from tokenskip.cli import main

FIXTURE = Path(__file__).parent / "fixtures" / "regression_records.json"
SAMPLE = Path(__file__).resolve().parents[1] / "tokenskip" / "data" / "samples" / "grade_school.jsonl"
FIELDS = (
    "id",
    "prompt",
    "output",
    "cot",
    "prediction",
    "correct",
    "cot_tokens",
    "output_tokens",
    "finish_reason",
)
METHODS = "original,tokenskip@1.0,tokenskip@0.5,truncation@0.5,lc-prompt@0.5,beconcise,tale-ep"


def _load(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _same(name: str, got: list[dict], want: list[dict], fields=FIELDS + ("budget",)) -> None:
    got_by_id = {r["id"]: r for r in got}
    assert sorted(got_by_id) == sorted(r["id"] for r in want), name
    for w in want:
        g = got_by_id[w["id"]]
        for f in fields:
            if f in w:
                assert g.get(f) == w[f], f"{name} {w['id']} {f}: {g.get(f)!r} != {w[f]!r}"


@pytest.fixture(scope="module")
def fixture() -> dict:
    return json.loads(FIXTURE.read_text(encoding="utf-8"))["records"]


@pytest.mark.slow
def test_bench_methods_match_the_recorded_records(tmp_path, fixture, embedded_model_dir):
    out = tmp_path / "bench"
    args = ["bench", "--dataset", "sample", "--limit", "8", "--methods", METHODS, "--max_new_tokens", "48"]
    assert main([*args, "--batch_size", "8", "--latency_samples", "0", "--out", str(out)]) == 0
    for name in METHODS.split(","):
        _same(name, _load(out / "records" / f"{name}.jsonl"), fixture[f"bench:{name}"])


@pytest.mark.slow
def test_generate_infer_and_tale_match_the_recorded_records(tmp_path, fixture, embedded_model_dir):
    common = ["--limit", "8", "--max_new_tokens", "48"]
    assert (
        main(
            [
                "generate",
                "--dataset",
                "sample",
                "--split",
                "test",
                *common,
                "--out",
                str(tmp_path / "g.jsonl"),
            ]
        )
        == 0
    )
    _same("generate", _load(tmp_path / "g.jsonl"), fixture["gen"])
    g05 = tmp_path / "g05.jsonl"
    assert (
        main(
            [
                "generate",
                "--dataset",
                "sample",
                "--split",
                "test",
                "--ratio",
                "0.5",
                *common,
                "--out",
                str(g05),
            ]
        )
        == 0
    )
    _same("generate --ratio 0.5", _load(g05), fixture["gen-r05"])
    assert (
        main(["infer", "--input", str(SAMPLE), "--ratio", "0.5", *common, "--out", str(tmp_path / "i.jsonl")])
        == 0
    )
    _same("infer", _load(tmp_path / "i.jsonl"), fixture["infer-05"])
    est = tmp_path / "est.jsonl"
    assert main(["tale", "estimate", "--dataset", "sample", "--limit", "8", "--out", str(est)]) == 0
    _same(
        "tale estimate", _load(est), fixture["tale-est"], ("id", "budget", "budget_source", "estimate_output")
    )
    assert main(["tale", "run", "--dataset", "sample", *common, "--out", str(tmp_path / "t.jsonl")]) == 0
    _same("tale run", _load(tmp_path / "t.jsonl"), fixture["tale-run"])
    fixed = tmp_path / "tf.jsonl"
    assert main(["tale", "run", "--dataset", "sample", *common, "--budget", "50", "--out", str(fixed)]) == 0
    _same("tale run --budget", _load(fixed), fixture["tale-run-fixed"])
