"""tether for LangGraph: `TetherSaver`, a checkpointer backed by tether's store; `invoke`, which
turns every pause of a graph into a tether approval and resumes it with the decision;
`resume_requested`, which takes `tether runs resume` requests; `idempotent` tools. Each has its
async twin (`ainvoke`, `aresume_requested`; `idempotent` wraps `async def` tools too).

    from tether.integrations.langgraph import TetherSaver, invoke
    graph = builder.compile(checkpointer=TetherSaver())
    outcome = invoke(graph, {"task": "..."}, {"configurable": {"thread_id": "task-abc-001"}})
"""

from __future__ import annotations

from tether.integrations.langgraph._driver import (
    Outcome,
    ainvoke,
    aresume_requested,
    invoke,
    resume_requested,
)
from tether.integrations.langgraph._saver import TetherSaver
from tether.integrations.langgraph._tools import idempotent

__all__ = [
    "Outcome",
    "TetherSaver",
    "ainvoke",
    "aresume_requested",
    "idempotent",
    "invoke",
    "resume_requested",
]
