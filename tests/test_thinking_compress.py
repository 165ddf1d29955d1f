"""Thinking-aware compress of any field (R1-style outputs written by other tools): only the thinking is
pruned and counted, both tags, the text before ``<think>`` and everything after ``</think>`` stay byte for
byte; build-sft and fidelity do the same; list-valued fields are picked with ``--pick``."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_cli
from tokenskip.compressors.blocks import run_shard
from tokenskip.compressors.compress import count_tokens
from tokenskip.compressors.outputs import merge_parts
from tokenskip.compressors.testing import long_cot
from tokenskip.compressors.thinking import DEFAULT_TAGS, ReadSpec, ThinkTags, resolve_think_tags, split_think
from tokenskip.data.generations import check_pick, pick_generations
from tokenskip.data.prompts import get_preset
from tokenskip.errors import UserError
from tokenskip.verbs.build_sft import build_sft
from tokenskip.verbs.compress import compress

ANSWERS = [
    "\n\nThe final answer is: $\\boxed{72}$",
    "\n\n**Answer.** ünïcødé, tabs\tand CRLF\r\n\r\n$\\boxed{7}$  \n",
    "Final: \\boxed{3} and a stray <think> after the block",
]


def read(path):
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


# ----------------------------------------------------------------------------------------- split / join


@pytest.mark.parametrize(
    "text, head, thinking, tail, closed",
    [
        ("<think>\nA b c\n</think>\n\nAns", "<think>\n", "A b c", "\n</think>\n\nAns", True),
        ("Sure.  <think> x y </think>z", "Sure.  <think> ", "x y", " </think>z", True),  # text before
        ("x y\n</think>\n\nz", "", "x y", "\n</think>\n\nz", True),  # the template opened the block
        ("pre<think>\nx y ", "pre<think>\n", "x y", " ", False),  # cut: all thinking
        ("a </think> b <think> c", "", "a", " </think> b <think> c", True),  # close before any open
        ("<think>a</think>b<think>c</think>d", "<think>", "a", "</think>b<think>c</think>d", True),
        ("<think>\n\n</think>\n\nA", "<think>\n\n", "", "</think>\n\nA", True),  # empty thinking
    ],
)
def test_split_think_cuts_around_the_thinking(text, head, thinking, tail, closed):
    part = split_think(text, DEFAULT_TAGS)
    assert (part.head, part.thinking, part.tail, part.closed) == (head, thinking, tail, closed)
    assert part.join(part.thinking) == text and part.surrounds(part.join("short"))


def test_split_think_without_tags_and_custom_tags():
    assert split_think("a plain CoT\n\nThe final answer is: 3", DEFAULT_TAGS) is None
    assert split_think("<think>x</think>y", None) is None
    part = split_think("<reasoning>\nx\n</reasoning>\ny", ThinkTags("<reasoning>", "</reasoning>"))
    assert (part.head, part.thinking, part.tail) == ("<reasoning>\n", "x", "\n</reasoning>\ny")


def test_resolve_think_tags():
    assert resolve_think_tags() == DEFAULT_TAGS
    assert resolve_think_tags("none") is None and resolve_think_tags(preset="default") is None
    assert (
        resolve_think_tags(preset="qwen3")
        == resolve_think_tags(preset=get_preset("r1-distill"))
        == DEFAULT_TAGS
    )
    assert resolve_think_tags("<r>, </r>", preset="default") == ThinkTags("<r>", "</r>")  # tags win
    assert resolve_think_tags(["<a>", "</a>"]) == ThinkTags("<a>", "</a>")
    for bad in ("<think>", "a,a", "a,b,c", ",</think>"):
        with pytest.raises(UserError, match="think_tags"):
            resolve_think_tags(bad)


# -------------------------------------------------------------------------------------------- --pick


def test_pick_generations():
    row = {"g": ["a", "b", "c"], "ok": [False, True, True], "s": "text", "none": None}
    ids = lambda picked: [(p.id, p.text, p.fields) for p in picked]  # noqa: E731
    assert ids(pick_generations(row, "r", "g")) == [
        ("r#0", "a", {"generation": 0}),
        ("r#1", "b", {"generation": 1}),
        ("r#2", "c", {"generation": 2}),
    ]
    assert ids(pick_generations(row, "r", "g", "first", "ok")) == [
        ("r#0", "a", {"generation": 0, "correct": False})
    ]
    assert [p.id for p in pick_generations(row, "r", "g", "correct", "ok")] == ["r#1", "r#2"]
    assert [p.id for p in pick_generations(row, "r", "g", "first_correct", "ok")] == ["r#1"]
    assert pick_generations(row, "r", "g", "first_correct", "none") == []  # null flags: none known correct
    assert ids(pick_generations(row, "r", "s")) == [("r", "text", {})]  # a string: the row's own id
    for field, flags, message in [
        ("missing", None, "field 'missing' is missing"),
        ("none", None, "field 'none' is null"),
        ("g", "s", "holds 1 flags for 3 generations"),
    ]:
        with pytest.raises(ValueError, match=message):
            pick_generations(row, "r", field, "correct", flags)
    with pytest.raises(ValueError, match="field 'g' item 1 is not text"):
        pick_generations({"g": ["a", 3]}, "r", "g")
    with pytest.raises(ValueError, match="item 0 is not true/false"):
        pick_generations({"g": ["a"], "ok": [1]}, "r", "g", "correct", "ok")
    with pytest.raises(UserError, match="needs --correct_field"):
        check_pick("first_correct", None)
    with pytest.raises(UserError, match="unknown --pick"):
        check_pick("best", None)


# ------------------------------------------------- R1-style records, 200 to 16,000 thinking tokens


@pytest.fixture(scope="module")
def r1_records(embedded_tokenizer):
    """R1-style whole outputs: both tags, text before <think>, an R1 template's output (no open tag), a cut
    generation and a plain CoT."""

    def count(texts):
        return count_tokens(embedded_tokenizer, texts)

    body = {n: long_cot(n, count, seed=n) for n in (230, 600, 2600, 15_500)}
    texts = {
        "both": "<think>\n" + body[230] + "\n</think>" + ANSWERS[0],
        "before": "Okay, let me answer.\n<think>\n" + body[2600] + "\n</think>" + ANSWERS[1],
        "long": "<think>\n" + body[15_500] + "\n</think>" + ANSWERS[2],
        "no_open": body[600] + "\n</think>" + ANSWERS[0],
        "cut": "<think>\n" + body[230] + " and then",
        "plain": body[230] + "\n\nThe final answer is: $\\boxed{5}$",
    }
    sizes = dict(zip(body, count(list(body.values())), strict=True))
    assert min(sizes.values()) >= 200 and 8_000 < max(sizes.values()) <= 16_000, sizes
    return texts, count


def write_records(path, texts, field):
    rows = [{"id": k, "question": f"Question {k}?", "answer": "1", field: t} for k, t in texts.items()]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def check_thinking_rows(rows, texts, count, ratio=0.5):
    """Every compressed row keeps what surrounds the thinking byte for byte and hits γ on the thinking."""
    for r in rows:
        orig, comp = texts[r["id"]], r["compressed_cot"]
        assert r["cot"] == orig
        if r["id"] == "plain":
            assert "thinking" not in r and abs(r["achieved_ratio"] - ratio) <= 0.02
            continue
        part, new = split_think(orig, DEFAULT_TAGS), split_think(comp, DEFAULT_TAGS)
        assert r["thinking"] is True and r["thinking_closed"] is (r["id"] != "cut")
        assert (new.head, new.tail) == (part.head, part.tail)  # text before, tags and answer verbatim
        for tag in ("<think>", "</think>"):
            assert comp.count(tag) == orig.count(tag)
        if part.closed:
            assert comp.partition("</think>")[2].encode() == orig.partition("</think>")[2].encode()
        assert r["original_tokens"] == count([part.thinking])[0]  # γ counts the thinking alone
        assert r["compressed_tokens"] == count([new.thinking])[0]
        assert abs(r["achieved_ratio"] - ratio) <= 0.02, r["id"]


@pytest.mark.parametrize("field", ["cot", "generations"])
def test_compress_prunes_only_the_thinking_and_build_sft_keeps_the_structure(tmp_path, r1_records, field):
    texts, count = r1_records
    src = write_records(tmp_path / "r1.jsonl", texts, field)
    summary = compress(
        str(src), str(tmp_path / "c"), ratios="0.5", scorer="random", field=field, progress=False
    )
    rows = read(tmp_path / "c" / "compressed_0.5.jsonl")
    assert [r["id"] for r in rows] == list(texts)
    check_thinking_rows(rows, texts, count)
    cell = summary["ratios"]["0.5"]
    assert (cell["thinking_records"], cell["unclosed_thinking"], summary["think_tags"]) == (
        5,
        1,
        ["<think>", "</think>"],
    )

    for preset in ("default", "qwen3"):  # a thinking preset needs no 'output' field for such records
        info = build_sft(str(src), str(tmp_path / "c"), str(tmp_path / preset), preset=preset, delimiter="<|d|>",
                         every_ratio=True)  # fmt: skip
        if preset == "qwen3":  # ... but a record without tags still does (as before)
            assert info["issues"] == {"unclosed_thinking": 1, "no_output": 1, "unmatched_0.5": 2}
            assert "plain" not in {r["id"] for r in read(tmp_path / preset / "sft.jsonl")}
            continue
        assert (
            info["issues"] == {"unclosed_thinking": 1, "unmatched_0.5": 1} and info["thinking_examples"] == 4
        )
        sft = read(tmp_path / preset / "sft.jsonl")
        assert [(r["id"], r["ratio"]) for r in sft] == [
            (k, g) for k in texts if k != "cut" for g in (1.0, 0.5)
        ]
        comp = {r["id"]: r["compressed_cot"] for r in rows}
        for r in sft:
            orig = texts[r["id"]]
            if r["id"] == "plain":  # no tags: the CoT and TokenSkip's answer sentence
                assert r["output"].endswith("The final answer is: $\\boxed{1}$")
            elif r["ratio"] == 1.0:
                assert r["output"] == orig and r["input"] == r["question"]
            else:
                assert r["output"] == comp[r["id"]] and r["input"] == r["question"] + "<|d|>0.5<|d|>"
                assert r["output"].partition("</think>")[2].encode() == orig.partition("</think>")[2].encode()
                assert split_think(r["output"], DEFAULT_TAGS).head == split_think(orig, DEFAULT_TAGS).head


def test_think_tags_off_and_custom(tmp_path, r1_records):
    texts, _ = r1_records
    small = {"both": texts["both"], "custom": "<r>\n" + texts["plain"] + "\n</r>\nAnswer: 5"}
    src = write_records(tmp_path / "r1.jsonl", small, "generations")
    compress(str(src), str(tmp_path / "off"), ratios="0.5", scorer="truncation", field="generations",
             think_tags="none", progress=False)  # fmt: skip
    off = {r["id"]: r for r in read(tmp_path / "off" / "compressed_0.5.jsonl")}
    assert "thinking" not in off["both"] and "</think>" not in off["both"]["compressed_cot"]  # all pruned
    compress(str(src), str(tmp_path / "r"), ratios="0.5", scorer="truncation", field="generations",
             think_tags="<r>,</r>", progress=False)  # fmt: skip
    got = {r["id"]: r for r in read(tmp_path / "r" / "compressed_0.5.jsonl")}
    assert "thinking" not in got["both"] and got["custom"]["compressed_cot"].endswith("\n</r>\nAnswer: 5")
    with pytest.raises(UserError, match="other settings"):  # a resumed run must look for the same tags
        compress(str(src), str(tmp_path / "r"), ratios="0.5", scorer="truncation", field="generations",
                 progress=False)  # fmt: skip


# ---------------------------------------------------------- a parquet with lists of generations and flags


def openr1_parquet(path):
    """OpenR1-Math-220k's columns (problem, solution, answer, uuid, generations, correctness_math_verify,
    correctness_llama, finish_reasons, ...) with made-up text: 3 rows, 2 + 4 + 2 generations."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    def gen(i, k, end="</think>\n\nSo the answer is $\\boxed{8}$."):
        return f"<think>\nRow {i}, try {k}: 3 + 5 = 8 and then we double check the sum once more.\n{end}"

    rows = [
        {"gens": [gen(0, 0), gen(0, 1)], "ok": [False, True]},
        {"gens": [gen(1, k) for k in range(4)], "ok": [True, True, False, True]},
        {"gens": [gen(2, 0), gen(2, 1, end="cut")], "ok": [False, False]},
    ]
    table = pa.table({
        "problem": [f"What is 3 + 5 (row {i})?" for i in range(3)],
        "solution": ["3 + 5 = 8, so $\\boxed{8}$."] * 3,
        "answer": ["8"] * 3,
        "uuid": [f"u{i}" for i in range(3)],
        "generations": pa.array([r["gens"] for r in rows], pa.list_(pa.string())),
        "correctness_math_verify": pa.array([r["ok"] for r in rows], pa.list_(pa.bool_())),
        "correctness_llama": pa.array([None] * 3, pa.list_(pa.bool_())),
        "finish_reasons": pa.array([["stop"] * len(r["gens"]) for r in rows], pa.list_(pa.string())),
        "correctness_count": [sum(r["ok"]) for r in rows],
    })  # fmt: skip
    pq.write_table(table, path)
    return path


