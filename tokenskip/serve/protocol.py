"""The OpenAI wire format as pydantic types: requests, responses, stream chunks, errors.

Requests accept OpenAI's fields (unknown ones are ignored, the few this server cannot honour are refused
with 400, see :data:`UNSUPPORTED`) plus tokenskip's extensions, built from the method registry: every
method's ``request_fields`` (:class:`~tokenskip.methods.base.RequestField`), e.g.

* ``compression_ratio`` (γ in (0, 1]): method ``tokenskip@γ``;
* ``token_budget`` (β, an integer or ``"auto"``): method ``tale-ep@β`` / ``tale-ep`` (zero-shot estimate);
* ``thinking_budget`` (N) and ``thinking_wait`` (K): method ``budget-forcing@N`` / ``budget-forcing@N+waitK``;

and ``method``: any registry spec (``beconcise``, ``lc-prompt@0.5``, ...). At most one of them picks the
method (:meth:`OpenAIRequest.method_spec`; the method's ``from_request`` turns its fields into a spec).
Pure types and checks, no I/O.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    create_model,
    model_serializer,
)

from tokenskip.methods import REGISTRY, FieldError, Method, RequestField, method_class
from tokenskip.serve.fields import One, Positive, Ratio, Seed, Stop, Temperature, expect, request_type

# request fields this server refuses (400) unless they carry one of these no-op values
UNSUPPORTED: dict[str, tuple] = {
    "tools": (None, []),
    "functions": (None, []),
    "logprobs": (None, False),
    "top_logprobs": (None, 0),
    "echo": (None, False),
    "suffix": (None, ""),
    "best_of": (None, 1),
}


class APIError(Exception):
    """An error answered as OpenAI's ``{"error": {...}}`` body with an HTTP status."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def body(self) -> dict[str, Any]:
        return ErrorResponse.of(self.status, self.message, self.param, self.code).model_dump()


