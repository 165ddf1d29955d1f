"""The scorer registry: every registered scorer builds by name, declares the options it reads, and the toy
``length`` scorer (one file + one registry line) runs through ``tokenskip compress --scorer length``."""

import dataclasses
import json

import pytest

from tests.conftest import run_cli
from tokenskip.compressors import SCORERS, Scorer, ScorerOptions, make_scorer, prune, scorer_class
from tokenskip.compressors.registry import parse_spec
from tokenskip.compressors.testing import synthetic_cots
from tokenskip.errors import UserError
from tokenskip.verbs.compress import compress


def test_every_registered_scorer_is_a_scorer_of_its_name():
    fields = {f.name for f in dataclasses.fields(ScorerOptions)}
    for name in SCORERS:
        cls = scorer_class(name)
        assert issubclass(cls, Scorer) and cls.name == name
        assert cls.options <= fields, (name, cls.options - fields)
    assert {"llmlingua2", "selfinfo", "random", "truncation", "llmlingua", "length"} <= set(SCORERS)
    with pytest.raises(UserError, match="unknown --scorer 'magic'"):
        scorer_class("magic")


def test_length_scorer_keeps_the_longest_words():
    (scored,) = make_scorer("length").score(["a bb ccc dddd"])
    assert scored.scores.tolist() == [1, 2, 3, 4]
    assert prune(scored, 0.5) == "ccc dddd"
    (scored,) = make_scorer("length").score(["The total is 5 + 7 = 12 apples."])
    assert prune(scored, 0.5) == "The total is 12 apples"


def test_options_a_scorer_does_not_read_are_refused(tmp_path):
    inp = tmp_path / "in.jsonl"
    inp.write_text('{"question": "q", "cot": "a bb ccc", "answer": "1"}\n')
    for scorer in ("length", "random", "truncation"):
        with pytest.raises(UserError, match=f"do not apply to --scorer {scorer}"):
            compress(str(inp), str(tmp_path / scorer), scorer=scorer, keep_digits=True, progress=False)


def test_scorer_specs():
    assert parse_spec("selfinfo:qwen2.5-coder-0.5b") == ("selfinfo", "qwen2.5-coder-0.5b", False)
    assert parse_spec(" llmlingua2? ") == ("llmlingua2", None, True)
    assert parse_spec("length") == ("length", None, False)
    for bad, msg in (("length:x", "takes no checkpoint"), ("llmlingua", "unknown scorer"), ("x", "unknown")):
        with pytest.raises(UserError, match=msg):
            parse_spec(bad)


def test_compress_cli_with_the_length_scorer(tmp_path):
    cots = synthetic_cots(6, seed=5)
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps({"question": "q?", "cot": c, "answer": "1"}) + "\n" for c in cots))
    res = run_cli("compress", "--input", str(inp), "--out", str(tmp_path / "o"), "--scorer", "length",
                  "--ratios", "0.5", "--model", "smollm2-135m", "--progress", "false")  # fmt: skip
    assert res.returncode == 0, res.stderr
    rows = [json.loads(line) for line in (tmp_path / "o" / "compressed_0.5.jsonl").read_text().splitlines()]
    assert [r["cot"] for r in rows] == cots
    for r in rows:
        assert abs(r["achieved_ratio"] - 0.5) < 0.15
        (scored,) = make_scorer("length").score([r["cot"]])
        kept = set(r["compressed_cot"].split())
        dropped = [w for w in scored.words if w not in kept and not any(w in k for k in kept)]
        assert dropped and max(map(len, dropped)) <= min(len(w) for w in scored.words if w in kept)
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["scorer"] == "length" and summary["ratios"]["0.5"]["records"] == 6
    assert summary["mode"] is None and summary["scorer_info"] == {"scorer": "length", "device": "cpu"}
