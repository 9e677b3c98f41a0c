"""`tether drift AGENT` and `tether alerts list|ack`: behaviour drift and cost alerts, from the
local store (brought up to date first) or a remote tether (TETHER_URL + TETHER_API_KEY)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import typer
from rich.table import Column, Table

from tether.cli.client import local_engine
from tether.cli.output import console, print_json
from tether.cli.tools import remote
from tether.config import load_settings
from tether.core.money import nusd_to_usd
from tether.store import alerts as alert_store
from tether.store.drift import check_drift, parse_span
from tether.store.watch import refresh


def _drift(agent: str, baseline: str, window: str, version: str | None) -> dict[str, Any]:
    settings = load_settings()
    if settings.url:
        params = {k: v for k, v in {"baseline": baseline, "window": window,
                                    "version": version}.items() if v}  # fmt: skip
        result: dict[str, Any] = remote(settings, "GET", f"/drift/{agent}", params=params)
        return result
    engine = local_engine(settings)
    try:
        now = datetime.now(UTC)
        refresh(engine, now=now)  # no server may be running the background pass
        report = check_drift(engine, agent, now=now, baseline=parse_span(baseline, "--baseline"),
                             window=parse_span(window, "--window"), version=version)  # fmt: skip
        return report.to_dict()
    finally:
        engine.dispose()


def _value(metric: dict[str, Any], key: str) -> str:
    v = metric[key]
    if v is None:
        return "-"
    if metric["metric"] == "success_at_target":
        return f"{v:.0%}"
    if metric["metric"] == "cost":
        return f"${nusd_to_usd(round(v)):.4f}"
    if metric["metric"] == "latency":
        return f"{v:.0f} ms"
    return f"{v:g}"


def print_drift(report: dict[str, Any]) -> None:
    who = report["agent"] + (f"@{report['version']}" if report["version"] else "")
    head = "[bold red]drifted[/]" if report["drifted"] else "[green]no drift[/]"
    console.print(f"{who}: {head} — window {report['window']['from'][:16]} to "
                  f"{report['window']['to'][:16]} ({report['window_runs']} runs) against "
                  f"{report['baseline_runs']} baseline runs; alpha {report['alpha']}")  # fmt: skip
    table = Table("metric", "status", "baseline", "window", "effect", Column("p (Holm)"), "test")
    for m in report["metrics"]:
        style = {"moved": "bold red", "insufficient": "dim"}.get(m["status"], "")
        effect = "-" if m["effect"] is None else f"{m['effect']:+.3f}"
        p = "-" if m["p_adjusted"] is None else f"{m['p_adjusted']:.2g}"
        table.add_row(m["metric"], f"[{style}]{m['status']}[/]" if style else m["status"],
                      _value(m, "baseline"), _value(m, "window"), effect, p, m["test"])  # fmt: skip
    console.print(table)
    seq = report["sequences"]
    for title, key, side in (("appeared", "appeared", "window_runs"),
                             ("disappeared", "disappeared", "baseline_runs")):  # fmt: skip
        for s in seq[key][:5]:
            console.print(f"  {title}: {' > '.join(s['tools']) or '(no tools)'} ({s[side]} runs)")
    models = report.get("models") or []
    if len(models) > 1:
        chain = " -> ".join(f"{m['model']} (from {m['first_run_at'][:10]})" for m in models)
        console.print(f"  served models: {chain}")


def register(app: typer.Typer) -> None:
    @app.command("drift")
    def drift_cmd(
        agent: str = typer.Argument(..., help="The agent to check."),
        baseline: str = typer.Option("7d", help="Baseline window before the current one."),
        window: str = typer.Option("1d", help="The current window, ending now."),
        version: str = typer.Option(None, help="Only this agent version's runs."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    ) -> None:
        """What moved in an agent's behaviour: tool sequences, success, cost, tokens, latency."""
        report = _drift(agent, baseline, window, version)
        if as_json:
            print_json(report)
        else:
            print_drift(report)

    group = typer.Typer(help="Cost anomaly, drift and model change alerts.",
                        no_args_is_help=True)  # fmt: skip
    app.add_typer(group, name="alerts")

    @group.command("list")
    def list_cmd(
        status: str = typer.Option("open", help="open | acknowledged | all"),
        kind: str = typer.Option(None, help="cost_anomaly | drift | model_change"),
        agent: str = typer.Option(None, help="Only this agent's alerts."),
        limit: int = typer.Option(50, min=1, max=500),
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    ) -> None:
        """List alerts, newest first (open ones by default)."""
        settings = load_settings()
        wanted = None if status == "all" else status
        if settings.url:
            params = {k: v for k, v in {"status": wanted, "kind": kind, "agent": agent,
                                        "limit": limit}.items() if v}  # fmt: skip
            items = remote(settings, "GET", "/alerts", params=params)["items"]
        else:
            engine = local_engine(settings)
            try:
                found, _ = alert_store.list_alerts(engine, status=wanted, kind=kind, agent=agent,
                                                   limit=limit)  # fmt: skip
                items = [a.to_dict() for a in found]
            finally:
                engine.dispose()
        if as_json:
            print_json({"items": items})
            return
        table = Table(Column("id", no_wrap=True), "kind", "status", Column("when", no_wrap=True),
                      "alert")  # fmt: skip
        for a in items:
            table.add_row(a["id"], a["kind"], a["status"], a["created_at"][:16], a["message"])
        console.print(table)

    @group.command("ack")
    def ack_cmd(
        alert_id: str = typer.Argument(..., help="alrt_..."),
        note: str = typer.Option(None, "--note", "-n", help="Why (shown in the history)."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    ) -> None:
        """Acknowledge an alert."""
        settings = load_settings()
        if settings.url:
            done = remote(settings, "POST", f"/alerts/{alert_id}/ack", json={"note": note})
        else:
            engine = local_engine(settings)
            try:
                done = alert_store.acknowledge(engine, alert_id, by="cli", note=note,
                                               now=datetime.now(UTC)).to_dict()  # fmt: skip
            finally:
                engine.dispose()
        if as_json:
            print_json(done)
        else:
            console.print(f"acknowledged {alert_id}: {done['message']}")
