"""``tokenskip serve``: an OpenAI-compatible HTTP API over the hf backend (batching worker) or vLLM's async
engine, with tokenskip's request fields (``compression_ratio``, ``token_budget``, ``thinking_budget``,
``method``).

Modules: :mod:`~tokenskip.serve.protocol` (pydantic wire types), :mod:`~tokenskip.serve.worker` (hf batching
worker), :mod:`~tokenskip.serve.engines` / :mod:`~tokenskip.serve.vllm_engine` (what generates),
:mod:`~tokenskip.serve.choices` (a request's method and prompt), :mod:`~tokenskip.serve.routes` (endpoints),
:mod:`~tokenskip.serve.app` (the application); the verb is :mod:`tokenskip.verbs.serve`.
"""

from tokenskip.serve.app import create_app
from tokenskip.serve.config import ServerConfig
from tokenskip.serve.worker import BatchWorker, QueueFull

__all__ = ["BatchWorker", "QueueFull", "ServerConfig", "create_app"]
