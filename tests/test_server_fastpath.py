"""The server's cheap path: one tokenization per prompt, no request thread for single-generation methods,
stream pieces collected on the event loop, content chunks written from a template."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest

pytest.importorskip("fastapi")

from tokenskip.inference.base import Generation, SamplingConfig
from tokenskip.methods import get_method
from tokenskip.models import load_tokenizer
from tokenskip.serve import ServerConfig, create_app
from tokenskip.serve.choices import Aborted, Bridge
from tokenskip.serve.engines import Engine, Tokens
from tokenskip.serve.stream import ChunkWriter, Pieces

Q = "Tom has 3 apples and buys 2 more. How many apples does he have?"


class CountingTokenizer:
    """The real tokenizer, counting what it encodes (``calls[text]``)."""

    def __init__(self, tok) -> None:
        self.tok = tok
        self.calls: dict[str, int] = {}

    def __call__(self, text, **kwargs):
        self.calls[text] = self.calls.get(text, 0) + 1
        return self.tok(text, **kwargs)

    def __getattr__(self, name):
        return getattr(self.tok, name)


class FakeEngine(Engine):
    """Answers on the event loop; records each prompt, its ids and the thread that submitted it."""

    name = "fake"

    def __init__(self, tok) -> None:
        self.tokens = Tokens(tok)
        self.tokens.tokenizer = CountingTokenizer(self.tokens.tokenizer)
        self.calls: list[tuple[str, list[int] | None]] = []
        self.gate: asyncio.Event | None = None

    @property
    def alive(self) -> bool:
        return True

    def has_room(self, n: int) -> bool:
        return True

    async def generate(self, prompt, config, on_text=None, ids=None) -> Generation:
        self.calls.append((prompt, ids))
        if self.gate is not None:
            await self.gate.wait()
        text = "Budget: [[42]]" if "estimate the minimum" in prompt else "Two plus three.\n\nThe answer is 5."
        for word in text.split(" "):
            if on_text is not None:
                on_text(word + " ")
        return Generation(text, 7, "stop", 0.01, 1)

    def stats(self) -> dict:
        return {}


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("smollm2-135m")


def serve(engine):
    from fastapi.testclient import TestClient

    app = create_app(engine, ServerConfig(served_model_name="test-model"))
    submitted = []
    pool = app.state.server.pool
    real_submit = pool.submit

    def submit(fn, *args, **kwargs):  # what goes to a request thread
        submitted.append(getattr(fn, "__name__", str(fn)))
        return real_submit(fn, *args, **kwargs)

    pool.submit = submit
    return TestClient(app), submitted


def chat(client, **extra):
    body = {"messages": [{"role": "user", "content": Q}], "max_tokens": 16, **extra}
    return client.post("/v1/chat/completions", json=body)


@pytest.mark.parametrize(
    ("spec", "single"),
    [("original", True), ("tokenskip@0.5", True), ("lc-prompt@0.5", True), ("beconcise", True),
     ("onlynumbers", True), ("abbrewords", True), ("ram", True), ("tale-ep", False), ("tale-ep@64", False),
     ("budget-forcing@8", False), ("truncation@0.5", False)],
)  # fmt: skip
def test_single_generation_is_true_only_without_prepare_generate_or_finish_of_its_own(spec, single):
    assert get_method(spec).single_generation is single


@pytest.mark.parametrize("stream", [False, True])
def test_prompt_is_tokenized_once_and_generated_from_the_event_loop(tok, stream):
    engine = FakeEngine(tok)
    client, submitted = serve(engine)
    with client as c:
        r = chat(
            c,
            compression_ratio=0.5,
            stream=stream,
            stream_options={"include_usage": True} if stream else None,
        )
        assert r.status_code == 200, r.text
    ((prompt, ids),) = engine.calls
    assert ids == tok(prompt, add_special_tokens=False)["input_ids"]  # the engine gets the checked ids
    assert engine.tokens.tokenizer.calls[prompt] == 1  # length check and engine: one tokenization
    usage = json.loads(r.text.split("data: ")[-2])["usage"] if stream else r.json()["usage"]
    assert usage["prompt_tokens"] == len(ids)
    assert submitted == []  # no request thread: built and generated on the event loop


def test_methods_that_generate_in_their_steps_keep_the_request_thread_and_the_ids(tok):
    engine = FakeEngine(tok)
    client, submitted = serve(engine)
    with client as c:
        r = chat(c, method="tale-ep")  # zero-shot estimate: a generation inside the prompt step
        assert r.status_code == 200, r.text
        assert r.json()["tokenskip"]["token_budget"] == 42
    (est, est_ids), (prompt, ids) = engine.calls
    assert est_ids is None and ids == tok(prompt, add_special_tokens=False)["input_ids"]
    assert engine.tokens.tokenizer.calls[prompt] == 1
    assert submitted == ["prepare", "run"]


def test_a_direct_generation_aborted_raises_aborted_and_a_cancelled_caller_is_cancelled(tok):
    async def main():
        engine = FakeEngine(tok)
        engine.gate = asyncio.Event()
        cfg = SamplingConfig(max_new_tokens=4)
        bridge = Bridge(engine, asyncio.get_running_loop())
        task = asyncio.ensure_future(bridge.generate_here("p", cfg, None))
        await asyncio.sleep(0.01)
        bridge.abort()  # the server's shutdown / release
        with pytest.raises(Aborted):
            await task
        with pytest.raises(Aborted):  # and later ones do not start
            await bridge.generate_here("p", cfg, None)
        other = Bridge(engine, asyncio.get_running_loop())
        task = asyncio.ensure_future(other.generate_here("p", cfg, None))
        await asyncio.sleep(0.01)
        task.cancel()  # the client went away: a plain cancellation
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not other._pending and len(engine.calls) == 2

    asyncio.run(main())


def test_pieces_from_the_loop_are_taken_directly_and_other_threads_hop_in_order():
    async def main():
        loop = asyncio.get_running_loop()
        hops = []
        real = loop.call_soon_threadsafe
        loop.call_soon_threadsafe = lambda *a: hops.append(1) or real(*a)
        pieces = Pieces(loop)
        pieces.sink(0)("a")
        pieces.sink(1)("b")
        assert hops == [] and pieces.take() == [(0, "a"), (1, "b")]
        t = threading.Thread(target=lambda: [pieces.sink(2)(x) for x in "cde"])
        t.start()
        t.join()
        await pieces.wait()
        await asyncio.sleep(0)
        assert len(hops) == 3 and pieces.take() == [(2, "c"), (2, "d"), (2, "e")]
        pieces.wake()
        await asyncio.wait_for(pieces.wait(), 1)  # a finished choice wakes the stream too

    asyncio.run(main())


TEXTS = ["", " w", 'quote " and \\ backslash', "line\nbreak\ttab\r", "\x00\x01\x1f\x7f", "é ü 漢字 😀",
         "\u2028\u2029", "</s><|im_end|>", "tokenskip-text", "{\"json\": [1, 2]}"]  # fmt: skip


@pytest.mark.parametrize("kind", ["chat", "completion"])
def test_content_chunks_from_the_template_are_byte_identical_to_the_models(kind):
    out = ChunkWriter(kind, "chatcmpl-abc", 1700000000, 'model "x" é')
    for i in (0, 3):
        for text in TEXTS + [chr(c) for c in range(0, 0x250, 7)]:
            assert out.text(i, text) == out.chunk(i, text)
    body = json.loads(out.text(0, "hi")[len("data: ") :])
    assert body["object"] == ("chat.completion.chunk" if kind == "chat" else "text_completion")


def test_a_marker_in_the_model_name_falls_back_to_the_models():
    out = ChunkWriter("chat", "x", 1, "tokenskip-text-7f3a9c")
    assert out.text(0, "hi") == out.chunk(0, "hi")


def test_the_guard_is_plain_asgi_and_still_refuses(tok):
    from fastapi.testclient import TestClient
    from starlette.middleware.base import BaseHTTPMiddleware

    app = create_app(FakeEngine(tok), ServerConfig(served_model_name="test-model", api_key="k"))
    assert app.user_middleware and not any(m.cls is BaseHTTPMiddleware for m in app.user_middleware)
    with TestClient(app) as c:
        assert chat(c).status_code == 401
        assert chat(c, stream=True).status_code == 401
        r = c.post("/v1/chat/completions", headers={"Authorization": "Bearer k"}, json={
            "messages": [{"role": "user", "content": Q}], "max_tokens": 4, "stream": True})  # fmt: skip
        assert r.status_code == 200 and r.text.endswith("data: [DONE]\n\n")
        assert c.get("/health").status_code == 200  # not under /v1/: no key needed
