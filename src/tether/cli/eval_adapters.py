"""Agent adapters for `tether eval run --agent SPEC`: how one attempt of a task reaches the agent.

    "python agent.py"            a command, run once per attempt: TETHER_URL, TETHER_RUN_ID,
                                 TETHER_API_KEY, TETHER_TASK in its environment, the task on stdin;
                                 its stdout is the output, exit status 0 is success
    "http://host:port/path"      an HTTP endpoint: POST {"task_id", "input", "fixtures"} with the
                                 run id in X-Tether-Run-Id; a 2xx body is the output
    "package.module:function"    a Python callable, called as function(task, context) -> output

The adapter only delivers the task and collects the output; what the agent did is read from what
tether's gateways recorded for the run.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import os
import re
import shlex
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from tether.core.errors import BadRequestError

_CALLABLE_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


@dataclass(frozen=True)
class AttemptContext:
    """Everything an agent needs for one attempt: the run to record into and how to reach tether."""

    tether_url: str
    api_key: str | None
    run_id: str
    eval_id: str
    suite: str
    task_id: str
    attempt: int
    input: Any
    fixtures: dict[str, Any] = field(default_factory=dict)
    timeout_s: float = 300.0

    def task_json(self) -> str:
        return json.dumps(
            {
                "task_id": self.task_id,
                "input": self.input,
                "fixtures": self.fixtures,
                "attempt": self.attempt,
                "suite": self.suite,
            },
            default=str,
        )

    def headers(self) -> dict[str, str]:
        return {"X-Tether-Run-Id": self.run_id, "X-Tether-Task-Id": self.task_id}


@dataclass(frozen=True)
class AgentResult:
    ok: bool
    output: str | None
    error: str | None
    agent_ms: float


class Adapter(Protocol):
    describe: str

    def run(self, ctx: AttemptContext) -> AgentResult: ...


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value, default=str)


class CommandAdapter:
    def __init__(self, argv: list[str]) -> None:
        self.argv = argv
        self.describe = f"command {shlex.join(argv)}"

    def run(self, ctx: AttemptContext) -> AgentResult:
        env = {
            **os.environ,
            "TETHER_URL": ctx.tether_url,
            "TETHER_RUN_ID": ctx.run_id,
            "TETHER_TASK": ctx.task_json(),
            "TETHER_TASK_ID": ctx.task_id,
            "TETHER_EVAL_ID": ctx.eval_id,
        }
        if ctx.api_key:
            env["TETHER_API_KEY"] = ctx.api_key
        started = time.perf_counter()
        try:
            done = subprocess.run(
                self.argv,
                input=ctx.task_json(),
                capture_output=True,
                text=True,
                env=env,
                timeout=ctx.timeout_s,
            )
        except subprocess.TimeoutExpired:
            took = (time.perf_counter() - started) * 1000
            return AgentResult(False, None, f"timed out after {ctx.timeout_s:g}s", took)
        except OSError as exc:
            raise BadRequestError(
                f"cannot run {self.argv[0]!r}: {exc.strerror}; check --agent"
            ) from None
        took = (time.perf_counter() - started) * 1000
        if done.returncode != 0:
            return AgentResult(
                False,
                done.stdout or None,
                f"exit status {done.returncode}: {_last_error(done.stderr)}",
                took,
            )
        return AgentResult(True, done.stdout.strip(), None, took)


def _last_error(stderr: str | None) -> str:
    """The last line of a traceback that names an error (exception groups draw boxes)."""
    lines = [ln.strip(" |+-") for ln in (stderr or "").splitlines()]
    named = [ln for ln in lines if re.match(r"^[\w.]+(Error|Exception|Group|Timeout)\b", ln)]
    return (named or [ln for ln in lines if ln] or [""])[-1][:500]


class HttpAdapter:
    def __init__(self, url: str) -> None:
        self.url = url
        self.describe = f"HTTP endpoint {url}"
        self.http = httpx.Client(timeout=None)

    def run(self, ctx: AttemptContext) -> AgentResult:
        body = {
            "task_id": ctx.task_id,
            "input": ctx.input,
            "fixtures": ctx.fixtures,
            "run_id": ctx.run_id,
            "attempt": ctx.attempt,
        }
        started = time.perf_counter()
        try:
            resp = self.http.post(self.url, json=body, headers=ctx.headers(), timeout=ctx.timeout_s)
        except httpx.HTTPError as exc:
            took = (time.perf_counter() - started) * 1000
            return AgentResult(False, None, f"endpoint failed: {type(exc).__name__}", took)
        took = (time.perf_counter() - started) * 1000
        if not resp.is_success:
            return AgentResult(False, resp.text or None, f"HTTP {resp.status_code}", took)
        return AgentResult(True, resp.text, None, took)


class CallableAdapter:
    def __init__(self, spec: str) -> None:
        module, _, name = spec.partition(":")
        try:
            fn = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as exc:
            raise BadRequestError(f"cannot import {spec}: {exc}; is it on PYTHONPATH?") from None
        self.fn: Callable[..., Any] = fn
        self.describe = f"callable {spec}"

    def run(self, ctx: AttemptContext) -> AgentResult:
        task = {"task_id": ctx.task_id, "input": ctx.input, "fixtures": ctx.fixtures}
        started = time.perf_counter()
        try:
            out = self.fn(task, ctx)
            if inspect.isawaitable(out):
                out = asyncio.run(_await(out))
        except Exception as exc:  # the agent's own failure is the attempt's result, not ours
            took = (time.perf_counter() - started) * 1000
            return AgentResult(False, None, f"{type(exc).__name__}: {exc}"[:1000], took)
        return AgentResult(True, _text(out), None, (time.perf_counter() - started) * 1000)


async def _await(value: Any) -> Any:
    return await value


def make_adapter(spec: str) -> Adapter:
    """An adapter from `--agent`: a URL, a module:function, or a command line."""
    spec = spec.strip()
    if not spec:
        raise BadRequestError("--agent is empty; give a command, an http(s) URL or module:function")
    if spec.startswith(("http://", "https://")):
        return HttpAdapter(spec)
    if _CALLABLE_RE.match(spec):
        return CallableAdapter(spec)
    return CommandAdapter(shlex.split(spec))
