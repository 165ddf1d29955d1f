"""MATH answer checks through ``math-verify``, each under a hard wall-clock deadline.

Two operations, both on model text: :func:`extract` (math-verify's answer extraction: the LaTeX of the last
math environment, else the last plain expression or number, by math-verify's own priorities) and
:func:`equal` (math-verify's symbolic comparison). :func:`run` applies the deadline: in the main thread a
``SIGALRM`` interval timer interrupts sympy and the regex engine; in any other thread (where signals cannot
be used) the check runs in a child process (``python -m tokenskip.mathcheck``) that keeps the deadline the
same way, and is killed and replaced when it has not answered ``GRACE_S`` after it. Either way a check
returns within its limit, and a timeout reads as None.

No model text reaches ``eval``: LaTeX goes through latex2sympy's ANTLR parser (whose only ``sympify`` of
text is ``sympy.Number`` on a lexed number token), and expressions are parsed as LaTeX too, never by
sympy's ``parse_expr`` (math-verify's own expression path, which ``eval``\\s its transformed input).
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from itertools import groupby
from typing import Any

MAX_TEXT_CHARS = 100_000  # math-verify's regexes are superlinear on some inputs: a generous cap (the tail)


class _Deadline(BaseException):
    """Raised by the interval timer inside a check that ran out of time (a BaseException, as math-verify's
    own timeout is, so that the libraries' ``except Exception`` clauses let it through)."""


@functools.lru_cache(maxsize=1)
def _config():
    from math_verify.parser import ExprExtractionConfig, LatexExtractionConfig, get_extraction_regexes

    latex = LatexExtractionConfig()
    return latex, get_extraction_regexes([latex, ExprExtractionConfig()])


def _expr_answer(match) -> str:
    """The answer string of one match of math-verify's expression regexes: a number (thousands separators
    and leading zeros dropped, a decimal comma read as a point, a percent kept) or an arithmetic expression
    that parses as LaTeX."""
    from math_verify.parser import parse_latex_cached

    groups = match.groupdict()
    integer = next((v for k, v in groups.items() if k.startswith("integer") and v), "")
    decimal = next((v for k, v in groups.items() if k.startswith("decimal") and v), "")
    if integer or decimal:
        sign = "-" if integer.startswith("-") else ""
        digits = integer.lstrip("-").translate(str.maketrans("", "", ", ")).lstrip("0") or "0"
        return sign + digits + decimal.replace(",", ".") + ("\\%" if groups.get("percent") else "")
    expr = (groups.get("expr") or "").replace("\n", " ").strip().rstrip(".").strip()
    if not expr:
        return ""
    try:
        parse_latex_cached(expr)
    except Exception:  # not an expression after all: try the next match
        return ""
    return expr


def extract(text: str) -> str:
    """math-verify's answer in ``text`` as a string ("" when it finds none).

    The patterns and their priorities are math-verify's (``parse`` with its default LaTeX and expression
    targets): at each priority the rightmost match that parses wins.
    """
    try:
        return _extract(text)
    except Exception:  # odd LaTeX the parsers trip over: no answer
        return ""


def _extract(text: str) -> str:
    from math_verify.parser import extract_latex

    latex, targets = _config()
    text = text[-MAX_TEXT_CHARS:]  # the answer is at the end
    patterns = sorted(((p, t, prio) for ps, t in targets for p, prio in ps), key=lambda x: x[2])
    for _, group in groupby(patterns, key=lambda x: x[2]):
        found = [(m, t) for p, t, _ in group for m in p.finditer(text)]
        for m, t in sorted(found, key=lambda x: (x[0].end(), -x[0].start()), reverse=True):
            if t is latex:
                value, answer = extract_latex(m, t)
                if value is not None and answer.strip():
                    return answer.strip()
            else:
                answer = _expr_answer(m)
                if answer:
                    return answer
    return ""


def equal(pred: str, ref: str) -> bool:
    """Whether two extracted answers are equal by math-verify (LaTeX parsing only: see the module doc)."""
    from math_verify import LatexExtractionConfig, parse, verify

    config = [LatexExtractionConfig()]
    try:
        gold = parse(f"${ref}$", config, parsing_timeout=None)
        target = parse(f"${pred}$", config, parsing_timeout=None)
        return bool(gold and target and verify(gold, target, timeout_seconds=None))
    except Exception:  # odd LaTeX: not equal
        return False


OPS = {"extract": extract, "equal": equal}


def _quiet() -> None:
    import logging

    logging.getLogger("math_verify").setLevel(logging.ERROR)  # "timeout disabled": we enforce our own


def _with_timer(fn, args: tuple, seconds: float) -> Any:
    def on_alarm(signum, frame):
        raise _Deadline

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        return fn(*args)
    except _Deadline:
        return None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class _Child:
    """One child process serving checks as JSON lines; killed when a check runs past its deadline."""

    STARTUP_S = 120  # importing sympy on a loaded machine: not counted against a check's deadline
    GRACE_S = 0.5  # the child keeps the deadline itself (SIGALRM); killed only when it cannot

    def __init__(self) -> None:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # this tokenskip, not another
        path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tokenskip.mathcheck"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": path},
        )
        self.buf = b""
        self.ready = False

    def _line(self, deadline: float) -> bytes | None:
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                return None
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line

    def wait_ready(self) -> None:
        if not self.ready:
            if self._line(time.monotonic() + self.STARTUP_S) != b"ready":
                raise RuntimeError("tokenskip: the math-verify child process did not start")
            self.ready = True

    def call(self, op: str, args: tuple, seconds: float) -> tuple[bool, Any]:
        """(answered, result); not answered: the child ran out of time or is gone."""
        self.wait_ready()
        self.proc.stdin.write(json.dumps([op, list(args), seconds]).encode() + b"\n")
        self.proc.stdin.flush()
        line = self._line(time.monotonic() + seconds + self.GRACE_S)
        return (False, None) if line is None else (True, json.loads(line))

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


