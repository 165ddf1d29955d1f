"""TELL mixing (build-sft --general / --general_ratio / --anchor_prompt / --shuffle): pure mixing in
milliseconds, general-data formats, and (slow) a fresh clone's TELL mixture from the bundled sample trained
one step, its adapter recording the anchor."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli
from test_training import write_fixture

from tokenskip.data.prompts import get_preset
from tokenskip.errors import UserError
from tokenskip.training.general import general_example, load_general
from tokenskip.training.sft import Example, build_mixture, resolve_sft_preset
from tokenskip.training.tell import (
    DEFAULT_ANCHOR,
    general_count,
    general_row,
    mix,
    pick_general,
    resolve_anchor,
)
from tokenskip.verbs.build_sft import build_sft

SAMPLE = Path(__file__).resolve().parents[1] / "tokenskip" / "data" / "samples" / "grade_school.jsonl"


def _task(n: int, anchor: str | None = DEFAULT_ANCHOR) -> list[dict]:
    preset = resolve_sft_preset(get_preset("default"), "<e>", None)
    preset = type(preset)(**{**preset.to_dict(), "anchor": anchor})
    exs = [Example(f"t{i}", f"Task question {i}?", str(i), "a b c d", {0.5: "a b"}) for i in range(n)]
    return build_mixture(exs, preset, seed=0, every_ratio=True)


def _general(n: int) -> list[dict]:
    return [general_row(i, f"General question {i}?", f"Say {i}", f"Answer {i}", "test") for i in range(n)]


def test_anchor_on_every_task_example_and_on_no_general_one():
    task = _task(20)
    rows = mix(task, pick_general(_general(100), general_count(len(task), 2), set(), seed=0), "extensive", 0)
    for r in rows:
        user = f"{r['instruction']}\n{r['input']}" if r["instruction"] else r["input"]
        if r.get("kind") == "general":
            assert DEFAULT_ANCHOR not in user and r["ratio"] is None and "<e>" not in user
        else:
            assert user.startswith(DEFAULT_ANCHOR + "\n\n") and r["input"].startswith("Task question")
    assert sum(r.get("kind") == "general" for r in rows) == 2 * len(task)


@pytest.mark.parametrize("k, want", [(0, 0), (0.5, 20), (1, 40), (3, 120)])
def test_general_count_is_k_per_task_example(k, want):
    task = _task(20)  # every ratio: 40 task rows
    extra = pick_general(_general(200), general_count(len(task), k), set(), seed=1)
    rows = mix(task, extra, "extensive", 1)
    assert len(extra) == want and len(rows) == len(task) + want
    assert sum(r.get("kind") != "general" for r in rows) == len(task)


def test_extensive_shuffle_is_seeded_and_spreads_task_examples_over_the_whole_file():
    task, general = _task(50), _general(400)  # 100 task rows, K = 3: 300 general
    extra = pick_general(general, general_count(len(task), 3), set(), seed=7)
    a = mix(task, extra, "extensive", 7)
    assert a == mix(task, extra, "extensive", 7)
    assert [r["id"] for r in a] != [r["id"] for r in mix(task, extra, "extensive", 8)]
    positions = [i for i, r in enumerate(a) if r.get("kind") != "general"]
    tenth = len(a) // 10
    per_decile = [sum(d * tenth <= p < (d + 1) * tenth for p in positions) for d in range(10)]
    assert all(3 <= c <= 20 for c in per_decile), per_decile  # 10 expected in each tenth
    assert positions[0] < tenth and positions[-1] > len(a) - tenth


def test_blocked_keeps_the_task_examples_in_one_block_after_the_general_ones():
    task, extra = _task(10), _general(30)
    rows = mix(task, extra, "blocked", 0)
    assert rows[-len(task) :] == task and {r["id"] for r in rows[: len(extra)]} == {r["id"] for r in extra}
    with pytest.raises(UserError, match="--shuffle"):
        mix(task, extra, "sideways", 0)  # type: ignore[arg-type]


def test_general_pool_leaves_out_task_questions_and_refuses_too_few():
    pool = _general(10)
    picked = pick_general(pool, 9, {"General question 3?"}, seed=0)
    assert "General question 3?" not in {r["question"] for r in picked}
    with pytest.raises(UserError, match="--general_ratio asks for 10"):
        pick_general(pool, 10, {"General question 3?"}, seed=0)
    with pytest.raises(UserError, match="--general_ratio must be >= 0"):
        general_count(5, -1)


def test_resolve_anchor():
    assert resolve_anchor("default") == DEFAULT_ANCHOR and len(DEFAULT_ANCHOR) > 300
    assert resolve_anchor(None) is None and resolve_anchor("none") is None and resolve_anchor(" ") is None
    assert resolve_anchor("Be brief.") == "Be brief."


def test_general_formats_alpaca_sharegpt_and_cot():
    preset = get_preset("default")
    assert general_example({"instruction": "Add", "input": "2 and 3", "output": "5"}, preset, "x") == (
        "Add\n2 and 3", "Add\n2 and 3", "5"
    )  # fmt: skip
    share = {"conversations": [{"from": "system", "value": "s"}, {"from": "human", "value": "Hi"},
                               {"from": "gpt", "value": "Hello"}]}  # fmt: skip
    assert general_example(share, preset, "x") == ("Hi", "Hi", "Hello")
    msgs = {"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]}
    assert general_example(msgs, preset, "x")[2] == "A"
    q, user, out = general_example({"question": "2+3?", "cot": "2+3=5 <<2+3=5>>", "answer": "5"}, preset, "x")
    assert q == "2+3?" and user == preset.instruction + "\n2+3?"
    assert out == "2+3=5\n\nThe final answer is: $\\boxed{5}$"  # calculator notes removed
    with pytest.raises(ValueError):
        general_example({"conversations": [{"from": "human", "value": "Hi"}]}, preset, "x")


def test_load_general_from_sample_and_files(tmp_path):
    rows = load_general("sample", get_preset("default"))
    assert len(rows) == 16 and all(r["kind"] == "general" and r["ratio"] is None for r in rows)
    f = tmp_path / "alpaca.json"
    f.write_text(
        json.dumps([{"instruction": "Name a colour", "output": "Blue"}, {"instruction": "", "output": "x"}])
    )
    with pytest.raises(UserError, match="alpaca.json.*empty alpaca instruction"):
        load_general(str(f), get_preset("default"))
    assert len(load_general(str(f), get_preset("default"), on_error="skip")) == 1
    with pytest.raises(UserError, match="--general nope"):
        load_general("nope", get_preset("default"))


def test_build_sft_tell_records_the_mixture_and_anchor(tmp_path):
    original, comp = write_fixture(tmp_path / "in", ratios=(0.5,))
    general = tmp_path / "general.jsonl"
    general.write_text(
        "".join(json.dumps({"instruction": f"Say {i}", "output": f"{i}"}) + "\n" for i in range(40))
    )
    info = build_sft(str(original), str(comp), str(tmp_path / "sft"), delimiter="<e>", general=str(general),
                     general_ratio=2, shuffle="blocked", every_ratio=True)  # fmt: skip
    rows = [json.loads(x) for x in (tmp_path / "sft" / "sft.jsonl").read_text().splitlines()]
    n_task = 12  # 6 problems at γ 1.0 and 0.5
    assert info["tell"] == {"task_examples": n_task, "general_examples": 24, "general_ratio": 2,
                            "shuffle": "blocked", "anchor": DEFAULT_ANCHOR, "general": str(general)}  # fmt: skip
    assert info["preset_fields"]["anchor"] == DEFAULT_ANCHOR and info["examples"] == 36
    assert [r.get("kind", "task") for r in rows] == ["general"] * 24 + ["task"] * n_task
    assert sum(info["per_ratio"].values()) == n_task
    with pytest.raises(UserError, match="asks for 120"):
        build_sft(str(original), str(comp), str(tmp_path / "x"), delimiter="<e>", general=str(general),
                  general_ratio=10, every_ratio=True)  # fmt: skip
    # no TELL: no anchor unless asked for
    plain = build_sft(str(original), str(comp), str(tmp_path / "p"), delimiter="<e>")
    assert plain["tell"] is None and plain["preset_fields"]["anchor"] is None


@pytest.mark.slow
def test_fresh_clone_builds_a_tell_mixture_from_the_sample_and_trains_one_step(tmp_path):
    from tokenskip.data.adapters import resolve_preset

    task = tmp_path / "task.jsonl"
    task.write_text(
        "".join(SAMPLE.read_text(encoding="utf-8").splitlines(keepends=True)[:8]), encoding="utf-8"
    )
    steps = [
        ["compress", "--input", str(task), "--out", str(tmp_path / "comp"), "--ratios", "0.5",
         "--scorer", "truncation", "--progress", "false"],
        ["build-sft", "--original", str(task), "--compressed", str(tmp_path / "comp"), "--out",
         str(tmp_path / "sft"), "--general", "sample", "--general_ratio", "1", "--anchor_prompt", "default"],
        ["train", "--data", str(tmp_path / "sft"), "--out", str(tmp_path / "adapter"), "--max_steps", "1",
         "--batch_size", "2", "--grad_accum", "1", "--eval_size", "0", "--cutoff", "512", "--progress", "none"],
    ]  # fmt: skip
    for args in steps:
        done = run_cli(*args)
        assert done.returncode == 0, (args[0], done.stderr[-2000:])
    info = json.loads((tmp_path / "sft" / "sft_info.json").read_text())
    assert info["tell"]["task_examples"] == 8 and info["tell"]["general_examples"] == 8  # the other 8
    meta = json.loads((tmp_path / "adapter" / "tokenskip_adapter.json").read_text())
    assert meta["global_step"] == 1 and meta["preset"]["anchor"] == DEFAULT_ANCHOR
    assert meta["data"]["tell"]["shuffle"] == "extensive"
    assert resolve_preset(None, str(tmp_path / "adapter")).anchor == DEFAULT_ANCHOR  # infer/serve/bench
