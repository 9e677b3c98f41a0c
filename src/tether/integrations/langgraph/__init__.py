"""tether for LangGraph: `TetherSaver`, a checkpointer backed by tether's store; `invoke`, which
turns every pause of a graph into a tether approval and resumes it with the decision;
`resume_requested`, which takes `tether runs resume` requests; `idempotent` tools.

    from tether.integrations.langgraph import TetherSaver, invoke
    graph = builder.compile(checkpointer=TetherSaver())
    outcome = invoke(graph, {"task": "..."}, {"configurable": {"thread_id": "task-abc-001"}})
"""

from __future__ import annotations

from tether.integrations.langgraph._driver import Outcome, invoke, resume_requested
from tether.integrations.langgraph._saver import TetherSaver
from tether.integrations.langgraph._tools import idempotent

__all__ = ["Outcome", "TetherSaver", "idempotent", "invoke", "resume_requested"]
