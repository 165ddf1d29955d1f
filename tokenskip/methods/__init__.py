"""Length-control methods, registered by name: ``bench --methods``, ``infer --method`` and the server's
request fields all resolve through :data:`REGISTRY`.

A spec is ``kind`` or ``kind@arg`` (``tokenskip@0.5``, ``truncation@0.7``, ``tale-ep@256``,
``budget-forcing@512``). Adding a method is
one module with a :class:`~tokenskip.methods.base.Method` subclass plus one line here; see
``onlynumbers.py`` for the smallest example.
"""

from __future__ import annotations

import importlib
from typing import Any

from tokenskip.errors import UserError
from tokenskip.methods.base import Context, FieldError, Method, Request, RequestField, make_record

# kind -> "module:Class" (imported on first use)
REGISTRY: dict[str, str] = {
    "original": "tokenskip.methods.original:Original",
    "tokenskip": "tokenskip.methods.tokenskip:TokenSkip",
    "tale-ep": "tokenskip.methods.tale_ep:TaleEP",
    "lc-prompt": "tokenskip.methods.lc_prompt:LCPrompt",
    "beconcise": "tokenskip.methods.beconcise:BeConcise",
    "onlynumbers": "tokenskip.methods.onlynumbers:OnlyNumbers",
    "abbrewords": "tokenskip.methods.abbrewords:AbbreWords",
    "truncation": "tokenskip.methods.truncation:Truncation",
    "budget-forcing": "tokenskip.methods.budget_forcing:BudgetForcing",
    "ram": "tokenskip.methods.ram:RaM",
}

DEFAULT_METHODS = (
    "original,tokenskip@1.0,tokenskip@0.9,tokenskip@0.7,tokenskip@0.5,truncation@0.5,lc-prompt@0.5,"
    "beconcise,onlynumbers,abbrewords,tale-ep"
)


def method_class(kind: str) -> type[Method]:
    if kind not in REGISTRY:
        raise UserError(f"unknown method '{kind}' (known: {', '.join(known_specs())})")
    module, _, attr = REGISTRY[kind].partition(":")
    return getattr(importlib.import_module(module), attr)


def known_specs() -> list[str]:
    out = []
    for kind in REGISTRY:
        cls = method_class(kind)
        out.append(
            kind if cls.arg is None else f"{kind}@{ {'ratio': 'γ', 'budget': 'N', 'text': 'X'}[cls.arg] }"
        )
    return out


def get_method(spec: str, **options: Any) -> Method:
    """The method a spec names (``options`` go to methods that take them, e.g. TALE's template)."""
    spec = spec.strip()
    kind, at, arg = spec.partition("@")
    return method_class(kind).parse(arg if at else None, **options)


def parse_methods(spec: str | list[str], **options: Any) -> list[Method]:
    """``"original,tokenskip@0.5,beconcise"`` -> methods (duplicates removed, order kept)."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    methods: list[Method] = []
    for item in items:
        if item.strip():
            m = get_method(item, **options)
            if m not in methods:
                methods.append(m)
    if not methods:
        raise UserError("--methods is empty")
    return methods


def execution_order(methods: list[Method]) -> list[Method]:
    """Original first (truncation needs its lengths; ActRatio needs its mean), adapter methods last."""
    ordered = list(methods)
    if not any(m.kind == "original" for m in ordered):
        ordered.insert(0, get_method("original"))
    return sorted(ordered, key=lambda m: (m.kind != "original", m.uses_adapter))


__all__ = [
    "DEFAULT_METHODS",
    "REGISTRY",
    "Context",
    "FieldError",
    "Method",
    "Request",
    "RequestField",
    "execution_order",
    "get_method",
    "known_specs",
    "make_record",
    "method_class",
    "parse_methods",
]
