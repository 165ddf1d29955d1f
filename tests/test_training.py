"""build-sft mixture, tokenization/masking, eval split, checkpoint discovery, run checks (no model)."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from tokenskip.cli import main
from tokenskip.data.adapters import ADAPTER_INFO
from tokenskip.data.prompts import get_preset
from tokenskip.errors import UserError
from tokenskip.training.runs import last_complete_checkpoint, lora_config, prepare_out, trim_log
from tokenskip.training.sft import (
    Example,
    build_mixture,
    draw_ratios,
    read_compressed_dir,
    resolve_sft_preset,
    sft_row,
    to_alpaca,
)
from tokenskip.training.sft_folder import load_sft
from tokenskip.training.train import (
    _RUN_KEYS,
    _sampling_args,
    check_row,
    completion_start,
    prompt_of,
    split_eval,
)
from tokenskip.verbs.build_sft import build_sft

# Short problems so that training tests stay cheap (prompt + completion < 100 tokens).
PROBLEMS = [
    ("Tom has 3 apples and buys 2 more. How many apples?", "3 + 2 = 5 apples.", "5"),
    ("A box holds 4 pens. How many pens in 2 boxes?", "Each box has 4 pens, so 4 * 2 = 8 pens.", "8"),
    ("Sam had 10 coins and lost 4. How many are left?", "He lost 4 of 10, so 10 - 4 = 6 coins.", "6"),
    ("Ann reads 5 pages a day. Pages in 3 days?", "She reads 5 pages each day: 5 * 3 = 15 pages.", "15"),
    ("A cat has 4 legs. Legs of 3 cats?", "Every cat has 4 legs, so 3 * 4 = 12 legs.", "12"),
    ("Lily has 9 sweets and eats 3. How many remain?", "She eats 3 of 9 sweets, so 9 - 3 = 6 remain.", "6"),
]


def compress_words(text: str, ratio: float) -> str:
    """Stand-in for `tokenskip compress` in fixtures: keep the first words."""
    words = text.split()
    return " ".join(words[: max(1, int(len(words) * ratio))])


def write_fixture(
    root: Path, ratios: tuple[float, ...] = (0.9, 0.7, 0.5), problems=PROBLEMS
) -> tuple[Path, Path]:
    """An original JSONL and a `tokenskip compress`-style folder (compressed_<γ>.jsonl + summary.json)."""
    root.mkdir(parents=True, exist_ok=True)
    original = root / "original.jsonl"
    with original.open("w") as f:
        for i, (q, cot, a) in enumerate(problems):
            f.write(json.dumps({"id": f"p{i}", "question": q, "cot": cot, "answer": a}) + "\n")
    comp = root / "compressed"
    comp.mkdir(exist_ok=True)
    for r in ratios:
        with (comp / f"compressed_{r}.jsonl").open("w") as f:
            for i, (q, cot, a) in enumerate(problems):
                c = compress_words(cot, r)
                row = {"id": f"p{i}", "question": q, "answer": a, "cot": cot, "compressed_cot": c, "ratio": r,
                       "original_tokens": len(cot.split()), "compressed_tokens": len(c.split()),
                       "achieved_ratio": len(c.split()) / len(cot.split())}  # fmt: skip
                f.write(json.dumps(row) + "\n")
    (comp / "summary.json").write_text("{}")
    return original, comp


# --- TokenSkip's exact strings --------------------------------------------------------------------------


def test_tokenskip_preset_rows_match_original_release_strings():
    # get_llamafactory_input.py of the TokenSkip release:
    #   instruction = "Please reason step by step, and put your final answer within \\boxed{}."
    #   input = f"{question}<|eot_id|>{ratio}<|eot_id|>"   (γ < 1), f"{question}" (original)
    #   output = f"{cot}\n\nThe final answer is: " + "$\\boxed{" + answer + "}$"
    preset = resolve_sft_preset(get_preset("tokenskip"), None, eos_token="<|im_end|>")
    assert preset.delimiter == "<|eot_id|>"  # literal, whatever the model's EOS
    q = "Natalia sold clips to 48 of her friends. How many?"
    ex = Example("x", q, "72", "Natalia sold 48/2 = 24 clips in May.", {0.5: "48/2 = 24 May."})
    comp = sft_row(ex, 0.5, preset)
    assert comp["instruction"] == "Please reason step by step, and put your final answer within \\boxed{}."
    assert comp["input"] == q + "<|eot_id|>0.5<|eot_id|>"
    assert comp["output"] == "48/2 = 24 May.\n\nThe final answer is: $\\boxed{72}$"
    orig = sft_row(ex, 1.0, preset)
    assert orig["input"] == q
    assert orig["output"] == "Natalia sold 48/2 = 24 clips in May.\n\nThe final answer is: $\\boxed{72}$"
    assert to_alpaca([comp]) == [
        {"instruction": comp["instruction"], "input": comp["input"], "output": comp["output"]}
    ]


def test_default_preset_uses_eos_and_delimiter_option_overrides():
    assert resolve_sft_preset("default", None, "<|im_end|>").delimiter == "<|im_end|>"
    assert resolve_sft_preset("default", "<sep>", "<|im_end|>").delimiter == "<sep>"
    assert resolve_sft_preset("tokenskip", "<sep>", "<|im_end|>").delimiter == "<sep>"
    with pytest.raises(UserError, match="delimiter"):
        resolve_sft_preset("default", None, None)
    ex = Example("x", "Q?", "1", "a b c d", {0.7: "a c"})
    assert sft_row(ex, 0.7, resolve_sft_preset("default", None, "</s>"))["input"] == "Q?</s>0.7</s>"


def test_draw_ratios_seeded_uniform_and_only_available():
    ids = [str(i) for i in range(4000)]
    avail = {i: [0.9, 0.7, 0.5] for i in ids}
    a = draw_ratios(ids, avail, seed=1)
    assert a == draw_ratios(ids, avail, seed=1)
    assert a != draw_ratios(ids, avail, seed=2)
    counts = Counter(a)
    assert set(counts) == {1.0, 0.9, 0.7, 0.5}
    assert all(850 < c < 1150 for c in counts.values()), counts
    # an example with no compressed version can only be the original
    assert set(draw_ratios(["a", "b"], {"a": [0.5]}, seed=0)) <= {1.0, 0.5}
    assert draw_ratios(["b"] * 50, {}, seed=0) == [1.0] * 50


def test_build_mixture_restricts_ratios():
    exs = [Example(str(i), "Q", "1", "a b c d", {0.9: "a b c", 0.5: "a b"}) for i in range(200)]
    rows = build_mixture(exs, resolve_sft_preset("default", None, "<e>"), seed=0, ratios=[0.5])
    assert {r["ratio"] for r in rows} == {1.0, 0.5}


def test_build_mixture_every_ratio_writes_each_example_at_each_ratio():
    exs = [Example("a", "Q", "1", "a b c d", {0.9: "a b c", 0.5: "a b"}), Example("b", "Q2", "2", "x y", {})]
    preset = resolve_sft_preset("default", None, "<e>")
    rows = build_mixture(exs, preset, every_ratio=True)
    assert [(r["id"], r["ratio"]) for r in rows] == [("a", 1.0), ("a", 0.9), ("a", 0.5), ("b", 1.0)]
    assert [r["output"].split("\n\n")[0] for r in rows] == ["a b c d", "a b c", "a b", "x y"]
    assert rows[2]["input"] == "Q<e>0.5<e>" and rows[0]["input"] == "Q"
    only = build_mixture(exs, preset, ratios=[0.5], every_ratio=True)
    assert [(r["id"], r["ratio"]) for r in only] == [("a", 1.0), ("a", 0.5), ("b", 1.0)]


# --- build-sft workflow -----------------------------------------------------------------------------------


def test_build_sft_writes_jsonl_info_and_alpaca(tmp_path):
    original, comp = write_fixture(tmp_path / "in")
    info = build_sft(str(original), str(comp), str(tmp_path / "sft"), preset="tokenskip", alpaca=True, seed=3)
    rows = [json.loads(line) for line in (tmp_path / "sft" / "sft.jsonl").read_text().splitlines()]
    assert len(rows) == len(PROBLEMS) == info["examples"]
    assert info["ratios"] == [1.0, 0.9, 0.7, 0.5]
    assert info["delimiter"] == "<|eot_id|>" and info["delimiter_source"] == "preset"
    assert sum(info["per_ratio"].values()) == len(rows)
    by_id = {f"p{i}": p for i, p in enumerate(PROBLEMS)}
    for r in rows:
        q, cot, a = by_id[r["id"]]
        cot_used = cot if r["ratio"] == 1.0 else compress_words(cot, r["ratio"])
        assert r["output"] == f"{cot_used}\n\nThe final answer is: $\\boxed{{{a}}}$"
        suffix = "" if r["ratio"] == 1.0 else f"<|eot_id|>{r['ratio']}<|eot_id|>"
        assert r["input"] == q + suffix
    alpaca = json.loads((tmp_path / "sft" / "alpaca.json").read_text())
    assert alpaca == to_alpaca(rows)
    ds_info = json.loads((tmp_path / "sft" / "dataset_info.json").read_text())
    assert list(ds_info.values()) == [{"file_name": "alpaca.json"}]
    assert load_sft(tmp_path / "sft").num_rows == len(rows)
    # same seed, same mixture
    build_sft(str(original), str(comp), str(tmp_path / "sft2"), preset="tokenskip", seed=3)
    assert (tmp_path / "sft2" / "sft.jsonl").read_text() == (tmp_path / "sft" / "sft.jsonl").read_text()


def test_build_sft_missing_ids_fall_back_to_available_ratios(tmp_path):
    original, comp = write_fixture(tmp_path / "in", ratios=(0.5,))
    lines = (comp / "compressed_0.5.jsonl").read_text().splitlines()
    (comp / "compressed_0.5.jsonl").write_text("\n".join(lines[1:]) + "\n")  # p0 has no compressed CoT
    info = build_sft(str(original), str(comp), str(tmp_path / "sft"), preset="tokenskip", seed=0)
    rows = {
        json.loads(x)["id"]: json.loads(x) for x in (tmp_path / "sft" / "sft.jsonl").read_text().splitlines()
    }
    assert rows["p0"]["ratio"] == 1.0
    assert info["issues"] == {"missing_0.5": 1}


@pytest.mark.parametrize(
    "setup, message",
    [
        ("no_dir", "folder not found"),
        ("empty_dir", "no compressed_<ratio>.jsonl"),
        ("bad_line", "compressed_0.5.jsonl:2: malformed JSONL"),
        ("no_cot", ":1: malformed row (field 'cot' is missing)"),
        ("unknown_ratio", "not in"),
    ],
)
def test_build_sft_bad_input_is_user_error(tmp_path, setup, message):
    original, comp = write_fixture(tmp_path / "in", ratios=(0.5,))
    kwargs = {}
    if setup == "no_dir":
        comp = tmp_path / "nope"
    elif setup == "empty_dir":
        comp = tmp_path / "empty"
        comp.mkdir()
    elif setup == "bad_line":
        f = comp / "compressed_0.5.jsonl"
        lines = f.read_text().splitlines()
        f.write_text(lines[0] + "\n{not json\n")
    elif setup == "no_cot":
        original.write_text(json.dumps({"id": "a", "question": "Q?", "answer": "1"}) + "\n")
    elif setup == "unknown_ratio":
        kwargs["ratios"] = [0.7]
    with pytest.raises(UserError, match=re.escape(message).replace("<", ".").replace(">", ".")):
        build_sft(str(original), str(comp), str(tmp_path / "sft"), preset="tokenskip", **kwargs)


def test_read_compressed_dir_ignores_other_files_and_ratio_one(tmp_path):
    _, comp = write_fixture(tmp_path, ratios=(0.5, 1.0))
    (comp / "notes.jsonl").write_text("garbage\n")
    assert list(read_compressed_dir(comp)) == [0.5]


def test_cli_reports_user_errors_in_one_line(tmp_path, capsys):
    assert main(["build-sft", "--original", "x.jsonl", "--compressed", str(tmp_path), "--out", "o"]) == 2
    assert main(["train", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("tokenskip: error:") for line in err)


# --- tokenization, split, collation --------------------------------------------------------------------


def test_prompt_of_a_task_row_is_the_inference_prompt(embedded_tokenizer):
    from tokenskip.data.prompts import format_prompt

    for name in ("default", "tokenskip"):
        preset = resolve_sft_preset(get_preset(name), None, embedded_tokenizer.eos_token)
        ex = Example("x", "Q: 2 + 3?", "5", "2 + 3 = 5", {0.5: "2+3=5"})
        for ratio in (1.0, 0.5):
            row = sft_row(ex, ratio, preset)
            check_row(row, preset)
            want = format_prompt(embedded_tokenizer, ex.question, ratio if ratio < 1 else None, preset)
            assert prompt_of(embedded_tokenizer, row, preset) == want
    with pytest.raises(ValueError, match="do not match"):
        check_row({**row, "input": "other"}, preset)
    general = {"kind": "general", "ratio": None, "instruction": "", "input": "Say hi", "output": "hi"}
    check_row(general, preset)
    assert prompt_of(embedded_tokenizer, general, preset).count("Say hi") == 1


def test_split_eval_is_seeded_and_disjoint():
    tr, ev = split_eval(100, 0.1, seed=0)
    assert len(ev) == 10 and not set(tr) & set(ev) and sorted(tr + ev) == list(range(100))
    assert (tr, ev) == split_eval(100, 0.1, seed=0)
    assert split_eval(100, 0.1, seed=1)[1] != ev
    assert len(split_eval(100, 7, seed=0)[1]) == 7
    assert split_eval(5, 0, seed=0) == ([0, 1, 2, 3, 4], [])
    with pytest.raises(UserError):
        split_eval(5, 5, seed=0)


def test_completion_start_is_one_before_the_earliest_target():
    import torch

    labels = torch.tensor(
        [[-100, -100, -100, 4, 5, -100], [-100, -100, -100, -100, 6, 7], [-100, -100, 8, 9, -100, -100]]
    )
    assert completion_start(labels) == 1  # row 2's first target (index 2) is predicted from position 1
    assert completion_start(labels[:2]) == 2
    assert completion_start(torch.tensor([[3, 4, 5]])) == 0  # no prompt: every position counts
    assert completion_start(torch.tensor([[-100, -100, 4], [-100, -100, -100]])) == 0  # a row without targets


def test_sampling_args_map_group_by_length_to_the_installed_transformers():
    from dataclasses import dataclass

    from transformers import TrainingArguments

    assert _sampling_args(TrainingArguments, False) == {}
    kwargs = _sampling_args(TrainingArguments, True)
    assert TrainingArguments(output_dir="unused", report_to="none", **kwargs)  # accepted as is

    @dataclass
    class OldArgs:
        group_by_length: bool = False

    assert _sampling_args(OldArgs, True) == {"group_by_length": True}
    # a TELL mixture keeps its (seeded) file order unless batches are grouped by length
    assert _sampling_args(TrainingArguments, False, ordered=True) == {"train_sampling_strategy": "sequential"}
    assert _sampling_args(TrainingArguments, True, ordered=True) == kwargs


# --- resume bookkeeping --------------------------------------------------------------------------------


def _ckpt(root: Path, step: int, complete: bool) -> Path:
    d = root / f"checkpoint-{step}"
    d.mkdir(parents=True)
    (d / "adapter_model.safetensors").write_bytes(b"x")
    if complete:
        (d / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return d


def test_last_complete_checkpoint_skips_half_written(tmp_path):
    assert last_complete_checkpoint(tmp_path / "none") is None
    _ckpt(tmp_path, 2, True)
    _ckpt(tmp_path, 10, True)
    _ckpt(tmp_path, 12, False)  # killed while saving
    assert last_complete_checkpoint(tmp_path).name == "checkpoint-10"


def _prepare_out(out, settings, resume, overwrite):
    return prepare_out(
        out, settings, resume=resume, overwrite=overwrite, adapter_info=ADAPTER_INFO, compare=_RUN_KEYS
    )


def test_prepare_out_resumes_and_refuses_changed_settings(tmp_path):
    settings = {"data_sha256": "abc", "model": "m", "learning_rate": 1e-4, "save_steps": 5}
    assert _prepare_out(tmp_path, settings, resume=True, overwrite=False) is None
    _ckpt(tmp_path / "checkpoints", 5, True)
    _ckpt(tmp_path / "checkpoints", 10, False)
    (tmp_path / "train_log.jsonl").write_text("".join(json.dumps({"step": s}) + "\n" for s in (5, 6, 7)))
    # save_steps does not change the result: resuming with another value is fine
    got = _prepare_out(tmp_path, {**settings, "save_steps": 7}, resume=True, overwrite=False)
    assert got.name == "checkpoint-5" and not (tmp_path / "checkpoints" / "checkpoint-10").exists()
    assert (tmp_path / "train_log.jsonl").read_text() == '{"step": 5}\n'  # steps after the checkpoint dropped
    with pytest.raises(UserError, match="learning_rate"):
        _prepare_out(tmp_path, {**settings, "learning_rate": 1e-3}, resume=True, overwrite=False)
    assert _prepare_out(tmp_path, {**settings, "learning_rate": 1e-3}, resume=True, overwrite=True) is None
    (tmp_path / "tokenskip_adapter.json").write_text("{}")
    with pytest.raises(UserError, match="finished adapter"):
        _prepare_out(tmp_path, settings, resume=True, overwrite=False)


def test_trim_log_drops_steps_after_checkpoint_and_partial_line(tmp_path):
    log = tmp_path / "train_log.jsonl"
    log.write_text(
        "".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in (1, 2, 3, 4)) + '{"step": 5, "lo'
    )
    trim_log(log, 2)
    assert [json.loads(x)["step"] for x in log.read_text().splitlines()] == [1, 2]


def test_train_rejects_bad_options_before_loading_the_model(tmp_path):
    from tokenskip.verbs.train import train

    original, comp = write_fixture(tmp_path / "in", ratios=(0.5,))
    build_sft(str(original), str(comp), str(tmp_path / "sft"), preset="tokenskip")
    with pytest.raises(UserError, match="unknown --scheduler"):
        train(str(tmp_path / "sft"), str(tmp_path / "a"), scheduler="bogus")
    with pytest.raises(UserError, match="--lora_rank"):
        train(str(tmp_path / "sft"), str(tmp_path / "b"), lora_rank=0)
    with pytest.raises(UserError, match="not a `tokenskip build-sft` folder"):
        train(str(original), str(tmp_path / "c"))


def test_lora_config_parses_target_modules_and_refuses_an_empty_list():
    cfg = lora_config(8, 16, 0.05, " q_proj, v_proj ,")
    assert sorted(cfg.target_modules) == ["q_proj", "v_proj"]
    assert (cfg.r, cfg.lora_alpha, cfg.lora_dropout, cfg.task_type) == (8, 16, 0.05, "CAUSAL_LM")
    assert lora_config(8, 16, 0.0, "all-linear").target_modules == "all-linear"
    with pytest.raises(UserError, match="--target_modules is empty"):
        lora_config(8, 16, 0.0, " , ")
