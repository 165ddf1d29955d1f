"""OpenAI-compatible server: protocol, prompts, limits and errors, against a fake (model-free) generator."""

from __future__ import annotations

import json
import threading
import time

import pytest
from live_server import live_server

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from tokenskip.data.prompts import format_prompt
from tokenskip.inference.base import Generation, Generator, SamplingConfig
from tokenskip.inference.tale_budget import estimation_message, get_template
from tokenskip.methods.tale_ep import chat_prompt
from tokenskip.models import load_tokenizer
from tokenskip.serve import BatchWorker, QueueFull, ServerConfig, create_app

Q = "Tom has 3 apples and buys 2 more. How many apples does he have?"


class FakeGenerator(Generator):
    """Answers instantly (or when ``gate`` is set); records every generate call."""

    name = "fake"

    def __init__(self, tokenizer, gate: threading.Event | None = None, fail: bool = False) -> None:
        self.tokenizer = tokenizer
        self.gate = gate
        self.fail = fail
        self.calls: list[tuple[list[str], SamplingConfig]] = []

    def generate(self, prompts: list[str], config: SamplingConfig) -> list[Generation]:
        self.calls.append((list(prompts), config))
        if self.gate is not None:
            self.gate.wait(10)
        if self.fail:
            raise RuntimeError("model exploded")
        out = []
        for p in prompts:
            if "estimate the minimum number of tokens" in p:
                text = "Budget: [[42]]"
            else:
                text = f"Step one.\n\nThe final answer is: $\\boxed{{{len(p) % 97}}}$"
            out.append(Generation(text, self.count_tokens(text), "stop", 0.01, len(prompts)))
        return out


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("smollm2-135m")


def make_client(generator, **cfg):
    from fastapi.testclient import TestClient

    config = ServerConfig(served_model_name="test-model", **cfg)
    return TestClient(create_app(generator, config))


def chat(client, content=Q, **extra):
    body = {
        "model": "test-model",
        "messages": [{"role": "user", "content": content}],
        "max_tokens": 16,
        **extra,
    }
    return client.post("/v1/chat/completions", json=body)


def test_health_and_models(tok):
    with make_client(FakeGenerator(tok)) as c:
        r = c.get("/health")
        assert r.status_code == 200 and r.json()["status"] == "ok"
        models = c.get("/v1/models").json()
        assert [m["id"] for m in models["data"]] == ["test-model"]


def test_chat_prompt_is_training_prompt_with_ratio(tok):
    gen = FakeGenerator(tok)
    with make_client(gen) as c:
        r = chat(c, compression_ratio=0.5)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["object"] == "chat.completion"
        assert body["choices"][0]["message"]["role"] == "assistant"
        assert body["choices"][0]["finish_reason"] == "stop"
        assert body["tokenskip"]["compression_ratio"] == 0.5
        assert body["usage"]["prompt_tokens"] == gen.count_tokens(gen.calls[0][0][0])
        r = chat(c)  # no ratio: γ = 1 prompt
        assert r.status_code == 200
    assert gen.calls[0][0] == [format_prompt(tok, Q, 0.5, "default")]
    assert gen.calls[1][0] == [format_prompt(tok, Q, None, "default")]
    assert gen.calls[0][1].max_new_tokens == 16 and gen.calls[0][1].temperature == 0.0


def test_tokenskip_preset_and_system_message(tok):
    gen = FakeGenerator(tok)
    with make_client(gen, preset="tokenskip") as c:
        assert chat(c, compression_ratio=0.7).status_code == 200
        msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": Q}]
        r = c.post("/v1/chat/completions", json={"messages": msgs, "compression_ratio": 0.7})
        assert r.status_code == 200
    assert gen.calls[0][0][0] == format_prompt(tok, Q, 0.7, "tokenskip")
    assert "<|eot_id|>0.7<|eot_id|>" in gen.calls[0][0][0]
    second = gen.calls[1][0][0]
    assert "Be brief." in second and "You are a helpful assistant." not in second
    assert "<|eot_id|>0.7<|eot_id|>" in second


