"""The OpenAPI document of one server (``GET /openapi.json``).

Request bodies are the JSON schemas of :mod:`~tokenskip.serve.protocol`'s types (their ranges come from
:mod:`~tokenskip.serve.fields`, the same types that validate), with this server's own limits filled in
(the model it serves, ``max_tokens_limit``, ``max_budget``, prompts per request). Every answer is
documented: the response bodies, the SSE stream, and OpenAI's error body for each 4xx and 5xx. A value
the schema calls invalid is refused with a 4xx; a valid one may still be refused where a rule spans
several fields (e.g. two method fields at once). Pure: no I/O.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic.json_schema import models_json_schema

from tokenskip.serve.config import ServerConfig
from tokenskip.serve.protocol import (
    UNSUPPORTED,
    ChatCompletion,
    ChatCompletionRequest,
    Completion,
    CompletionRequest,
    ErrorResponse,
    ModelList,
    OpenAIRequest,
)

REF = "#/components/schemas/{model}"

DESCRIPTIONS = {
    "method": "Any method of the registry by its spec, e.g. beconcise, lc-prompt@0.5, tokenskip@0.6. "
    "At most one of {picking} and method picks the method.",
    "raw_prompt": "Send the prompt as it is (no chat template, no method).",
    "ignore_eos": "vLLM backend only: generate exactly max_tokens tokens.",
}

ERRORS = {
    400: "The request is invalid: the message names the field and what it expects.",
    401: "Missing or wrong API key (Authorization: Bearer KEY).",
    404: "The model is not the one this server serves.",
    413: "The request body is larger than the server's limit.",
    500: "The model failed while generating.",
    503: "The server is busy or shutting down (retry after Retry-After seconds).",
    504: "The request did not finish within the server's timeout.",
}


# one server-sent event of a stream (OpenAPI 3.1: the schema of a text/event-stream describes each event)
EVENT = {
    "type": "object",
    "description": "data: a chunk (chat.completion.chunk or text_completion) or an error body, as JSON; "
    "the last event's data is [DONE].",
    "properties": {"data": {"anyOf": [{"const": "[DONE]"}, {"type": "string", "pattern": "^\\{"}]}},
    "required": ["data"],
}


def _branches(prop: dict[str, Any]) -> list[dict[str, Any]]:
    """The alternatives of a property's schema (``X | None`` is ``anyOf: [X, null]``)."""
    return prop.get("anyOf", [prop])


def _request_schema(schema: dict[str, Any], config: ServerConfig) -> dict[str, Any]:
    """A request type's schema with this server's limits and the fields' descriptions."""
    props = schema["properties"]
    props["model"] = {"anyOf": [{"type": "string", "enum": [config.model_name]}, {"type": "null"}]}
    for name in ("max_tokens", "max_completion_tokens"):
        _branches(props[name])[0]["maximum"] = config.max_tokens_limit
    for branch in _branches(props["token_budget"]):
        if branch.get("type") == "integer":
            branch["maximum"] = config.max_budget
    for name, harmless in UNSUPPORTED.items():
        shown = ", ".join(json.dumps(v) for v in harmless)
        props[name]["description"] = f"Not supported: refused (400) unless one of {shown}."
    if "prompt" in props:
        for branch in _branches(props["prompt"]):
            if branch.get("type") == "array":
                branch.update(minItems=1, maxItems=config.batch_size)
    fields = OpenAIRequest.method_fields  # each method describes the request fields it reads
    picking = ", ".join(name for name, (f, _) in fields.items() if f.picks)
    texts = {**{name: f.description for name, (f, _) in fields.items() if f.description}, **DESCRIPTIONS}
    texts["method"] = texts["method"].format(picking=picking)
    for name, text in texts.items():
        if name in props:
            props[name]["description"] = text
    return schema


def _error(status: int) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "description": ERRORS[status],
        "content": {"application/json": {"schema": {"$ref": REF.format(model="ErrorResponse")}}},
    }
    if status == 503:
        doc["headers"] = {"Retry-After": {"schema": {"type": "string"}}}
    return doc


