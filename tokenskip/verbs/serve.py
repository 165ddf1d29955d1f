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
from dataclasses import replace
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


@flat_options(model=ModelArgs(), engine=EngineArgs(), server=ServerConfig())
def serve(
    model: ModelArgs,
    engine: EngineArgs,
    server: ServerConfig,
    host: str = "127.0.0.1",
    port: int = 8000,
    log_level: str = "info",
) -> None:
    """Serve a model over an OpenAI-compatible HTTP API, with length-control fields on every request.

    The extension fields: TokenSkip's compression_ratio, TALE's token_budget, budget forcing's thinking_budget
    and any registry method.

    Args:
        host: interface to bind; 127.0.0.1 (default) is reachable from this machine only.
        port: TCP port.
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
    config = replace(
        server,
        served_model_name=server.served_model_name or model.model,
        preset=model.preset(server.preset),
        api_key=server.api_key if server.api_key is not None else (os.environ.get(API_KEY_ENV) or None),
    )
    config.check()
    if not _is_loopback(host) and config.api_key is None:
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
        backend = model.open(config.batch_size, engine)
        close = backend.close
    try:
        app = create_app(backend, config)
        print(
            f"tokenskip: serving {config.model_name} ({model.backend}) on http://{host}:{port}/v1", flush=True
        )
        run_app(app, host, port, log_level, config.shutdown_grace_s)
        print("tokenskip: server stopped", flush=True)
    finally:
        if close is not None:
            close()
