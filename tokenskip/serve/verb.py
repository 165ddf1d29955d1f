"""``tokenskip serve``: load the model, build the app, run uvicorn with a graceful SIGTERM.

On SIGTERM (or Ctrl-C) the server stops accepting connections at once (new ones are refused; requests on
open connections get 503), lets the requests in flight finish for up to ``--shutdown_grace_s`` seconds,
aborts what is left, stops the engine and exits with status 0.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from typing import Any

from tokenskip.args import EngineArgs, ModelArgs, flat_options
from tokenskip.errors import UserError
from tokenskip.serve.config import ServerConfig

API_KEY_ENV = "TOKENSKIP_API_KEY"


def _is_loopback(host: str) -> bool:
    return host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")


def run_app(app: Any, host: str, port: int, log_level: str = "info", grace_s: float = 30.0) -> None:
    """uvicorn on ``app`` until SIGTERM/SIGINT; then drain (``app.state.server.draining``) and return."""
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            app.state.server.draining = True
            super().handle_exit(sig, frame)

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            # uvicorn's, minus re-raising the signal after a graceful shutdown: the process exits 0
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            originals = {s: signal.signal(s, self.handle_exit) for s in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for s, handler in originals.items():
                    signal.signal(s, handler)

    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=grace_s)
    Server(config).run()


@flat_options(model=ModelArgs(), engine=EngineArgs())
def serve(
    model: ModelArgs,
    engine: EngineArgs,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    served_model_name: str | None = None,
    preset: str | None = None,
    tale_template: str = "tale",
    batch_size: int = 8,
    max_prompt_tokens: int = 2048,
    max_tokens_limit: int = 2048,
    default_max_tokens: int = 512,
    queue_size: int = 64,
    request_timeout: float = 600.0,
    max_body_bytes: int = 1_000_000,
    shutdown_grace_s: float = 30.0,
    log_level: str = "info",
) -> None:
    """Serve a model over an OpenAI-compatible HTTP API with TokenSkip's compression_ratio, TALE's token_budget,
    budget forcing's thinking_budget and any registry method.

    Args:
        host: interface to bind; 127.0.0.1 (default) is reachable from this machine only.
        port: TCP port.
        api_key: require `Authorization: Bearer KEY` on /v1/*; default: the TOKENSKIP_API_KEY variable.
        served_model_name: model id reported by /v1/models and expected in requests (default: --model).
        preset: prompt preset the model was trained with: default or tokenskip. Default: the preset the
            adapter's (or merged model's) tokenskip_adapter.json records, including its delimiter; else default.
        tale_template: TALE template for token_budget requests: tale or tale-boxed.
        batch_size: most requests generated together (hf); most prompts per completions request.
        max_prompt_tokens: longest accepted prompt, in model tokens (longer -> HTTP 400).
        max_tokens_limit: largest accepted max_tokens (larger -> HTTP 400).
        default_max_tokens: max_tokens for requests that send none.
        queue_size: requests allowed to wait for the model; more -> HTTP 503 with Retry-After.
        request_timeout: seconds before a request is answered HTTP 504.
        max_body_bytes: largest accepted request body; larger -> HTTP 413.
        shutdown_grace_s: on SIGTERM, seconds the requests in flight may take to finish before they are aborted.
        log_level: uvicorn log level (debug, info, warning, error).
    """
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise UserError(
            f"tokenskip serve needs fastapi and uvicorn ({e}): pip install fastapi uvicorn"
        ) from None
    if not 0 < port < 65536:
        raise UserError(f"--port must be in 1..65535, got {port}")
    if api_key is None:
        api_key = os.environ.get(API_KEY_ENV) or None
    config = ServerConfig(
        model_name=served_model_name or model.model,
        preset=model.preset(preset),
        tale_template=tale_template,
        api_key=api_key,
        max_prompt_tokens=max_prompt_tokens,
        max_tokens_limit=max_tokens_limit,
        default_max_tokens=default_max_tokens,
        queue_size=queue_size,
        batch_size=batch_size,
        request_timeout_s=request_timeout,
        max_body_bytes=max_body_bytes,
        shutdown_grace_s=shutdown_grace_s,
    )
    config.check()
    if not _is_loopback(host) and api_key is None:
        print(f"tokenskip: warning: serving on {host} without an API key: anyone who can reach it can use it")

    from tokenskip.serve.app import create_app

    if model.backend == "vllm":
        from tokenskip.serve.vllm_engine import VLLMEngine

        backend: Any = VLLMEngine(
            model.model, model.adapter, max_active=config.queue_size + config.batch_size,
            trust_remote_code=model.trust_remote_code, dtype=model.dtype, device=model.device,
            max_model_len=engine.max_model_len, tensor_parallel_size=engine.tensor_parallel_size,
        )  # fmt: skip
        close = None
    else:
        backend = model.open(batch_size, engine)
        close = backend.close
    try:
        app = create_app(backend, config)
        print(
            f"tokenskip: serving {config.model_name} ({model.backend}) on http://{host}:{port}/v1", flush=True
        )
        run_app(app, host, port, log_level, shutdown_grace_s)
        print("tokenskip: server stopped", flush=True)
    finally:
        if close is not None:
            close()
