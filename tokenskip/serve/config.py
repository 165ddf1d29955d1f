"""Limits and defaults of one server (pure: checked before any model loads)."""

from __future__ import annotations

from dataclasses import dataclass

from tokenskip.data.prompts import PromptPreset, get_preset
from tokenskip.errors import UserError
from tokenskip.models import DEFAULT_MODEL


@dataclass
class ServerConfig:
    """Limits and defaults of one server: the option group of ``tokenskip serve`` (every field is a flag).

    Attributes:
        served_model_name: model id reported by /v1/models and expected in requests (default: --model).
        preset: prompt preset the model was trained with: default or tokenskip. Default: the preset the
            adapter's (or merged model's) tokenskip_adapter.json records, including its delimiter; else default.
        tale_template: TALE template for token_budget requests: tale or tale-boxed.
        api_key: require `Authorization: Bearer KEY` on /v1/*; default: the TOKENSKIP_API_KEY variable.
        max_prompt_tokens: longest accepted prompt, in model tokens (longer -> HTTP 400).
        max_tokens_limit: largest accepted max_tokens (larger -> HTTP 400).
        default_max_tokens: max_tokens for requests that send none.
        queue_size: requests allowed to wait for the model; more -> HTTP 503 with Retry-After.
        batch_size: most requests generated together (hf); most prompts per completions request.
        batch_wait_s: hf: seconds the worker waits for more requests to fill a batch.
        request_timeout: seconds before a request is answered HTTP 504.
        max_body_bytes: largest accepted request body; larger -> HTTP 413.
        estimate_max_tokens: cap on the reply of a `token_budget: "auto"` estimation.
        max_budget: token_budget values above this are rejected (estimates are clamped to it).
        shutdown_grace_s: on SIGTERM, seconds the requests in flight may take to finish before they are aborted.
    """

    served_model_name: str | None = None
    preset: str | None = None  # Python callers may also pass a PromptPreset (the verb resolves it so)
    tale_template: str = "tale"
    api_key: str | None = None
    max_prompt_tokens: int = 2048
    max_tokens_limit: int = 2048
    default_max_tokens: int = 512
    queue_size: int = 64
    batch_size: int = 8
    batch_wait_s: float = 0.01
    request_timeout: float = 600.0
    max_body_bytes: int = 1_000_000
    estimate_max_tokens: int = 64
    max_budget: int = 4096
    shutdown_grace_s: float = 30.0

    @property
    def model_name(self) -> str:
        """The served model id."""
        return self.served_model_name or DEFAULT_MODEL

    def check(self) -> None:
        for name in (
            "max_prompt_tokens",
            "max_tokens_limit",
            "default_max_tokens",
            "queue_size",
            "batch_size",
            "max_body_bytes",
            "estimate_max_tokens",
            "max_budget",
        ):
            if getattr(self, name) < 1:
                raise UserError(f"--{name} must be >= 1, got {getattr(self, name)}")
        if self.default_max_tokens > self.max_tokens_limit:
            raise UserError(
                f"--default_max_tokens {self.default_max_tokens} > --max_tokens_limit {self.max_tokens_limit}"
            )
        if self.request_timeout <= 0:
            raise UserError(f"--request_timeout must be > 0, got {self.request_timeout}")
        if self.batch_wait_s < 0:
            raise UserError(f"--batch_wait_s must be >= 0, got {self.batch_wait_s}")
        if self.shutdown_grace_s < 0:
            raise UserError(f"--shutdown_grace_s must be >= 0, got {self.shutdown_grace_s}")
        if self.api_key is not None and not self.api_key.strip():
            raise UserError("--api_key is empty")
        self.prompt_preset()
        from tokenskip.inference.tale_budget import get_template

        try:
            get_template(self.tale_template)
        except ValueError as e:
            raise UserError(str(e)) from None

    def prompt_preset(self) -> PromptPreset:
        """The preset requests are written with (``default`` when none was given)."""
        return get_preset(self.preset or "default")

    def method_options(self) -> dict:
        """Options every request's method is built with (TALE's template, estimate cap and budget bound)."""
        return {
            "template": self.tale_template,
            "estimate_max_new_tokens": self.estimate_max_tokens,
            "max_budget": self.max_budget,
        }
