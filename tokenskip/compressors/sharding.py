"""Splitting ``tokenskip compress`` across processes: ``--devices`` (one machine), ``--shard K/N`` (by hand)
and ``torchrun`` (processes on one or several nodes).

Every way uses the same split: row ``i`` of the input (counting valid rows) goes to part ``i % N``. Each
part is written by its own process into ``OUT/shards/<k>-of-<N>/`` as ordinary resumable ratio files, and
:func:`merge_shards` appends the parts to ``OUT/compressed_<γ>.jsonl`` in input order, reading the input
again to know which part holds the next row. Merging is itself resumable (rows already in the final files
are skipped), so a re-run after a crash at any point finishes the job.

Under ``torchrun`` the ranks meet over ``torch.distributed`` (gloo, which needs no GPU): after compressing
its part, every rank reports its counters (or its error) to all others; rank 0 then merges and writes the
summary. Across nodes, ``OUT`` must be a folder every node sees (a shared filesystem).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from tokenskip.compressors.registry import scorer_class
from tokenskip.errors import UserError


def parse_shard(shard: str | None) -> tuple[int, int]:
    """``"K/N"`` -> ``(K, N)`` with ``0 <= K < N``; ``None`` -> ``(0, 1)``."""
    if shard is None or str(shard).strip() == "":
        return 0, 1
    try:
        k, n = (int(x) for x in str(shard).split("/"))
    except ValueError:
        raise UserError(f"--shard must look like K/N (e.g. 0/4), got '{shard}'") from None
    if n < 1 or not 0 <= k < n:
        raise UserError(f"--shard {shard}: need 0 <= K < N")
    return k, n


def shard_dirs(out: Path, n: int) -> list[Path]:
    return [out / "shards" / f"{k}-of-{n}" for k in range(n)]


def resolve_devices(devices: str | None, device: str, scorer: str) -> list[str]:
    """``--devices`` as a list; default: every visible GPU when ``device`` is auto, there are several and
    the scorer runs on a device."""
    if devices is None or devices.strip() == "":
        if device == "auto" and "device" in scorer_class(scorer).options:
            try:
                import torch

                n = torch.cuda.device_count()
            except Exception:  # torch without CUDA
                n = 0
            if n > 1:
                return [f"cuda:{i}" for i in range(n)]
        return [device]
    items = [d.strip() for d in devices.split(",") if d.strip()]
    if not items:
        raise UserError("--devices is empty (example: --devices cuda:0,cuda:1)")
    return items


def read_ids(path: Path) -> set[str]:
    """Ids already written to a ratio file (tolerates a half-written last line)."""
    ids: set[str] = set()
    if not path.exists():
        return ids
    with path.open("r", encoding="utf-8") as f:
        for line in f:
            try:
                ids.add(str(json.loads(line)["id"]))
            except (ValueError, KeyError, TypeError):
                continue
    return ids


class _Part:
    """One part's ratio file read line by line, with a one-line look-ahead."""

    def __init__(self, path: Path) -> None:
        self.f = path.open("r", encoding="utf-8") if path.exists() else None
        self.line: str | None = None
        self.id: str | None = None
        self._advance()

    def _advance(self) -> None:
        self.line = self.id = None
        while self.f is not None:
            line = self.f.readline()
            if not line:
                return
            if not line.endswith("\n"):
                return  # half-written last line: that row is not done
            try:
                self.id = str(json.loads(line)["id"])
            except (ValueError, KeyError, TypeError):
                continue
            self.line = line
            return

    def take(self, rid: str) -> str | None:
        """The next line if it belongs to row ``rid`` (consumed), else None."""
        if self.id != rid:
            return None
        line = self.line
        self._advance()
        return line

    def close(self) -> None:
        if self.f is not None:
            self.f.close()


def merge_shards(
    ratio_files: list[tuple[Path, list[Path]]], row_ids: Iterator[str], n_parts: int, block: int = 2048
) -> None:
    """Append each part's rows to the final files in input order.

    ``ratio_files``: per ratio, the final file and the N part files. ``row_ids``: the ids of the input's
    valid rows in order (row ``i`` lives in part ``i % N`` unless it was already in the final file).
    """
    from tokenskip.data.jsonl import ResumableJsonlWriter

    writers = [ResumableJsonlWriter(final) for final, _ in ratio_files]
    parts = [[_Part(p) for p in part_paths] for _, part_paths in ratio_files]
    try:
        pending: list[list[str]] = [[] for _ in ratio_files]
        for i, rid in enumerate(row_ids):
            for r, writer in enumerate(writers):
                line = parts[r][i % n_parts].take(rid)
                if line is not None and rid not in writer.done:
                    pending[r].append(line)
                    writer.done.add(rid)
                if len(pending[r]) >= block:
                    writer.write_lines(pending[r])
                    pending[r] = []
        for r, writer in enumerate(writers):
            writer.write_lines(pending[r])
    finally:
        for w in writers:
            w.close()
        for ps in parts:
            for p in ps:
                p.close()


# ------------------------------------------------------------------------------------------- torchrun


@dataclass
class Torchrun:
    """This process's place in a ``torchrun`` job (from ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``)."""

    rank: int
    world: int
    local_rank: int

    def device(self, device: str) -> str:
        """``auto`` -> this rank's GPU (``cuda:<LOCAL_RANK>``) when there is one, else the CPU; ``cuda`` ->
        this rank's GPU; anything else as given."""
        if device not in ("auto", "cuda"):
            return device
        import torch

        if torch.cuda.is_available():
            return f"cuda:{self.local_rank % max(torch.cuda.device_count(), 1)}"
        if device == "cuda":
            raise UserError("--device cuda: CUDA is not available on this machine")
        return "cpu"

    def start(self) -> None:
        """Join the job's process group (gloo: it only carries small objects, and needs no GPU)."""
        import torch.distributed as dist

        if not dist.is_initialized():
            hours = float(os.environ.get("TOKENSKIP_DIST_TIMEOUT_HOURS", "48"))
            dist.init_process_group("gloo", timeout=timedelta(hours=hours))

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank (also a barrier)."""
        import torch.distributed as dist

        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def stop(self, barrier: bool = False) -> None:
        """Leave the group. ``barrier`` (on the path where every rank succeeded): wait for every rank
        first, so that none tears its gloo pairs down while a peer still finishes the last collective
        (a CI run saw one rank abort at exit without it). Never after a failure: the peers may be inside
        another collective, and the barrier would hang instead of letting torchrun stop the job."""
        import torch.distributed as dist

        if dist.is_initialized():
            try:
                if barrier:
                    dist.barrier()
            finally:
                dist.destroy_process_group()


def torchrun_env() -> Torchrun | None:
    """The torchrun job this process belongs to, or None (not launched by torchrun, or a single process)."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        return None
    if world <= 1 or "MASTER_ADDR" not in os.environ:
        return None
    return Torchrun(rank, world, local)


def run_everywhere(job: Torchrun, work: Callable[[], Any]) -> list[Any]:
    """Run ``work`` on this rank and share its result (or its error message) with every rank.

    Raises UserError on every rank when any rank failed with a UserError (the first one's message).
    """
    try:
        result: Any = {"ok": work()}
    except UserError as e:
        result = {"error": str(e)}
    results = job.gather(result)
    errors = [r["error"] for r in results if "error" in r]
    if errors:
        raise UserError(errors[0])
    return [r["ok"] for r in results]
