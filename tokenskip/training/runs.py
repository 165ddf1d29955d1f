"""Resumable training runs: the output-folder bookkeeping shared by ``tokenskip train`` and TALE-PT.

A run folder OUT holds ``train_config.json`` (the settings it was started with), ``train_log.jsonl`` (one
JSON line per Trainer log), ``checkpoints/checkpoint-N`` while it runs, and, once finished, the adapter
plus a metadata file (its name is the caller's: ``tokenskip_adapter.json``, ``tale_adapter.json``).

Re-running the same command resumes from the last *complete* checkpoint; a checkpoint cut by the
interruption is removed and log lines written after the checkpoint are dropped, so every step is logged
once. Other settings on an interrupted run are refused (:mod:`tokenskip.data.resume`: a setting an older
``train_config.json`` lacks is no conflict), and a finished run is never overwritten silently.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tokenskip.data.jsonl import write_json_atomic
from tokenskip.data.resume import settings_conflict
from tokenskip.errors import UserError

RUN_CONFIG = "train_config.json"
LOG_FILE = "train_log.jsonl"
CHECKPOINTS = "checkpoints"
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")


def lora_config(rank: int, alpha: int, dropout: float, target_modules: str) -> Any:
    """peft's ``LoraConfig`` for a causal LM; ``target_modules``: ``all-linear`` or comma-separated names."""
    from peft import LoraConfig

    spec = target_modules.strip()
    targets: str | list[str] = (
        "all-linear" if spec == "all-linear" else [t.strip() for t in spec.split(",") if t.strip()]
    )
    if not targets:
        raise UserError("--target_modules is empty")
    return LoraConfig(
        r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, task_type="CAUSAL_LM"
    )


def _checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """``(N, path)`` of every ``checkpoint-N`` folder in ``folder``, newest first."""
    if not folder.is_dir():
        return []
    found = [(int(c.name[11:]), c) for c in folder.iterdir()
             if c.is_dir() and c.name.startswith("checkpoint-") and c.name[11:].isdigit()]  # fmt: skip
    return sorted(found, reverse=True)


def last_complete_checkpoint(folder: str | Path) -> Path | None:
    """Newest ``checkpoint-N`` that was fully written (``trainer_state.json`` is the Trainer's last file)."""
    for _, c in _checkpoints(Path(folder)):
        if (c / "trainer_state.json").exists() and any(c.glob("adapter_model.*")):
            return c
    return None


def prepare_out(
    out_dir: Path,
    settings: dict[str, Any],
    *,
    resume: bool,
    overwrite: bool,
    adapter_info: str,
    compare: Iterable[str] | None = None,
) -> Path | None:
    """Check OUT against a previous run, record ``settings``; return the checkpoint to resume from (or None).

    Args:
        out_dir: the run folder.
        settings: this run's settings (written to ``train_config.json``).
        resume: resume from the last complete checkpoint when there is one (else start over).
        overwrite: delete a previous run's adapter, checkpoints and log first.
        adapter_info: the metadata file that marks a finished run.
        compare: the settings that must match an interrupted run's to resume it; None: all but ``progress``.
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir} is a file")
    if overwrite:
        shutil.rmtree(out_dir / CHECKPOINTS, ignore_errors=True)
        for name in (adapter_info, LOG_FILE, RUN_CONFIG, *ADAPTER_FILES):
            (out_dir / name).unlink(missing_ok=True)
    config_path = out_dir / RUN_CONFIG
    old = json.loads(config_path.read_text(encoding="utf-8")) if config_path.exists() else {}
    keys = sorted((set(old) | set(settings)) - {"progress"}) if compare is None else list(compare)
    changes = settings_conflict(old, settings, keys)
    if (out_dir / adapter_info).exists():
        other = f" trained with other settings ({changes})" if changes else ""
        raise UserError(
            f"--out {out_dir} already holds a finished adapter{other}; pick another --out or pass --overwrite"
        )
    if changes:
        raise UserError(
            f"--out {out_dir} holds an interrupted run with other settings ({changes}); "
            "use the same settings to resume, another --out, or --overwrite"
        )
    ckpt = last_complete_checkpoint(out_dir / CHECKPOINTS)
    if ckpt is not None and not resume:
        shutil.rmtree(out_dir / CHECKPOINTS)
        ckpt = None
    if ckpt is not None:  # a checkpoint newer than the last complete one was cut by the interruption
        for step, c in _checkpoints(out_dir / CHECKPOINTS):
            if step > int(ckpt.name[11:]):
                shutil.rmtree(c)
        trim_log(out_dir / LOG_FILE, json.loads((ckpt / "trainer_state.json").read_text())["global_step"])
    else:  # nothing to resume: the log starts over with the run
        (out_dir / LOG_FILE).unlink(missing_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(config_path, {**old, **settings})
    return ckpt


def trim_log(path: Path, step: int) -> None:
    """Drop log lines past ``step`` (written after the checkpoint a run resumes from)."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").split("\n"):  # JSONL: lines end at "\n" only
        try:
            if json.loads(line)["step"] <= step:
                keep.append(line)
        except (ValueError, KeyError, TypeError):
            continue  # half-written last line of a killed run
    path.write_text("".join(x + "\n" for x in keep), encoding="utf-8")


def jsonl_log_callback(path: Path) -> Any:
    """A ``TrainerCallback`` appending every Trainer log (loss, learning rate, eval loss, rewards) to ``path``."""
    from transformers import TrainerCallback

    class JsonlLog(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001
            if state.is_world_process_zero and logs:
                rec = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4), **logs}
                with path.open("a", encoding="utf-8") as f:
                    f.write(json.dumps(rec) + "\n")
                    f.flush()

    return JsonlLog()


def last_logged(history: list[dict[str, Any]], key: str) -> float | None:
    """The last value of ``key`` in a Trainer's ``log_history`` (rounded to 4 places), or None."""
    for rec in reversed(history):
        if key in rec:
            v = float(rec[key])
            return round(v, 4) if math.isfinite(v) else v
    return None
