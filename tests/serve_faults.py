"""Fault scenarios against a running server (fake or real backend): clients that vanish mid-stream, a crowd,
SIGTERM. Shared by tests/test_server_faults.py (fake model) and tests/test_server_faults_live.py (hf, vllm)."""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx

Q = "Tom has 3 apples and buys 2 more. How many apples does he have?"


def chat_body(max_tokens: int, content: str = Q, **extra) -> dict:
    return {
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "stream": True,
        **extra,
    }


def stream(
    url: str, body: dict, drop_after: int | None = None, timeout: float = 300
) -> tuple[int, list[str]]:
    """POST a streaming chat request; read every event, or only ``drop_after`` content events and then close
    the connection (a client that goes away). Returns (status, the data payloads read)."""
    events: list[str] = []
    with httpx.Client(timeout=timeout) as client:
        with client.stream("POST", url + "/v1/chat/completions", json=body) as r:
            if r.status_code != 200:
                r.read()
                return r.status_code, [r.text]
            for line in r.iter_lines():
                if not line.startswith("data: "):
                    continue
                events.append(line[6:])
                content = [e for e in events if '"content":"' in e and '"role"' not in e]
                if drop_after is not None and len(content) >= drop_after:
                    return r.status_code, events  # leaving the with-blocks closes the socket
    return 200, events


def text_of(events: list[str]) -> str:
    out = []
    for e in events:
        if e == "[DONE]":
            continue
        obj = json.loads(e)
        for ch in obj.get("choices", []):
            out.append(ch.get("delta", {}).get("content") or "")
    return "".join(out)


def wait_health(url: str, ok: callable, timeout: float = 60) -> dict:
    """Poll /health until ``ok(json)``; returns the last body (fails the test on timeout)."""
    deadline = time.monotonic() + timeout
    body: dict = {}
    while time.monotonic() < deadline:
        try:
            r = httpx.get(url + "/health", timeout=5)
            body = r.json()
            if r.status_code == 200 and ok(body):
                return body
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"/health never satisfied the condition: {body}")


def crowd(
    url: str, body: dict, clients: int = 64, drop_every: int = 4, timeout: float = 900
) -> list[tuple[int, bool, str]]:
    """``clients`` concurrent streams; every ``drop_every``-th one disconnects after its first content event.
    Returns (status, finished with [DONE], last event) per client."""

    def one(i: int) -> tuple[int, bool, str]:
        drop = 1 if i % drop_every == 0 else None
        status, events = stream(url, body, drop_after=drop, timeout=timeout)
        return status, bool(events) and events[-1] == "[DONE]", events[-1][:200] if events else ""

    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        return list(pool.map(one, range(clients)))


def start_process(
    cmd: list[str], url: str, timeout: float = 300, log=None, env: dict | None = None
) -> subprocess.Popen:
    """Start the server ``cmd`` (``env``: extra environment variables) and wait for its /health; its output
    goes to ``log`` (an open file) if given, so a server that logs a lot never blocks on a full pipe."""
    out = subprocess.PIPE if log is None else log
    proc = subprocess.Popen(
        cmd, stdout=out, stderr=subprocess.STDOUT, text=True, env={**os.environ, **(env or {})}
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            text = proc.stdout.read() if log is None else open(log.name).read()
            raise AssertionError(f"server exited with {proc.returncode}:\n{text[-3000:]}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise AssertionError("server did not start")


def sigterm_drains(proc: subprocess.Popen, url: str, body: dict, exit_timeout: float = 120) -> str:
    """A stream in flight when SIGTERM arrives still finishes; a new request is refused (503 or connection
    refused); the process exits 0. Returns the process output."""
    result: dict = {}

    def in_flight() -> None:
        result["status"], result["events"] = stream(url, body)

    t = threading.Thread(target=in_flight)
    t.start()
    wait_health(url, lambda h: h.get("in_flight", 0) >= 1)
    time.sleep(0.3)  # its first tokens are on the way
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    try:
        r = httpx.post(url + "/v1/chat/completions", json=dict(body, stream=False), timeout=10)
        refused = r.status_code == 503
    except httpx.TransportError:  # connection refused: the socket is closed
        refused = True
    assert refused, "a request after SIGTERM was accepted"
    t.join(exit_timeout)
    assert result.get("status") == 200 and result["events"][-1] == "[DONE]", result
    try:
        out, _ = proc.communicate(timeout=exit_timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert proc.returncode == 0, out[-3000:]
    return out


PYTHON = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
