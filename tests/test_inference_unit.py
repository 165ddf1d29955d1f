"""Fast tests of the inference layer: vLLM argument mapping, infer's input handling and resumable output."""

from __future__ import annotations

import json

import pytest

from tokenskip.data.datasets import Record, load_records, row_to_record
from tokenskip.data.prompts import PRESETS
from tokenskip.errors import UserError
from tokenskip.inference import BACKENDS, make_generator
from tokenskip.inference.base import Generation, Generator, SamplingConfig
from tokenskip.inference.runner import check_settings, run_records
from tokenskip.inference.vllm_backend import (
    CPU_ENV_DEFAULTS,
    adapter_rank,
    apply_cpu_env_defaults,
    max_lora_rank_for,
    sampling_kwargs,
    token_prompt,
    token_prompts,
    vllm_dtype,
)
from tokenskip.methods import Context, get_method

# ------------------------------------------------------------------------------------ vllm mapping


def test_backends_registered():
    assert BACKENDS == ("hf", "vllm")
    with pytest.raises(UserError, match="unknown backend"):
        make_generator("onnx")


def test_adapter_rank_and_vllm_max_lora_rank(tmp_path):
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 8, "rank_pattern": {"q_proj": 24}}))
    assert adapter_rank(str(tmp_path)) == 24
    assert [max_lora_rank_for(r) for r in (1, 2, 8, 9, 24, 64, 300)] == [1, 8, 8, 16, 32, 64, 320]
    with pytest.raises(UserError, match="larger than vLLM supports"):
        max_lora_rank_for(1024)
    with pytest.raises(UserError, match="no adapter_config.json"):
        adapter_rank(str(tmp_path / "missing"))
    (tmp_path / "adapter_config.json").write_text("{broken")
    with pytest.raises(UserError, match="not valid JSON"):
        adapter_rank(str(tmp_path))


@pytest.mark.slow  # imports vLLM (10-70 s)
def test_vllm_adapters_switch_per_request_with_their_own_lora_id(tmp_path):
    """One LoRA-enabled engine serves adapter after adapter (metareason iterate's rounds): each folder gets
    its own id and name (vLLM caches by id and compares by name), a rank over the engine's is refused."""
    pytest.importorskip("vllm")
    from tokenskip.inference.vllm_backend import VLLMGenerator, build_engine_kwargs

    kw, _ = build_engine_kwargs("smollm2-135m", device="cpu", max_lora_rank=8)
    assert kw["enable_lora"] is True and kw["max_lora_rank"] == 8
    assert "enable_lora" not in build_engine_kwargs("smollm2-135m", device="cpu")[0]
    folders = []
    for name, r in (("round-1", 8), ("round-2", 4), ("big", 16)):
        (tmp_path / name / "adapter").mkdir(parents=True)
        (tmp_path / name / "adapter" / "adapter_config.json").write_text(json.dumps({"r": r}))
        folders.append(str(tmp_path / name / "adapter"))
    gen = VLLMGenerator.__new__(VLLMGenerator)  # no engine: only the adapter bookkeeping
    gen.engine_kwargs, gen._lora_ids = kw, {}
    seen = []
    for adapter in (folders[0], None, folders[1], folders[0]):
        gen.set_adapter(adapter)
        seen.append(gen.lora_request and (gen.lora_request.lora_int_id, gen.lora_request.lora_name))
    assert seen == [(1, "adapter"), None, (2, "adapter-2"), (1, "adapter")]
    assert gen.lora_request.lora_path == folders[0]
    with pytest.raises(UserError, match="rank 16 does not fit this vLLM engine"):
        gen.set_adapter(folders[2])
    gen.engine_kwargs = {}
    with pytest.raises(UserError, match="started without LoRA"):
        gen.set_adapter(folders[0])


def test_sampling_kwargs_greedy_and_sampled():
    greedy = sampling_kwargs(SamplingConfig(max_new_tokens=7, stop=("\n\n",)))
    assert greedy == {"max_tokens": 7, "skip_special_tokens": True, "temperature": 0.0, "stop": ["\n\n"]}
    sampled = sampling_kwargs(SamplingConfig(max_new_tokens=5, temperature=0.7, top_p=0.9, seed=3))
    assert sampled["temperature"] == 0.7 and sampled["top_p"] == 0.9 and sampled["seed"] == 3
    assert "stop" not in sampled


