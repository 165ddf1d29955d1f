"""The resume contract, verb by verb: a re-run into the same output with another model, adapter, method, budget
or dtype is refused with one line naming the setting and both values (exit 2), and nothing is added.

The first run of every verb is real code on a scripted generator (``ModelArgs.open`` patched: no weights
load; the tokenizer is the embedded model's), so the settings in the outputs are what the verbs record.
``compress`` and ``build-sft`` run for real (random scorer); ``train`` writes its settings and stops before
the model loads (``--cutoff 8`` fits no example); ``metareason iterate`` stops after writing ``run.json``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tokenskip.args import ModelArgs
from tokenskip.cli import main
from tokenskip.inference.base import Generation, Generator

QWEN = "qwen2.5-coder-0.5b"  # another model: refused before it would be resolved or loaded
ANSWER = "Two and three make five.\n\nThe final answer is: $\\boxed{5}$"


class FakeGenerator(Generator):
    """Answers every prompt with the same correct CoT; remembers what it was asked."""

    name = "fake"

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.prompts: list[str] = []

    def generate(self, prompts, config):
        self.prompts += prompts
        return [Generation(ANSWER, 12, "stop", 0.01) for _ in prompts]

    def set_adapter(self, adapter) -> None:
        pass


@pytest.fixture(scope="module")
def fake(embedded_tokenizer):
    """``ModelArgs.open`` gives the scripted generator; the embedded tokenizer is loaded once for the module."""
    import tokenskip.models

    gen = FakeGenerator(embedded_tokenizer)
    load = tokenskip.models.load_tokenizer
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ModelArgs, "open", lambda self, *a, **k: gen)
        mp.setattr(tokenskip.models, "load_tokenizer",
                   lambda name, *a, **k: embedded_tokenizer if name == "smollm2-135m" else load(name, *a, **k))  # fmt: skip
        yield gen


def _snapshot(path: Path) -> dict[str, bytes]:
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p): p.read_bytes() for p in files}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, fake):
    """One tiny run of every verb; returns verb -> (arguments, output to watch)."""
    d = tmp_path_factory.mktemp("runs")
    q = d / "q.jsonl"
    q.write_text("".join(json.dumps({"id": f"q{i}", "question": f"What is {i} + 5 - {i}?", "answer": "5"}) + "\n"
                         for i in range(2)))  # fmt: skip
    adapter = d / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text('{"r": 8}')
    small = ["--max_new_tokens", "8"]
    verbs = {
        "generate": (["generate", "--dataset", str(q), "--out", str(d / "gen.jsonl"), *small], d / "gen.jsonl"),
        "infer": (["infer", "--input", str(q), "--ratio", "0.5", "--out", str(d / "inf.jsonl"), *small],
                  d / "inf.jsonl"),
        "bench": (["bench", "--dataset", str(q), "--methods", "original,tale-ep@64", "--latency_samples", "0",
                   "--out", str(d / "bench"), *small], d / "bench"),
        "tale estimate": (["tale", "estimate", "--dataset", str(q), "--out", str(d / "est.jsonl")], d / "est.jsonl"),
        "tale run": (["tale", "run", "--dataset", str(q), "--budget", "64", "--out", str(d / "tale.jsonl"), *small],
                     d / "tale.jsonl"),
        "tale search": (["tale", "search", "--dataset", str(q), "--out", str(d / "search"), *small],
                        d / "search" / "traces.jsonl"),
        "fidelity": (["fidelity", "--input", str(d / "gen.jsonl"), "--scorers", "random", "--ratios", "0.5",
                      "--controls", "false", "--out", str(d / "fid")], d / "fid"),
        "compress": (["compress", "--input", str(d / "gen.jsonl"), "--scorer", "random", "--ratios", "0.5",
                      "--out", str(d / "comp")], d / "comp"),
        "build-sft": (["build-sft", "--original", str(d / "gen.jsonl"), "--compressed", str(d / "comp"),
                       "--out", str(d / "sft")], d / "sft"),
        "train": (["train", "--data", str(d / "sft"), "--out", str(d / "ad"), "--cutoff", "8", "--max_steps", "1"],
                  d / "ad"),
    }  # fmt: skip
    for name, (args, _) in verbs.items():
        rc = main(args)
        assert rc == (2 if name == "train" else 0), (
            name
        )  # train: no example fits --cutoff 8, settings written
    return verbs, str(adapter)


# verb -> [(option, value, the setting the refusal names)]; every verb also gets another model and dtype
CHANGES = {
    "generate": [("--method", "beconcise", "method"), ("--adapter", "ADAPTER", "adapter")],
    "infer": [("--ratio", "0.7", "method"), ("--adapter", "ADAPTER", "adapter")],
    "bench": [("--tale_template", "tale-boxed", "method_options"), ("--adapter", "ADAPTER", "adapter")],
    "tale estimate": [("--max_budget", "100", "method_options")],
    "tale run": [("--budget", "32", "method"), ("--template", "tale-boxed", "method_options")],
    "tale search": [("--rule", "correct", "rule"), ("--adapter", "ADAPTER", "adapter")],
    "fidelity": [("--adapter", "ADAPTER", "adapter"), ("--max_new_tokens", "4", "max_new_tokens")],
    "compress": [("--scorer", "truncation", "scorer"), ("--seed", "3", "seed")],
    "build-sft": [("--seed", "1", "seed"), ("--every_ratio", "true", "every_ratio")],
    "train": [("--learning_rate", "0.001", "learning_rate"), ("--lora_rank", "4", "lora_rank")],
}
CASES = [(verb, *change) for verb, changes in CHANGES.items() for change in changes] + [
    (verb, opt, value, setting)
    for verb in CHANGES
    for opt, value, setting in (("--model", QWEN, "model"), ("--dtype", "bfloat16", "dtype"))
    if not (verb in ("compress", "build-sft") and opt == "--dtype")  # no model runs there (random scorer)
]


@pytest.mark.parametrize(("verb", "option", "value", "setting"), CASES, ids=lambda x: str(x).lstrip("-"))
def test_rerun_with_another_setting_is_refused_and_adds_nothing(
    runs, fake, capsys, verb, option, value, setting
):
    verbs, adapter = runs
    args, watched = verbs[verb]
    value = adapter if value == "ADAPTER" else value
    before, asked = _snapshot(watched), len(fake.prompts)
    capsys.readouterr()
    assert main([*args, option, value]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("tokenskip: error:"), err
    assert f"{setting}:" in err and "other settings" in err, err
    if option != "--adapter" and setting not in ("method_options", "rule", "every_ratio"):
        assert repr(value) in err or value in err, err  # both values are named
    assert _snapshot(watched) == before  # no record added, no file touched
    assert len(fake.prompts) == asked  # nothing generated


def test_rerun_with_the_same_settings_resumes(runs, fake):
    verbs, _ = runs
    for name in ("generate", "infer", "bench", "tale run", "tale search", "fidelity", "compress"):
        args, watched = verbs[name]
        before = _snapshot(watched) if watched.is_file() else None
        assert main(args) == 0, name
        if before is not None:
            assert _snapshot(watched) == before, name  # everything was done: nothing added


def test_bench_refuses_the_adapter_merged_where_it_ran_as_lora(runs, fake, capsys, tmp_path):
    """``--merge_adapter`` changes the numbers (and the speed): a run folder never mixes it with LoRA."""
    verbs, adapter = runs
    q = verbs["generate"][0][2]
    args = ["bench", "--dataset", q, "--methods", "original,tokenskip@0.5", "--latency_samples", "0",
            "--adapter", adapter, "--out", str(tmp_path / "b"), "--max_new_tokens", "8"]  # fmt: skip
    assert main(args) == 0
    record = json.loads((tmp_path / "b" / "records" / "tokenskip@0.5.jsonl").read_text().splitlines()[0])
    assert record["adapter_merged"] is False
    before = _snapshot(tmp_path / "b")
    capsys.readouterr()
    assert main([*args, "--merge_adapter", "true"]) == 2
    err = capsys.readouterr().err.strip()
    assert "adapter_merged: False -> True" in err and err.count("\n") == 0, err
    assert _snapshot(tmp_path / "b") == before


def test_records_carry_the_run_settings(runs):
    verbs, _ = runs
    row = json.loads(verbs["generate"][1].read_text().splitlines()[0])
    for key in ("model", "adapter", "adapter_sha256", "method", "preset", "backend", "dtype", "max_new_tokens",
                "temperature", "top_p", "seed", "stop"):  # fmt: skip
        assert key in row, key
    assert row["dtype"] == "float32" and row["backend"] == "hf" and row["method"] == "original"
    tale = json.loads(verbs["tale run"][1].read_text().splitlines()[0])
    assert tale["method"] == "tale-ep@64" and tale["method_options"]["template"] == "tale"
    run = json.loads((verbs["bench"][1] / "run.json").read_text())
    assert run["dtype"] == "float32" and run["adapter_sha256"] is None
    assert json.loads((verbs["train"][1] / "train_config.json").read_text())["dtype"] == "float32"
    assert json.loads((verbs["compress"][1] / "compress_config.json").read_text())["dtype"] is None  # random
    assert json.loads((verbs["build-sft"][1] / "sft_info.json").read_text())["settings"]["seed"] == 42


def test_metareason_rerun_with_another_setting_is_refused(tmp_path, fake, monkeypatch, capsys):
    from tokenskip.verbs import metareason as it

    class Stop(Exception):
        pass

    def stop(*a, **k):
        raise Stop

    monkeypatch.setattr(it, "_expert_round", stop)
    args = ["metareason", "iterate", "--dataset", "sample", "--limit", "2", "--out", str(tmp_path / "ram")]
    with pytest.raises(Stop):  # run.json written, then the round starts
        main(args)
    run = (tmp_path / "ram" / "run.json").read_bytes()
    for option, value, setting in (("--model", QWEN, "model"), ("--dtype", "bfloat16", "dtype"),
                                   ("--cost", "0.5", "cost"), ("--adapter", str(tmp_path), "adapter")):  # fmt: skip
        capsys.readouterr()
        assert main([*args, option, value]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and f"{setting}:" in err, err
        assert (tmp_path / "ram" / "run.json").read_bytes() == run
    with pytest.raises(Stop):  # the same settings resume
        main(args)


def test_infer_refuses_a_method_with_a_ratio(capsys):
    assert main(["infer", "--question", "What is 2 + 3?", "--method", "beconcise", "--ratio", "0.5"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--method or --ratio, not both" in err


# ----------------------------------------------------------------------------------- legacy outputs
REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks" / "runs" / "bench-qwen"
FIDELITY = REPO / "benchmarks" / "runs" / "fidelity-qwen"


def _head(path: Path, n: int) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(next(f)) for _ in range(n)]


def _questions(rows: list[dict], path: Path) -> Path:
    path.write_text("".join(json.dumps({k: r[k] for k in ("id", "question", "answer")}) + "\n" for r in rows))
    return path


def test_committed_bench_run_resumes(tmp_path, fake, capsys):
    """bench-qwen (written before the settings were recorded) resumes: nothing generated, nothing refused,
    run.json completed with the settings it lacked."""
    out = tmp_path / "bench-qwen"
    (out / "records").mkdir(parents=True)
    original = _head(BENCH / "records" / "original.jsonl", 2)
    qs = _questions(original, tmp_path / "q.jsonl")
    run = json.loads((BENCH / "run.json").read_text())
    assert "dtype" not in run
    (out / "run.json").write_text(json.dumps({**run, "dataset": str(qs)}))
    ids = {r["id"] for r in original}
    for name in ("original", "beconcise"):
        rows = [r for r in map(json.loads, (BENCH / "records" / f"{name}.jsonl").open()) if r["id"] in ids]
        (out / "records" / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    before, asked = _snapshot(out / "records"), len(fake.prompts)
    args = ["bench", "--model", QWEN, "--backend", "vllm", "--dataset", str(qs), "--methods", "original,beconcise",
            "--max_new_tokens", "1024", "--latency_samples", "0", "--out", str(out)]  # fmt: skip
    assert main(args) == 0, capsys.readouterr().err
    assert _snapshot(out / "records") == before and len(fake.prompts) == asked  # nothing generated
    migrated = json.loads((out / "run.json").read_text())
    assert migrated["dtype"] and migrated["model"] == QWEN
    assert main([*args[:-2], "--max_new_tokens", "512", "--out", str(out)]) == 2  # a setting it records
    assert "max_new_tokens: 1024 -> 512" in capsys.readouterr().err


def test_bench_folder_keeps_the_methods_of_earlier_runs(tmp_path, fake, capsys):
    """A second bench into the same folder with other methods adds them: run.json and the table list the first
    run's methods and the second's, and the first run's records are not generated again."""
    q = tmp_path / "q.jsonl"
    q.write_text("".join(json.dumps({"id": f"q{i}", "question": f"What is {i} + 5 - {i}?", "answer": "5"}) + "\n"
                         for i in range(2)))  # fmt: skip
    out = tmp_path / "bench"
    common = [
        "bench",
        "--dataset",
        str(q),
        "--latency_samples",
        "0",
        "--max_new_tokens",
        "8",
        "--out",
        str(out),
    ]
    assert main([*common, "--methods", "original,beconcise"]) == 0, capsys.readouterr().err
    before = _snapshot(out / "records" / "beconcise.jsonl")
    assert main([*common, "--methods", "original,truncation@0.5"]) == 0, capsys.readouterr().err
    assert json.loads((out / "run.json").read_text())["methods"] == [
        "original",
        "beconcise",
        "truncation@0.5",
    ]
    table = [m["method"] for m in json.loads((out / "results.json").read_text())["runs"][0]["methods"]]
    assert table == ["original", "beconcise", "truncation@0.5"]
    assert _snapshot(out / "records" / "beconcise.jsonl") == before


