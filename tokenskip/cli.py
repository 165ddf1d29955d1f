"""``tokenskip <verb>``: every verb is a typed function in :mod:`tokenskip.verbs`; its signature and docstring
are the CLI.

Options come from the command line or from a YAML/JSON file (``--config FILE``; ``--print_config``
shows one to start from). Errors the user can fix end in one line on stderr and exit status 2.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from collections.abc import Callable
from typing import Any

# verb -> "module:function" (nested dicts are verb groups, e.g. `tokenskip tale run`)
COMMANDS: dict[str, Any] = {
    "models": "tokenskip.verbs.models:models",
    "pipeline": "tokenskip.verbs.pipeline:pipeline",
    "generate": "tokenskip.verbs.generate:generate",
    "filter": "tokenskip.verbs.filter:filter_records",
    "eval": "tokenskip.verbs.evaluate:evaluate",
    "compress": "tokenskip.verbs.compress:compress",
    "bench": "tokenskip.verbs.bench:bench",
    "report": "tokenskip.verbs.report:report",
    "fidelity": "tokenskip.verbs.fidelity:fidelity",
    "infer": "tokenskip.verbs.generate:infer",
    "serve": "tokenskip.verbs.serve:serve",
    "build-sft": "tokenskip.verbs.build_sft:build_sft",
    "train": "tokenskip.verbs.train:train",
    "merge": "tokenskip.verbs.merge:merge",
    "tale": {
        "estimate": "tokenskip.verbs.tale:estimate",
        "run": "tokenskip.verbs.tale:run",
        "search": "tokenskip.verbs.tale_search:search",
        "train-sft": "tokenskip.verbs.tale_pt:train_sft",
        "train-dpo": "tokenskip.verbs.tale_pt:train_dpo",
    },
    "metareason": {
        "score": "tokenskip.verbs.metareason:score",
        "iterate": "tokenskip.verbs.metareason:iterate",
    },
}


def _load(target: Any) -> Any:
    if isinstance(target, dict):
        return {name: _load(t) for name, t in target.items()}
    module, _, attr = target.partition(":")
    fn: Callable[..., Any] = getattr(importlib.import_module(module), attr)
    return fn


def _wanted(args: list[str]) -> dict[str, Any]:
    """The part of :data:`COMMANDS` a command line names (its verb, or its verb group), so the parser is built
    for that verb only; everything for a bare ``tokenskip`` or ``--help``."""
    return {args[0]: COMMANDS[args[0]]} if args and args[0] in COMMANDS else COMMANDS


# verbs that take leading positional values: `tokenskip eval a.jsonl b.jsonl --out m.json`
POSITIONAL: dict[str, str] = {"eval": "files", "report": "dirs"}


def normalize_args(args: list[str]) -> list[str]:
    """Accept ``--max-new-tokens`` as well as ``--max_new_tokens`` (option names only, not values), and
    turn the leading bare values of a verb in POSITIONAL into its list option."""
    if args and args[0] in POSITIONAL:
        i = 1
        while i < len(args) and not args[i].startswith("-"):
            i += 1
        if i > 1:
            args = [args[0], f"--{POSITIONAL[args[0]]}={json.dumps(args[1:i])}", *args[i:]]
    out = []
    for a in args:
        if a.startswith("--") and len(a) > 2:
            name, eq, value = a[2:].partition("=")
            a = "--" + name.replace("-", "_") + eq + value
        out.append(a)
    return out


def main(argv: list[str] | None = None) -> int:
    from jsonargparse import auto_cli, set_parsing_settings

    from tokenskip.errors import UserError

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    set_parsing_settings(docstring_parse_attribute_docstrings=True)
    args = normalize_args(sys.argv[1:] if argv is None else argv)
    try:
        auto_cli(_load(_wanted(args)), args=args, as_positional=False, parser_mode="yaml", prog="tokenskip")
    except UserError as e:
        print(f"tokenskip: error: {e}", file=sys.stderr)
        return 2
    except FileNotFoundError as e:
        print(f"tokenskip: error: file not found: {e.filename or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tokenskip: interrupted (finished records are saved; re-run to resume)", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
