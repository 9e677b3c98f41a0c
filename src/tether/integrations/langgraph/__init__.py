"""tether for LangGraph: `TetherSaver`, a checkpointer backed by tether's store.

from tether.integrations.langgraph import TetherSaver
graph = builder.compile(checkpointer=TetherSaver())
"""

from __future__ import annotations

from tether.integrations.langgraph._saver import TetherSaver

__all__ = ["TetherSaver"]
