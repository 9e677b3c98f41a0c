"""Pure rules about LangGraph checkpoints shared by the saver and the store: which node a task
path names, which channels are state a person reads, and what changed between two states."""

from __future__ import annotations

from typing import Any


def node_of(task_path: str) -> str | None:
    """The node of a LangGraph task path (`~__pregel_pull, plan` -> `plan`)."""
    parts = [p.strip(" ()'~") for p in task_path.split(",")]
    names = [p for p in parts if p and not p.startswith("__pregel") and not p.isdigit()]
    return names[-1] if names else None


def shown(channel: str) -> bool:
    """State channels a person cares about (not LangGraph's `branch:to:x` and `__start__`)."""
    return not channel.startswith(("branch:", "__")) and ":" not in channel


def diff(before: dict[str, Any] | None, after: dict[str, Any]) -> dict[str, Any]:
    """What changed from one state to the next: channels added, changed (old and new), removed."""
    before = before or {}
    return {
        "added": {k: v for k, v in after.items() if k not in before},
        "changed": {
            k: {"before": before[k], "after": v}
            for k, v in after.items()
            if k in before and before[k] != v
        },
        "removed": sorted(k for k in before if k not in after),
    }
