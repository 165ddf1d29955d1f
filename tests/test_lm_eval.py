"""lm-evaluation-harness (the real ``lm_eval`` CLI) against a live ``tokenskip serve --backend hf`` on the
embedded model: the shipped ``tokenskip_gsm8k`` task, ``--gen_kwargs compression_ratio=0.5``."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

import pytest
from live_server import live_server

pytest.importorskip("lm_eval")
pytest.importorskip("fastapi")

from tokenskip.errors import UserError
from tokenskip.eval.lm_eval_tasks import include_path
from tokenskip.eval.lm_eval_tasks.__main__ import main as tasks_main
from tokenskip.eval.lm_eval_tasks.hooks import extract, score_gsm8k, score_math

N = 4


def test_task_hooks_grade_like_tokenskip():
    outputs = ["so 18.\n\nThe final answer is: $\\boxed{18}$", "The final answer is 7.", "no idea", ""]
    assert extract([[o] for o in outputs], []) == [["18"], ["7"], [""], [""]]
    assert score_gsm8k({"answer": "18"}, ["18.0"]) == {"exact_match": 1}
    assert score_gsm8k({"answer": "18"}, [""]) == {"exact_match": 0}
    assert score_math({"answer": "\\frac{1}{2}"}, ["0.5"]) == {"exact_match": 1}
    assert score_math({"answer": "\\left( 3, \\frac{\\pi}{2} \\right)"}, ["(3,\\frac{\\pi}{2})"])[
        "exact_match"
    ]


def test_docs_come_from_the_given_file_or_tokenskip_data_dir(tmp_path, monkeypatch):
    from tokenskip.eval.lm_eval_tasks.hooks import gsm8k_docs, math500_docs

    (tmp_path / "math500").mkdir()
    row = {"problem": "What is $1/2$ as a decimal?", "answer": "0.5", "solution": "It is $0.5$."}
    (tmp_path / "math500" / "test.jsonl").write_text(json.dumps(row) + "\n")
    monkeypatch.setenv("TOKENSKIP_DATA_DIR", str(tmp_path))
    (doc,) = math500_docs()["test"]
    assert doc == {"id": "math500-test-0", "question": row["problem"], "answer": "0.5", "task": "math"}
    own = tmp_path / "mine.jsonl"
    own.write_text('{"question": "2+2?", "answer": "4"}\n{"question": "", "answer": "1"}\n')
    with pytest.raises(UserError, match=f"{own}:2: malformed row"):
        gsm8k_docs(gsm8k_file=str(own))


def test_samples_to_records_names_a_bad_line(tmp_path, capsys):
    bad = tmp_path / "samples.jsonl"
    bad.write_text(
        '{"doc": {"question": "q", "answer": "1"}, "resps": [["x"]], "exact_match": 0}\n{"doc": 3}\n'
    )
    assert tasks_main(["records", str(bad), str(tmp_path / "out.jsonl")]) == 2
    assert f"{bad}:2: not a sample of a tokenskip lm-eval task" in capsys.readouterr().err


@pytest.mark.slow
def test_lm_eval_tokenskip_gsm8k_against_tokenskip_serve(tmp_path, monkeypatch):
    from lm_eval.__main__ import cli_evaluate

    from tokenskip.eval.evaluate import load_results
    from tokenskip.inference import make_generator
    from tokenskip.serve import ServerConfig, create_app
    from tokenskip.verbs.evaluate import evaluate

    data = tmp_path / "gsm8k.jsonl"
    sample = Path(__file__).resolve().parents[1] / "tokenskip" / "data" / "samples"
    rows = [json.loads(line) for line in next(sample.glob("*.jsonl")).open()][:N]
    data.write_text(
        "".join(json.dumps({"question": r["question"], "answer": r["answer"]}) + "\n" for r in rows)
    )

    generator = make_generator("hf", model="smollm2-135m", batch_size=N)
    prompts: list[str] = []
    lock = threading.Lock()

    def spy(method):  # what reaches the model: the prompts the method built
        def run(batch, *args, **kwargs):
            with lock:
                prompts.extend(batch)
            return method(batch, *args, **kwargs)

        return run

    generator.generate, generator.generate_stream = spy(generator.generate), spy(generator.generate_stream)
    config = ServerConfig(
        served_model_name="smollm2-135m",
        batch_size=N,
        batch_wait_s=1.0,
        max_tokens_limit=64,
        default_max_tokens=64,
    )
    out = tmp_path / "lm_eval"
    with live_server(create_app(generator, config)) as url:
        argv = [
            "lm_eval", "--model", "local-chat-completions", "--apply_chat_template",
            "--model_args", f"model=smollm2-135m,base_url={url}/v1/chat/completions,num_concurrent={N},"
            "tokenized_requests=False,max_retries=1",
            "--include_path", str(include_path()), "--tasks", "tokenskip_gsm8k",
            "--metadata", json.dumps({"gsm8k_file": str(data)}),
            "--gen_kwargs", "compression_ratio=0.5,max_gen_toks=32",
            "--output_path", str(out), "--log_samples",
        ]  # fmt: skip
        monkeypatch.setattr(sys, "argv", argv)
        cli_evaluate()  # the lm_eval command, in this process (its imports are already loaded)

    eos = generator.tokenizer.eos_token
    marker = f"{eos}0.5{eos}"  # tokenskip@0.5's prompt: every request reached the method with γ = 0.5
    assert len(prompts) == N and all(marker in p for p in prompts)
    asked = sorted(i for p in prompts for i, r in enumerate(rows) if f"{r['question']}{marker}" in p)
    assert asked == list(range(N))  # each question once, the ratio marker right after it

    (samples,) = out.rglob("samples_tokenskip_gsm8k_*.jsonl")
    records = tmp_path / "records.jsonl"
    assert tasks_main(["records", str(samples), str(records)]) == 0
    ours = load_results(records, regrade=True)
    assert len(ours) == N
    assert [r["correct"] for r in ours] == [r["lm_eval_correct"] for r in ours]
    assert [r["prediction"] for r in ours] == [r["lm_eval_prediction"] for r in ours]
    (results,) = out.rglob("results_*.json")
    accuracy = json.loads(results.read_text())["results"]["tokenskip_gsm8k"]["exact_match,tokenskip-extract"]
    metrics = evaluate([str(records)], out=str(tmp_path / "metrics.json"), regrade=True)
    assert accuracy == pytest.approx(next(iter(metrics.values()))["accuracy"])
