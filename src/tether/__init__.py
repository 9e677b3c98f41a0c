"""tether: the AgentOps control plane. This module re-exports the agent SDK.

import tether
tether.init("http://127.0.0.1:7337")
with tether.run(agent="triage", task_id="T-1", user="alice") as run:
    run.set_output(answer)

The names load on first use (PEP 562), so that importing a part of tether (the CLI, the
server) does not pay for the OpenTelemetry SDK.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tether._version import __version__
    from tether.sdk import _memory as memory
    from tether.sdk._config import flush, init, sdk_stats, shutdown
    from tether.sdk._guard import ToolDeniedError, ToolRateLimitedError
    from tether.sdk._llm import LlmCall, llm_span, record_llm
    from tether.sdk._openai import instrument_openai, run_headers
    from tether.sdk._route import route
    from tether.sdk._run import Run, current_run, run
    from tether.sdk._tool import tool

# public name -> the module that defines it
_EXPORTS = {
    "__version__": "tether._version",
    "flush": "tether.sdk._config",
    "init": "tether.sdk._config",
    "sdk_stats": "tether.sdk._config",
    "shutdown": "tether.sdk._config",
    "ToolDeniedError": "tether.sdk._guard",
    "ToolRateLimitedError": "tether.sdk._guard",
    "LlmCall": "tether.sdk._llm",
    "llm_span": "tether.sdk._llm",
    "record_llm": "tether.sdk._llm",
    "instrument_openai": "tether.sdk._openai",
    "run_headers": "tether.sdk._openai",
    "Run": "tether.sdk._run",
    "current_run": "tether.sdk._run",
    "run": "tether.sdk._run",
    "route": "tether.sdk._route",
    "tool": "tether.sdk._tool",
}
# public name -> a module re-exported whole
_MODULES = {"memory": "tether.sdk._memory"}

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
    "route",
    "run",
    "run_headers",
    "sdk_stats",
    "shutdown",
    "tool",
]


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        value: Any = importlib.import_module(_MODULES[name])
    elif name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    else:
        raise AttributeError(f"module 'tether' has no attribute {name!r}")
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