def test_completions_same_prompt_as_chat_and_raw(tok):
    gen = FakeGenerator(tok)
    with make_client(gen) as c:
        r = c.post("/v1/completions", json={"prompt": Q, "compression_ratio": 0.6, "max_tokens": 8})
        assert r.status_code == 200, r.text
        assert r.json()["object"] == "text_completion"
        r = c.post("/v1/completions", json={"prompt": "2+2=", "raw_prompt": True, "max_tokens": 8})
        assert r.status_code == 200
        r = c.post("/v1/completions", json={"prompt": ["a?", "b?"], "max_tokens": 4})
        assert [ch["index"] for ch in r.json()["choices"]] == [0, 1]
    assert gen.calls[0][0] == [format_prompt(tok, Q, 0.6)]
    assert gen.calls[1][0] == ["2+2="]
    assert sorted(p for call in gen.calls[2:] for p in call[0]) == sorted(
        [format_prompt(tok, "a?"), format_prompt(tok, "b?")]
    )


def test_token_budget_fixed_and_auto(tok):
    gen = FakeGenerator(tok)
    with make_client(gen) as c:
        r = chat(c, token_budget=50)
        assert r.status_code == 200, r.text
        assert r.json()["tokenskip"]["token_budget"] == 50
        r = chat(c, token_budget="auto")
        assert r.status_code == 200, r.text
        info = r.json()["tokenskip"]
        assert (
            info["token_budget"] == 42 and info["budget_source"] == "parsed" and info["estimate_tokens"] > 0
        )
    tale = get_template("tale")
    assert gen.calls[0][0] == [chat_prompt(tok, tale.user_message(Q, 50))]
    assert gen.calls[1][0] == [chat_prompt(tok, estimation_message(Q))]
    assert gen.calls[2][0] == [chat_prompt(tok, tale.user_message(Q, 42))]


@pytest.mark.parametrize(
    "extra, status",
    [
        ({"compression_ratio": 1.5}, 400),
        ({"compression_ratio": 0}, 400),
        ({"compression_ratio": "half"}, 400),
        ({"compression_ratio": 0.5, "token_budget": 10}, 400),
        ({"token_budget": -3}, 400),
        ({"token_budget": "lots"}, 400),
        ({"max_tokens": 10_000}, 400),
        ({"max_tokens": 0}, 400),
        ({"temperature": -1}, 400),
        ({"n": 2}, 400),
        ({"logprobs": True}, 400),
        ({"tools": [{"type": "function"}]}, 400),
        ({"stop": [1, 2]}, 400),
        ({"model": "other-model"}, 404),
    ],
)
def test_bad_requests_get_4xx_json(tok, extra, status):
    gen = FakeGenerator(tok)
    with make_client(gen, max_tokens_limit=256, default_max_tokens=64) as c:
        r = chat(c, **extra)
        assert r.status_code == status, r.text
        err = r.json()["error"]
        assert err["message"] and err["type"]
        assert c.get("/health").status_code == 200
    assert gen.calls == []  # nothing reached the model