def test_token_prompts_tokenize_a_batch_in_one_call_to_the_single_prompt_ids():
    pytest.importorskip("vllm")
    from tokenskip.models import load_tokenizer

    tok = load_tokenizer("smollm2-135m")
    calls = []

    def counting(text, **kwargs):
        calls.append(text)
        return tok(text, **kwargs)

    prompts = ["<|im_start|>user\nWhat is 2+2?<|im_end|>\n", "short", "é 漢字 " * 40, " lead space"]
    batch = token_prompts(counting, prompts)
    assert calls == [prompts] and token_prompts(counting, []) == []
    assert [b["prompt_token_ids"] for b in batch] == [
        token_prompt(tok, p)["prompt_token_ids"] for p in prompts
    ]


def test_vllm_dtype():
    assert vllm_dtype("auto", "cpu") == "float32"
    assert vllm_dtype("bf16", "cpu") == "bfloat16"
    assert vllm_dtype("float16", "cuda") == "float16"
    with pytest.raises(UserError, match="unknown --dtype"):
        vllm_dtype("int3", "cpu")


def test_cpu_env_defaults_do_not_override(monkeypatch):
    for key in CPU_ENV_DEFAULTS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "4")
    apply_cpu_env_defaults()
    import os

    assert os.environ["VLLM_CPU_KVCACHE_SPACE"] == "4"
    assert os.environ["VLLM_CPU_OMP_THREADS_BIND"] == "0-1"
    assert os.environ["VLLM_HOST_IP"] == "127.0.0.1"


# ---------------------------------------------------------------------------------------- inputs


def test_question_only_rows_are_accepted_when_no_answer_is_required():
    rec = row_to_record({"question": "Q?", "answer": "Steps\n#### 1,200"}, "f-0", require_answer=False)
    assert rec.answer == "1200" and rec.id == "f-0"
    rec = row_to_record({"id": 7, "question": " Only a question "}, "f-1", require_answer=False)
    assert rec.answer == "" and rec.id == "7" and rec.question == "Only a question"
    rec = row_to_record({"problem": "Solve x", "solution": "so \\boxed{3}"}, "f-2", require_answer=False)
    assert rec.answer == "3" and rec.task == "math"
    rec = row_to_record({"prompt": "Renamed?"}, "f-3", {"question": "prompt"}, require_answer=False)
    assert rec.question == "Renamed?" and rec.answer == ""
    with pytest.raises(ValueError, match="field 'question' is missing"):
        row_to_record({"answer": "5"}, "f-4", require_answer=False)
    with pytest.raises(ValueError, match="missing"):
        row_to_record({"q": "x"}, "f-5", {"question": "prompt"}, require_answer=False)
    with pytest.raises(ValueError, match="field 'answer' is missing"):
        row_to_record({"question": "Q?"}, "f-6")


def test_infer_inputs_jsonl_txt_and_errors(tmp_path):
    def load(path, **kw):
        return load_records(str(path), require_answer=False, **kw)

    txt = tmp_path / "qs.txt"
    txt.write_text("First?\n\nSecond?\n")
    qs, _ = load(txt)
    assert [(r.id, r.question) for r in qs] == [
        (f"{tmp_path.name}-qs-0", "First?"),
        (f"{tmp_path.name}-qs-2", "Second?"),
    ]
    jl = tmp_path / "in.jsonl"
    jl.write_text('{"question": "A?", "answer": "1"}\nnot json\n{"question": "B?"}\n')
    with pytest.raises(UserError, match=r"in.jsonl:2: malformed JSONL"):
        load(jl)
    qs, stats = load(jl, on_error="skip")
    assert (
        [r.question for r in qs] == ["A?", "B?"] and [r.answer for r in qs] == ["1", ""] and len(stats) == 1
    )
    dup = tmp_path / "dup.jsonl"
    dup.write_text('{"id": "x", "question": "A?"}\n{"id": "x", "question": "B?"}\n')
    with pytest.raises(UserError, match="duplicate id 'x'"):
        load(dup)
    with pytest.raises(UserError, match="file not found"):
        load(tmp_path / "nope.jsonl")
    (tmp_path / "e.jsonl").write_text("")
    with pytest.raises(UserError, match="empty"):
        load(tmp_path / "e.jsonl")
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(UserError, match="unsupported file type"):
        load(tmp_path / "x.csv")
    with pytest.raises(UserError, match="--limit"):
        load(txt, limit=0)