def _examples(request: str, config: ServerConfig) -> dict[str, Any]:
    """A valid request per way of choosing the method (schema-valid, and accepted by this server)."""
    n = config.max_tokens_limit
    question = "Tom has 3 apples and buys 2 more. How many apples does he have?"
    base = {"model": config.model_name, "max_tokens": n}
    base |= (
        {"messages": [{"role": "user", "content": question}]}
        if request == "ChatCompletionRequest"
        else {"prompt": question}
    )
    fields = {
        "original": {},
        "compression_ratio": {"compression_ratio": 0.5},
        "token_budget": {"token_budget": min(50, config.max_budget)},
        "token_budget_auto": {"token_budget": "auto"},
        "method": {"method": "beconcise"},
        "stream": {"stream": True, "compression_ratio": 0.5},
    }
    if n >= 2:
        fields["thinking_budget"] = {"thinking_budget": n // 2}
    if request == "CompletionRequest":
        fields["raw_prompt"] = {"raw_prompt": True}
        if config.batch_size >= 2:
            fields["prompts"] = {"prompt": [question, "What is 2 + 3?"], "compression_ratio": 0.5}
    return {name: {"value": base | extra} for name, extra in fields.items()}


def _post(summary: str, request: str, response: str, config: ServerConfig) -> dict[str, Any]:
    statuses = [400, 404, 413, 500, 503, 504] + ([401] if config.api_key is not None else [])
    body = {"schema": {"$ref": REF.format(model=request)}, "examples": _examples(request, config)}
    return {
        "post": {
            "summary": summary,
            "requestBody": {"required": True, "content": {"application/json": body}},
            "responses": {
                "200": {
                    "description": "The answer; with stream: true, server-sent events ending in data: [DONE].",
                    "content": {
                        "application/json": {"schema": {"$ref": REF.format(model=response)}},
                        "text/event-stream": {"schema": EVENT},
                    },
                },
                **{str(s): _error(s) for s in sorted(statuses)},
            },
        }
    }


def openapi_schema(config: ServerConfig) -> dict[str, Any]:
    """The OpenAPI 3.1 document of a server with ``config``."""
    _, defs = models_json_schema(
        [(ChatCompletionRequest, "validation"), (CompletionRequest, "validation")]
        + [(m, "serialization") for m in (ChatCompletion, Completion, ErrorResponse, ModelList)],
        ref_template=REF,
    )
    schemas = defs["$defs"]
    for name in ("ChatCompletionRequest", "CompletionRequest"):
        _request_schema(schemas[name], config)
    schemas["Health"] = {
        "type": "object",
        "properties": {
            "status": {"type": "string", "enum": ["ok"]},
            "model": {"type": "string"},
            "backend": {"type": "string"},
            "in_flight": {"type": "integer", "minimum": 0},
        },
        "required": ["status", "model", "backend", "in_flight"],
    }
    models: dict[str, Any] = {"200": {
        "description": "The served model.",
        "content": {"application/json": {"schema": {"$ref": REF.format(model="ModelList")}}},
    }}  # fmt: skip
    if config.api_key is not None:
        models["401"] = _error(401)
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "tokenskip", "version": "1", "description": __doc__.split("\n\n")[0]},
        "paths": {
            "/health": {
                "get": {
                    "summary": "Liveness and counters",
                    "responses": {
                        "200": {
                            "description": "The engine is running.",
                            "content": {"application/json": {"schema": {"$ref": REF.format(model="Health")}}},
                        },
                        "503": _error(503),
                    },
                }
            },  # fmt: skip
            "/v1/models": {
                "get": {"summary": "The served model", "responses": {**models, "503": _error(503)}}
            },
            "/v1/chat/completions": _post(
                "Chat completion", "ChatCompletionRequest", "ChatCompletion", config
            ),
            "/v1/completions": _post("Text completion", "CompletionRequest", "Completion", config),
        },
        "components": {"schemas": schemas},
    }
    if config.api_key is not None:
        doc["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        for path in ("/v1/models", "/v1/chat/completions", "/v1/completions"):
            for op in doc["paths"][path].values():
                op["security"] = [{"bearer": []}]
    return doc