def test_committed_fidelity_run_resumes(tmp_path):
    """fidelity-qwen's run.json, answer files and compress configs accept the settings the committed command
    gives today, and refuse another dtype (the run recorded bfloat16)."""
    from tokenskip.args import ModelArgs, SamplingArgs
    from tokenskip.compressors.outputs import _check_config
    from tokenskip.data.resume import check_records, check_run_file
    from tokenskip.errors import UserError
    from tokenskip.session import Session
    from tokenskip.verbs.fidelity import RESUME_KEYS, ForcedAnswer

    out = tmp_path / "fid"
    shutil.copytree(FIDELITY / "compressed" / "selfinfo", out / "compressed" / "selfinfo",
                    ignore=shutil.ignore_patterns("*.jsonl"))  # fmt: skip
    shutil.copy(FIDELITY / "run.json", out / "run.json")
    answers = out / "answers" / "selfinfo@0.5.jsonl"
    answers.parent.mkdir(parents=True)
    answers.write_text(
        "".join(json.dumps(r) + "\n" for r in _head(FIDELITY / "answers" / "selfinfo@0.5.jsonl", 3))
    )
    committed = ModelArgs(model=QWEN, backend="vllm", dtype="bfloat16")
    session = Session(committed, SamplingArgs(max_new_tokens=16))
    check_run_file(out / "run.json", {**session.base_settings(), "strip": True}, RESUME_KEYS)
    check_records(answers, session.settings(ForcedAnswer(), extra={"scorer": "selfinfo", "ratio": 0.5}))
    config = json.loads((FIDELITY / "compressed" / "selfinfo" / "compress_config.json").read_text())
    _check_config(out / "compressed" / "selfinfo", {**config, "dtype": "bfloat16"})
    other = Session(ModelArgs(model=QWEN, backend="vllm", dtype="float32"), SamplingArgs(max_new_tokens=16))
    with pytest.raises(UserError, match="dtype: 'bfloat16' -> 'float32'"):
        check_run_file(out / "run.json", {**other.base_settings(), "strip": True}, RESUME_KEYS)


