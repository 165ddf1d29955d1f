"""Every verb that reads a user file, fed every input class of issue 14 through ``tokenskip.cli.main``.

Accepted, with rows identical to a plain LF JSONL file: JSONL with a UTF-8 BOM and CRLF line ends, a
``.json`` array, a ``.parquet`` file. Refused with one line on stderr naming file, line (or row) and
field, exit status 2, no traceback, and before any model or tokenizer loads: a cp1252 byte, a null or
empty field the verb requires. With ``--on_error skip`` the bad row is skipped and reported instead.
Models are replaced by a scripted generator (fast); one slow test runs the real model per format.
"""

from __future__ import annotations

import functools
import json
import re

import pytest

from tokenskip.cli import main
from tokenskip.data.inputs import field_problem, locate, read_rows, require_fields
from tokenskip.data.jsonl import BadLineStats, read_jsonl
from tokenskip.errors import UserError
from tokenskip.inference.base import Generation, Generator, SamplingConfig
from tokenskip.models import load_tokenizer  # the real one: the tests patch the module attribute

ROWS = [
    {
        "id": f"r{i}",
        "question": f"Tom has {i + 2} apples. How many?",
        "answer": str(i + 2),
        "cot": f"Step 1: Tom has {i + 2} apples.",
        "output": f"Step 1: count.\n\nThe final answer is: $\\boxed{{{i + 2}}}$",
        "cot_tokens": 5,
    }
    for i in range(3)
]
BAD = 1  # index of the row a bad input class spoils (line 2 / row 2)


# ------------------------------------------------------------------------------------------- inputs


