"""TELL's default general data (build-sft --general): real instruction data outside the task, with its source
and licence pinned, and not GSM8K."""

from __future__ import annotations

import hashlib
import inspect
import json
import re

import pytest
from conftest import SHARED_DATA
from test_training import write_fixture

from tokenskip.data.prompts import get_preset
from tokenskip.training.general import DEFAULT_GENERAL, GENERAL_SOURCES, load_general
from tokenskip.verbs.build_sft import build_sft


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def _raw_rows() -> list[dict]:
    path = GENERAL_SOURCES[DEFAULT_GENERAL]["file"]
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_default_general_data_is_self_instruct_with_its_source_and_licence():
    assert DEFAULT_GENERAL == "self-instruct"
    assert (
        inspect.signature(build_sft).parameters["general"].default == DEFAULT_GENERAL
    )  # build-sft's default
    src = GENERAL_SOURCES[DEFAULT_GENERAL]
    assert src["licence"] == "Apache-2.0"
    licence = src["licence_file"].read_text(encoding="utf-8")
    assert "Apache License" in licence and "Version 2.0, January 2004" in licence
    assert re.fullmatch(
        r"https://github\.com/yizhongw/self-instruct/blob/[0-9a-f]{40}/data/seed_tasks\.jsonl", src["source"]
    )
    assert hashlib.sha256(src["file"].read_bytes()).hexdigest() == src["sha256"]  # the file is what we record
    rows = _raw_rows()
    assert len(rows) == src["rows"] == 169  # 175 seed tasks less the 6 that solve a math problem
    assert [r["id"] for r in rows] == sorted({r["id"] for r in rows}, key=lambda i: int(i.rsplit("_", 1)[1]))
    assert not {r["name"] for r in rows} & set(src["left_out"]) and len(src["left_out"]) == 6
    general = load_general(DEFAULT_GENERAL, get_preset("default"))
    assert len(general) == 169
    assert all(
        g["kind"] == "general" and g["ratio"] is None and g["source"] == DEFAULT_GENERAL for g in general
    )
    assert all(g["output"].strip() and g["input"].strip() for g in general)


def test_default_general_data_is_not_gsm8k():
    rows = _raw_rows()
    for r in rows:
        text = " ".join((r["instruction"], r["input"], r["output"]))
        assert "####" not in text and "<<" not in text, r["id"]  # GSM8K's answer line and calculator notes
    # none is a math word problem worked out with "The answer is N" (the CoT exemplars' form)
    assert not [r["id"] for r in rows if re.search(r"the answer is \$?-?\d", r["output"], re.I)]


@pytest.mark.skipif(not (SHARED_DATA / "gsm8k").exists(), reason="../shared/data not present")
def test_no_default_general_row_is_a_gsm8k_question():
    questions = set()
    for split in ("train", "test"):
        for line in (SHARED_DATA / "gsm8k" / f"{split}.jsonl").open(encoding="utf-8"):
            questions.add(_norm(json.loads(line)["question"]))
    assert len(questions) > 8000
    for r in _raw_rows():
        for text in (r["instruction"], r["input"], f"{r['instruction']}\n{r['input']}"):
            assert _norm(text) not in questions, r["id"]


def test_build_sft_mixes_the_default_general_data(tmp_path):
    original, comp = write_fixture(tmp_path / "in", ratios=(0.5,))
    info = build_sft(str(original), str(comp), str(tmp_path / "sft"), delimiter="<e>", general_ratio=1,
                     every_ratio=True)  # fmt: skip
    assert info["tell"]["general"] == DEFAULT_GENERAL and info["tell"]["general_examples"] == 12
    rows = [json.loads(x) for x in (tmp_path / "sft" / "sft.jsonl").read_text().splitlines()]
    bundled = {_norm(f"{r['instruction']}\n{r['input']}" if r["input"].strip() else r["instruction"])
               for r in _raw_rows()}  # fmt: skip
    general = [r for r in rows if r.get("kind") == "general"]
    assert len(general) == 12 and all(_norm(r["input"]) in bundled for r in general)
