"""The `ram` method in the registry, and the rollout items/prompts of a round (no model)."""

import pytest

from tokenskip.data.datasets import Record
from tokenskip.data.prompts import get_preset
from tokenskip.errors import UserError
from tokenskip.metareason.rollouts import (
    direct_items,
    direct_prefix,
    rationalize_items,
    sample_items,
    training_output,
)
from tokenskip.methods import get_method, known_specs
from tokenskip.verbs.metareason import write_sft


def test_ram_is_a_registered_adapter_method():
    m = get_method("ram")
    assert m.name == "ram" and m.uses_adapter and m.prompt_ratio() is None
    assert "ram" in known_specs()
    with pytest.raises(UserError, match="takes no argument"):
        get_method("ram@3")


def test_items_are_k_major_with_distinct_ids():
    recs = [Record("a", "qa", "1"), Record("b", "qb", "2")]
    items = sample_items(recs, 3)
    assert [i.id for i in items] == ["a#s0", "b#s0", "a#s1", "b#s1", "a#s2", "b#s2"]
    assert {i.source for i in items} == {"sample"} and items[3].k == 1 and items[3].qid == "b"
    wrong = [{"qid": "b", "sample": 2, "question": "qb", "answer": "2"}]
    (r,) = rationalize_items(wrong, {"b": "gsm8k"})
    assert (r.id, r.source, r.k, r.answer) == ("b#r2", "rationalized", 2, "2")
    assert [d.id for d in direct_items(recs)] == ["a#d", "b#d"]


def test_direct_prefix_and_training_output():
    p = get_preset("default")
    assert direct_prefix(p) == "\n\nThe final answer is: $\\boxed{"
    assert direct_prefix(get_preset("qwen3")).startswith("\n</think>")
    row = {"cot": "3 * 12 = 36. ", "answer": "36", "output": "3 * 12 = 36. So \\boxed{36}"}
    assert training_output(row, p) == "3 * 12 = 36.\n\nThe final answer is: $\\boxed{36}$"
    assert training_output({**row, "cot": ""}, p) == "The final answer is: $\\boxed{36}$"


def test_write_sft_is_what_train_reads(tmp_path):
    from tokenskip.data.prompts import user_message
    from tokenskip.training.sft_folder import preset_from_info, read_sft_info, user_text

    p = get_preset("default")
    kept = [{"id": "a#s0", "question": "How many?", "answer": "3", "cot": "1 + 2 = 3."}]
    write_sft(tmp_path, kept, p, "smollm2-135m")
    info = read_sft_info(tmp_path)
    import json

    (row,) = [json.loads(x) for x in (tmp_path / "sft.jsonl").read_text().splitlines()]
    preset = preset_from_info(info)
    assert user_text(row) == user_message("How many?", 1.0, preset, preset.delimiter)
    assert row["output"].endswith("$\\boxed{3}$")


def test_server_prompt_without_ratio_is_the_ram_prompt(embedded_tokenizer):
    """`serve --adapter ROUND/adapter`: a plain chat request and `method: ram` get exactly the prompt `ram` writes."""
    from types import SimpleNamespace

    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from tokenskip.inference.base import Generation, Generator, SamplingConfig
    from tokenskip.methods import Context
    from tokenskip.serve import ServerConfig, create_app

    class Recorder(Generator):
        name = "recorder"

        def __init__(self, tokenizer):
            self.tokenizer, self.prompts = tokenizer, []

        def generate(self, prompts, config):
            self.prompts += list(prompts)
            text = "Step.\n\nThe final answer is: $\\boxed{36}$"
            return [Generation(text, self.count_tokens(text), "stop", 0.01, len(prompts)) for _ in prompts]

    preset = get_preset("default")
    ctx = Context(SimpleNamespace(tokenizer=embedded_tokenizer), preset, SamplingConfig())
    q = "Tom has 3 boxes of 12 pencils. How many pencils?"
    gen = Recorder(embedded_tokenizer)
    with TestClient(create_app(gen, ServerConfig(served_model_name="m", preset=preset))) as client:
        for extra in ({}, {"method": "ram"}):
            body = {"model": "m", "messages": [{"role": "user", "content": q}], "max_tokens": 8, **extra}
            assert client.post("/v1/chat/completions", json=body).status_code == 200
    assert gen.prompts == [get_method("ram").prompt(ctx, q)] * 2
