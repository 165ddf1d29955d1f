"""gzip-compressed datasets (issue 28): ``.jsonl.gz`` and ``.json.gz`` give the same records as their plain
files in every verb that reads a user file, with the same line numbers in errors.

Verbs run through ``tokenskip.cli.main`` with the scripted generator of tests/test_inputs.py; the verbs that
train or need a model's likelihoods (tale train-sft/train-dpo, metareason score/iterate) are checked
through the function that reads their file, before any model loads.
"""

from __future__ import annotations

import gzip
import json
import shutil

import pytest
from test_inputs import ROWS, VERBS, ScriptedGenerator, _compressed_dir, _tokenizer, result_key

from tokenskip.cli import main
from tokenskip.data.inputs import read_rows
from tokenskip.errors import UserError

# every row carries what every reader needs: a dataset, records, TALE traces and budgets
GZ_ROWS = [dict(r, budget=40, searched=True, optimal_budget=40, question_tokens=8) for r in ROWS]


def _write(path, rows):
    """``rows`` as JSONL (``.jsonl``) or a JSON array (``.json``), gzip-compressed under ``.gz``."""
    plain = path.name.removesuffix(".gz")
    text = json.dumps(rows) if plain.endswith(".json") else "".join(json.dumps(r) + "\n" for r in rows)
    data = text.encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def _cli(args, result):
    """A reader that runs ``tokenskip ARGS`` (``{in}``: the input, ``{out}``: a fresh folder, ``{plain}``: a
    plain dataset file, ``{comp}``: a compress output folder) and returns what it made of the rows."""

    def read(inp, out, capsys):
        plain = _write(out / "plain_dataset.jsonl", GZ_ROWS)
        fill = {"in": inp, "out": out, "plain": plain, "comp": _compressed_dir(out)}
        code = main([a.format(**fill) for a in args])
        err = capsys.readouterr().err
        assert code == 0 and "Traceback" not in err, err
        return result_key("eval" if result.endswith(".json") else "records", out / result)

    return read


def _direct(fn):
    """A reader that calls the verb's own file reader (verbs that train or score with a model)."""
    return lambda inp, out, capsys: fn(str(inp))


def _read_traces(path):
    from tokenskip.training.tale_pt import read_traces

    return read_traces(path)


def _read_scorable(path):
    from tokenskip.metareason.score import read_scorable

    return read_scorable(path)


def _iterate_dataset(path):
    from tokenskip.args import DataArgs  # metareason iterate's --dataset and --eval_dataset

    rows = [r.to_dict() for r in DataArgs(dataset=path).load()[0]]
    for r in rows:  # a record's source names its file: compare the line only
        if r.get("where"):
            r["where"] = r["where"].rsplit(":", 1)[-1]
    return rows


# the verbs of tests/test_inputs.py (the same commands), then the other options and verbs that read a user file
READERS = {
    name: _cli(VERBS[verb][1], VERBS[verb][2])
    for name, verb in [(v, v) for v in VERBS if v not in ("infer", "build-sft")]
    + [("infer --input", "infer"), ("build-sft --original", "build-sft")]
}
READERS |= {
    "tale estimate --regressor": _cli(
        "tale estimate --dataset {plain} --estimator regression --regressor {in} --out {out}/o.jsonl".split(),
        "o.jsonl",
    ),
    "tale run --budgets": _cli(
        "tale run --dataset {plain} --budgets {in} --out {out}/o.jsonl".split(), "o.jsonl"
    ),
    "build-sft --general": _cli(
        "build-sft --original {plain} --compressed {comp} --general {in} --out {out}/sft".split(),
        "sft/sft.jsonl",
    ),
    "fidelity": _cli(
        "fidelity --input {in} --out {out}/fid --scorers truncation --ratios 0.5 --controls false".split(),
        "fid/selected.jsonl",
    ),
    "tale train-sft/train-dpo --traces": _direct(_read_traces),
    "metareason score --input": _direct(_read_scorable),
    "metareason iterate --dataset": _direct(_iterate_dataset),
}


@pytest.fixture
def scripted(monkeypatch):
    """Scripted generators and the real tokenizer (as in tests/test_inputs.py): no model loads."""
    import tokenskip.inference
    import tokenskip.models

    monkeypatch.setattr(tokenskip.inference, "make_generator", lambda *a, **k: ScriptedGenerator())
    monkeypatch.setattr(tokenskip.models, "load_tokenizer", _tokenizer)


@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
@pytest.mark.parametrize("reader", list(READERS))
def test_gzip_inputs_give_the_records_of_their_plain_files(reader, suffix, tmp_path, capsys, scripted):
    plain = _write(tmp_path / "plain" / f"data{suffix}", GZ_ROWS)
    packed = _write(tmp_path / "packed" / f"data{suffix}.gz", GZ_ROWS)
    assert packed.read_bytes()[:2] == b"\x1f\x8b"  # really gzip
    expected = READERS[reader](plain, tmp_path / "plain_out", capsys)
    assert expected  # the verb read the rows
    assert READERS[reader](packed, tmp_path / "packed_out", capsys) == expected


def test_gzip_errors_name_the_same_line_txt_gz_and_whole_file_problems(tmp_path, capsys):
    rows = [dict(r) for r in ROWS]
    rows[1]["question"] = None
    for name in ("data.jsonl", "data.jsonl.gz"):
        path = _write(tmp_path / name, rows)
        assert main(["generate", "--dataset", str(path), "--out", str(tmp_path / "o.jsonl")]) == 2
        assert (
            capsys.readouterr().err
            == f"tokenskip: error: {path}:2: malformed row (field 'question' is null)\n"
        )
    questions = tmp_path / "questions.txt.gz"  # infer --input's one question per line
    questions.write_bytes(gzip.compress(b"First?\n\nSecond?\n"))
    assert list(read_rows(questions, txt_field="question")) == [
        (1, {"question": "First?"}),
        (3, {"question": "Second?"}),
    ]
    packed = _write(tmp_path / "cut.jsonl.gz", ROWS)
    packed.write_bytes(packed.read_bytes()[:-12])  # cut short: the gzip trailer is missing
    with pytest.raises(UserError, match=r"cut\.jsonl\.gz: cannot decompress gzip"):
        list(read_rows(packed))
    not_gzip = tmp_path / "plain.json.gz"
    not_gzip.write_text(json.dumps(ROWS))
    with pytest.raises(UserError, match=r"plain\.json\.gz: cannot decompress gzip \(Not a gzipped file"):
        list(read_rows(not_gzip))
    for name, kind in (("t.parquet.gz", ".parquet.gz"), ("t.csv.gz", ".csv.gz"), ("t.gz", ".gz")):
        shutil.copy(packed, tmp_path / name)
        with pytest.raises(
            UserError, match=rf"unsupported file type '{kind}' \(use .*\.jsonl\.gz, \.json\.gz\)"
        ):
            list(read_rows(tmp_path / name))
