"""``tokenskip models``: the embedded model aliases and what is already converted in the cache."""

from __future__ import annotations

import json
from typing import Any

from tokenskip.models import cache_dir, list_models


def models(json_output: bool = False) -> list[dict[str, Any]]:
    """List embedded model aliases and what is already converted in the cache.

    Args:
        json_output: print JSON instead of a table.
    """
    rows = list_models()
    if json_output:
        print(json.dumps(rows, indent=2))
    else:
        print(f"cache: {cache_dir()}")
        for r in rows:
            state = "cached" if r["cached"] else "not converted yet"
            print(f"  {r['alias'] or '-':<22} {state:<18} {r['description']}")
    return rows
