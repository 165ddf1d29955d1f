"""`tokenskip compress`: output files, resume after a kill, sharding, edge cases, one-line errors."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO, run_cli
from tokenskip.compressors.testing import synthetic_cots
from tokenskip.errors import UserError
from tokenskip.verbs.compress import compress

FIELDS = [
    "id",
    "question",
    "answer",
    "cot",
    "compressed_cot",
    "ratio",
    "original_tokens",
    "compressed_tokens",
    "achieved_ratio",
]


def write_input(path, n, extra=()):
    rows = [
        {"question": f"q{i}?", "cot": c, "answer": str(i)} for i, c in enumerate(synthetic_cots(n, seed=3))
    ]
    rows += list(extra)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def read_rows(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_outputs_fields_summary_and_edge_cases(tmp_path):
    extra = [
        {"id": "empty", "question": "q", "cot": "", "answer": "0"},
        {"id": "zh", "question": "q", "cot": "小明有3个苹果，又买了5个，一共有8个苹果。", "answer": "8"},
        {"id": "long", "question": "q", "cot": "\n".join(synthetic_cots(60, seed=1)), "answer": "1"},
    ]
    inp = write_input(tmp_path / "in.jsonl", 20, extra)
    summary = compress(str(inp), str(tmp_path / "out"), ratios="0.9,0.5", scorer="truncation", progress=False)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "compress_config.json",
        "compressed_0.5.jsonl",
        "compressed_0.9.jsonl",
        "summary.json",
    ]
    rows = read_rows(tmp_path / "out" / "compressed_0.5.jsonl")
    assert [r["id"] for r in rows[:2]] == ["in-0", "in-1"] and len(rows) == 23
    assert all(list(r) == FIELDS for r in rows)
    by_id = {r["id"]: r for r in rows}
    assert by_id["empty"]["compressed_cot"] == "" and by_id["empty"]["achieved_ratio"] == 1.0
    assert by_id["zh"]["compressed_cot"].startswith("小明") and 0 < len(by_id["zh"]["compressed_cot"]) < 22
    assert by_id["long"]["original_tokens"] > 2000 and abs(by_id["long"]["achieved_ratio"] - 0.5) < 0.01
    assert by_id["long"]["compressed_cot"] == by_id["long"]["cot"][: len(by_id["long"]["compressed_cot"])]
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert s == summary and s["ratios"]["0.5"]["empty_cots"] == 1 and s["ratios"]["0.5"]["records"] == 23
    assert abs(s["ratios"]["0.5"]["mean_achieved_ratio"] - 0.5) <= 0.02


def test_resume_after_partial_output_loses_and_duplicates_nothing(tmp_path):
    inp = write_input(tmp_path / "in.jsonl", 40)
    compress(str(inp), str(tmp_path / "ref"), ratios="0.9,0.6", scorer="random", progress=False)
    out = tmp_path / "out"
    compress(str(inp), str(out), ratios="0.9,0.6", scorer="random", limit=25, batch_size=8, progress=False)
    # as if killed: one ratio file is behind and ends in a half-written line
    f = out / "compressed_0.6.jsonl"
    lines = f.read_text().splitlines(keepends=True)
    f.write_text("".join(lines[:11]) + lines[11][:30])
    compress(str(inp), str(out), ratios="0.9,0.6", scorer="random", batch_size=8, progress=False)
    for name in ("compressed_0.9.jsonl", "compressed_0.6.jsonl"):
        got, want = read_rows(out / name), read_rows(tmp_path / "ref" / name)
        assert len({r["id"] for r in got}) == len(got) == 40
        assert sorted(got, key=lambda r: r["id"]) == sorted(want, key=lambda r: r["id"])


def test_overlapped_blocks_write_the_same_files(tmp_path):
    from tokenskip.compressors.blocks import run_shard

    inp = write_input(tmp_path / "in.jsonl", 30)
    compress(str(inp), str(tmp_path / "seq"), ratios="0.9,0.5", scorer="random", batch_size=4, progress=False)
    kwargs = {"scorer": "random", "seed": 0}
    common = dict(ratios=[0.9, 0.5], model="smollm2-135m", field="cot", on_error="raise", shard=(0, 1))
    counts = run_shard(inp, tmp_path / "ovl", scorer_kwargs=kwargs, batch_size=4, limit=None, progress=False,
                       overlap=True, **common)  # fmt: skip
    assert counts["written"] == 30
    for name in ("compressed_0.9.jsonl", "compressed_0.5.jsonl"):
        assert (tmp_path / "ovl" / name).read_bytes() == (tmp_path / "seq" / name).read_bytes()


@pytest.mark.slow
def test_killed_run_resumes(tmp_path):
    inp = write_input(tmp_path / "in.jsonl", 400)
    out = tmp_path / "out"
    args = [
        sys.executable,
        "-m",
        "tokenskip.cli",
        "compress",
        "--input",
        str(inp),
        "--out",
        str(out),
        "--scorer",
        "random",
        "--batch_size",
        "1",
        "--progress",
        "false",
    ]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    target = out / "compressed_0.5.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and (not target.exists() or target.read_text().count("\n") < 20):
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = target.read_text().count("\n")
    assert 20 <= partial < 400
    done = run_cli(
        "compress", "--input", str(inp), "--out", str(out), "--scorer", "random", "--progress", "false"
    )
    assert done.returncode == 0, done.stderr
    for r in ("0.9", "0.8", "0.7", "0.6", "0.5"):
        ids = [row["id"] for row in read_rows(out / f"compressed_{r}.jsonl")]
        assert len(ids) == len(set(ids)) == 400


@pytest.mark.slow
def test_devices_shard_the_work_and_merge(tmp_path):
    inp = write_input(tmp_path / "in.jsonl", 30)
    compress(str(inp), str(tmp_path / "one"), ratios="0.7", scorer="random", progress=False)
    compress(
        str(inp), str(tmp_path / "two"), ratios="0.7", scorer="random", devices="cpu,cpu", progress=False
    )
    one = read_rows(tmp_path / "one" / "compressed_0.7.jsonl")
    two = read_rows(tmp_path / "two" / "compressed_0.7.jsonl")
    assert two == one  # round-robin merge restores the input order
    compress(str(inp), str(tmp_path / "k"), ratios="0.7", scorer="random", shard="1/3", progress=False)
    assert [r["id"] for r in read_rows(tmp_path / "k" / "compressed_0.7.jsonl")] == [
        f"in-{i}" for i in range(1, 30, 3)
    ]


@pytest.mark.slow
def test_torchrun_two_ranks_write_the_same_files_as_one_process(tmp_path):
    from tokenskip.compressors.testing import build_token_classifier

    ckpt = build_token_classifier(tmp_path / "ckpt", "small")
    extra = [
        {"id": "empty", "question": "q", "cot": "", "answer": "0"},
        {"id": "long", "question": "q", "cot": "\n".join(synthetic_cots(40, seed=2)), "answer": "1"},
    ]
    inp = write_input(tmp_path / "in.jsonl", 25, extra)
    args = ["compress", "--input", str(inp), "--scorer", "llmlingua2", "--checkpoint", str(ckpt)]
    args += ["--ratios", "0.9,0.5", "--batch_size", "8", "--progress", "false"]
    one = run_cli(*args, "--out", str(tmp_path / "one"))
    assert one.returncode == 0, one.stderr
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    torchrun += ["-m", "tokenskip.cli", *args, "--out", str(tmp_path / "two")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # a first run stops after 12 rows (as if interrupted); the second resumes every rank's part and merges
    for limit in (["--limit", "12"], []):
        res = subprocess.run(torchrun + limit, cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
        assert res.returncode == 0, res.stderr[-3000:]
    for name in ("compressed_0.9.jsonl", "compressed_0.5.jsonl"):
        assert (tmp_path / "two" / name).read_bytes() == (tmp_path / "one" / name).read_bytes()
    parts = sorted(p.name for p in (tmp_path / "two" / "shards").iterdir())
    assert parts == ["0-of-2", "1-of-2"]
    s1 = json.loads((tmp_path / "one" / "summary.json").read_text())
    s2 = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert s2["ratios"] == s1["ratios"] and s2["devices"] == ["cpu", "cpu"]
    assert s2["written_this_run"] == 27 - 12


def test_bad_rows_and_settings(tmp_path):
    inp = tmp_path / "in.jsonl"
    inp.write_text('{"question": "q", "cot": "a b", "answer": "1"}\n{"question": "q", "answer": "2"}\n')
    with pytest.raises(UserError, match="in.jsonl:2: field 'cot' is missing"):
        compress(str(inp), str(tmp_path / "a"), scorer="random", progress=False)
    s = compress(str(inp), str(tmp_path / "b"), scorer="random", on_error="skip", progress=False)
    assert s["malformed_rows_skipped"] == 1 and s["ratios"]["0.5"]["records"] == 1
    with pytest.raises(UserError, match="other settings"):
        compress(str(inp), str(tmp_path / "b"), scorer="truncation", on_error="skip", progress=False)


@pytest.mark.parametrize(
    "args,message",
    [
        (["--ratios", "0.9,1.5"], "compression ratio must be in (0, 1], got 1.5"),
        (["--ratios", "0"], "compression ratio must be in (0, 1], got 0"),
        (["--scorer", "magic"], "unknown --scorer 'magic'"),
    ],
)
def test_cli_errors_are_one_line(tmp_path, args, message):
    inp = write_input(tmp_path / "in.jsonl", 2)
    res = run_cli("compress", "--input", str(inp), "--out", str(tmp_path / "o"), *args)
    assert res.returncode == 2
    assert (
        res.stderr.strip() == f"tokenskip: error: {message}" or message in res.stderr.strip().splitlines()[-1]
    )
    assert len(res.stderr.strip().splitlines()) == 1


def test_cli_missing_input(tmp_path):
    res = run_cli("compress", "--input", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "o"))
    assert res.returncode == 2 and res.stderr.strip().splitlines() == [
        f"tokenskip: error: file not found: {tmp_path / 'nope.jsonl'}"
    ]
