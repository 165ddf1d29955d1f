"""A model-free generator that streams slowly and honours aborts, and a script that serves it.

``python tests/serve_fakes.py PORT [STEP_S]`` runs ``tokenskip.serve`` on it (SIGTERM tests need a process).
"""

from __future__ import annotations

import sys
import threading
import time

from tokenskip.inference.base import Generation, Generator, SamplingConfig


class SlowStreamer(Generator):
    """Writes ``" w"`` per token, one step every ``step_s`` for the whole batch, up to max_new_tokens.

    Like the hf backend it supports ``aborted``: an aborted row stops at the next step. ``tokens[prompt]``
    records how many tokens each prompt really generated.
    """

    name = "slow"
    supports_abort = True

    def __init__(self, tokenizer, step_s: float = 0.02) -> None:
        self.tokenizer = tokenizer
        self.step_s = step_s
        self.tokens: dict[str, int] = {}
        self.lock = threading.Lock()

    def generate(self, prompts: list[str], config: SamplingConfig) -> list[Generation]:
        return self.generate_stream(prompts, config, lambda i, t: None)

    def generate_stream(self, prompts, config, on_text, aborted=None) -> list[Generation]:
        n = [0] * len(prompts)
        stopped = [False] * len(prompts)
        t0 = time.perf_counter()
        for _ in range(config.max_new_tokens):
            live = [i for i in range(len(prompts)) if not stopped[i]]
            if not live:
                break
            time.sleep(self.step_s)
            for i in live:
                if aborted is not None and aborted(i):
                    stopped[i] = True
                    continue
                n[i] += 1
                on_text(i, " w")
        with self.lock:
            for p, k in zip(prompts, n, strict=True):
                self.tokens[p] = k
        per = (time.perf_counter() - t0) / len(prompts)
        return [
            Generation(" w" * k, k, "abort" if s else "length", per, len(prompts))
            for k, s in zip(n, stopped, strict=True)
        ]


def main() -> None:
    from tokenskip.models import load_tokenizer
    from tokenskip.serve import ServerConfig, create_app
    from tokenskip.verbs.serve import run_app

    port, step = int(sys.argv[1]), float(sys.argv[2]) if len(sys.argv) > 2 else 0.02
    config = ServerConfig(served_model_name="test-model", shutdown_grace_s=20, batch_size=8)
    app = create_app(SlowStreamer(load_tokenizer("smollm2-135m"), step), config)
    run_app(app, "127.0.0.1", port, "warning", config.shutdown_grace_s)
    print("clean exit", flush=True)


if __name__ == "__main__":
    main()