def test_parquet_generations_pick_ids_and_counts(tmp_path):
    src = openr1_parquet(tmp_path / "train.parquet")
    pick = {"field": "generations", "correct_field": "correctness_math_verify", "ratios": "0.5", "scorer": "random",
            "progress": False}  # fmt: skip
    s = compress(str(src), str(tmp_path / "fc"), pick="first_correct", **pick)
    rows = read(tmp_path / "fc" / "compressed_0.5.jsonl")
    assert [(r["id"], r["generation"], r["correct"]) for r in rows] == [
        ("train-0#1", 1, True),
        ("train-1#0", 0, True),
    ]
    assert s["rows_none_picked"] == 1 and s["ratios"]["0.5"]["records"] == 2
    assert rows[0]["question"] == "What is 3 + 5 (row 0)?" and rows[0]["cot"].startswith(
        "<think>\nRow 0, try 1:"
    )
    assert all(r["compressed_cot"].endswith("</think>\n\nSo the answer is $\\boxed{8}$.") for r in rows)

    s = compress(str(src), str(tmp_path / "all"), **(pick | {"correct_field": None}))  # default: every one
    assert [r["id"] for r in read(tmp_path / "all" / "compressed_0.5.jsonl")] == [
        f"train-{i}#{k}" for i, n in enumerate((2, 4, 2)) for k in range(n)
    ]
    assert s["ratios"]["0.5"]["unclosed_thinking"] == 1

    compress(str(src), str(tmp_path / "ok"), pick="correct", **pick)
    ok = read(tmp_path / "ok" / "compressed_0.5.jsonl")
    assert [r["id"] for r in ok] == ["train-0#1", "train-1#0", "train-1#1", "train-1#3"]
    parts = [tmp_path / "p0", tmp_path / "p1"]  # two shards merged back in input order, picked the same way
    spec = ReadSpec("correct", "correctness_math_verify")
    for k, part in enumerate(parts):
        run_shard(src, part, [0.5], {"scorer": "random"}, "smollm2-135m", "generations", "raise", (k, 2), 64, None,
                  False, spec=spec)  # fmt: skip
    (tmp_path / "m").mkdir()
    merge_parts(tmp_path / "m", parts, [0.5], src, "generations", "raise", None, spec)
    assert read(tmp_path / "m" / "compressed_0.5.jsonl") == ok
    info = build_sft(
        str(src), str(tmp_path / "ok"), str(tmp_path / "sft"), delimiter="<|d|>", every_ratio=True
    )
    sft = read(tmp_path / "sft" / "sft.jsonl")  # the same generations, joined by the same ids
    assert [(r["id"], r["ratio"]) for r in sft] == [(r["id"], g) for r in ok for g in (1.0, 0.5)]
    assert info["issues"] == {} and info["thinking_examples"] == 4
    assert all(r["output"] == c["compressed_cot"] for r, c in zip(sft[1::2], ok, strict=True))


