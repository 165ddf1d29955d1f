"""TALE workflows (estimate, run, search, TALE-PT data) driven by a scripted generator: no model, fast."""

from __future__ import annotations

import json
import re

import pytest

from tokenskip.args import ModelArgs
from tokenskip.cli import main
from tokenskip.errors import UserError
from tokenskip.inference.base import Generation, Generator, SamplingConfig
from tokenskip.inference.tale_budget import get_template
from tokenskip.methods import tale_ep
from tokenskip.training import runs
from tokenskip.training.tale_pt import ADAPTER_INFO, dpo_pairs, read_traces, sft_examples
from tokenskip.verbs import tale, tale_search


class WordTokenizer:
    """Whitespace 'tokenizer' without a chat template (prompts become plain text)."""

    chat_template = None
    eos_token = "</s>"

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": text.split()}


class ScriptedGenerator(Generator):
    """Answers like a model with token elasticity: shorter under a budget, but never below 12 words and
    longer again under tiny budgets; correct unless the budget is below ``wrong_below``."""

    name = "scripted"

    def __init__(self, estimate_reply="Budget: [[40]]", vanilla_words=64, wrong_below=0):
        self.tokenizer = WordTokenizer()
        self.estimate_reply = estimate_reply
        self.vanilla_words = vanilla_words
        self.wrong_below = wrong_below
        self.calls: list[list[str]] = []

    def _answer(self, prompt: str) -> str:
        answer = re.search(r"ANSWER=(\d+)", prompt).group(1)
        m = re.search(r"use less than (\d+) tokens", prompt)
        if m is None:
            words = self.vanilla_words
        else:
            b = int(m.group(1))
            words = max(12, b) if b >= 8 else 30  # tiny budgets make it ramble (elasticity)
            if b < self.wrong_below:
                answer = "0"
        return " ".join(["step"] * (words - 4)) + f" the answer is {answer}"

    def generate(self, prompts: list[str], config: SamplingConfig) -> list[Generation]:
        self.calls.append(list(prompts))
        out = []
        for p in prompts:
            text = self.estimate_reply if "estimate the minimum number of tokens" in p else self._answer(p)
            out.append(
                Generation(text=text, num_tokens=len(text.split()), finish_reason="stop", latency_s=0.01)
            )
        return out


@pytest.fixture
def questions(tmp_path):
    f = tmp_path / "q.jsonl"
    rows = [{"id": f"q{i}", "question": f"How many? ANSWER={i + 2}", "answer": str(i + 2)} for i in range(5)]
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return f


@pytest.fixture
def scripted(monkeypatch):
    gen = ScriptedGenerator()
    monkeypatch.setattr(ModelArgs, "open", lambda *a, **k: gen)
    return gen


def read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_chat_prompt_uses_the_chat_template(embedded_tokenizer):
    p = tale_ep.chat_prompt(embedded_tokenizer, "Q: hi\nLet's think step by step:\n")
    assert p.startswith("<|im_start|>") and p.rstrip().endswith("<|im_start|>assistant")
    assert "Q: hi\nLet's think step by step:\n" in p


def test_estimate_writes_budgets_and_resumes(questions, tmp_path, scripted):
    out = tmp_path / "est.jsonl"
    summary = tale.estimate(out=str(out), dataset=str(questions), batch_size=2)
    rows = read(out)
    assert [r["id"] for r in rows] == [f"q{i}" for i in range(5)]
    assert {r["budget"] for r in rows} == {40} and {r["budget_source"] for r in rows} == {"parsed"}
    assert all(
        r["estimate_tokens"] == 2 and r["estimate_prompt_tokens"] > 10 for r in rows
    )  # "Budget: [[40]]"
    assert summary["estimated"] == 5
    n_calls = len(scripted.calls)
    again = tale.estimate(out=str(out), dataset=str(questions), batch_size=2)
    assert again["estimated"] == 0 and again["skipped"] == 5 and len(scripted.calls) == n_calls
    assert len(read(out)) == 5


def test_estimate_garbage_reply_falls_back(questions, tmp_path, monkeypatch):
    gen = ScriptedGenerator(estimate_reply="Budget: [[-7]] tokens")
    monkeypatch.setattr(ModelArgs, "open", lambda *a, **k: gen)
    tale.estimate(out=str(tmp_path / "e.jsonl"), dataset=str(questions), fallback_budget=99, limit=2)
    rows = read(tmp_path / "e.jsonl")
    assert [(r["budget"], r["budget_source"]) for r in rows] == [(99, "fallback")] * 2
    assert rows[0]["budget_reason"] == "negative estimate"