class ErrorInfo(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorInfo

    @classmethod
    def of(
        cls, status: int, message: str, param: str | None = None, code: str | None = None
    ) -> ErrorResponse:
        kind = {401: "authentication_error", 404: "not_found_error", 429: "rate_limit_error"}.get(
            status, "invalid_request_error" if status < 500 else "server_error"
        )
        return cls(error=ErrorInfo(message=message, type=kind, param=param, code=code))


# ------------------------------------------------------------------------------------------ requests


class OpenAIFields(BaseModel):
    """Fields shared by chat and completions requests: OpenAI's (:func:`request_model` adds the methods')."""

    model_config = ConfigDict(extra="ignore")
    # request field -> (its declaration, the method class that reads it); set by request_model
    method_fields: ClassVar[dict[str, tuple[RequestField, type[Method]]]] = {}

    model: str | None = None
    max_tokens: Positive | None = None
    max_completion_tokens: Positive | None = None
    temperature: Temperature | None = None
    top_p: Ratio | None = None
    seed: Seed | None = None
    stop: Stop | None = None
    n: One | None = None
    stream: StrictBool | None = False
    stream_options: dict[str, Any] | None = None
    ignore_eos: StrictBool = False  # vLLM's extension (vllm backend only): exactly max_tokens tokens
    # OpenAI fields refused unless harmless (UNSUPPORTED)
    tools: Any = None
    functions: Any = None
    logprobs: Any = None
    top_logprobs: Any = None
    echo: Any = None
    suffix: Any = None
    best_of: Any = None

    @property
    def include_usage(self) -> bool:
        return bool((self.stream_options or {}).get("include_usage"))

    def refused_field(self) -> str | None:
        """The first unsupported OpenAI field carrying a real value (None if there is none)."""
        for name, harmless in UNSUPPORTED.items():
            if getattr(self, name) not in harmless:
                return name
        return None

    def stop_strings(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        items = [self.stop] if isinstance(self.stop, str) else self.stop
        if not all(items):
            raise APIError(400, "stop must be a non-empty string or a list of them", "stop")
        if len(items) > 4:
            raise APIError(400, "at most 4 stop sequences", "stop")
        return tuple(items)

    def method_spec(self, max_tokens: int, max_budget: int) -> tuple[str, str | None]:
        """``(registry spec, the field that chose it)`` from the extension fields; ``original`` when none."""
        fields = self.method_fields
        values = {name: getattr(self, name) for name in (*fields, "method")}
        for name, (f, cls) in fields.items():
            picking = [p.name for p in cls.request_fields if p.picks]
            if not f.picks and values[name] is not None and all(values[p] is None for p in picking):
                raise APIError(400, f"{name} needs {' or '.join(picking)}", name)
        chosen = [n for n, (f, _) in fields.items() if f.picks and values[n] is not None]
        chosen += ["method"] if values["method"] is not None else []
        if len(chosen) > 1:
            raise APIError(400, f"{' and '.join(chosen)} cannot be combined", chosen[-1])
        if not chosen:
            return "original", None
        field = chosen[0]
        if field == "method":
            return str(values["method"]), field
        cls = fields[field][1]
        try:
            return cls.from_request(
                {f.name: values[f.name] for f in cls.request_fields}, max_tokens, max_budget
            ), field
        except FieldError as e:
            raise APIError(400, str(e), e.field) from None


def request_model(methods: Iterable[type[Method]]) -> type[OpenAIFields]:
    """The request fields: OpenAI's, each method's ``request_fields`` (in ``methods`` order), ``method``."""
    fields: dict[str, tuple[RequestField, type[Method]]] = {}
    for cls in methods:
        for f in cls.request_fields:
            if f.name in fields or f.name in OpenAIFields.model_fields or f.name == "method":
                raise TypeError(f"method '{cls.kind}': request field '{f.name}' is already taken")
            fields[f.name] = (f, cls)
    model = create_model(
        "OpenAIRequest",
        __base__=OpenAIFields,
        __doc__="Fields shared by chat and completions requests (OpenAI's and tokenskip's).",
        **{name: (request_type(f) | None, None) for name, (f, _) in fields.items()},
        method=(str | None, None),
    )
    model.method_fields = fields
    return model


OpenAIRequest = request_model(method_class(kind) for kind in REGISTRY)


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "user", "assistant", "developer"]
    content: expect(
        str | list[TextPart] | None, 'a string or a list of {"type": "text", "text": ...} parts'
    ) = None

    def turn(self) -> dict[str, str]:
        """``{"role", "content"}`` with the text of the content parts (``developer`` reads as ``system``)."""
        content = self.content
        text = "".join(p.text for p in content) if isinstance(content, list) else (content or "")
        return {"role": "system" if self.role == "developer" else self.role, "content": text}


class ChatCompletionRequest(OpenAIRequest):
    messages: list[ChatMessage] = Field(min_length=1)


class CompletionRequest(OpenAIRequest):
    prompt: expect(str | list[str], "a string or a list of strings")
    raw_prompt: StrictBool = False

    @property
    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)


# ----------------------------------------------------------------------------------------- responses


def now() -> int:
    return int(time.time())


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

    @classmethod
    def of(cls, prompt_tokens: int, completion_tokens: int) -> Usage:
        return cls(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
        )


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: str | None
    logprobs: None = None


class CompletionChoice(BaseModel):
    index: int
    text: str
    finish_reason: str | None
    logprobs: None = None


class _Response(BaseModel):
    id: str
    created: int = Field(default_factory=now)
    model: str
    usage: Usage | None = None
    tokenskip: dict[str, Any] | list[dict[str, Any]] | None = None


class ChatCompletion(_Response):
    object: Literal["chat.completion"] = "chat.completion"
    choices: list[ChatChoice]


class Completion(_Response):
    object: Literal["text_completion"] = "text_completion"
    choices: list[CompletionChoice]


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None

    @model_serializer(mode="wrap")
    def _drop_none(self, handler: Any) -> dict[str, Any]:
        return {k: v for k, v in handler(self).items() if v is not None}


class ChatChunkChoice(BaseModel):
    index: int
    delta: Delta
    finish_reason: str | None = None
    logprobs: None = None


class StreamChunk(BaseModel):
    """One SSE event of a stream (``chat.completion.chunk`` or ``text_completion``)."""

    id: str
    object: Literal["chat.completion.chunk", "text_completion"]
    created: int
    model: str
    choices: list[ChatChunkChoice] | list[CompletionChoice]
    usage: Usage | None = None
    tokenskip: dict[str, Any] | None = None

    @model_serializer(mode="wrap")
    def _drop_empty(self, handler: Any) -> dict[str, Any]:
        out = handler(self)
        for key in ("usage", "tokenskip"):
            if out.get(key) is None:
                out.pop(key, None)
        return out


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(default_factory=now)
    owned_by: str = "tokenskip"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
