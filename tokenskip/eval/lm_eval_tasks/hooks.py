"""The ``!function`` hooks of the tokenskip lm-eval tasks (named from their YAML files), and the conversion
of lm-eval's logged samples into tokenskip result records. lm-eval itself is not imported here."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tokenskip.errors import UserError
from tokenskip.grading import extract_answer, is_equiv

TASK_OF = {"tokenskip_gsm8k": "gsm8k", "tokenskip_math500": "math"}


def _docs(name: str, task: str, path: str | None) -> Any:
    """The test questions as a ``datasets.DatasetDict`` (split ``test``): id, question, answer, task."""
    import datasets

    from tokenskip.data.datasets import load_records

    records, _ = load_records(str(path) if path else name, split="test", task=task)
    rows = [{"id": r.id, "question": r.question, "answer": r.answer, "task": r.task} for r in records]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


def gsm8k_docs(gsm8k_file: str | None = None, **_: Any) -> Any:
    """``custom_dataset`` of ``tokenskip_gsm8k``: ``--metadata '{"gsm8k_file": FILE}'``, else
    ``$TOKENSKIP_DATA_DIR/gsm8k/test.jsonl``, else the hub's ``openai/gsm8k``."""
    return _docs("gsm8k", "gsm8k", gsm8k_file)


def math500_docs(math500_file: str | None = None, **_: Any) -> Any:
    """``custom_dataset`` of ``tokenskip_math500``: ``--metadata '{"math500_file": FILE}'``, else
    ``$TOKENSKIP_DATA_DIR/math500/test.jsonl``, else the hub's ``HuggingFaceH4/MATH-500``."""
    return _docs("math500", "math", math500_file)


def extract(resps: Sequence[Sequence[str]], docs: Sequence[dict]) -> list[list[str]]:
    """The ``custom`` filter: every response -> its final answer, as tokenskip extracts it."""
    return [[extract_answer(r or "") for r in inst] for inst in resps]


def _score(doc: dict, results: Sequence[str], task: str) -> dict[str, int]:
    return {"exact_match": int(is_equiv(results[0], doc["answer"], task))}


def score_gsm8k(doc: dict, results: Sequence[str]) -> dict[str, int]:
    """``process_results`` of ``tokenskip_gsm8k``: the extracted answer against the reference, numerically."""
    return _score(doc, results, "gsm8k")


def score_math(doc: dict, results: Sequence[str]) -> dict[str, int]:
    """``process_results`` of ``tokenskip_math500``: normalised string, number, then math-verify."""
    return _score(doc, results, "math")


def samples_to_records(samples: str | Path, out: str | Path) -> int:
    """lm-eval's ``samples_<task>_<time>.jsonl`` -> tokenskip result records (for ``eval --regrade``)."""
    from tokenskip.data.inputs import locate, read_rows
    from tokenskip.data.jsonl import write_jsonl_atomic

    rows = []
    for lineno, s in read_rows(samples):
        try:
            doc, resps = s["doc"], s["resps"]
            output = resps[0][0]
            if not isinstance(output, str) or not isinstance(doc, dict):
                raise TypeError
            rows.append(
                {
                    "id": str(doc.get("id", s.get("doc_id"))),
                    "question": doc["question"],
                    "answer": doc["answer"],
                    "task": doc.get("task", "gsm8k"),
                    "output": output,
                    "lm_eval_prediction": (s.get("filtered_resps") or [None])[0],
                    "lm_eval_correct": bool(s["exact_match"]),
                }
            )
        except (KeyError, IndexError, TypeError):
            raise UserError(
                f"{locate(samples, lineno)}: not a sample of a tokenskip lm-eval task "
                "(needs doc.question, doc.answer, resps and exact_match)"
            ) from None
    return write_jsonl_atomic(out, rows)