def test_run_counts_estimation_tokens(questions, tmp_path, scripted):
    out = tmp_path / "run.jsonl"
    summary = tale.run(out=str(out), dataset=str(questions), batch_size=2)
    rows = read(out)
    assert len(rows) == 5
    for r in rows:
        assert "use less than 40 tokens" in r["prompt"]
        assert r["correct"] is True and r["output_tokens"] == 40
        assert r["total_output_tokens"] == r["output_tokens"] + r["estimate_tokens"] == 42
        assert r["latency_s"] == pytest.approx(r["answer_latency_s"] + r["estimate_latency_s"])
        assert r["budget_respected"] is True  # 40 tokens keep to a budget of 40 (the one definition: <=)
    # one estimation call + one answer call per batch of 2: 3 batches
    assert len(scripted.calls) == 6
    assert summary["accuracy"] == 1.0 and summary["mean_total_output_tokens"] == 42.0
    assert json.loads((tmp_path / "run.summary.json").read_text())["n"] == 5
    assert tale.run(out=str(out), dataset=str(questions))["generated"] == 0


def test_run_with_budget_file_fixed_budget_and_vanilla(questions, tmp_path, scripted):
    est = tmp_path / "est.jsonl"
    tale.estimate(out=str(est), dataset=str(questions))
    n = len(scripted.calls)
    tale.run(out=str(tmp_path / "a.jsonl"), dataset=str(questions), budgets=str(est))
    assert len(scripted.calls) == n + 1  # answers only: the estimates come from the file
    rows = read(tmp_path / "a.jsonl")
    assert (
        {r["budget_source"] for r in rows} == {"parsed"}
        and {r["budgets_file"] for r in rows} == {str(est)}
        and {r["total_output_tokens"] for r in rows} == {42}
    )
    tale.run(out=str(tmp_path / "b.jsonl"), dataset=str(questions), budget=16)
    assert {r["budget"] for r in read(tmp_path / "b.jsonl")} == {16}
    tale.run(out=str(tmp_path / "c.jsonl"), dataset=str(questions), estimator="none")
    rows = read(tmp_path / "c.jsonl")
    assert all("Let's think step by step:" in r["prompt"] and r["budget"] is None for r in rows)
    assert {r["output_tokens"] for r in rows} == {64}


