"""Dependencies point down: every import in tokenskip/ (lazy ones inside functions, and the ``"module:attr"``
strings of the registries and of cli.py's COMMANDS, included) goes to a lower layer or stays in its own
package, so no arrow runs up and no two packages import each other. The verbs are one room (tokenskip/verbs/)
that nothing in the library imports. Parsed from the source: no import runs (except the last test's COMMANDS)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "tokenskip"

# lowest first; a unit is a subpackage or a top-level module of tokenskip (the README's Contributing section)
LAYERS = [
    {"errors", "mathcheck"},
    {"grading"},
    {"data"},
    {"models"},
    {"compressors", "inference"},
    {"args"},
    {"methods"},
    {"session", "training", "eval", "serve"},
    {"metareason"},
    {"verbs"},
    {"cli", "__init__"},
]
LEVEL = {unit: i for i, units in enumerate(LAYERS) for unit in units}
TARGET = re.compile(r"^(tokenskip(?:\.\w+)+):\w+$")  # "tokenskip.methods.ram:RaM"


def _unit(module: str) -> str:
    """``tokenskip.data.jsonl`` -> ``data``; ``tokenskip.args`` -> ``args``; ``tokenskip`` -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _names(node: ast.AST) -> list[str]:
    """The tokenskip modules one node imports (or names as an import target string)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        return [node.module] if node.module != "tokenskip" else [f"tokenskip.{a.name}" for a in node.names]
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and (m := TARGET.match(node.value)):
        return [m.group(1)]
    return []


def _imports() -> list[tuple[str, str, str]]:
    """``(file, importing unit, imported unit)`` for every import of a tokenskip module in the package."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        unit = rel.parts[1] if len(rel.parts) > 1 else "__init__"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            found += [(str(rel), unit, _unit(name)) for name in _names(node) if name.startswith("tokenskip")]
    return found


def test_the_scan_sees_lazy_imports_and_target_strings():
    found = set(_imports())
    assert ("tokenskip/cli", "cli", "verbs") in found  # COMMANDS strings
    assert ("tokenskip/verbs/fidelity", "verbs", "compressors") in found  # imports inside a function


def test_every_unit_has_a_layer():
    units = {
        p.stem if p.is_file() else p.name for p in PACKAGE.iterdir() if not p.name.startswith(("_", "."))
    }
    units = {u for u in units if (PACKAGE / u).is_dir() or (PACKAGE / f"{u}.py").is_file()}
    assert units <= set(LEVEL), sorted(units - set(LEVEL))


def test_no_import_runs_up_or_sideways_between_packages():
    bad = [
        f"{file}: {unit} imports {target}"
        for file, unit, target in _imports()
        if target != unit and LEVEL[target] >= LEVEL[unit]
    ]
    assert bad == []


def test_nothing_in_the_library_imports_a_verb():
    assert [f for f, unit, target in _imports() if target == "verbs" and unit not in ("verbs", "cli")] == []


def test_every_command_is_a_function_in_the_verbs_room():
    from tokenskip.cli import COMMANDS, _load

    def targets(commands: dict) -> list[str]:
        return [t for v in commands.values() for t in (targets(v) if isinstance(v, dict) else [v])]

    assert [t for t in targets(COMMANDS) if not t.startswith("tokenskip.verbs.")] == []
    loaded = _load(COMMANDS)
    assert callable(loaded["generate"]) and callable(loaded["tale"]["train-dpo"])
    rooms = {t.partition(":")[0].rsplit(".", 1)[1] for t in targets(COMMANDS)}
    modules = {p.stem for p in (PACKAGE / "verbs").glob("*.py")} - {"__init__"}
    assert modules - rooms == {"recipes"}  # every verbs/ module is a verb's, except the pipeline's recipes
