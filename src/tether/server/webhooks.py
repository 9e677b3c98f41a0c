"""Announces new approval holds (and other events, such as a budget overshoot) to webhooks
(generic JSON or Slack-compatible), best-effort: each POST has a short timeout, runs in the
background, and a failure is logged and counted, never raised into the call that was held.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx

from tether.config import Settings, WebhookConfig
from tether.server.deps import State
from tether.store.approvals import Approval

log = logging.getLogger("tether.webhooks")

TIMEOUT_S = 3.0
_TASKS_KEY = "webhook_tasks"
STATS_KEY = "webhook_stats"


def approval_url(settings: Settings, approval: Approval) -> str | None:
    base = settings.public_url or f"http://{settings.host}:{settings.port}"
    return f"{base.rstrip('/')}/approvals/{approval.id}"


def generic_body(settings: Settings, approval: Approval) -> dict[str, Any]:
    return {
        "type": "approval.requested",
        "approval": approval.to_dict(),
        "url": approval_url(settings, approval),
        "approve": f"tether approvals approve {approval.id} --reason '...'",
        "deny": f"tether approvals deny {approval.id} --reason '...'",
    }


def slack_body(settings: Settings, approval: Approval) -> dict[str, Any]:
    who = approval.agent or "an agent"
    text = f"{who} wants to call {approval.tool}: approval {approval.id} is waiting"
    args = str(approval.arguments)
    if len(args) > 500:
        args = args[:500] + "…"
    url = approval_url(settings, approval)
    return {
        "text": text,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": f"*{text}*"}},
            {"type": "section", "fields": [
                {"type": "mrkdwn", "text": f"*Tool*\n`{approval.tool}`"},
                {"type": "mrkdwn", "text": f"*Run*\n`{approval.run_id or '-'}`"},
                {"type": "mrkdwn", "text": f"*Rule*\n{approval.rule or '-'}"},
                {"type": "mrkdwn", "text": f"*Expires*\n{approval.expires_at.isoformat()}"},
            ]},
            {"type": "section", "text": {"type": "mrkdwn",
                                         "text": f"*Reason*: {approval.reason or '-'}\n"
                                                 f"*Arguments*: ```{args}```"}},
            {"type": "context", "elements": [
                {"type": "mrkdwn",
                 "text": f"<{url}|Open in tether> or `tether approvals approve {approval.id}`"},
            ]},
        ],
    }  # fmt: skip


def body_for(hook: WebhookConfig, settings: Settings, approval: Approval) -> dict[str, Any]:
    if hook.format == "slack":
        return slack_body(settings, approval)
    return generic_body(settings, approval)


async def _post(state: State, hook: WebhookConfig, body: dict[str, Any]) -> None:
    stats: dict[str, int] = state.extras.setdefault(STATS_KEY, {"sent": 0, "failed": 0})
    try:
        async with httpx.AsyncClient(timeout=TIMEOUT_S) as client:
            response = await client.post(hook.url, json=body)
        response.raise_for_status()
    except httpx.HTTPStatusError as exc:
        stats["failed"] += 1
        # httpx's message repeats the full URL, and a Slack URL's path is its secret
        log.warning("webhook %s answered HTTP %s", _safe_url(hook.url), exc.response.status_code)
        return
    except httpx.HTTPError as exc:
        stats["failed"] += 1
        log.warning("webhook %s failed: %s", _safe_url(hook.url), type(exc).__name__)
        return
    stats["sent"] += 1


def _safe_url(url: str) -> str:
    # Slack webhook URLs carry their secret in the path; log the host only.
    return httpx.URL(url).host or "?"


def announce(state: State, approval: Approval) -> None:
    """Schedules one POST per configured webhook and returns at once."""
    for hook in state.settings.webhooks:
        _schedule(state, hook, body_for(hook, state.settings, approval))


def notify(state: State, event: str, data: dict[str, Any], text: str) -> None:
    """Posts an event to every webhook: `{"event": ..., **data}`, or `text` to a Slack one."""
    for hook in state.settings.webhooks:
        body = {"text": text} if hook.format == "slack" else {"event": event, **data}
        _schedule(state, hook, body)


def _schedule(state: State, hook: WebhookConfig, body: dict[str, Any]) -> None:
    tasks: set[asyncio.Task[None]] = state.extras.setdefault(_TASKS_KEY, set())
    task = asyncio.get_running_loop().create_task(_post(state, hook, body))
    tasks.add(task)  # keep a reference until done, or the task may be collected mid-flight
    task.add_done_callback(tasks.discard)


def stats(state: State) -> dict[str, int]:
    return dict(state.extras.get(STATS_KEY, {"sent": 0, "failed": 0}))