def test_search_traces_png_regressor_and_resume(questions, tmp_path, scripted):
    out = tmp_path / "search"
    summary = tale_search.search(out=str(out), dataset=str(questions), batch_size=5)
    traces = read(out / "traces.jsonl")
    assert len(traces) == 5
    t = traces[0]
    # vanilla 64 -> 32 (32 words) -> 16 (16) -> 8 (12) -> 4 (30: longer again, elasticity stops)
    assert [s["budget"] for s in t["steps"]] == [32, 16, 8, 4]
    assert [s["tokens"] for s in t["steps"]] == [32, 16, 12, 30]
    assert [s["feasible"] for s in t["steps"]] == [True, True, True, False]
    assert (t["optimal_budget"], t["optimal_tokens"], t["improved"]) == (8, 12, True)
    assert t["stop_reason"] == "tokens did not decrease" and t["optimal_output"] == t["steps"][2]["output"]
    assert t["vanilla_tokens"] == 64 and t["vanilla_correct"] is True and t["question_tokens"] == 3
    # lockstep batching: one vanilla call + one call per halving round
    assert len(scripted.calls) == 5
    assert (out / "elasticity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "regressor.json").read_text())["kind"] == "tale-regression"
    saved = json.loads((out / "summary.json").read_text())
    assert saved["searched"] == summary["searched"] == 5 and saved["token_reduction"] == pytest.approx(
        1 - 12 / 64
    )
    again = tale_search.search(out=str(out), dataset=str(questions))
    assert again["new"] == 0 and len(read(out / "traces.jsonl")) == 5 and len(scripted.calls) == 5
    with pytest.raises(UserError, match="other settings"):
        tale_search.search(out=str(out), dataset=str(questions), rule="correct")


def test_search_plain_rule_and_incorrect_vanilla(questions, tmp_path, monkeypatch):
    gen = ScriptedGenerator(wrong_below=10)
    monkeypatch.setattr(ModelArgs, "open", lambda *a, **k: gen)
    tale_search.search(out=str(tmp_path / "s"), dataset=str(questions), rule="correct", limit=1)
    t = read(tmp_path / "s" / "traces.jsonl")[0]
    assert [s["budget"] for s in t["steps"]] == [32, 16, 8] and t["optimal_budget"] == 16
    assert t["stop_reason"] == "incorrect"
    # a model whose vanilla answers are wrong: skipped by default, searched with require_correct=False
    gen.wrong_below = 10**9
    gen._answer = lambda p: "no idea " * 10  # noqa: SLF001
    s = tale_search.search(out=str(tmp_path / "w"), dataset=str(questions), limit=2)
    assert s["searched"] == 0 and s["skipped_incorrect_vanilla"] == 2 and s["regressor"] is None
    assert (tmp_path / "w" / "elasticity.png").exists()
    s = tale_search.search(
        out=str(tmp_path / "x"), dataset=str(questions), limit=2, require_correct=False, max_steps=2
    )
    assert s["searched"] == 2


def test_regression_estimator_from_search(questions, tmp_path, scripted):
    tale_search.search(out=str(tmp_path / "s"), dataset=str(questions))
    n = len(scripted.calls)
    tale.run(
        out=str(tmp_path / "r.jsonl"),
        dataset=str(questions),
        estimator="regression",
        regressor=str(tmp_path / "s"),
    )
    rows = read(tmp_path / "r.jsonl")
    assert len(scripted.calls) == n + 1  # no estimation calls
    assert {r["budget_source"] for r in rows} == {"regression"} and all(
        r["estimate_tokens"] == 0 for r in rows
    )
    assert all(1 <= r["budget"] <= 4096 for r in rows)


def test_tale_pt_data_from_traces(questions, tmp_path, scripted):
    tale_search.search(out=str(tmp_path / "s"), dataset=str(questions))
    traces = read_traces(tmp_path / "s")
    tmpl = get_template("tale")
    sft = sft_examples(traces, tmpl)
    assert len(sft) == 5
    assert sft[0]["prompt"] == [
        {"role": "user", "content": "Q: How many? ANSWER=2\nLet's think step by step:\n"}
    ]
    assert sft[0]["completion"][0]["content"] == traces[0]["optimal_output"]
    pairs = dpo_pairs(traces, tmpl)
    assert len(pairs) == 5
    assert pairs[0]["chosen"][0]["content"] == traces[0]["optimal_output"]
    assert pairs[0]["rejected"][0]["content"] == traces[0]["vanilla_output"]
    # unsearched or unimproved traces make no pair
    traces[1]["improved"] = False
    traces[2]["searched"] = False
    assert [p["id"] for p in dpo_pairs(traces, tmpl)] == ["q0", "q3", "q4"]
    assert [e["id"] for e in sft_examples(traces, tmpl)] == ["q0", "q1", "q3", "q4"]


def prepare_out(out, settings, **kwargs):  # TALE-PT's call: every setting but progress must match
    return runs.prepare_out(out, settings, adapter_info=ADAPTER_INFO, **kwargs)


def test_prepare_out_resume_rules(tmp_path):
    out = tmp_path / "ad"
    settings = {"kind": "sft", "lora_rank": 8}
    assert prepare_out(out, settings, resume=True, overwrite=False) is None
    ckpt = out / "checkpoints" / "checkpoint-2"
    ckpt.mkdir(parents=True)
    (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": 2}))
    (ckpt / "adapter_model.safetensors").write_bytes(b"x")
    partial = out / "checkpoints" / "checkpoint-3"
    partial.mkdir()  # cut by a kill: no trainer_state.json
    (out / "train_log.jsonl").write_text('{"step": 1}\n{"step": 2}\n{"step": 3}\n{"ste')
    assert prepare_out(out, settings, resume=True, overwrite=False) == ckpt
    assert not partial.exists()
    assert [json.loads(x)["step"] for x in (out / "train_log.jsonl").read_text().splitlines()] == [1, 2]
    with pytest.raises(Exception, match="other settings"):
        prepare_out(out, {"kind": "sft", "lora_rank": 16}, resume=True, overwrite=False)
    (out / "tale_adapter.json").write_text("{}")
    with pytest.raises(Exception, match="finished adapter"):
        prepare_out(out, settings, resume=True, overwrite=False)
    assert prepare_out(out, {"kind": "sft", "lora_rank": 16}, resume=True, overwrite=True) is None


@pytest.mark.parametrize(
    "args, message",
    [
        (["tale", "run", "--min_budget", "0"], "min_budget"),
        (["tale", "run", "--fallback_budget", "-4"], "fallback_budget"),
        (["tale", "run", "--budget", "0"], "--budget"),
        (["tale", "run", "--budget", "10", "--budgets", "x.jsonl"], "not both"),
        (["tale", "estimate", "--estimator", "regression"], "needs --regressor"),
        (["tale", "run", "--estimator", "regression", "--regressor", "missing.json"], "not found"),
        (["tale", "run", "--template", "fancy"], "unknown TALE template"),
        (["tale", "search", "--max_steps", "0"], "max_steps"),
        (["tale", "run", "--dataset", "missing.jsonl"], "file not found"),
        (["tale", "train-sft", "--traces", "missing"], "no traces.jsonl"),
        (["tale", "train-dpo", "--traces", "missing", "--beta", "0"], "--beta"),
    ],
)
def test_cli_user_errors_are_one_line(args, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = ["--out", str(tmp_path / "o")] if "--out" not in args else []
    assert main([*args, *out]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tokenskip: error:") and message in err and "\n" not in err
