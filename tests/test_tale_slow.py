"""TALE end to end on the embedded model (tiny token caps, 1 training step): estimate -> run -> search ->
TALE-PT SFT and DPO adapters -> answer with the adapter."""

from __future__ import annotations

import json

import pytest

from tokenskip.verbs import tale, tale_pt, tale_search

pytestmark = pytest.mark.slow


def read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_tale_pipeline_on_the_embedded_model(tmp_path, embedded_model_dir):
    est = tmp_path / "estimate.jsonl"
    tale.estimate(out=str(est), dataset="sample", limit=2, estimate_max_new_tokens=8, batch_size=2)
    rows = read(est)
    assert len(rows) == 2
    for r in rows:
        assert 1 <= r["budget"] <= 4096 and r["budget_source"] in ("parsed", "clamped", "fallback")
        assert 0 < r["estimate_tokens"] <= 8 and r["estimate_prompt_tokens"] > 0

    ep = tmp_path / "ep.jsonl"
    summary = tale.run(
        out=str(ep), dataset="sample", limit=2, budgets=str(est), max_new_tokens=8, batch_size=2
    )
    rows = read(ep)
    assert summary["n"] == 2
    for r in rows:
        assert "<|im_start|>user" in r["prompt"] and f"use less than {r['budget']} tokens:" in r["prompt"]
        assert (
            0 < r["output_tokens"] <= 8
            and r["total_output_tokens"] == r["output_tokens"] + r["estimate_tokens"]
        )

    search = tmp_path / "search"
    s = tale_search.search(out=str(search), dataset="sample", limit=2, require_correct=False, rule="correct",
                    max_steps=1, max_new_tokens=8, batch_size=2)  # fmt: skip
    assert s["searched"] == 2 and s["generations"] == 4
    traces = read(search / "traces.jsonl")
    assert all(t["steps"][0]["budget"] == t["vanilla_tokens"] // 2 for t in traces)
    assert (search / "elasticity.png").stat().st_size > 1000 and (search / "regressor.json").exists()

    sft = tale_pt.train_sft(traces=str(search), out=str(tmp_path / "sft"), max_steps=1, batch_size=1, grad_accum=1,
                            cutoff=128, progress="none")  # fmt: skip
    assert sft.global_step == 1 and sft.examples == 2
    assert (tmp_path / "sft" / "adapter_model.safetensors").exists()
    assert json.loads((tmp_path / "sft" / "tale_adapter.json").read_text())["method"] == "TALE-PT-SFT"

    # DPO needs answers that differ: a hand-made improved trace pair
    pairs = tmp_path / "pairs" / "traces.jsonl"
    pairs.parent.mkdir()
    pairs.write_text(
        json.dumps({"id": "p0", "question": "Tom has 3 apples and buys 2 more. How many?", "searched": True,
                    "improved": True, "optimal_output": "3 + 2 = 5. The answer is 5",
                    "vanilla_output": "Tom starts with 3 apples. He then buys 2 more apples, so we add them "
                                      "together step by step: 3 + 2 = 5. The answer is 5"}) + "\n"
    )  # fmt: skip
    dpo = tale_pt.train_dpo(traces=str(pairs.parent), out=str(tmp_path / "dpo"), max_steps=1, batch_size=1,
                            grad_accum=1, cutoff=128, progress="none")  # fmt: skip
    assert dpo.global_step == 1 and (tmp_path / "dpo" / "adapter_config.json").exists()
    log = read(tmp_path / "dpo" / "train_log.jsonl")
    assert "rewards/margins" in log[0]

    out = tmp_path / "pt.jsonl"
    tale.run(
        out=str(out),
        dataset="sample",
        limit=1,
        estimator="none",
        adapter=str(tmp_path / "sft"),
        max_new_tokens=4,
    )
    row = read(out)[0]
    assert (
        row["budget"] is None and "Let's think step by step:" in row["prompt"] and row["output_tokens"] <= 4
    )
