"""Splitting compress across processes: torchrun detection and the input-order merge (no model, fast)."""

import json

import pytest

from tokenskip.compressors.sharding import Torchrun, merge_shards, run_everywhere, torchrun_env
from tokenskip.errors import UserError


def write(path, ids, tail=""):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"id": i, "x": i.upper()}) + "\n" for i in ids) + tail)


def ids_of(path):
    return [json.loads(line)["id"] for line in path.read_text().splitlines()]


def test_merge_restores_input_order_skipping_rows_already_merged(tmp_path):
    rows = [f"r{i}" for i in range(11)]
    parts = [tmp_path / "p0.jsonl", tmp_path / "p1.jsonl", tmp_path / "p2.jsonl"]
    final = tmp_path / "final.jsonl"
    write(final, ["r0", "r1"])  # merged by an earlier run
    write(parts[0], ["r0", "r3", "r6", "r9"])  # r0 again: the part still holds it
    write(parts[1], ["r4", "r7", "r10"])  # r1 was already in the final file when this part ran
    write(parts[2], ["r2", "r5", "r8"], tail='{"id": "r11", "x"')  # half-written last line: not done
    merge_shards([(final, parts)], iter(rows), 3, block=2)
    assert ids_of(final) == rows
    merge_shards([(final, parts)], iter(rows), 3)  # merging again changes nothing
    assert ids_of(final) == rows
    assert json.loads(final.read_text().splitlines()[5]) == {"id": "r5", "x": "R5"}


def test_merge_of_a_row_missing_everywhere_leaves_a_gap_not_a_shift(tmp_path):
    parts = [tmp_path / "a.jsonl", tmp_path / "b.jsonl"]
    write(parts[0], ["r0", "r4"])  # r2 missing from its part
    write(parts[1], ["r1", "r3"])
    final = tmp_path / "final.jsonl"
    merge_shards([(final, parts)], iter(["r0", "r1", "r2", "r3", "r4"]), 2)
    assert ids_of(final) == ["r0", "r1", "r3", "r4"]


def test_torchrun_env(monkeypatch):
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR"):
        monkeypatch.delenv(key, raising=False)
    assert torchrun_env() is None
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert torchrun_env() is None  # no rendezvous address: not launched by torchrun
    monkeypatch.setenv("MASTER_ADDR", "localhost")
    job = torchrun_env()
    assert (job.rank, job.world, job.local_rank) == (3, 4, 1)
    assert job.device("cpu") == "cpu" and job.device("cuda:5") == "cuda:5"
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert torchrun_env() is None


def test_run_everywhere_shares_results_and_errors():
    class Fake(Torchrun):
        def __init__(self, others):
            super().__init__(0, 1 + len(others), 0)
            self.others = others

        def gather(self, obj):
            return [obj, *self.others]

    assert run_everywhere(Fake([{"ok": 2}]), lambda: 1) == [1, 2]
    with pytest.raises(UserError, match="rank 1 failed"):
        run_everywhere(Fake([{"error": "rank 1 failed"}]), lambda: 1)

    def fail():
        raise UserError("bad input")

    with pytest.raises(UserError, match="bad input"):
        run_everywhere(Fake([{"ok": 2}]), fail)
