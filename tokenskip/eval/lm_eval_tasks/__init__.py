"""lm-evaluation-harness tasks that grade TokenSkip's answer format: ``tokenskip_gsm8k`` and ``tokenskip_math500``.

``lm_eval --include_path $(python -m tokenskip.eval.lm_eval_tasks) --tasks tokenskip_gsm8k ...``. Each task
sends the bare question as the user message (``tokenskip serve`` adds the prompt preset's instruction, the γ
marker of ``compression_ratio`` and the chat template, the prompt the model was trained on), takes the
answer as tokenskip does (:func:`tokenskip.grading.extract_answer`: the last ``\\boxed{}``, else "The final
answer is", ...) and judges it with :func:`tokenskip.grading.is_equiv` (numeric for GSM8K, math-verify for
MATH). The questions come from tokenskip's own loader (:func:`tokenskip.data.datasets.load_records`): the
file given by ``--metadata '{"data_files": "FILE"}'``, else ``$TOKENSKIP_DATA_DIR/<name>/test.jsonl``, else
the hub; so the docs are those of ``tokenskip bench --dataset <name>``, in the same order.
"""

from __future__ import annotations

from pathlib import Path

TASKS = ("tokenskip_gsm8k", "tokenskip_math500")


def include_path() -> Path:
    """The folder to pass to ``lm_eval --include_path``."""
    return Path(__file__).resolve().parent