def test_bad_generation_rows_are_one_line_errors(tmp_path):
    rows = [
        {"question": "q?", "answer": "1", "generations": ["<think>a</think>b", "c"], "ok": [True, False]},
        {"question": "q?", "answer": "1", "generations": ["<think>a</think>b", "c"], "ok": [True]},
        {"question": "q?", "answer": "1", "generations": ["x", None], "ok": [True, True]},
    ]
    src = tmp_path / "g.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    kw = {
        "field": "generations",
        "pick": "correct",
        "correct_field": "ok",
        "scorer": "truncation",
        "progress": False,
    }
    with pytest.raises(UserError, match=r"g.jsonl:2: field 'ok' holds 1 flags for 2 generations"):
        compress(str(src), str(tmp_path / "c"), **kw)
    s = compress(str(src), str(tmp_path / "c"), on_error="skip", ratios="0.5", **kw)
    assert s["malformed_rows_skipped"] == 2 and s["ratios"]["0.5"]["records"] == 1
    args = "--field generations --pick correct --correct_field ok --think_tags <think>,</think>".split()
    proc = run_cli("compress", "--input", str(src), "--out", str(tmp_path / "d"), *args)  # documented options
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        f"tokenskip: error: {src}:2: field 'ok' holds 1 flags for 2 generations"
    ]


