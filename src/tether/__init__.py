"""tether: the AgentOps control plane. This module re-exports the agent SDK.

import tether
tether.init("http://127.0.0.1:7337")
with tether.run(agent="triage", task_id="T-1", user="alice") as run:
    run.set_output(answer)
"""

from __future__ import annotations

__version__ = "0.1.0"

from tether.sdk import _memory as memory
from tether.sdk._config import flush, init, sdk_stats, shutdown
from tether.sdk._guard import ToolDeniedError, ToolRateLimitedError
from tether.sdk._llm import LlmCall, llm_span, record_llm
from tether.sdk._openai import instrument_openai, run_headers
from tether.sdk._run import Run, current_run, run
from tether.sdk._tool import tool

__all__ = [
    "LlmCall",
    "Run",
    "ToolDeniedError",
    "ToolRateLimitedError",
    "__version__",
    "current_run",
    "flush",
    "init",
    "instrument_openai",
    "llm_span",
    "memory",
    "record_llm",
    "run",
    "run_headers",
    "sdk_stats",
    "shutdown",
    "tool",
]
