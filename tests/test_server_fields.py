"""A client's mistake is a 400 that names the field and what it expects (issue 28), and the OpenAPI document
says the same ranges the server enforces. Fake model, milliseconds; the fuzzing is tests/test_server_fuzz.py."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")

from test_server import FakeGenerator, Q, make_client  # noqa: E402

from tokenskip.models import load_tokenizer  # noqa: E402
from tokenskip.serve import ServerConfig  # noqa: E402
from tokenskip.serve.fields import invalid_text  # noqa: E402
from tokenskip.serve.openapi import openapi_schema  # noqa: E402

H = {"content-type": "application/json"}


def ask(fields: str) -> str:
    """A chat body (raw JSON text) with a question and ``fields``."""
    return '{"messages": [{"role": "user", "content": "What is 2 + 3?"}], ' + fields + "}"


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("smollm2-135m")


@pytest.mark.parametrize(
    "path, body, message, param",
    [
        ("/v1/chat/completions", '{"messages": [{"role": "user", "content": "2 + 3?\\ud800"}]}',
         "messages[0].content: must be valid Unicode text, got the lone surrogate \\ud800", "messages"),
        ("/v1/completions", '{"prompt": ["ok", "x\\udc00"]}',
         "prompt[1]: must be valid Unicode text, got the lone surrogate \\udc00", "prompt"),
        ("/v1/chat/completions", ask('"stop": "\\udbff"'),
         "stop: must be valid Unicode text, got the lone surrogate \\udbff", "stop"),
        ("/v1/chat/completions", ask('"compression_ratio": "0.5"'),
         "compression_ratio: must be a number in (0, 1], got the string '0.5'", "compression_ratio"),
        ("/v1/chat/completions", ask('"compression_ratio": 1.5'),
         "compression_ratio: must be a number in (0, 1], got 1.5", "compression_ratio"),
        ("/v1/chat/completions", ask('"token_budget": "lots"'),
         "token_budget: must be an integer >= 1 or \"auto\", got the string 'lots'", "token_budget"),
        ("/v1/chat/completions", ask('"thinking_budget": true'),
         "thinking_budget: must be an integer >= 1, got true", "thinking_budget"),
        ("/v1/chat/completions", ask('"thinking_wait": -1, "thinking_budget": 4'),
         "thinking_wait: must be an integer >= 0, got -1", "thinking_wait"),
        ("/v1/chat/completions", ask('"stop": [1, 2]'),
         "stop: must be a non-empty string or a list of at most 4 non-empty strings, got an array", "stop"),
        ("/v1/chat/completions", ask('"seed": 99999999999999999999'),
         "seed: must be an integer in [0, 9223372036854775807], got 99999999999999999999", "seed"),
        ("/v1/chat/completions", ask('"n": 2'), "n: must be 1 (one choice per request), got 2", "n"),
        ("/v1/chat/completions", '{"messages": [{"role": "user", "content": 5}]}',
         'messages[0].content: must be a string or a list of {"type": "text", "text": ...} parts, got 5',
         "messages"),
        ("/v1/completions", '{"prompt": "2 + 3 = ", "max_completion_tokens": 0}',
         "max_completion_tokens: must be an integer >= 1, got 0", "max_completion_tokens"),
    ],
)  # fmt: skip
def test_a_wrong_value_is_a_400_naming_the_field_and_what_it_expects(tok, path, body, message, param):
    gen = FakeGenerator(tok)
    with make_client(gen, max_tokens_limit=64, default_max_tokens=16) as c:
        r = c.post(path, content=body.encode(), headers=H)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["message"] == f"invalid request: {message}"
    assert r.json()["error"]["param"] == param
    assert gen.calls == []  # refused before any generation


def test_limits_and_edges_that_used_to_fail(tok):
    gen = FakeGenerator(tok)
    with make_client(gen, max_tokens_limit=64, default_max_tokens=16) as c:
        r = c.post("/v1/completions", content=b"[" * 100_000, headers=H)  # json.loads: RecursionError
        assert r.status_code == 400 and "nested too deeply" in r.json()["error"]["message"]
        # the winning max_completion_tokens does not hide an out-of-range max_tokens
        r = c.post("/v1/completions", json={"prompt": Q, "max_tokens": 10_000, "max_completion_tokens": 8})
        assert r.status_code == 400 and r.json()["error"]["param"] == "max_tokens"
        # a temperature too small to divide logits by is greedy decoding, not a crash
        r = c.post("/v1/completions", json={"prompt": Q, "max_tokens": 4, "temperature": 5e-324})
        assert r.status_code == 200, r.text
    assert gen.calls[-1][1].temperature == 0.0


def test_invalid_text_walks_keys_nesting_and_lists():
    assert invalid_text({"a": [1, {"b": ["ok", "x\ud800"]}]}) == ("a[1].b[1]", "\\ud800")
    assert invalid_text({"a": {"k\udfff": 1}}) == ("a", "\\udfff")  # a bad key: the object holding it
    assert invalid_text({"a": "\U0001f600 fine", "b": [None, 2.5, True]}) is None
    deep: list = []
    for _ in range(5000):  # deeper than Python's recursion limit: iterative
        deep = [deep]
    assert invalid_text({"d": deep}) is None


def test_openapi_document_has_the_extension_fields_and_this_servers_limits(tok):
    limits = {"max_tokens_limit": 64, "default_max_tokens": 16, "max_budget": 300, "batch_size": 4}
    doc = openapi_schema(ServerConfig(served_model_name="test-model", **limits))
    with make_client(FakeGenerator(tok), **limits) as c:
        assert c.get("/openapi.json").json() == doc
    chat = doc["components"]["schemas"]["ChatCompletionRequest"]["properties"]
    assert chat["compression_ratio"]["anyOf"][0] == {"type": "number", "exclusiveMinimum": 0, "maximum": 1}
    budget = chat["token_budget"]["anyOf"]
    assert budget[0] == {"type": "integer", "minimum": 1, "maximum": 300} and budget[1]["enum"] == ["auto"]
    assert chat["thinking_budget"]["anyOf"][0] == {"type": "integer", "minimum": 1}
    assert chat["thinking_wait"]["anyOf"][0] == {"type": "integer", "minimum": 0}
    assert chat["method"]["anyOf"][0] == {"type": "string"} and "registry" in chat["method"]["description"]
    assert chat["max_tokens"]["anyOf"][0] == {"type": "integer", "minimum": 1, "maximum": 64}
    assert chat["model"]["anyOf"][0]["enum"] == ["test-model"]
    prompt = doc["components"]["schemas"]["CompletionRequest"]["properties"]["prompt"]["anyOf"]
    assert prompt[1]["maxItems"] == 4
    post = doc["paths"]["/v1/chat/completions"]["post"]
    assert set(post["responses"]) == {"200", "400", "404", "413", "500", "503", "504"}
    assert set(post["responses"]["200"]["content"]) == {"application/json", "text/event-stream"}
    keyed = openapi_schema(ServerConfig(api_key="k"))
    assert "401" in keyed["paths"]["/v1/completions"]["post"]["responses"]
    assert keyed["paths"]["/v1/models"]["get"]["security"] == [{"bearer": []}]
