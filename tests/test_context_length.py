"""#28: a prompt longer than the model's context (smollm2-135m: 8192 tokens, minus --max_new_tokens) is refused
by every verb that generates before anything is generated: one line naming file, line and length, exit 2; or
skipped and counted with --on_error skip. One check, in the run session, for all of them."""

from __future__ import annotations

import json
import time

import pytest

from tests.conftest import run_cli
from tests.test_resume_contract import FakeGenerator
from tokenskip.args import ModelArgs
from tokenskip.cli import main

LONG = "Count the apples: " + "apple " * 9000 + "How many apples are there?"


@pytest.fixture
def fake(monkeypatch, embedded_tokenizer):
    import tokenskip.models

    gen = FakeGenerator(embedded_tokenizer)
    monkeypatch.setattr(ModelArgs, "open", lambda self, *a, **k: gen)
    monkeypatch.setattr(tokenskip.models, "load_tokenizer", lambda name, *a, **k: embedded_tokenizer)
    return gen


@pytest.fixture
def questions(tmp_path):
    q = tmp_path / "q.jsonl"
    rows = [{"id": "short", "question": "What is 2 + 3?", "answer": "5"},
            {"id": "long", "question": LONG, "answer": "9000"}]  # fmt: skip
    q.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return q


VERBS = {
    "generate": ["generate", "--dataset", "{q}", "--out", "{d}/o.jsonl"],
    "infer --input": ["infer", "--input", "{q}", "--out", "{d}/o.jsonl"],
    "bench": ["bench", "--dataset", "{q}", "--methods", "original,beconcise", "--out", "{d}/o"],
    "tale run": ["tale", "run", "--dataset", "{q}", "--budget", "64", "--out", "{d}/o.jsonl"],
    "tale estimate": ["tale", "estimate", "--dataset", "{q}", "--out", "{d}/o.jsonl"],
    "tale search": ["tale", "search", "--dataset", "{q}", "--out", "{d}/o"],
    "metareason iterate": ["metareason", "iterate", "--dataset", "{q}", "--out", "{d}/o"],
}


@pytest.mark.parametrize("verb", VERBS)
def test_a_prompt_longer_than_the_context_is_refused_before_generating(
    verb, questions, tmp_path, fake, capsys
):
    args = [a.format(q=questions, d=tmp_path) for a in VERBS[verb]]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith(f"tokenskip: error: {questions}:2: prompt is "), err
    n = int(err.split("prompt is ")[1].split()[0])
    assert n > 9000 and "smollm2-135m takes at most" in err, err
    assert fake.prompts == []  # nothing generated, the short question included
    assert not (tmp_path / "o.jsonl").exists()  # no output started


def test_infer_question_longer_than_the_context_is_refused(fake, capsys):
    assert main(["infer", "--question", LONG, "--max_new_tokens", "64"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--question: prompt is " in err and "8128 (8192 context - 64" in err, err
    assert fake.prompts == []


@pytest.mark.parametrize("verb", ["generate", "tale run"])
def test_on_error_skip_counts_the_long_prompt(verb, questions, tmp_path, fake, capsys):
    args = [a.format(q=questions, d=tmp_path) for a in VERBS[verb]]
    assert main([*args, "--on_error", "skip"]) == 0
    out = capsys.readouterr().out
    assert f"skipped {questions}:2: prompt is " in out
    rows = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["short"]
    assert fake.prompts and all(len(p) < 1000 for p in fake.prompts)  # the long prompt never reached it
    if verb == "generate":
        assert "1 too long for the context skipped" in out


@pytest.mark.slow
def test_the_real_verb_refuses_within_seconds(questions, tmp_path, embedded_model_dir):
    """As a user runs it: the embedded model on the hf backend, a 9000-word question (the model would run minutes
    on it); the refusal comes from the tokenizer alone, before the weights load."""
    start = time.perf_counter()
    done = run_cli("generate", "--dataset", str(questions), "--out", str(tmp_path / "o.jsonl"), timeout=300)
    elapsed = time.perf_counter() - start
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().count("\n") == 0 and f"{questions}:2: prompt is " in done.stderr
    assert elapsed < 120, elapsed  # seconds on an idle machine (interpreter and tokenizer start-up)
    assert not (tmp_path / "o.jsonl").exists()
