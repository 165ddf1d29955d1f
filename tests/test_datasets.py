import json

import pytest

from tokenskip.data.datasets import load_records
from tokenskip.errors import UserError
from tokenskip.grading import last_boxed


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_bundled_sample():
    recs, stats = load_records("sample")
    assert len(recs) == 16 and len(stats) == 0
    assert all(r.question and r.answer and r.cot for r in recs)
    assert len({r.id for r in recs}) == 16


def test_gsm8k_hf_format(tmp_path):
    f = write(tmp_path / "test.jsonl", [{"question": "Q?", "answer": "Step 1.\nStep 2.\n#### 1,234"}])
    (r,), _ = load_records(f)
    assert (r.answer, r.cot, r.task, r.id) == ("1234", "Step 1.\nStep 2.", "gsm8k", f"{tmp_path.name}-test-0")


def test_presplit_gsm8k_and_zero(tmp_path):
    f = write(
        tmp_path / "a.jsonl",
        [{"question": "Q", "cot": "c", "answer": "18", "id": "x1"}, {"question": "R", "answer": 48.0}],
    )
    recs, _ = load_records(f)
    assert [(r.id, r.answer, r.cot) for r in recs] == [
        ("x1", "18", "c"),
        (f"{tmp_path.name}-a-1", "48", None),
    ]


def test_math_format_uses_answer_or_boxed(tmp_path):
    rows = [
        {"problem": "P1", "solution": "so \\boxed{\\frac{1}{2}}.", "answer": "\\frac12"},
        {"problem": "P2", "solution": "thus \\boxed{x^{2}}", "answer": ""},
    ]
    recs, _ = load_records(write(tmp_path / "m.jsonl", rows))
    assert [r.answer for r in recs] == ["\\frac12", "x^{2}"]
    assert all(r.task == "math" for r in recs)


def test_column_map_json_and_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"prompt": "What?", "target": "7"}]
    (tmp_path / "d.json").write_text(json.dumps(rows))
    recs, _ = load_records(str(tmp_path / "d.json"), column_map={"question": "prompt", "answer": "target"})
    assert (recs[0].question, recs[0].answer) == ("What?", "7")
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    recs, _ = load_records(str(tmp_path / "d.parquet"), column_map={"question": "prompt", "answer": "target"})
    assert recs[0].answer == "7"
    with pytest.raises(UserError, match="column 'nope'"):
        load_records(str(tmp_path / "d.json"), column_map={"question": "nope"})


def test_malformed_rows_fatal_or_counted(tmp_path):
    f = write(
        tmp_path / "b.jsonl",
        [{"question": "ok", "answer": "1"}, {"question": "", "answer": "2"}, {"question": "no answer"}],
    )
    with pytest.raises(UserError, match=r"b\.jsonl:2: malformed row \(field 'question' is empty\)"):
        load_records(f)
    recs, stats = load_records(f, on_error="skip")
    assert len(recs) == 1 and len(stats) == 2
    assert "b.jsonl:3" in stats.skipped[1] and "field 'answer' is missing" in stats.skipped[1]


def test_duplicate_ids_and_limit(tmp_path):
    f = write(tmp_path / "c.jsonl", [{"id": "a", "question": "q", "answer": "1"}] * 2)
    with pytest.raises(UserError, match="duplicate id 'a'"):
        load_records(f)
    recs, _ = load_records("sample", limit=3)
    assert len(recs) == 3
    with pytest.raises(UserError, match="--limit"):
        load_records("sample", limit=0)


def test_unknown_dataset_and_unsupported_type(tmp_path):
    with pytest.raises(UserError, match="unknown dataset"):
        load_records("nonsense")
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(UserError, match="unsupported file type"):
        load_records(str(tmp_path / "x.csv"))


def test_named_dataset_from_data_dir(tmp_path, monkeypatch):
    (tmp_path / "gsm8k").mkdir()
    write(tmp_path / "gsm8k" / "test.jsonl", [{"question": "Q", "answer": "A #### 3"}])
    monkeypatch.setenv("TOKENSKIP_DATA_DIR", str(tmp_path))
    (r,), _ = load_records("gsm8k", split="test")
    assert r.answer == "3" and r.id == "gsm8k-test-0"


def test_last_boxed_nested():
    assert last_boxed("a \\boxed{1} b \\boxed{\\frac{1}{2}} c") == "\\frac{1}{2}"
    assert last_boxed("no box") is None
    assert last_boxed("\\boxed{unclosed") is None
