"""Property-based fuzzing of a live ``tokenskip serve --backend hf`` (embedded model) from its own OpenAPI
schema, with schemathesis: the schema's examples, boundary values of every field (coverage phase) and
random requests, valid and invalid. No request gets a 5xx, every response conforms to the schema, and a
request the schema calls invalid is refused with a 4xx (the schema is as strict as the server, no stricter).
Generation stays cheap: the server caps max_tokens at 2 and prompts at 128 tokens (the question's prompt
is about 60).
"""

from __future__ import annotations

import json

import httpx
import pytest
from serve_faults import PYTHON, free_port, start_process

pytest.importorskip("fastapi")
schemathesis = pytest.importorskip("schemathesis")

from tokenskip.serve import ServerConfig  # noqa: E402
from tokenskip.serve.openapi import openapi_schema  # noqa: E402

pytestmark = pytest.mark.slow

MODEL = "smollm2-135m"
CHECKS = {
    "not_a_server_error": {"enabled": True, "expected-statuses": ["2xx", "4xx"]},
    "status_code_conformance": {"enabled": True},
    "content_type_conformance": {"enabled": True},
    "response_headers_conformance": {"enabled": True},
    "response_schema_conformance": {"enabled": True},
    "negative_data_rejection": {"enabled": True, "expected-statuses": ["4xx"]},
}
CONFIG = {
    "seed": 28,  # the same requests on every run
    "request-timeout": 120,  # seconds: a loaded CI machine is slow, the server's own timeout is 600
    "checks": {"enabled": False, **CHECKS},
    "phases": {
        # the schema's examples are valid requests: the model answers each (2xx)
        "examples": {"checks": {**CHECKS, "positive_data_acceptance": {"expected-statuses": ["2xx"]}}},
        "coverage": {"unexpected-methods": []},  # boundary values of every field
        "fuzzing": {},
        "stateful": {"enabled": False},
    },
    "generation": {"mode": "all", "max-examples": 10, "database": "none"},
    # the fields' valid boundary values are generated once (chat): completions shares them, and its own
    # (prompt lists, raw_prompt) are in the schema's examples. About half the generations, one minute.
    "operations": [
        {"include-path": "/v1/completions", "phases": {"coverage": {"generation": {"mode": "negative"}}}}
    ],
}


# the served document is this one (checked below): the schema is known before the server starts
SERVER = ServerConfig(
    served_model_name=MODEL, max_tokens_limit=2, default_max_tokens=1, estimate_max_tokens=2,
    max_prompt_tokens=128, batch_size=4,
)  # fmt: skip
schema = schemathesis.openapi.from_dict(openapi_schema(SERVER), config=schemathesis.Config.from_dict(CONFIG))


@pytest.fixture(scope="module")
def server_url(tmp_path_factory):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    flags = [f"--{name}={getattr(SERVER, name)}" for name in (
        "max_tokens_limit", "default_max_tokens", "estimate_max_tokens", "max_prompt_tokens", "batch_size"
    )]  # fmt: skip
    cmd = [PYTHON, "-m", "tokenskip.cli", "serve", "--backend", "hf", "--model", MODEL, "--port", str(port),
           "--log_level", "error", *flags]  # fmt: skip
    log = open(tmp_path_factory.mktemp("serve") / "server.log", "w")  # noqa: SIM115 - closed below
    # one thread: on a loaded machine (CI, shared runners) two spinning OpenMP threads are ten times slower
    proc = start_process(cmd, url, timeout=300, log=log, env={"OMP_NUM_THREADS": "1"})
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(60)
        log.close()


def test_the_served_schema_is_the_fuzzed_one(server_url):
    served = httpx.get(server_url + "/openapi.json", timeout=30).json()
    assert served == json.loads(json.dumps(openapi_schema(SERVER)))
    request = served["components"]["schemas"]["ChatCompletionRequest"]["properties"]
    for name in ("compression_ratio", "token_budget", "thinking_budget", "method"):
        assert request[name]["description"], name  # the extension fields are documented
    assert request["compression_ratio"]["anyOf"][0] == {"type": "number", "exclusiveMinimum": 0, "maximum": 1}


@schema.parametrize()
def test_fuzzed_requests_no_5xx_and_conform(case, server_url):
    case.call_and_validate(base_url=server_url)


QUESTION = [{"role": "user", "content": "What is 2 + 3?"}]


@pytest.mark.parametrize(
    "path, body, field, expects",
    [
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "2 + 3 = ?\ud800"}]},
         "messages[0].content", "valid Unicode"),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": [{"type": "text", "text": "\udfff"}]}]},
         "messages[0].content[0].text", "valid Unicode"),
        ("/v1/completions", {"prompt": ["fine", "lone \udc00 surrogate"]}, "prompt[1]", "valid Unicode"),
        ("/v1/chat/completions", {"messages": QUESTION, "stop": ["\ud83d"]}, "stop[0]", "valid Unicode"),
        ("/v1/chat/completions", {"messages": QUESTION, "compression_ratio": "0.5"}, "compression_ratio",
         "a number in (0, 1]"),
        ("/v1/chat/completions", {"messages": QUESTION, "token_budget": "50"}, "token_budget",
         'an integer >= 1 or "auto"'),
        ("/v1/chat/completions", {"messages": QUESTION, "thinking_budget": 2.5}, "thinking_budget",
         "an integer >= 1"),
        ("/v1/completions", {"prompt": "2 + 3 = ", "max_tokens": "4"}, "max_tokens", "an integer >= 1"),
        ("/v1/completions", {"prompt": "2 + 3 = ", "temperature": "hot"}, "temperature", "a number in [0, 2]"),
    ],
)  # fmt: skip
def test_explicit_malformed_requests(server_url, path, body, field, expects):
    """The requests of issue #28 (invalid Unicode, a string for a number): 400 naming the field and what it
    expects, through the same schemathesis checks."""
    case = schema[path]["POST"].Case(body=body, media_type="application/json")
    generated = httpx.get(server_url + "/health", timeout=30).json()["completed"]
    response = case.call_and_validate(base_url=server_url)
    error = response.json()["error"]
    assert response.status_code == 400, response.text
    assert error["message"].startswith(f"invalid request: {field}: must be "), error
    assert expects in error["message"] and error["param"] == field.split("[")[0].split(".")[0]
    assert httpx.get(server_url + "/health", timeout=30).json()["completed"] == generated  # refused up front
