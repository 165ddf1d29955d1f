"""The resume contract: every output records the settings that change its records, and a re-run with other
settings is refused instead of mixed.

One rule for every verb (``generate``, ``infer``, ``bench``, ``fidelity``, ``tale``, ``metareason``,
``compress``, ``build-sft``, ``train``):

* a JSONL output carries its run's settings in every record (model, adapter + its content hash, method,
  preset, backend, dtype, max_new_tokens, sampling ...); a run folder carries them in its settings file
  (``run.json``, ``compress_config.json``, ``sft_info.json``, ``train_config.json``);
* a re-run into the same output compares its settings with the recorded ones: a difference ends it with
  one line naming each differing setting with both values (exit status 2), before any model loads and
  before anything is written;
* a setting the output does not record (written before that setting was recorded) is no conflict: such
  legacy outputs keep resuming, and the settings files are completed with the current values.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from tokenskip.errors import UserError

# values older outputs recorded that say nothing about the setting (e.g. ``--dtype auto`` before the dtype
# was recorded resolved): treated like a missing setting
UNKNOWN = {"dtype": ("auto", None)}
_DTYPE_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def _same(key: str, old: Any, new: Any, old_all: dict[str, Any], new_all: dict[str, Any]) -> bool:
    if key == "dtype":
        return _DTYPE_ALIASES.get(old, old) == _DTYPE_ALIASES.get(new, new)
    if key == "adapter" and old_all.get("adapter_sha256") and new_all.get("adapter_sha256"):
        return True  # both record the weights' hash: it decides (the same adapter may move)
    if isinstance(old, list | tuple) and isinstance(new, list | tuple):
        return list(old) == list(new)
    return old == new


def settings_conflict(
    old: dict[str, Any], new: dict[str, Any], keys: Sequence[str] | None = None
) -> str | None:
    """``"key: old -> new, ..."`` for the settings that differ, else None. Only keys both sides record are
    compared (a key an older output lacks, or records as unknown, is no conflict)."""
    names = list(keys) if keys is not None else list(new)
    diff = [
        k
        for k in names
        if k in old
        and k in new
        and old[k] not in UNKNOWN.get(k, ())
        and not _same(k, old[k], new[k], old, new)
    ]
    return ", ".join(f"{k}: {old[k]!r} -> {new[k]!r}" for k in diff) or None


def check_same_settings(
    where: str | Path, old: dict[str, Any], new: dict[str, Any], keys: Sequence[str] | None = None
) -> None:
    """Refuse to continue a run in ``where`` that was started with other settings (one message everywhere)."""
    conflict = settings_conflict(old, new, keys)
    if conflict:
        raise UserError(
            f"{where} was written with other settings ({conflict}); re-run with the same settings to "
            "resume, or pick another --out"
        )


def recorded_settings(path: str | Path, keys: Iterable[str]) -> dict[str, Any]:
    """The first value each of ``keys`` has in the records of a JSONL output (a key no record has is left
    out). Every line is read: a file started by an older version and resumed by a newer one records a
    setting only from the resumed part on."""
    p = Path(path)
    wanted = set(keys)
    found: dict[str, Any] = {}
    if not p.exists() or p.stat().st_size == 0:
        return found
    with p.open("r", encoding="utf-8-sig", errors="replace") as f:
        for line in f:
            if not wanted:
                break
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # a half-written last line: the writer cuts it
            if isinstance(rec, dict):
                for k in [k for k in wanted if k in rec]:
                    found[k] = rec[k]
                    wanted.discard(k)
    return found


def check_records(out: str | Path, settings: dict[str, Any]) -> None:
    """Refuse to append to a JSONL ``out`` whose records were written with other ``settings``."""
    if settings:
        check_same_settings(out, recorded_settings(out, settings), settings)


def check_run_file(
    path: str | Path,
    settings: dict[str, Any],
    keys: Sequence[str] | None = None,
    accumulate: Sequence[str] = (),
) -> dict[str, Any]:
    """Check a run folder's settings file (``run.json`` ...) against ``settings`` (only ``keys``, default
    all), then write the recorded settings completed with this run's; a list setting named in
    ``accumulate`` is written as the union of the recorded and this run's items (recorded first, e.g. a
    bench folder's methods). Returns the old ones."""
    p = Path(path)
    old: dict[str, Any] = {}
    if p.exists():
        try:
            old = json.loads(p.read_text(encoding="utf-8"))
        except ValueError:
            raise UserError(f"{p}: not valid JSON; move it away or pick another --out") from None
        check_same_settings(p.parent, old, settings, keys)
    from tokenskip.data.jsonl import write_json_atomic

    merged = {**old, **settings}
    for k in accumulate:
        merged[k] = [*old.get(k, []), *(v for v in settings.get(k, []) if v not in old.get(k, []))]
    for k in UNKNOWN:  # a resolved value replaces an unknown one, never the other way round
        if k in old and k in settings and settings[k] in UNKNOWN[k] and old[k] not in UNKNOWN[k]:
            merged[k] = old[k]
    write_json_atomic(p, merged)
    return old
