"""Faults on a fake model (seconds; the crowd and the SIGTERM process are marked slow): mid-stream disconnects abort, body limit, draining, SIGTERM, a crowd; and the
request fields that pick a method (thinking_budget, method)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx
import pytest
from live_server import live_server
from serve_fakes import SlowStreamer
from serve_faults import (
    PYTHON,
    Q,
    chat_body,
    crowd,
    free_port,
    sigterm_drains,
    start_process,
    stream,
    text_of,
    wait_health,
)

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from tokenskip.models import load_tokenizer  # noqa: E402
from tokenskip.serve import ServerConfig, create_app  # noqa: E402


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("smollm2-135m")


def served(gen, **cfg):
    return live_server(create_app(gen, ServerConfig(served_model_name="test-model", **cfg)))


def test_disconnect_mid_stream_stops_its_row_and_frees_the_slot(tok):
    gen = SlowStreamer(tok, step_s=0.02)
    with served(gen) as url:
        status, events = stream(url, chat_body(300, "keep going"), drop_after=3)
        assert status == 200 and len(events) >= 3
        health = wait_health(url, lambda h: h["aborted"] == 1 and h["in_flight"] == 0 and h["running"] == 0)
        assert health["status"] == "ok"
        (generated,) = gen.tokens.values()
        assert generated < 100  # stopped soon after the client left (300 would take 6 s)
        status, events = stream(url, chat_body(5))  # the slot is free: a new request is answered
        assert status == 200 and events[-1] == "[DONE]" and text_of(events) == " w" * 5


@pytest.mark.slow
def test_crowd_with_a_quarter_disconnecting(tok):
    gen = SlowStreamer(tok, step_s=0.005)
    with served(gen, queue_size=64, batch_size=8) as url:
        results = crowd(url, chat_body(40), clients=64, drop_every=4)
        assert [s for s, _, _ in results] == [200] * 64
        assert sum(done for _, done, _ in results) == 48  # everyone who stayed got the whole answer
        wait_health(url, lambda h: h["in_flight"] == 0 and h["queued"] == 0 and h["running"] == 0)
        r = httpx.post(url + "/v1/chat/completions", json=dict(chat_body(3), stream=False), timeout=30)
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == " w" * 3
    assert 1 <= sum(n < 40 for n in gen.tokens.values()) <= 16  # dropped ones stopped early (if started)


def test_body_over_the_limit_is_413_even_without_content_length(tok):
    with served(SlowStreamer(tok), max_body_bytes=2_000) as url:

        def chunks():
            yield b'{"messages": [{"role": "user", "content": "'
            for _ in range(10):
                yield b"x" * 500
            yield b'"}]}'

        r = httpx.post(url + "/v1/chat/completions", content=chunks(), timeout=30)
        assert r.status_code == 413 and "error" in r.json()
        r = httpx.post(url + "/v1/completions", json={"prompt": "y" * 3_000}, timeout=30)
        assert r.status_code == 413
        assert httpx.get(url + "/health").status_code == 200


def test_draining_server_refuses_new_requests(tok):
    from fastapi.testclient import TestClient

    app = create_app(SlowStreamer(tok), ServerConfig(served_model_name="test-model"))
    with TestClient(app) as c:
        app.state.server.draining = True
        r = c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": Q}]})
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert c.get("/health").status_code == 503


@pytest.mark.slow
def test_sigterm_finishes_in_flight_then_exits_zero():
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    script = str(Path(__file__).with_name("serve_fakes.py"))
    proc = start_process([PYTHON, script, str(port), "0.02"], url, timeout=120)
    out = sigterm_drains(proc, url, chat_body(100), exit_timeout=60)  # 100 steps of 20 ms: in flight ~2 s
    assert "clean exit" in out


class FakeBudget(SlowStreamer):
    """Answers budget forcing's phases: the CoT hits its cap, the forced answer stops."""

    def generate_stream(self, prompts, config, on_text, aborted=None):
        self.calls = getattr(self, "calls", []) + [(list(prompts), config)]
        return super().generate_stream(prompts, config, on_text, aborted)


