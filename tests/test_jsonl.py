import json

import pytest

from tokenskip.data.jsonl import BadLineStats, ResumableJsonlWriter, read_jsonl, write_jsonl_atomic
from tokenskip.errors import UserError


def test_read_jsonl_reports_file_and_line(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"a": 1}\n\n{"a": 2\n[1, 2]\n{"a": 3}\n')
    with pytest.raises(UserError, match=r"d\.jsonl:3: malformed JSONL line"):
        list(read_jsonl(p))
    stats = BadLineStats()
    rows = list(read_jsonl(p, on_error="skip", stats=stats))
    assert [(n, r["a"]) for n, r in rows] == [(1, 1), (5, 3)]
    assert len(stats) == 2 and ":4:" in stats.skipped[1]


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(UserError, match="file not found"):
        list(read_jsonl(tmp_path / "nope.jsonl"))
    (tmp_path / "e.jsonl").write_text("")
    with pytest.raises(UserError, match="file is empty"):
        list(read_jsonl(tmp_path / "e.jsonl"))


def test_resumable_writer_cuts_partial_line_and_skips_done(tmp_path):
    p = tmp_path / "out.jsonl"
    with ResumableJsonlWriter(p) as w:
        w.write({"id": "a", "v": 1})
        w.write({"id": "b", "v": 2})
        w.write({"id": "a", "v": 99})  # duplicate id: ignored
    with p.open("a") as f:
        f.write('{"id": "c", "v"')  # killed mid-write
    w = ResumableJsonlWriter(p)
    assert w.done == {"a", "b"}
    w.write({"id": "c", "v": 3})
    w.close()
    rows = [json.loads(line) for line in p.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["a", "b", "c"]
    assert rows[0]["v"] == 1


def test_resumable_writer_rejects_foreign_file(tmp_path):
    p = tmp_path / "out.jsonl"
    p.write_text('{"no_id": 1}\n')
    with pytest.raises(UserError, match="existing output line"):
        ResumableJsonlWriter(p)


def test_write_jsonl_atomic_leaves_no_temp(tmp_path):
    p = tmp_path / "x.jsonl"
    assert write_jsonl_atomic(p, [{"id": 1}, {"id": 2}]) == 2
    assert [f.name for f in tmp_path.iterdir()] == ["x.jsonl"]


def test_atomic_dir_replaces_on_success_and_keeps_the_old_folder_on_error(tmp_path):
    from tokenskip.data.jsonl import atomic_dir

    out = tmp_path / "model"
    with atomic_dir(out) as tmp:
        (tmp / "a.txt").write_text("1")
        assert not out.exists()  # nothing visible until the block ends
    assert (out / "a.txt").read_text() == "1"
    with pytest.raises(RuntimeError):
        with atomic_dir(out) as tmp:
            (tmp / "b.txt").write_text("2")
            raise RuntimeError("killed")
    assert sorted(p.name for p in out.iterdir()) == ["a.txt"]  # the finished folder is untouched
    with atomic_dir(out) as tmp:
        (tmp / "c.txt").write_text("3")
    assert sorted(p.name for p in out.iterdir()) == ["c.txt"]  # replaced whole, not merged
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temporary folder left


# characters str.splitlines() breaks a line at, which json.dumps(ensure_ascii=False) writes raw: GSM8K train
# question 2381 holds U+2028, and a resumed 3,000-question run stopped at it
UNICODE_BREAKS = "a\u2028b\u2029c\x85d\x1ce\x1df\x1eg\x0bh\x0ci"


def test_a_record_with_unicode_line_breaks_resumes_and_reads_back(tmp_path):
    from tokenskip.training.runs import trim_log
    from tokenskip.verbs.pipeline import _count, _mean_cot

    p = tmp_path / "out.jsonl"
    with ResumableJsonlWriter(p) as w:
        w.write_many([{"id": "1", "question": UNICODE_BREAKS, "cot_tokens": 3}, {"id": "2", "cot_tokens": 5}])
    assert p.read_text(encoding="utf-8").count("\n") == 2 and "\u2028" in p.read_text(encoding="utf-8")
    with ResumableJsonlWriter(p) as w:  # resuming reads the file back: two done records, not a bad line
        assert w.done == {"1", "2"}
        w.write({"id": "3", "cot_tokens": 7})
    rows = [r for _, r in read_jsonl(p)]
    assert [r["id"] for r in rows] == ["1", "2", "3"] and rows[0]["question"] == UNICODE_BREAKS
    assert _count(p) == 3 and _mean_cot(p) == 5.0

    log = tmp_path / "train_log.jsonl"
    log.write_text(
        "".join(json.dumps({"step": s, "note": UNICODE_BREAKS}, ensure_ascii=False) + "\n" for s in (1, 2, 3))
    )
    trim_log(log, 2)
    assert [json.loads(x)["step"] for x in log.read_text(encoding="utf-8").split("\n") if x] == [1, 2]