_child: _Child | None = None
_child_lock = threading.Lock()


@atexit.register
def _close_child() -> None:
    if _child is not None:
        _child.close()


def _in_child(op: str, args: tuple, seconds: float) -> Any:
    global _child
    with _child_lock:
        if _child is None or _child.proc.poll() is not None:
            _child = _Child()
        try:
            answered, result = _child.call(op, args, seconds)
        except OSError:  # the child died (a broken pipe)
            answered, result = False, None
        if not answered:
            _child.close()
            _child = _Child()  # starts now, so that the next check finds it (nearly) ready
        return result


def _timer_free() -> bool:
    """Whether this thread may use SIGALRM: the main thread, with no interval timer of someone else's."""
    return (
        threading.current_thread() is threading.main_thread()
        and hasattr(signal, "setitimer")
        and signal.getitimer(signal.ITIMER_REAL)[0] == 0
    )


def prepare() -> None:
    """Load math-verify (in this process, or start the child process) before a deadline starts to run."""
    global _child
    if _timer_free():
        import math_verify  # noqa: F401

        return
    with _child_lock:
        if _child is None or _child.proc.poll() is not None:
            _child = _Child()
        _child.wait_ready()


def run(op: str, *args: str, deadline: float) -> Any:
    """``OPS[op](*args)`` by ``deadline`` (a ``time.monotonic()`` time); None when it runs out of time.

    Call :func:`prepare` before the deadline starts: in a thread other than the main one, a check that
    finds no ready child process waits, beyond its deadline, for a new one to import math-verify (about a
    second; that happens after a check whose child had to be killed).
    """
    seconds = deadline - time.monotonic()
    if seconds <= 0:
        return None
    if _timer_free():
        _quiet()
        return _with_timer(OPS[op], args, seconds)
    return _in_child(op, args, seconds)


def serve() -> None:
    """The child's loop: one ``[op, args, seconds]`` JSON line in, one JSON result line out (null: out of
    time), until stdin closes. It keeps the deadline with SIGALRM in its main thread."""
    out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")  # the protocol's; a stray print goes to stderr
    sys.stdout = sys.stderr
    import math_verify  # noqa: F401  (import before "ready": the first check must not pay for it)

    _quiet()
    out.write(b"ready\n")
    out.flush()
    for line in sys.stdin.buffer:
        op, args, seconds = json.loads(line)
        result = _with_timer(OPS[op], args, seconds)
        out.write(json.dumps(result).encode() + b"\n")
        out.flush()


if __name__ == "__main__":
    serve()