# ------------------------------------------------------------------------------ the runner + a method


class StubTokenizer:
    eos_token = "</s>"
    chat_template = None

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": text.split()}


class EchoGenerator(Generator):
    name = "echo"

    def __init__(self, fail_after: int | None = None):
        self.tokenizer = StubTokenizer()
        self.prompts: list[str] = []
        self.fail_after = fail_after

    def generate(self, prompts, config):
        if self.fail_after is not None and len(self.prompts) >= self.fail_after:
            raise KeyboardInterrupt
        self.prompts += prompts
        text = "two plus three\n\nThe final answer is: $\\boxed{5}$"
        return [Generation(text, 9, "stop", 0.1, len(prompts)) for _ in prompts]


SETTINGS = {"model": "m", "adapter": None, "ratio": 0.5, "preset": "default", "backend": "echo"}


def _questions():
    return [Record(f"q{i}", f"Question {i}?", "5" if i % 2 == 0 else "") for i in range(5)]


def run_infer(gen, records, out, sampling, settings, batch_size, spec="tokenskip@0.5"):
    method = get_method(spec)
    ctx = Context(gen, PRESETS["default"], sampling, model=settings["model"])
    result = run_records(
        records, lambda b: method.run_batch(ctx, b), out, batch_size, settings, progress=False
    )
    return result.rows, result.counts()


def test_runner_records_grading_and_ratio_prompt(tmp_path):
    out = tmp_path / "o.jsonl"
    gen = EchoGenerator()
    rows, counts = run_infer(gen, _questions(), out, SamplingConfig(max_new_tokens=4), SETTINGS, 2)
    assert counts == {"total": 5, "skipped": 0, "generated": 5}
    assert all(p.endswith("</s>0.5</s>\n\n") for p in gen.prompts)  # γ in the prompt, EOS delimiter
    saved = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in saved] == [f"q{i}" for i in range(5)]
    assert saved[0]["correct"] is True and saved[0]["answer"] == "5"
    assert saved[1]["correct"] is None and saved[1]["answer"] is None and saved[1]["prediction"] == "5"
    assert saved[0]["cot"] == "two plus three" and saved[0]["cot_tokens"] == 3
    assert all(r["ratio"] == 0.5 and r["backend"] == "echo" and r["output_tokens"] == 9 for r in saved)


def test_runner_resumes_after_interrupt_without_duplicates(tmp_path):
    out = tmp_path / "o.jsonl"
    with pytest.raises(KeyboardInterrupt):
        run_infer(EchoGenerator(fail_after=2), _questions(), out, SamplingConfig(), SETTINGS, 2)
    with out.open("a") as f:
        f.write('{"id": "q2", "outp')  # killed mid-write
    gen = EchoGenerator()
    _, counts = run_infer(gen, _questions(), out, SamplingConfig(), SETTINGS, 2)
    assert counts["skipped"] == 2 and counts["generated"] == 3 and len(gen.prompts) == 3
    ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert sorted(ids) == [f"q{i}" for i in range(5)]


def test_check_settings_refuses_other_settings(tmp_path):
    out = tmp_path / "o.jsonl"
    run_infer(EchoGenerator(), _questions()[:1], out, SamplingConfig(), SETTINGS, 1)
    check_settings(out, SETTINGS)
    with pytest.raises(UserError, match=r"ratio: 0.5 -> 0.7"):
        check_settings(out, {**SETTINGS, "ratio": 0.7})
    with pytest.raises(UserError, match="adapter"):
        check_settings(out, {**SETTINGS, "adapter": "other"})
    with pytest.raises(UserError, match="other settings"):  # the runner checks before generating anything
        run_infer(
            EchoGenerator(fail_after=0), _questions(), out, SamplingConfig(), {**SETTINGS, "ratio": 0.7}, 1
        )


@pytest.mark.parametrize(
    "argv, message",
    [
        (["infer", "--question", "x", "--input", "f.jsonl"], "exactly one of"),
        (["infer"], "exactly one of"),
        (["infer", "--question", "x", "--ratio", "1.5"], "(0, 1]"),
        (["infer", "--question", "x", "--ratio", "0"], "(0, 1]"),
        (["infer", "--input", "f.jsonl"], "--out is required"),
        (["infer", "--input", "missing.jsonl", "--out", "o.jsonl"], "file not found"),
        (["infer", "--question", "  "], "--question is empty"),
        (["infer", "--question", "x", "--max_new_tokens", "0"], "max_new_tokens"),
        (["infer", "--question", "x", "--preset", "nope"], "unknown prompt preset"),
    ],
)
def test_infer_cli_user_errors(argv, message, capsys, tmp_path, monkeypatch):
    from tokenskip.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tokenskip: error:") and message in err[0]


