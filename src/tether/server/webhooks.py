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
from tether.store.approvals import Approval

log = logging.getLogger("tether.webhooks")

TIMEOUT_S = 3.0


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


def _safe_url(url: str) -> str:
    # Slack webhook URLs carry their secret in the path; log the host only.
    return httpx.URL(url).host or "?"


class Webhooks:
    """The configured webhooks of one app: announces holds and counts what was sent."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.sent = 0
        self.failed = 0
        # a reference to each POST until it is done, or the task may be collected mid-flight
        self._tasks: set[asyncio.Task[None]] = set()

    def announce(self, approval: Approval) -> None:
        """Schedules one POST per configured webhook and returns at once."""
        for hook in self.settings.webhooks:
            self._schedule(hook, body_for(hook, self.settings, approval))

    def notify(self, event: str, data: dict[str, Any], text: str) -> None:
        """Posts an event (e.g. `budget.overshoot`) to every webhook: `{"event": ..., **data}`,
        or `text` to a Slack one; returns at once."""
        for hook in self.settings.webhooks:
            body = {"text": text} if hook.format == "slack" else {"event": event, **data}
            self._schedule(hook, body)

    def _schedule(self, hook: WebhookConfig, body: dict[str, Any]) -> None:
        task = asyncio.get_running_loop().create_task(self._post(hook, body))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def announce_event(self, event: dict[str, Any], text: str) -> None:
        """Any other state change (a rollout promoted, rolled back...): the event as JSON, or a
        Slack message of `text`; the same best-effort delivery as approvals."""
        for hook in self.settings.webhooks:
            slack = {
                "text": text,
                "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}],
            }
            body = slack if hook.format == "slack" else event
            task = asyncio.get_running_loop().create_task(self._post(hook, body))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def stats(self) -> dict[str, int]:
        return {"sent": self.sent, "failed": self.failed}

    async def deliver(self, hook: WebhookConfig, body: dict[str, Any]) -> None:
        """One POST of `body` to `hook`, best-effort, counted (alerts are sent through this)."""
        await self._post(hook, body)

    async def _post(self, hook: WebhookConfig, body: dict[str, Any]) -> None:
        try:
            async with httpx.AsyncClient(timeout=TIMEOUT_S) as client:
                response = await client.post(hook.url, json=body)
            response.raise_for_status()
        except httpx.HTTPStatusError as exc:
            self.failed += 1
            # httpx's message repeats the full URL, and a Slack URL's path is its secret
            code = exc.response.status_code
            log.warning("webhook %s answered HTTP %s", _safe_url(hook.url), code)
            return
        except httpx.HTTPError as exc:
            self.failed += 1
            log.warning("webhook %s failed: %s", _safe_url(hook.url), type(exc).__name__)
            return
        self.sent += 1
