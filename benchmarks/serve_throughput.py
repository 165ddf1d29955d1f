"""Serving throughput: ``tokenskip serve --backend vllm`` against vLLM's own OpenAI server, same model, same run.

    python benchmarks/serve_throughput.py                       # 64 clients x 128 tokens, smollm2-135m, CPU
    python benchmarks/serve_throughput.py --clients 16 --max-tokens 32 --out serve.json

``--clients`` concurrent streaming ``/v1/completions`` requests (one prompt each: the TokenSkip prompts of the
first questions of ``--data``, chat template applied; ours gets them with ``raw_prompt: true``, so both
servers see the same text), greedy, ``ignore_eos`` so every request generates exactly ``--max-tokens``
tokens. Each server gets one warm-up request, then one timed wave. Reported per server: tokens/s (all
completion tokens / wall time of the wave), p50/p95 time to first token, and ours/theirs.

Then the offline path: our vllm backend (``VLLMGenerator.generate``: our tokenization, ``TokensPrompt``)
against raw ``vllm.LLM.generate`` on the same prompts and the same engine (best of ``--repeats``).
The servers run one after the other (never together); the 1-minute load average is printed with every
figure: on a shared CPU the numbers move with it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "gsm8k" / "test.jsonl"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


async def one_request(client, url: str, body: dict) -> dict:
    t0 = time.perf_counter()
    first, tokens, chunks = None, 0, 0
    async with client.stream("POST", url + "/v1/completions", json=body) as r:
        if r.status_code != 200:
            raise RuntimeError(f"HTTP {r.status_code}: {(await r.aread())[:300]!r}")
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            obj = json.loads(line[6:])
            if obj.get("usage"):
                tokens = obj["usage"]["completion_tokens"]
            for ch in obj.get("choices", []):
                if ch.get("text"):
                    chunks += 1
                    if first is None:
                        first = time.perf_counter()
    end = time.perf_counter()
    return {"start": t0, "ttft": (first or end) - t0, "end": end, "tokens": tokens, "chunks": chunks}


async def wave(url: str, bodies: list[dict]) -> list[dict]:
    import httpx

    limits = httpx.Limits(max_connections=len(bodies) + 8, max_keepalive_connections=len(bodies) + 8)
    async with httpx.AsyncClient(timeout=None, limits=limits) as client:
        return await asyncio.gather(*[one_request(client, url, b) for b in bodies])


def wait_ready(proc: subprocess.Popen, url: str, timeout: float = 900) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with status {proc.returncode}")
        try:
            if httpx.get(url + "/health", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise RuntimeError("server did not start in time")


def measure_server(name: str, cmd: list[str], url: str, bodies: list[dict], log: Path) -> dict:
    with open(log, "w") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_ready(proc, url)
            start_s = time.perf_counter() - t0
            asyncio.run(wave(url, [dict(bodies[0], max_tokens=8)]))  # warm-up
            load_before = os.getloadavg()[0]
            results = asyncio.run(wave(url, bodies))
            load_after = os.getloadavg()[0]
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(120)
            except subprocess.TimeoutExpired:
                proc.kill()
    wall = max(r["end"] for r in results) - min(r["start"] for r in results)
    tokens = sum(r["tokens"] for r in results)
    ttft = [r["ttft"] for r in results]
    return {
        "server": name,
        "requests": len(results),
        "completion_tokens": tokens,
        "wall_s": round(wall, 2),
        "tokens_per_s": round(tokens / wall, 1),
        "ttft_p50_s": round(percentile(ttft, 0.5), 3),
        "ttft_p95_s": round(percentile(ttft, 0.95), 3),
        "start_s": round(start_s, 1),
        "loadavg_1m_before_after": [round(load_before, 2), round(load_after, 2)],
    }


def measure_offline(
    model: str, prompts: list[str], max_tokens: int, repeats: int, max_model_len: int
) -> dict:
    from vllm import SamplingParams

    from tokenskip.inference.base import SamplingConfig
    from tokenskip.inference.vllm_backend import VLLMGenerator

    gen = VLLMGenerator(model=model, max_model_len=max_model_len)
    try:
        ours_cfg = SamplingConfig(max_new_tokens=max_tokens, ignore_eos=True)
        raw_params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
        gen.generate(prompts[:2], SamplingConfig(max_new_tokens=4))  # warm-up
        ours, raw = [], []
        for _ in range(repeats):  # alternate, best of each
            t0 = time.perf_counter()
            outs = gen.generate(prompts, ours_cfg)
            ours.append((sum(g.num_tokens for g in outs), time.perf_counter() - t0))
            t0 = time.perf_counter()
            routs = gen.llm.generate(prompts, raw_params, use_tqdm=False)
            raw.append((sum(len(o.outputs[0].token_ids) for o in routs), time.perf_counter() - t0))
    finally:
        gen.close()
    best_ours = max(t / s for t, s in ours)
    best_raw = max(t / s for t, s in raw)
    return {
        "ours_tokens_per_s": round(best_ours, 1),
        "raw_llm_generate_tokens_per_s": round(best_raw, 1),
        "ours_over_raw": round(best_ours / best_raw, 3),
        "tokens_per_run": ours[0][0],
        "loadavg_1m_after": round(os.getloadavg()[0], 2),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help="JSONL of questions (default: GSM8K test)"
    )
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--max-model-len", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=2, help="offline runs per side (best is reported)")
    ap.add_argument("--skip", default="", help="comma list of parts to skip: ours, vllm, offline")
    ap.add_argument("--out", type=Path, help="also write the results as JSON")
    args = ap.parse_args()

    from generation_throughput import load_questions

    from tokenskip.data.prompts import format_prompt
    from tokenskip.inference.vllm_backend import apply_cpu_env_defaults
    from tokenskip.models import load_tokenizer, resolve_model

    apply_cpu_env_defaults()  # the servers inherit the same vLLM CPU settings
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    tok = load_tokenizer(args.model)
    prompts = [format_prompt(tok, q) for q in load_questions(args.data, args.clients)]
    common = {"max_tokens": args.max_tokens, "temperature": 0, "ignore_eos": True, "stream": True,
              "stream_options": {"include_usage": True}, "model": args.model}  # fmt: skip
    summary: dict = {"model": args.model, "clients": args.clients, "max_tokens": args.max_tokens,
                     "cpu_count": os.cpu_count(), "results": {}}  # fmt: skip
    logs = Path(os.environ.get("TMPDIR", "/tmp"))
    py = sys.executable
    if "ours" not in skip:
        port = free_port()
        cmd = [py, "-m", "tokenskip.cli", "serve", "--backend", "vllm", "--model", args.model, "--port", str(port),
               "--queue_size", str(2 * args.clients), "--max_tokens_limit", str(max(args.max_tokens, 512)),
               "--max_model_len", str(args.max_model_len), "--log_level", "warning"]  # fmt: skip
        bodies = [dict(common, prompt=p, raw_prompt=True) for p in prompts]
        r = measure_server("tokenskip", cmd, f"http://127.0.0.1:{port}", bodies, logs / "serve_ours.log")
        summary["results"]["tokenskip"] = r
        print(json.dumps(r), flush=True)
    if "vllm" not in skip:
        port = free_port()
        cmd = [py, "-m", "vllm.entrypoints.openai.api_server", "--model", resolve_model(args.model),
               "--served-model-name", args.model, "--dtype", "float32", "--enforce-eager", "--seed", "0",
               "--max-model-len", str(args.max_model_len), "--host", "127.0.0.1", "--port", str(port),
               "--disable-log-stats", "--uvicorn-log-level", "warning"]  # fmt: skip
        bodies = [dict(common, prompt=p) for p in prompts]
        r = measure_server("vllm", cmd, f"http://127.0.0.1:{port}", bodies, logs / "serve_vllm.log")
        summary["results"]["vllm"] = r
        print(json.dumps(r), flush=True)
    res = summary["results"]
    if "tokenskip" in res and "vllm" in res:
        summary["ours_over_vllm_server"] = round(
            res["tokenskip"]["tokens_per_s"] / res["vllm"]["tokens_per_s"], 3
        )
        print(
            f"serving: tokenskip / vLLM server = {summary['ours_over_vllm_server']:.3f}x tokens/s", flush=True
        )
    if "offline" not in skip:
        off = measure_offline(args.model, prompts, args.max_tokens, args.repeats, args.max_model_len)
        summary["offline"] = off
        print(f"offline: {json.dumps(off)}", flush=True)
    if args.out:
        args.out.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