def test_thinking_budget_and_method_fields(tok):
    gen = FakeBudget(tok, step_s=0.0)
    from fastapi.testclient import TestClient

    with TestClient(create_app(gen, ServerConfig(served_model_name="test-model"))) as c:

        def chat(**extra):
            body = {"messages": [{"role": "user", "content": Q}], "max_tokens": 20, **extra}
            return c.post("/v1/chat/completions", json=body)

        r = chat(thinking_budget=8)
        assert r.status_code == 200, r.text
        info = r.json()["tokenskip"]
        assert (
            info["method"] == "budget-forcing@8" and info["thinking_budget"] == 8 and info["forced"] is True
        )
        assert [cfg.max_new_tokens for _, cfg in gen.calls] == [
            8,
            12,
        ]  # CoT cap, then the rest for the answer
        assert "The final answer is" in gen.calls[1][0][0]  # forced answer cue appended to the CoT
        assert (
            chat(thinking_budget=8, thinking_wait=2).json()["tokenskip"]["method"] == "budget-forcing@8+wait2"
        )
        r = chat(method="beconcise")
        assert r.status_code == 200 and r.json()["tokenskip"]["method"] == "beconcise"
        assert "concise" in gen.calls[-1][0][0].lower()
        for bad in (
            {"thinking_budget": 20},  # N >= max_tokens
            {"thinking_budget": 8, "compression_ratio": 0.5},
            {"thinking_budget": 8, "method": "beconcise"},
            {"token_budget": 50, "method": "beconcise"},
            {"thinking_wait": 2},
            {"method": "no-such-method"},
            {"method": "truncation@0.5"},  # needs an original run
            {"ignore_eos": True},  # vllm backend only
        ):
            r = chat(**bad)
            assert r.status_code == 400, (bad, r.text)
            assert r.json()["error"]["message"]
        r = c.post("/v1/completions", json={"prompt": Q, "raw_prompt": True, "method": "beconcise"})
        assert r.status_code == 400


if sys.platform == "win32":  # pragma: no cover
    pytest.skip("POSIX signals", allow_module_level=True)


class FakeAsyncLLM:
    """Stands in for vLLM's AsyncLLM: one delta output (" w", one token) every ``step_s`` per request; a
    request whose consumer goes away is recorded as aborted, as AsyncLLM.generate aborts it in the engine."""

    errored = False

    def __init__(self, step_s: float = 0.02) -> None:
        self.step_s, self.aborted, self.unfinished = step_s, [], 0

    def get_num_unfinished_requests(self) -> int:
        return self.unfinished

    async def generate(self, inputs, params, request_id, lora_request=None):
        import asyncio
        from types import SimpleNamespace

        self.unfinished += 1
        try:
            for k in range(params.max_tokens):
                await asyncio.sleep(self.step_s)
                last = k == params.max_tokens - 1
                out = SimpleNamespace(
                    text=" w", token_ids=[5], finish_reason="length" if last else None, stop_reason=None
                )
                yield SimpleNamespace(outputs=[out], finished=last)
        except (asyncio.CancelledError, GeneratorExit):
            self.aborted.append(request_id)
            raise
        finally:
            self.unfinished -= 1

    def shutdown(self) -> None:
        pass


@pytest.mark.slow  # imports vllm
def test_vllm_engine_aborts_a_dropped_stream_and_streams_deltas():
    pytest.importorskip("vllm")
    from tokenskip.serve.vllm_engine import VLLMEngine

    engine = VLLMEngine("smollm2-135m", max_active=8)
    engine.llm = fake = FakeAsyncLLM()
    with served(engine) as url:
        status, events = stream(url, chat_body(300), drop_after=3)
        assert status == 200
        health = wait_health(url, lambda h: h["aborted"] == 1 and h["active"] == 0 and h["in_flight"] == 0)
        assert health["backend"] == "vllm" and health["engine_unfinished"] == 0 and len(fake.aborted) == 1
        status, events = stream(url, chat_body(6, stream_options={"include_usage": True}))
        assert text_of(events) == " w" * 6 and json.loads(events[-2])["usage"]["completion_tokens"] == 6
        r = httpx.post(url + "/v1/chat/completions", json=dict(chat_body(4), stream=False, ignore_eos=True))
        assert r.status_code == 200 and r.json()["choices"][0]["finish_reason"] == "length"
