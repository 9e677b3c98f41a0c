"""`tether.route(agent, task_id)`: which version of an agent a task should run on, as tether's
canary rollout decides (sticky by task id), asked of the server's /api/v1/route."""

from __future__ import annotations

from tether.sdk._config import active


def route(
    agent: str, task_id: str, *, default: str | None = None, timeout_s: float = 2.0
) -> str | None:
    """The version to run `task_id` on; `default` when the agent has no rollout or tether cannot
    be reached (routing must never stop an agent from working).

        version = tether.route("support", ticket.id, default="v2")
    """
    try:
        resp = active().http.request(
            "GET", "/api/v1/route", params={"agent": agent, "task_id": task_id}, timeout_s=timeout_s
        )
        resp.raise_for_status()
        version = resp.json().get("version")
    except Exception:  # the SDK's guard: an unreachable or broken tether means "the default"
        return default
    return version if isinstance(version, str) else default
