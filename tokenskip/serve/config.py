"""Limits and defaults of one server (pure: checked before any model loads)."""

from __future__ import annotations

from dataclasses import dataclass

from tokenskip.data.prompts import PromptPreset, get_preset
from tokenskip.errors import UserError
from tokenskip.models import DEFAULT_MODEL


@dataclass
class ServerConfig:
    """Limits and defaults of one server.

    Attributes:
        model_name: the id reported by ``/v1/models`` and accepted in the ``model`` field.
        preset: prompt preset used to write questions: a name (``default``, ``tokenskip``) or a
            :class:`~tokenskip.data.prompts.PromptPreset` (e.g. read from an adapter).
        tale_template: TALE template for ``token_budget`` prompts (``tale`` or ``tale-boxed``).
        api_key: required ``Authorization: Bearer`` key on ``/v1/*``; None = no authentication.
        max_prompt_tokens: longest accepted prompt (after formatting), in the model's tokens.
        max_tokens_limit: largest accepted ``max_tokens``.
        default_max_tokens: ``max_tokens`` when the request has none.
        queue_size: requests waiting for the model beyond which new ones get 503.
        batch_size: most requests generated together (hf); prompts per completions request.
        batch_wait_s: how long the hf worker waits for more requests to fill a batch.
        request_timeout_s: a request not finished in this time gets 504.
        max_body_bytes: larger request bodies get 413.
        estimate_max_tokens: cap on the ``token_budget: "auto"`` estimation reply.
        max_budget: ``token_budget`` values above this are rejected (estimates are clamped to it).
        shutdown_grace_s: on SIGTERM, how long requests in flight may take to finish.
    """

    model_name: str = DEFAULT_MODEL
    preset: PromptPreset | str = "default"
    tale_template: str = "tale"
    api_key: str | None = None
    max_prompt_tokens: int = 2048
    max_tokens_limit: int = 2048
    default_max_tokens: int = 512
    queue_size: int = 64
    batch_size: int = 8
    batch_wait_s: float = 0.01
    request_timeout_s: float = 600.0
    max_body_bytes: int = 1_000_000
    estimate_max_tokens: int = 64
    max_budget: int = 4096
    shutdown_grace_s: float = 30.0

    def check(self) -> None:
        for name in (
            "max_prompt_tokens",
            "max_tokens_limit",
            "default_max_tokens",
            "queue_size",
            "batch_size",
            "max_body_bytes",
        ):
            if getattr(self, name) < 1:
                raise UserError(f"--{name} must be >= 1, got {getattr(self, name)}")
        if self.default_max_tokens > self.max_tokens_limit:
            raise UserError(
                f"--default_max_tokens {self.default_max_tokens} > --max_tokens_limit {self.max_tokens_limit}"
            )
        if self.request_timeout_s <= 0:
            raise UserError(f"--request_timeout must be > 0, got {self.request_timeout_s}")
        if self.shutdown_grace_s < 0:
            raise UserError(f"--shutdown_grace_s must be >= 0, got {self.shutdown_grace_s}")
        if self.api_key is not None and not self.api_key.strip():
            raise UserError("--api_key is empty")
        get_preset(self.preset)
        from tokenskip.inference.tale_budget import get_template

        try:
            get_template(self.tale_template)
        except ValueError as e:
            raise UserError(str(e)) from None

    def method_options(self) -> dict:
        """Options every request's method is built with (TALE's template, estimate cap and budget bound)."""
        return {
            "template": self.tale_template,
            "estimate_max_new_tokens": self.estimate_max_tokens,
            "max_budget": self.max_budget,
        }
