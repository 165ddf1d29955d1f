"""``tokenskip compress --engine ray`` on a local Ray runtime of 2 CPU workers (one runtime for the module):
byte-identical ratio files to the single-process run, and a killed job resumed without a lost or doubled
record. The input parts of the Ray datasource are checked against the one reader without Ray."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, run_cli
from tokenskip.compressors.blocks import iter_rows
from tokenskip.compressors.outputs import ratio_file
from tokenskip.compressors.ray_engine import jsonl_spans, numbered_rows, parquet_spans
from tokenskip.data.datasets import SAMPLE_FILE
from tokenskip.data.jsonl import BadLineStats

RATIOS = [0.9, 0.8, 0.7, 0.6, 0.5]


def _rows(path: Path, parts: list | None = None) -> list:
    if parts is None:
        return [(r.id, r.question, r.cot) for r in iter_rows(path, "cot", "skip", BadLineStats())]
    return [(r.id, r.question, r.cot) for part in parts
            for r in iter_rows(path, "cot", "skip", BadLineStats(), rows=numbered_rows(path, part, "skip"))]  # fmt: skip


def test_input_parts_read_back_as_the_whole_file(tmp_path):
    lines = [json.dumps({"question": f"q{i}", "answer": str(i), "cot": f"c {i}"}) for i in range(40)]
    lines[3], lines[7], lines[20] = (
        "",
        "{broken",
        json.dumps({"id": "x", "question": "q", "answer": 1, "cot": ""}),
    )
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"\xef\xbb\xbf" + "\n".join(lines).encode())  # BOM, blank and bad lines, no final newline
    whole = _rows(src)
    for parts in (1, 3, 7, 40, 500):
        spans = jsonl_spans(src, parts, min_bytes=1)
        assert [a for a, _, _ in spans] == sorted({a for a, _, _ in spans}) and spans[0][:1] == (0,)
        assert _rows(src, spans) == whole  # same ids (in-9 ... from line numbers), same order
    assert whole[2][0] == "in-2" and whole[3][0] == "in-4" and ("x", "q", "") in whole

    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"question": [f"q{i}" for i in range(10)], "answer": [str(i) for i in range(10)],
                      "cot": [f"c {i}" for i in range(10)]})  # fmt: skip
    pq.write_table(table, tmp_path / "in.parquet", row_group_size=3)
    for parts in (1, 2, 4, 9):
        got = _rows(tmp_path / "in.parquet", parquet_spans(tmp_path / "in.parquet", parts))
        assert got == _rows(tmp_path / "in.parquet")


def test_engine_ray_refuses_bad_rows_and_options_before_starting(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "answer": "1", "cot": "c"}\n{"question": "q2", "cot": "c"}\n')
    res = run_cli("compress", "--input", str(bad), "--out", str(tmp_path / "o"), "--engine", "ray")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip() == f"tokenskip: error: {bad}:2: field 'answer' is missing"
    res = run_cli("compress", "--input", str(SAMPLE_FILE), "--out", str(tmp_path / "o"), "--engine", "ray",
                  "--shard", "0/2")  # fmt: skip
    assert res.returncode == 2 and "drop --shard and --devices" in res.stderr


def test_a_user_error_raised_on_the_cluster_comes_back_as_its_message():
    from tokenskip.compressors.ray_engine import _user_error
    from tokenskip.errors import UserError

    try:
        raise RuntimeError("actor died") from UserError("unknown model 'x'\nmore")
    except RuntimeError as e:
        assert _user_error(e) == "unknown model 'x'"
    text = "ActorDiedError: ... Traceback ...\ntokenskip.errors.UserError: unknown model '/m': not an alias\n"
    assert _user_error(RuntimeError(text)) == "unknown model '/m': not an alias"
    assert _user_error(RuntimeError("out of memory")) is None


@pytest.fixture(scope="module")
def ray_cluster():
    """One local Ray runtime with 2 CPUs for the module; its address lets a subprocess join it."""
    ray = pytest.importorskip("ray")
    import logging

    ray.init(num_cpus=2, object_store_memory=256 << 20, include_dashboard=False, logging_level=logging.WARNING,
             log_to_driver=False)  # fmt: skip
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def local_run(tmp_path_factory) -> Path:
    """The single-process run of the bundled sample (selfinfo on the embedded model)."""
    from tokenskip.verbs.compress import compress

    out = tmp_path_factory.mktemp("local")
    compress(str(SAMPLE_FILE), str(out), scorer="selfinfo", progress=False)
    return out


def _same_files(a: Path, b: Path) -> None:
    for r in RATIOS:
        assert ratio_file(b, r).read_bytes() == ratio_file(a, r).read_bytes(), r


@pytest.mark.slow
def test_engine_ray_writes_the_single_process_files(ray_cluster, local_run, tmp_path):
    from tokenskip.verbs.compress import compress

    out = tmp_path / "ray"
    summary = compress(str(SAMPLE_FILE), str(out), engine="ray", ray_workers=2, batch_size=4, progress=False)
    _same_files(local_run, out)
    assert len(ratio_file(out, 0.5).read_text().splitlines()) == 16
    local = json.loads((local_run / "summary.json").read_text())
    assert summary["ratios"] == local["ratios"] and summary["engine"] == "ray"
    assert summary["written_this_run"] == 16 and summary["devices"] == ["ray: 2 actors x 0 GPU"]


@pytest.mark.slow
def test_engine_ray_killed_mid_way_resumes_without_losing_or_doubling(ray_cluster, local_run, tmp_path):
    from tokenskip.verbs.compress import compress

    out = tmp_path / "ray"
    cmd = [sys.executable, "-m", "tokenskip.cli", "compress", "--input", str(SAMPLE_FILE), "--out", str(out),
           "--engine", "ray", "--ray_workers", "1", "--batch_size", "1", "--progress", "false"]  # fmt: skip
    env = {**os.environ, "RAY_ADDRESS": ray_cluster}  # the job joins the module's runtime
    log = tmp_path / "stderr.txt"
    with log.open("wb") as err:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=err)
    first = ratio_file(out, RATIOS[0])
    deadline = time.monotonic() + 240
    while not (first.exists() and first.read_text().count("\n") >= 1):  # kill at the first record
        assert proc.poll() is None, log.read_text()[-2000:]
        assert time.monotonic() < deadline, "no record written in 240 s"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    lines = [ratio_file(out, r).read_text().count("\n") for r in RATIOS]
    kept = min(lines)  # rows in every ratio file; a row may be in the first files only (killed in between)
    assert lines[0] >= 1 and kept < 16, lines  # killed mid-way

    summary = compress(str(SAMPLE_FILE), str(out), engine="ray", ray_workers=2, batch_size=4, progress=False)
    _same_files(local_run, out)  # every record once, in input order
    assert summary["written_this_run"] == 16 - kept  # the records already written were not scored again


@pytest.mark.slow
def test_engine_ray_resume_scores_only_what_is_missing(ray_cluster, local_run, tmp_path):
    """A folder left as a kill leaves it: 5 rows in every ratio file, 2 more in the first ones, and a
    half-written last line: the resumed job scores the 11 rows that are not everywhere, and only those."""
    from tokenskip.verbs.compress import compress

    out = tmp_path / "ray"
    out.mkdir()
    (out / "compress_config.json").write_bytes((local_run / "compress_config.json").read_bytes())
    for i, r in enumerate(RATIOS):
        done = ratio_file(local_run, r).read_text().splitlines(keepends=True)
        ratio_file(out, r).write_text("".join(done[: 7 if i < 2 else 5]) + (done[7][:40] if i == 2 else ""))
    summary = compress(str(SAMPLE_FILE), str(out), engine="ray", ray_workers=2, batch_size=4, progress=False)
    _same_files(local_run, out)
    assert summary["written_this_run"] == 11


@pytest.mark.slow
def test_engine_ray_keeps_think_tags_and_the_answer_like_the_local_engine(ray_cluster, tmp_path):
    """R1-style texts in another field: the Ray engine prunes only the thinking, as the local engine does."""
    from tokenskip.verbs.compress import compress

    rows = []
    for i, line in enumerate(SAMPLE_FILE.read_text(encoding="utf-8").splitlines()[:6]):
        row = json.loads(line)
        cot = row.pop("cot", None) or f"Step one of problem {i}. Then add the numbers carefully and check."
        text = f"<think>\n{cot}\n</think>\n\nThe final answer is: $\\boxed{{{row['answer']}}}$"
        rows.append({**row, "generations": text if i != 3 else text.split("</think>")[0]})  # 3: unclosed
    src = tmp_path / "think.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    local, ray_out = tmp_path / "local", tmp_path / "ray"
    compress(str(src), str(local), field="generations", scorer="length", ratios="0.5", progress=False)
    compress(str(src), str(ray_out), field="generations", scorer="length", ratios="0.5", engine="ray",
             ray_workers=2, batch_size=2, progress=False)  # fmt: skip
    assert ratio_file(ray_out, 0.5).read_bytes() == ratio_file(local, 0.5).read_bytes()
    out = [json.loads(x) for x in ratio_file(ray_out, 0.5).read_text(encoding="utf-8").splitlines()]
    assert all(r["thinking"] for r in out) and [r["thinking_closed"] for r in out].count(False) == 1
    for r in out:
        if r["thinking_closed"]:
            assert r["compressed_cot"].split("</think>")[1] == r["cot"].split("</think>")[1]