# ------------------------------------------------------------------------------------------- fidelity

THINK_ROWS = [
    {"id": "a", "question": "What is 3 + 5?", "answer": "8", "correct": True,
     "cot": "<think>\nWe add 3 and 5.\n3 + 5 = 8.\nSo \\boxed{8}.\n</think>\n\nThe answer is $\\boxed{8}$."},
    {"id": "b", "question": "What is 4 + 4?", "answer": "8", "correct": True,  # an output only, R1 template
     "output": "Four plus four.\n4 + 4 = 8, the sum.\n</think>\n\n$\\boxed{8}$"},
    {"id": "c", "question": "What is 2 + 6?", "answer": "8", "correct": True, "cot": "2 + 6 = 8, the sum."},
]  # fmt: skip


def test_fidelity_cuts_thinking_records_to_their_thinking():
    from tokenskip.data.datasets import Record
    from tokenskip.eval.fidelity import select_records
    from tokenskip.methods import Context
    from tokenskip.verbs.fidelity import ForcedAnswer

    got = select_records(THINK_ROWS, tags=DEFAULT_TAGS)
    assert [(r["id"], r["cot"], r.get("thinking")) for r in got] == [
        ("a", "We add 3 and 5.\n3 + 5 = 8.", True),  # the answer after </think> is not under test
        ("b", "Four plus four.\n4 + 4 = 8, the sum.", True),
        ("c", "2 + 6 = 8, the sum.", None),  # a generate record: cot is already the CoT
    ]
    assert "</think>" in select_records(THINK_ROWS, tags=None)[0]["cot"]  # --think_tags none
    method = ForcedAnswer({}, {"a"}, "\n</think>\n\nFinal Answer: $\\boxed{")
    ctx = Context(None, get_preset("default"), None)  # type: ignore[arg-type]
    assert method.given(ctx, Record("a", "q", "8", "short")) == "short\n</think>\n\nFinal Answer: $\\boxed{"
    assert method.given(ctx, Record("c", "q", "8", "short")) == "short\n\nThe final answer is: $\\boxed{"
    assert method.given(ctx, Record("a", "q", "8", "")) == "</think>\n\nFinal Answer: $\\boxed{"  # no CoT