def test_outputs_of_todays_pipeline_resume(tmp_path, fake, capsys):
    """generate / compress / build-sft / train files as today's main writes them (no dtype, adapter hash or
    sampling recorded; train_config.json with dtype 'auto') resume; a setting they record still decides."""
    from tokenskip.training.runs import prepare_out
    from tokenskip.training.train import _RUN_KEYS

    gen = tmp_path / "gen.jsonl"  # generate's records: model and method only
    rows = _head(FIDELITY / "generate.jsonl", 2)
    assert set(rows[0]) & {"dtype", "adapter", "preset", "backend"} == set()
    gen.write_text("".join(json.dumps(r) + "\n" for r in rows))
    qs = _questions(rows, tmp_path / "q.jsonl")
    args = ["generate", "--model", QWEN, "--backend", "vllm", "--dataset", str(qs), "--max_new_tokens", "512",
            "--out", str(gen)]  # fmt: skip
    assert (
        main([*args, "--dtype", "bfloat16"]) == 0 and "0 generated, 2 already done" in capsys.readouterr().out
    )
    assert main([*args, "--dtype", "float32"]) == 0  # dtype was not recorded: legacy, accepted
    assert main([*args, "--method", "beconcise"]) == 2 and "method: 'original' -> 'beconcise'" in (
        capsys.readouterr().err
    )
    assert len(gen.read_text().splitlines()) == 2

    comp = tmp_path / "comp"  # compress_config.json without dtype
    comp.mkdir()
    config = {"input": str(gen), "scorer": "random", "checkpoint": None, "mode": None, "model": "smollm2-135m",
              "field": "cot", "force_tokens": [], "keep_digits": False, "drop_consecutive": False, "seed": 0,
              "shard": "0/1"}  # fmt: skip
    (comp / "compress_config.json").write_text(json.dumps(config))
    cargs = ["compress", "--input", str(gen), "--scorer", "random", "--ratios", "0.5", "--out", str(comp)]
    assert main(cargs) == 0
    assert json.loads((comp / "compress_config.json").read_text())["dtype"] is None
    assert main([*cargs, "--seed", "1"]) == 2 and "seed: 0 -> 1" in capsys.readouterr().err

    sft = tmp_path / "sft"  # sft_info.json without its settings: compared on what it records
    sargs = ["build-sft", "--original", str(gen), "--compressed", str(comp), "--out", str(sft)]
    assert main(sargs) == 0
    info = json.loads((sft / "sft_info.json").read_text())
    del info["settings"]
    (sft / "sft_info.json").write_text(json.dumps(info))
    assert main(sargs) == 0
    assert main([*sargs, "--seed", "7"]) == 2 and "seed: 42 -> 7" in capsys.readouterr().err

    ad = tmp_path / "ad"  # an interrupted train run: train_config.json with the raw --dtype
    ad.mkdir()
    legacy = {"data_sha256": "abc", "model": "m", "learning_rate": 5e-5, "dtype": "auto", "progress": "bar"}
    (ad / "train_config.json").write_text(json.dumps(legacy))
    new = {**legacy, "dtype": "float32", "group_by_length": False}
    assert (
        prepare_out(ad, new, resume=True, overwrite=False, adapter_info="x.json", compare=_RUN_KEYS) is None
    )
    assert json.loads((ad / "train_config.json").read_text())["dtype"] == "float32"
    with pytest.raises(Exception, match="dtype: 'float32' -> 'bfloat16'"):
        prepare_out(ad, {**new, "dtype": "bfloat16"}, resume=True, overwrite=False, adapter_info="x.json",
                    compare=_RUN_KEYS)  # fmt: skip
