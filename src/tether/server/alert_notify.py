"""Sends newly raised alerts to the configured webhooks (generic JSON or Slack-shaped) through
server/webhooks.py, and records when each was sent; repeats and cool-down are decided by
store/alerts.py before anything reaches here."""

from __future__ import annotations

from datetime import datetime
from functools import partial
from typing import Any

import anyio

from tether.config import Settings, WebhookConfig
from tether.server.deps import State
from tether.store.alerts import Alert, Raised, mark_notified


def alert_url(settings: Settings, alert: Alert) -> str:
    base = settings.public_url or f"http://{settings.host}:{settings.port}"
    return f"{base.rstrip('/')}/alerts#{alert.id}"


def generic_body(settings: Settings, alert: Alert) -> dict[str, Any]:
    return {
        "type": "alert.raised",
        "alert": alert.to_dict(),
        "url": alert_url(settings, alert),
        "ack": f"tether alerts ack {alert.id} --note '...'",
    }


def slack_body(settings: Settings, alert: Alert) -> dict[str, Any]:
    title = {"cost_anomaly": "Cost anomaly", "drift": "Drift", "model_change": "Model change"}
    head = f"{title.get(alert.kind, alert.kind)}: {alert.subject}"
    fields = [{"type": "mrkdwn", "text": f"*Alert*\n`{alert.id}`"}]
    if alert.expected_nusd is not None:
        d = alert.to_dict()
        fields += [
            {"type": "mrkdwn", "text": f"*Spent*\n${d['value_usd']:,.2f}"},
            {"type": "mrkdwn",
             "text": f"*Expected range*\n${d['low_usd']:,.2f} to ${d['high_usd']:,.2f}"},
        ]  # fmt: skip
    url = alert_url(settings, alert)
    link = f"<{url}|Open in tether> or `tether alerts ack {alert.id}`"
    return {
        "text": f"{head}: {alert.message}",
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": f"*{head}*\n{alert.message}"}},
            {"type": "section", "fields": fields},
            {"type": "context", "elements": [
                {"type": "mrkdwn", "text": link},
            ]},
        ],
    }  # fmt: skip


def body_for(hook: WebhookConfig, settings: Settings, alert: Alert) -> dict[str, Any]:
    return slack_body(settings, alert) if hook.format == "slack" else generic_body(settings, alert)


async def notify(state: State, raised: list[Raised], *, now: datetime) -> int:
    """POSTs each alert that should notify to every webhook; returns how many alerts went."""
    sent = 0
    for item in raised:
        if not item.notify:
            continue
        if state.model_change_evals is not None and item.new:
            state.model_change_evals.start(item.alert)
        for hook in state.settings.webhooks:
            await state.webhooks.deliver(hook, body_for(hook, state.settings, item.alert))
        await anyio.to_thread.run_sync(partial(mark_notified, state.engine, item.alert.id, now=now))
        sent += 1
    return sent