def _jsonl(rows, bom=False, eol="\n") -> bytes:
    text = "".join(json.dumps(r, ensure_ascii=False) + eol for r in rows)
    return (b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8")


def _spoil(field, value):
    rows = [dict(r) for r in ROWS]
    rows[BAD][field] = value
    return rows


def make_input(kind: str, folder) -> str:
    """One input class as a file in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "jsonl":
        path = folder / "data.jsonl"
        path.write_bytes(_jsonl(ROWS))
    elif kind == "bom_crlf":
        path = folder / "data.jsonl"
        path.write_bytes(_jsonl(ROWS, bom=True, eol="\r\n"))
    elif kind == "json_array":
        path = folder / "data.json"
        path.write_text(json.dumps(ROWS, indent=2), encoding="utf-8")
    elif kind == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = folder / "data.parquet"
        pq.write_table(pa.Table.from_pylist(ROWS), path)
    elif kind == "cp1252":  # `café` saved as cp1252 in one row's question
        path = folder / "data.jsonl"
        lines = _jsonl(ROWS).split(b"\n")
        lines[BAD] = lines[BAD].replace(b"Tom has", "Tom (café) has".encode("cp1252"), 1)
        path.write_bytes(b"\n".join(lines))
    elif kind.startswith(("null_", "empty_")):  # null_question, empty_answer, null_cot, ... [_json|_parquet]
        what, field, *fmt = kind.split("_")
        rows = _spoil(field, None if what == "null" else "  ")
        if fmt == ["json"]:
            path = folder / "data.json"
            path.write_text(json.dumps(rows), encoding="utf-8")
        elif fmt == ["parquet"]:
            import pyarrow as pa
            import pyarrow.parquet as pq

            path = folder / "data.parquet"
            pq.write_table(pa.Table.from_pylist(rows), path)
        else:
            path = folder / "data.jsonl"
            path.write_bytes(_jsonl(rows))
    else:
        raise AssertionError(kind)
    return str(path)


ACCEPTED = ["bom_crlf", "json_array", "parquet"]
BAD_CLASSES = [
    "cp1252",
    "null_question",
    "empty_question",
    "null_answer",
    "empty_answer",
    "null_cot",
    "null_question_json",
    "null_answer_parquet",
]


# -------------------------------------------------------------------------------------- the reader


def test_bom_crlf_json_and_parquet_read_like_plain_jsonl(tmp_path):
    plain = [row for _, row in read_rows(make_input("jsonl", tmp_path / "plain"))]
    assert plain == ROWS
    for kind in ACCEPTED:
        rows = list(read_rows(make_input(kind, tmp_path / kind)))
        assert [r for _, r in rows] == ROWS, kind
        assert [n for n, _ in rows] == [1, 2, 3], kind
    wrapped = tmp_path / "wrapped.json"
    wrapped.write_bytes(b"\xef\xbb\xbf" + json.dumps({"data": ROWS}).encode())
    assert [r for _, r in read_rows(wrapped)] == ROWS


def test_read_jsonl_of_own_files_takes_bom_and_crlf(tmp_path):
    p = tmp_path / "out.jsonl"
    p.write_bytes(_jsonl(ROWS, bom=True, eol="\r\n"))
    assert [r for _, r in read_jsonl(p)] == ROWS


def test_cp1252_byte_names_file_line_field_and_column(tmp_path):
    path = make_input("cp1252", tmp_path)
    with pytest.raises(UserError) as e:
        list(read_rows(path))
    msg = str(e.value)
    assert msg.startswith(f"{path}:2: field 'question' is not valid UTF-8 (byte 0xe9 at column ")
    assert "save the file as UTF-8" in msg and "\n" not in msg
    stats = BadLineStats()
    assert [r["id"] for _, r in read_rows(path, on_error="skip", stats=stats)] == ["r0", "r2"]
    assert len(stats) == 1 and stats.skipped[0] == msg


def test_bad_utf8_outside_a_string_and_in_a_json_array(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_bytes(b'{"question": "ok", "answer": 1}\n{"question": "x", \xff}\n')
    with pytest.raises(UserError, match=r"a\.jsonl:2: not valid UTF-8 \(byte 0xff at column 19\)"):
        list(read_rows(p))
    j = tmp_path / "b.json"
    j.write_bytes(b'[{"question": "ok"},\n {"question": "caf\xe9"}]')
    with pytest.raises(UserError, match=r"b\.json: row 2: field 'question' is not valid UTF-8 \(byte 0xe9\)"):
        list(read_rows(j))
    stats = BadLineStats()
    assert [r for _, r in read_rows(j, on_error="skip", stats=stats)] == [{"question": "ok"}]
    assert len(stats) == 1
    j.write_bytes(b'[{"question": "ok"},\n \xe9]')
    with pytest.raises(UserError, match=r"b\.json:2:2: not valid UTF-8 \(byte 0xe9\)"):
        list(read_rows(j, on_error="skip"))


def test_lone_surrogate_escape_is_refused(tmp_path):
    p = tmp_path / "s.jsonl"
    p.write_text('{"q": "\\ud83d\\ude00 fine"}\n{"q": "\\udce9 broken"}\n', encoding="utf-8")
    with pytest.raises(UserError, match=r"s\.jsonl:2: field 'q' holds a lone surrogate escape \(\\udce9\)"):
        list(read_rows(p))
    assert [r["q"] for _, r in read_rows(p, on_error="skip")] == ["\U0001f600 fine"]


def test_whole_file_problems(tmp_path):
    j = tmp_path / "lines.json"
    j.write_text('{"a": 1}\n{"a": 2}\n')
    with pytest.raises(UserError, match=r"lines\.json:2:1: not valid JSON .*name the file \.jsonl"):
        list(read_rows(j))
    j.write_text('{"rows": []}')
    with pytest.raises(UserError, match="expected a JSON array of objects"):
        list(read_rows(j))
    j.write_text('[{"a": 1}, 7]')
    with pytest.raises(UserError, match=r"lines\.json: row 2: expected a JSON object, got int"):
        list(read_rows(j))
    bad = tmp_path / "x.parquet"
    bad.write_text("not parquet")
    with pytest.raises(UserError, match=r"x\.parquet: cannot read parquet"):
        list(read_rows(bad))
    csv = tmp_path / "x.csv"
    csv.write_text("a,b\n")
    with pytest.raises(
        UserError, match=r"unsupported file type '\.csv' \(use \.jsonl, \.json, \.parquet, \.jsonl\.gz"
    ):
        list(read_rows(csv))


def test_txt_lines_only_where_asked(tmp_path):
    t = tmp_path / "q.txt"
    t.write_bytes(b"\xef\xbb\xbfFirst?\r\n\r\nSecond?\r\nCaf\xe9?\r\n")
    with pytest.raises(UserError, match="unsupported file type '.txt'"):
        list(read_rows(t))
    stats = BadLineStats()
    rows = list(read_rows(t, on_error="skip", stats=stats, txt_field="question"))
    assert rows == [(1, {"question": "First?"}), (3, {"question": "Second?"})]
    assert stats.skipped == [f"{t}:4: not valid UTF-8 (byte 0xe9 at column 4); save the file as UTF-8"]


def test_field_kinds():
    row = {"t": "x", "blank": " ", "none": None, "n": 0, "nan": float("nan"), "lst": [1], "empty": ""}
    assert field_problem(row, "t") is None and field_problem(row, "n", "value") is None
    assert field_problem(row, "missing") == "field 'missing' is missing"
    assert field_problem(row, "none", "string") == "field 'none' is null"
    assert field_problem(row, "blank") == "field 'blank' is empty"
    assert field_problem(row, "empty", "string") is None  # an empty CoT is still a CoT
    assert field_problem(row, "n") == "field 'n' is not text (got int)"
    assert field_problem(row, "lst", "value") == "field 'lst' is not text or a number (got list)"
    assert field_problem(row, "nan", "value") == "field 'nan' is NaN"
    with pytest.raises(ValueError, match="field 'none' is null"):
        require_fields(row, text=["t"], values=["n", "none"])
    assert locate("a/b.jsonl", 3) == "a/b.jsonl:3" and locate("b.parquet", 3) == "b.parquet: row 3"


# ------------------------------------------------------------------------------ every verb, every class


class ScriptedGenerator(Generator):
    """Answers every prompt at once, correctly when the answer is in the prompt; TALE budgets `[[40]]`."""

    name = "scripted"

    class _Tok:
        chat_template = None
        eos_token = "</s>"

        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": text.split()}

    def __init__(self) -> None:
        self.tokenizer = self._Tok()

    def generate(self, prompts: list[str], config: SamplingConfig) -> list[Generation]:
        out = []
        for p in prompts:
            if "estimate the minimum number of tokens" in p:
                text = "[[40]]"
            else:
                n = re.search(r"has (\d+) apples", p)
                text = f"Step 1: count.\n\nThe final answer is: $\\boxed{{{n.group(1) if n else 0}}}$"
            out.append(
                Generation(text=text, num_tokens=len(text.split()), finish_reason="stop", latency_s=0.0)
            )
        return out


class ModelLoaded(AssertionError):
    """A verb loaded a model or tokenizer before it had checked its input rows."""


def _refuse(*args, **kwargs):
    raise ModelLoaded("a model or tokenizer was loaded before the input rows were checked")


@functools.cache
def _tokenizer(*args, **kwargs):
    """The real target tokenizer (compress counts tokens with it), loaded once for this file."""
    return load_tokenizer(*args, **kwargs)


@pytest.fixture
def models(monkeypatch):
    """``models(allowed)``: scripted generators and the real tokenizer (allowed), or a ModelLoaded error
    on any model or tokenizer load."""
    import tokenskip.inference
    import tokenskip.models

    def setup(allowed: bool) -> None:
        generator = (lambda *a, **k: ScriptedGenerator()) if allowed else _refuse
        monkeypatch.setattr(tokenskip.inference, "make_generator", generator)
        monkeypatch.setattr(tokenskip.models, "load_tokenizer", _tokenizer if allowed else _refuse)

    return setup


# verb -> (required fields, how to call it, the file its records land in)
VERBS = {
    "generate": (
        {"question", "answer"},
        ["generate", "--dataset", "{in}", "--out", "{out}/o.jsonl"],
        "o.jsonl",
    ),
    "infer": ({"question"}, ["infer", "--input", "{in}", "--out", "{out}/o.jsonl"], "o.jsonl"),
    "tale-estimate": (
        {"question", "answer"},
        ["tale", "estimate", "--dataset", "{in}", "--out", "{out}/o.jsonl"],
        "o.jsonl",
    ),
    "tale-run": (
        {"question", "answer"},
        ["tale", "run", "--dataset", "{in}", "--out", "{out}/o.jsonl"],
        "o.jsonl",
    ),
    "tale-search": (
        {"question", "answer"},
        ["tale", "search", "--dataset", "{in}", "--out", "{out}/s", "--max_steps", "1"],
        "s/traces.jsonl",
    ),
    "bench": (
        {"question", "answer"},
        ["bench", "--dataset", "{in}", "--out", "{out}/b", "--methods", "original", "--latency_samples", "0"],
        "b/records/original.jsonl",
    ),
    "compress": (
        {"question", "answer", "cot"},
        [
            "compress",
            "--input",
            "{in}",
            "--out",
            "{out}/c",
            "--scorer",
            "truncation",
            "--ratios",
            "0.5",
            "--progress",
            "false",
        ],
        "c/compressed_0.5.jsonl",
    ),  # fmt: skip
    "build-sft": (
        {"question", "answer", "cot"},
        ["build-sft", "--original", "{in}", "--compressed", "{comp}", "--out", "{out}/sft"],
        "sft/sft.jsonl",
    ),
    "filter": ({"output", "answer"}, ["filter", "--input", "{in}", "--out", "{out}/f.jsonl"], "f.jsonl"),
    "eval": ({"output", "answer"}, ["eval", "{in}", "--out", "{out}/m.json"], "m.json"),
}


def _compressed_dir(folder):
    comp = folder / "comp"
    comp.mkdir(parents=True, exist_ok=True)
    rows = [{"id": r["id"], "compressed_cot": r["cot"][:12]} for r in ROWS]
    (comp / "compressed_0.5.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return comp


def run_verb(verb, inp, out, capsys, extra=()):
    _, template, result = VERBS[verb]
    comp = _compressed_dir(out)
    args = [a.format(**{"in": inp, "out": out, "comp": comp}) for a in template]
    code = main([*args, *extra])
    captured = capsys.readouterr()
    return code, captured, out / result


def result_key(verb, path):
    """What a verb made of the rows, format-independent: ids, questions and answers (eval: its metrics)."""
    if verb == "eval":
        m = json.loads(path.read_text())
        return m["n"], m["accuracy"]
    rows = [r for _, r in read_jsonl(path)]
    return sorted((str(r["id"]), r.get("question"), str(r.get("answer"))) for r in rows)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    """Each verb's result on the plain LF JSONL file."""
    return {}


@pytest.mark.parametrize("kind", ACCEPTED)
@pytest.mark.parametrize("verb", list(VERBS))
def test_accepted_formats_give_the_same_result_as_plain_jsonl(verb, kind, tmp_path, capsys, models, baseline):
    models(allowed=True)
    if verb not in baseline:
        code, cap, path = run_verb(
            verb, make_input("jsonl", tmp_path / "plain"), tmp_path / "plain_out", capsys
        )
        assert code == 0, cap.err
        baseline[verb] = result_key(verb, path)
    code, cap, path = run_verb(verb, make_input(kind, tmp_path / kind), tmp_path / f"{kind}_out", capsys)
    assert code == 0 and "Traceback" not in cap.err, cap.err
    assert result_key(verb, path) == baseline[verb]


def _field(kind: str) -> str:
    return "question" if kind == "cp1252" else kind.split("_")[1]


def _location(kind: str, inp: str) -> str:
    return f"{inp}: row 2" if kind.endswith(("_json", "_parquet")) else f"{inp}:2"


@pytest.mark.parametrize("kind", BAD_CLASSES)
@pytest.mark.parametrize("verb", list(VERBS))
def test_bad_rows_are_one_line_errors_before_any_model_loads(verb, kind, tmp_path, capsys, models):
    required, _, result = VERBS[verb]
    inp = make_input(kind, tmp_path / "in")
    models(allowed=kind != "cp1252" and _field(kind) not in required)
    code, cap, path = run_verb(verb, inp, tmp_path / "out", capsys)
    if kind != "cp1252" and _field(kind) not in required:  # documented acceptance: the field is optional
        assert code == 0, cap.err
        if verb == "eval":
            assert json.loads(path.read_text())["n"] == len(ROWS)
        else:  # filter keeps only records with a CoT; the others pass every row on
            dropped = verb == "filter" and _field(kind) == "cot"
            assert [k[0] for k in result_key(verb, path)] == (["r0", "r2"] if dropped else ["r0", "r1", "r2"])
        return
    err = [line for line in cap.err.splitlines() if line.strip()]
    assert code == 2 and len(err) == 1 and "Traceback" not in cap.err, cap.err
    assert err[0].startswith(f"tokenskip: error: {_location(kind, inp)}"), err[0]
    assert f"field '{_field(kind)}'" in err[0], err[0]
    if kind == "cp1252":
        assert "not valid UTF-8 (byte 0xe9" in err[0]
    assert not path.exists()


@pytest.mark.parametrize("kind", ["cp1252", "null_question", "null_answer_parquet"])
@pytest.mark.parametrize("verb", list(VERBS))
def test_on_error_skip_skips_and_reports_the_row(verb, kind, tmp_path, capsys, models):
    required, _, _ = VERBS[verb]
    if kind != "cp1252" and _field(kind) not in required:
        pytest.skip(f"{verb} does not require '{_field(kind)}'")
    models(allowed=True)
    inp = make_input(kind, tmp_path / "in")
    code, cap, path = run_verb(verb, inp, tmp_path / "out", capsys, ["--on_error", "skip"])
    assert code == 0 and "Traceback" not in cap.err, cap.err
    assert _location(kind, inp) in cap.out + cap.err  # reported, never dropped silently
    if verb == "eval":
        assert json.loads(path.read_text())["n"] == len(ROWS) - 1
    else:
        assert [k[0] for k in result_key(verb, path)] == ["r0", "r2"]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ACCEPTED)
def test_generate_end_to_end_on_the_embedded_model(kind, tmp_path, capsys):
    inp = make_input(kind, tmp_path / "in")
    args = ["generate", "--dataset", inp, "--out", str(tmp_path / "o.jsonl"), "--limit", "1"]
    assert main([*args, "--max_new_tokens", "4"]) == 0, capsys.readouterr().err
    (row,) = [r for _, r in read_jsonl(tmp_path / "o.jsonl")]
    assert (row["id"], row["question"], row["answer"]) == ("r0", ROWS[0]["question"], "2")
    assert 1 <= row["output_tokens"] <= 4