# ------------------------------------------------------------------------------------- streaming


def feed(deltas, texts):
    return [deltas.update(t) for t in texts]


def test_text_deltas_add_up_to_final_text():
    from tokenskip.inference.base import TextDeltas

    d = TextDeltas()
    growing = ["Step", "Step 1", "Step 1:", "Step 1: 3 + 2", "Step 1: 3 + 2 = 5."]
    parts = feed(d, growing)
    assert parts == ["Step", " 1", ":", " 3 + 2", " = 5."]
    assert d.finish(growing[-1]) == ""
    # an unchanged or shorter text sends nothing
    d = TextDeltas()
    assert feed(d, ["ab", "ab", "a"]) == ["ab", "", ""]
    assert d.finish("abc") == "c"


def test_text_deltas_hold_back_partial_characters():
    from tokenskip.inference.base import TextDeltas

    d = TextDeltas()
    assert d.update("5 \ufffd") == "5 "  # first byte of a multi-byte character: wait
    assert d.update("5 €") == "€"
    assert d.finish("5 €") == ""


def test_text_deltas_never_send_a_stop_string():
    from tokenskip.inference.base import TextDeltas

    d = TextDeltas(stop=("\n\nThe final",))
    assert d.update("so 5.\n") == "so 5."  # "\n" may start the stop string
    assert d.update("so 5.\n\nThe") == ""
    assert d.update("so 5.\n\nThe final answer") == ""  # stop string complete: everything after is cut
    assert d.update("so 5.\n\nThe final answer is 5") == ""
    assert d.sent == "so 5."
    assert d.finish("so 5.") == ""
    # a tail that turns out not to be the stop string is sent once it is clear
    d = TextDeltas(stop=("###",))
    assert feed(d, ["a #", "a #b"]) == ["a ", "#b"]


def test_text_deltas_diverging_final_text_sends_nothing_more():
    from tokenskip.inference.base import TextDeltas

    d = TextDeltas()
    assert d.update("hello wor") == "hello wor"
    assert d.finish("hello, world") == ""  # the client already has a prefix that is not one: no garbage


def test_default_generate_stream_sends_whole_texts():
    class Echo(Generator):
        tokenizer = None

        def generate(self, prompts, config):
            return [Generation(p.upper(), 1, "stop", 0.0) for p in prompts]

    got: list = []
    gens = Echo().generate_stream(["ab", "", "cd"], SamplingConfig(), lambda i, t: got.append((i, t)))
    assert [g.text for g in gens] == ["AB", "", "CD"]
    assert got == [(0, "AB"), (2, "CD")]


def test_resolve_preset_reads_the_adapter_record(tmp_path, capsys):
    from tokenskip.data.adapters import resolve_preset
    from tokenskip.data.prompts import PRESETS

    assert resolve_preset(None) == PRESETS["default"]
    assert resolve_preset("tokenskip", str(tmp_path)) == PRESETS["tokenskip"]  # folder without a record
    fields = {
        "name": "tokenskip",
        "delimiter": "<d>",
        "system": "S",
        "instruction": "I",
        "answer_template": "{answer}",
    }
    (tmp_path / "tokenskip_adapter.json").write_text(json.dumps({"preset": fields}))
    trained = resolve_preset(None, str(tmp_path))
    assert (trained.name, trained.delimiter, trained.system) == ("tokenskip", "<d>", "S")
    assert resolve_preset("tokenskip", str(tmp_path)) == trained  # same name: the record's exact fields
    assert resolve_preset(None, None, model=str(tmp_path)) == trained  # a merged model folder records it too
    capsys.readouterr()
    assert resolve_preset("default", str(tmp_path)) == PRESETS["default"]
    assert "differs from the preset the model was trained with" in capsys.readouterr().out
    with pytest.raises(UserError, match="unknown prompt preset"):
        resolve_preset("nope", str(tmp_path))
    (tmp_path / "tokenskip_adapter.json").write_text(json.dumps({"preset": {"delimiter": "x"}}))
    with pytest.raises(UserError, match="unreadable preset"):
        resolve_preset(None, str(tmp_path))