def test_malformed_bodies(tok):
    with make_client(FakeGenerator(tok), max_prompt_tokens=64, max_body_bytes=20_000) as c:
        r = c.post("/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
        assert r.status_code == 400 and "malformed JSON" in r.json()["error"]["message"]
        assert c.post("/v1/chat/completions", json=[1, 2]).status_code == 400
        assert c.post("/v1/chat/completions", json={"messages": []}).status_code == 400
        assert (
            c.post(
                "/v1/chat/completions", json={"messages": [{"role": "wizard", "content": "x"}]}
            ).status_code
            == 400
        )
        last_assistant = [{"role": "user", "content": Q}, {"role": "assistant", "content": "hi"}]
        assert c.post("/v1/chat/completions", json={"messages": last_assistant}).status_code == 400
        r = chat(c, content="word " * 500)
        assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
        assert c.post("/v1/completions", json={"prompt": "x" * 30_000}).status_code == 413
        assert c.post("/v1/completions", json={"prompt": [1, 2, 3]}).status_code == 400
        r = c.post("/v1/completions", json={"prompt": "hi", "raw_prompt": True, "compression_ratio": 0.5})
        assert r.status_code == 400
        r = c.get("/v1/nothing-here")
        assert r.status_code == 404 and "error" in r.json()
        assert c.get("/health").status_code == 200


def test_api_key(tok, monkeypatch):
    with make_client(FakeGenerator(tok), api_key="s3cret") as c:
        assert chat(c).status_code == 401
        assert c.get("/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.get("/v1/models", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        r = c.post(
            "/v1/chat/completions",
            json={"messages": [{"role": "user", "content": Q}]},
            headers={"Authorization": "Bearer s3cret"},
        )
        assert r.status_code == 200
        assert c.get("/health").status_code == 200  # health stays open for probes


def test_generation_failure_is_500_and_server_survives(tok):
    gen = FakeGenerator(tok, fail=True)
    with make_client(gen) as c:
        r = chat(c)
        assert r.status_code == 500 and "model exploded" in r.json()["error"]["message"]
        gen.fail = False
        assert chat(c).status_code == 200
        assert c.get("/health").status_code == 200


def test_timeout_is_504_and_queue_full_is_503(tok):
    gate = threading.Event()
    gen = FakeGenerator(tok, gate=gate)
    with make_client(gen, request_timeout=0.3, queue_size=2, batch_size=1) as c:
        t0 = time.monotonic()
        r = chat(c)  # the worker blocks on the gate: the request times out
        assert r.status_code == 504 and time.monotonic() - t0 < 5
        worker = c.app.state.worker
        cfg = SamplingConfig(max_new_tokens=4)
        worker.submit("a", cfg)
        worker.submit("b", cfg)  # worker busy with the timed-out job, queue now full
        r = chat(c)
        assert r.status_code == 503 and r.headers.get("retry-after") == "1"
        gate.set()
        deadline = time.monotonic() + 10
        while worker.depth and time.monotonic() < deadline:
            time.sleep(0.05)
        assert c.get("/health").status_code == 200
        assert chat(c).status_code in (200, 504)


def test_worker_batches_queued_requests_with_equal_settings(tok):
    gate = threading.Event()
    gen = FakeGenerator(tok, gate=gate)
    worker = BatchWorker(gen, batch_size=4, queue_size=16, batch_wait_s=0.0)
    worker.start()
    try:
        a, b = SamplingConfig(max_new_tokens=4), SamplingConfig(max_new_tokens=8)
        futs = [worker.submit("first", a)]
        time.sleep(0.2)  # the worker is now blocked inside generate(["first"])
        futs += [worker.submit(f"p{i}", a) for i in range(3)] + [worker.submit("other", b)]
        gate.set()
        results = [f.result(timeout=10) for f in futs]
        assert all(r.finish_reason == "stop" for r in results)
        sizes = [(len(p), c.max_new_tokens) for p, c in gen.calls]
        assert sizes == [(1, 4), (3, 4), (1, 8)]
    finally:
        worker.stop()
    with pytest.raises(QueueFull):
        worker.submit("late", a)


def test_bounded_queue_refuses():
    gate = threading.Event()

    class Tok:
        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": text.split()}

    gen = FakeGenerator(Tok(), gate=gate)
    worker = BatchWorker(gen, batch_size=1, queue_size=3, batch_wait_s=0.0)
    worker.start()
    try:
        cfg = SamplingConfig(max_new_tokens=1)
        accepted, refused = [], 0
        for i in range(10):
            try:
                accepted.append(worker.submit(f"q{i}", cfg))
            except QueueFull:
                refused += 1
        assert 3 <= len(accepted) <= 4 and refused == 10 - len(accepted)
        gate.set()
        assert all(f.result(timeout=10).text for f in accepted)
    finally:
        worker.stop()


def _sse(resp_text: str) -> list:
    events = [line[len("data: ") :] for line in resp_text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


def test_streaming_protocol(tok):
    gen = FakeGenerator(tok)
    with make_client(gen) as c:
        r = chat(c, stream=True, compression_ratio=0.5, stream_options={"include_usage": True})
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        chunks = _sse(r.text)
        assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
        text = "".join(ch["choices"][0]["delta"].get("content", "") for ch in chunks if ch["choices"])
        assert text.endswith("$") and "final answer" in text
        finals = [ch for ch in chunks if ch["choices"] and ch["choices"][0]["finish_reason"]]
        assert finals[0]["choices"][0]["finish_reason"] == "stop"
        assert chunks[-1]["usage"]["completion_tokens"] > 0
        r = c.post("/v1/completions", json={"prompt": Q, "stream": True, "max_tokens": 8})
        chunks = _sse(r.text)
        assert all(ch["object"] == "text_completion" for ch in chunks)
        # a bad streaming request is still a plain 4xx, not a broken stream
        assert chat(c, stream=True, compression_ratio=2).status_code == 400


class WordStreamer(FakeGenerator):
    """Streams each answer word by word, the way the hf and vllm backends stream tokens."""

    def generate_stream(self, prompts, config, on_text):
        gens = self.generate(prompts, config)
        for i, g in enumerate(gens):
            for k, word in enumerate(g.text.split(" ")):
                on_text(i, word if k == 0 else " " + word)
        return gens


def test_streaming_sends_text_as_it_is_generated(tok):
    gen = WordStreamer(tok)
    with make_client(gen) as c:
        full = chat(c).json()["choices"][0]["message"]["content"]
        chunks = _sse(chat(c, stream=True).text)
        pieces = [
            ch["choices"][0]["delta"]["content"]
            for ch in chunks[1:]
            if "content" in ch["choices"][0]["delta"]
        ]
        assert len(pieces) == len(full.split(" ")) and "".join(pieces) == full
        assert chunks[-1]["choices"][0]["finish_reason"] == "stop" and "tokenskip" in chunks[-1]
        # several prompts in one completions request: each choice's pieces carry its index
        body = {"prompt": [Q, "What is 2 + 2?"], "stream": True, "max_tokens": 8}
        chunks = _sse(c.post("/v1/completions", json=body).text)
        by_index: dict[int, str] = {0: "", 1: ""}
        for ch in chunks:
            by_index[ch["choices"][0]["index"]] += ch["choices"][0]["text"]
        done = [ch["choices"][0]["index"] for ch in chunks if ch["choices"][0]["finish_reason"]]
        assert sorted(done) == [0, 1]
        plain = c.post("/v1/completions", json={**body, "stream": False}).json()
        assert [by_index[0], by_index[1]] == [ch["text"] for ch in plain["choices"]]
    # streamed requests went through generate_stream, plain ones through generate: same prompts
    assert gen.calls[0][0] == gen.calls[1][0]


def test_method_prompt_single_turn_is_format_prompt_and_history(tok):
    from tokenskip.data.prompts import get_preset
    from tokenskip.methods import Context, get_method

    for ratio in (None, 1.0, 0.5):
        for preset in ("default", "tokenskip"):
            method = get_method("original" if ratio is None else f"tokenskip@{ratio}")
            ctx = Context(FakeGenerator(tok), get_preset(preset), SamplingConfig())
            assert method.prompt(ctx, Q) == format_prompt(tok, Q, ratio, preset)
    history = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    got = get_method("tokenskip@0.5").prompt(ctx, Q, None, history)  # the preset's system message first
    assert got.index("You are a helpful assistant.") < got.index("Hi") < got.index("Hello!") < got.index(Q)
    got = get_method("tokenskip@0.5").prompt(
        ctx, Q, None, [{"role": "system", "content": "Be brief."}, *history]
    )
    assert "Be brief." in got and "You are a helpful assistant." not in got


def test_server_config_rejects_bad_limits():
    from tokenskip.errors import UserError

    with pytest.raises(UserError):
        ServerConfig(queue_size=0).check()
    with pytest.raises(UserError):
        ServerConfig(default_max_tokens=100, max_tokens_limit=10).check()
    with pytest.raises(UserError):
        ServerConfig(preset="nope").check()
    with pytest.raises(UserError):
        ServerConfig(api_key="  ").check()


def test_openai_client_against_live_server(tok):
    """The official client, unchanged, over real HTTP; extensions go in ``extra_body``."""
    openai = pytest.importorskip("openai")
    gen = FakeGenerator(tok)
    app = create_app(gen, ServerConfig(served_model_name="test-model", api_key="k"))
    with live_server(app) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="k", max_retries=0)
        assert [m.id for m in client.models.list()] == ["test-model"]
        msgs = [{"role": "user", "content": Q}]
        r = client.chat.completions.create(
            model="test-model", messages=msgs, max_tokens=16, extra_body={"compression_ratio": 0.5}
        )
        assert "final answer" in r.choices[0].message.content and r.choices[0].finish_reason == "stop"
        assert r.tokenskip["compression_ratio"] == 0.5 and r.usage.completion_tokens > 0
        r = client.completions.create(
            model="test-model", prompt=Q, max_tokens=8, extra_body={"token_budget": 30}
        )
        assert r.choices[0].text and r.tokenskip["token_budget"] == 30
        parts = [
            ch.choices[0].delta.content or ""
            for ch in client.chat.completions.create(model="test-model", messages=msgs, stream=True)
            if ch.choices
        ]
        assert "final answer" in "".join(parts)
        text = "".join(
            ch.choices[0].text
            for ch in client.completions.create(model="test-model", prompt=Q, stream=True, max_tokens=8)
        )
        assert "final answer" in text
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(
                model="test-model", messages=msgs, extra_body={"compression_ratio": 3}
            )
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=url + "/v1", api_key="bad", max_retries=0).models.list()
    assert gen.calls[0][0] == [format_prompt(tok, Q, 0.5)]


def test_serve_cli_rejects_bad_options():
    from tokenskip.cli import main

    assert main(["serve", "--port", "0"]) == 2
    assert main(["serve", "--queue_size", "0"]) == 2
