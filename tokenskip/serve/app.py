"""The FastAPI application: Bearer auth, body-size limit, OpenAI error bodies, lifespan of the engine, and
its OpenAPI document at ``/openapi.json``.

``create_app(backend, config)`` takes a :class:`~tokenskip.serve.engines.Engine` (the vLLM engine) or any
:class:`~tokenskip.inference.base.Generator` (run by the batching worker, e.g. ``hf``). The engine starts
with the app and stops with it; on shutdown requests still generating are aborted.
"""

from __future__ import annotations

import concurrent.futures
import hmac
from contextlib import asynccontextmanager
from typing import Any

from tokenskip.inference.base import Generator
from tokenskip.serve.config import ServerConfig
from tokenskip.serve.engines import Engine, WorkerEngine
from tokenskip.serve.openapi import openapi_schema
from tokenskip.serve.protocol import APIError
from tokenskip.serve.routes import ServerState, register
from tokenskip.serve.worker import BatchWorker


def make_engine(
    backend: Generator | Engine, config: ServerConfig, worker: BatchWorker | None = None
) -> Engine:
    if isinstance(backend, Engine):
        return backend
    return WorkerEngine(backend, config.batch_size, config.queue_size, config.batch_wait_s, worker)


def create_app(backend: Generator | Engine, config: ServerConfig, worker: BatchWorker | None = None) -> Any:
    """The application; ``app.state.server`` is its :class:`~tokenskip.serve.routes.ServerState`."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    config.check()
    engine = make_engine(backend, config, worker)
    pool = concurrent.futures.ThreadPoolExecutor(
        max_workers=config.queue_size + 2 * config.batch_size, thread_name_prefix="tokenskip-request"
    )
    state = ServerState(engine, config, pool)

    @asynccontextmanager
    async def lifespan(app: Any):
        await engine.start()
        yield
        state.draining = True
        state.abort_all()
        await engine.stop()
        pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(
        title="tokenskip", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url="/openapi.json"
    )
    document = openapi_schema(config)
    app.openapi = lambda: document  # the request types with this server's limits (serve/openapi.py)
    app.state.server = state
    app.state.engine = engine
    app.state.worker = getattr(engine, "worker", None)
    app.state.config = config

    def error(status: int, message: str, param: str | None = None, code: str | None = None) -> Any:
        headers = {"Retry-After": "1"} if status == 503 else None
        return JSONResponse(
            APIError(status, message, param, code).body(), status_code=status, headers=headers
        )

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError):
        return error(exc.status, exc.message, exc.param, exc.code)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        return error(400, f"invalid request: {exc.errors()[0].get('msg', 'bad value')}")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        return error(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception):
        return error(500, f"internal error: {type(exc).__name__}")

    def refusal(request: Request) -> Any:
        """The answer to a /v1/ request refused before any route (API key, draining, declared size)."""
        if request.url.path.startswith("/v1/"):
            if config.api_key is not None:
                scheme, _, key = request.headers.get("authorization", "").partition(" ")
                if scheme.lower() != "bearer" or not hmac.compare_digest(
                    key.strip().encode(), config.api_key.encode()
                ):
                    return error(
                        401, "missing or invalid API key (Authorization: Bearer ...)", code="invalid_api_key"
                    )
            if state.draining:
                return error(503, "server is shutting down", code="server_busy")
            length = request.headers.get("content-length")
            if length is not None and (not length.isdigit() or int(length) > config.max_body_bytes):
                return error(413, f"request body larger than {config.max_body_bytes} bytes")
        return None

    class Guard:
        """:func:`refusal` as a plain ASGI middleware (a ``BaseHTTPMiddleware`` would relay every streamed
        chunk through a memory channel and another task)."""

        def __init__(self, inner: Any) -> None:
            self.inner = inner

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            refused = refusal(Request(scope)) if scope["type"] == "http" else None
            if refused is not None:
                await refused(scope, receive, send)
            else:
                await self.inner(scope, receive, send)

    app.add_middleware(Guard)
    register(app, state)
    return app
