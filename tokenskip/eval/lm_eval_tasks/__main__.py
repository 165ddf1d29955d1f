"""``python -m tokenskip.eval.lm_eval_tasks``: print the folder for ``lm_eval --include_path``.

``python -m tokenskip.eval.lm_eval_tasks records SAMPLES.jsonl OUT.jsonl`` turns lm-eval's ``--log_samples``
file of a tokenskip task into tokenskip result records (id, question, answer, task, output, and lm-eval's
score as ``lm_eval_correct``), ready for ``tokenskip eval --regrade OUT.jsonl``.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from tokenskip.errors import UserError
    from tokenskip.eval.lm_eval_tasks import include_path

    args = sys.argv[1:] if argv is None else argv
    if not args:
        print(include_path())
        return 0
    if args[0] != "records" or len(args) != 3:
        print(
            "usage: python -m tokenskip.eval.lm_eval_tasks [records SAMPLES.jsonl OUT.jsonl]", file=sys.stderr
        )
        return 2
    from tokenskip.eval.lm_eval_tasks.hooks import samples_to_records

    try:
        n = samples_to_records(args[1], args[2])
    except UserError as e:
        print(f"tokenskip: error: {e}", file=sys.stderr)
        return 2
    print(f"{n} records -> {args[2]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
