"""Request field types: strict, refused with one message that says what the field expects, and documented
with the same range in the JSON schema, so the OpenAPI schema and the server agree on every value.

``expect(kind, what, ok)`` wraps a type: a value that is not ``kind`` or fails ``ok`` is refused as
``must be {what}, got {value}`` (one error at the field, not one per member of a union). Pure, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import StrictFloat, StrictInt, ValidationError, WithJsonSchema, WrapValidator
from pydantic_core import PydanticCustomError


def shown(value: Any) -> str:
    """A short description of a JSON value for an error message."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return f"the string {value[:40]!r}" + ("..." if len(value) > 40 else "")
    return "an array" if isinstance(value, list) else "an object"


def expect(
    kind: Any, what: str, ok: Callable[[Any], bool] | None = None, schema: dict[str, Any] | None = None
) -> Any:
    """``kind`` with one error message (``must be {what}, got ...``) and, if given, ``schema`` as its JSON
    schema (it must say what ``ok`` checks)."""

    def check(value: Any, handler: Callable[[Any], Any]) -> Any:
        try:
            out = handler(value)
        except ValidationError:
            out, good = None, False
        else:
            good = ok is None or ok(out)
        if not good:
            raise PydanticCustomError(
                "expected", "must be {what}, got {got}", {"what": what, "got": shown(value)}
            )
        return out

    extra = () if schema is None else (WithJsonSchema(schema),)
    return Annotated[kind, WrapValidator(check), *extra]


Number = StrictInt | StrictFloat


def _in(lo: float, hi: float, lo_open: bool = False) -> Callable[[Any], bool]:
    return lambda v: (lo < v if lo_open else lo <= v) and v <= hi


Ratio = expect(
    Number, "a number in (0, 1]", _in(0, 1, True), {"type": "number", "exclusiveMinimum": 0, "maximum": 1}
)
Temperature = expect(Number, "a number in [0, 2]", _in(0, 2), {"type": "number", "minimum": 0, "maximum": 2})
Positive = expect(StrictInt, "an integer >= 1", lambda v: v >= 1, {"type": "integer", "minimum": 1})
NonNegative = expect(StrictInt, "an integer >= 0", lambda v: v >= 0, {"type": "integer", "minimum": 0})
SEED_MAX = 2**63 - 1
Seed = expect(
    StrictInt,
    f"an integer in [0, {SEED_MAX}]",
    _in(0, SEED_MAX),
    {"type": "integer", "minimum": 0, "maximum": SEED_MAX},
)
One = expect(
    StrictInt, "1 (one choice per request)", lambda v: v == 1, {"type": "integer", "minimum": 1, "maximum": 1}
)
Budget = expect(
    StrictInt | Literal["auto"],
    'an integer >= 1 or "auto"',
    lambda v: v == "auto" or v >= 1,
    {"anyOf": [{"type": "integer", "minimum": 1}, {"type": "string", "enum": ["auto"]}]},
)
MAX_STOP = 4
Stop = expect(
    str | list[str],
    f"a non-empty string or a list of at most {MAX_STOP} non-empty strings",
    lambda v: (all(v) and len(v) <= MAX_STOP) if isinstance(v, list) else bool(v),
    {
        "anyOf": [
            {"type": "string", "minLength": 1},
            {"type": "array", "items": {"type": "string", "minLength": 1}, "maxItems": MAX_STOP},
        ]
    },
)


def _bound(v: float) -> int | float:
    return int(v) if float(v).is_integer() else v


def request_type(field: Any) -> Any:
    """A method's request field (:class:`tokenskip.methods.RequestField`) as a strict type with one message
    and the same range in the JSON schema: ``int``, ``float`` (an integer or a number), ``str`` and ``Literal``
    values, or a union of them, with the field's ``minimum`` / ``maximum``."""
    t = field.type
    members = [t] if get_origin(t) is Literal or not get_args(t) else list(get_args(t))
    literals = [v for m in members if get_origin(m) is Literal for v in get_args(m)]
    numbers = [m for m in members if m in (int, float)]
    lo, hi, lo_open = field.minimum, field.maximum, field.exclusive_minimum
    kinds: list[Any] = []
    schemas: list[dict[str, Any]] = []
    words: list[str] = []
    if numbers:
        integer = numbers == [int]
        kinds.append(StrictInt if integer else Number)
        schema: dict[str, Any] = {"type": "integer" if integer else "number"}
        word = "an integer" if integer else "a number"
        if lo is not None:
            schema["exclusiveMinimum" if lo_open else "minimum"] = _bound(lo)
        if hi is not None:
            schema["maximum"] = _bound(hi)
        if lo is not None and hi is not None:
            word += f" in {'(' if lo_open else '['}{_bound(lo)}, {_bound(hi)}]"
        elif lo is not None:
            word += f" {'>' if lo_open else '>='} {_bound(lo)}"
        elif hi is not None:
            word += f" <= {_bound(hi)}"
        schemas.append(schema)
        words.append(word)
    if str in members:
        kinds.append(str)
        schemas.append({"type": "string"})
        words.append("a string")
    if literals:
        kinds.append(Literal[tuple(literals)])
        schemas.append({"type": "string", "enum": literals} if all(isinstance(v, str) for v in literals)
                       else {"enum": literals})  # fmt: skip
        words.append(" or ".join(f'"{v}"' if isinstance(v, str) else repr(v) for v in literals))
    if not kinds:
        raise TypeError(f"request field '{field.name}': unsupported type {t!r}")

    def ok(v: Any) -> bool:
        if isinstance(v, bool) or not isinstance(v, int | float):
            return True
        return (lo is None or (lo < v if lo_open else lo <= v)) and (hi is None or v <= hi)

    kind = kinds[0] if len(kinds) == 1 else Union[tuple(kinds)]  # noqa: UP007 (a union built at run time)
    return expect(kind, " or ".join(words), ok, schemas[0] if len(schemas) == 1 else {"anyOf": schemas})


_SURROGATE = re.compile("[\ud800-\udfff]")


def invalid_text(body: Any) -> tuple[str, str] | None:
    """``(field path, the offending character)`` of the first string in a parsed JSON body (keys included)
    that is not valid Unicode: JSON's ``"\\ud800"`` escape decodes to a lone surrogate that no tokenizer
    can encode. Iterative, so any nesting ``json.loads`` accepts is walked."""
    todo: list[tuple[Any, str]] = [(body, "body")]
    while todo:
        value, where = todo.pop()
        if isinstance(value, str):
            bad = _SURROGATE.search(value)
            if bad is not None:
                return where, f"\\u{ord(bad.group()):04x}"
        elif isinstance(value, dict):
            for key, item in reversed(value.items()):
                path = key if where == "body" else f"{where}.{key}"
                todo += [(item, path), (key, where)]  # a bad key is reported at the object holding it
        elif isinstance(value, list):
            todo += [(item, f"{where}[{i}]") for i, item in reversed(list(enumerate(value)))]
    return None
