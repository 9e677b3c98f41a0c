"""`tether drift AGENT` and `tether alerts list|ack`: behaviour drift and cost alerts, on the
backend of cli/client.py (a running server with TETHER_URL, else the local store, whose run
profiles are brought up to date first)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import typer
from rich.table import Column, Table

from tether.cli.client import Local, opened
from tether.cli.output import DB_OPTION, console, errors, print_json
from tether.core.money import nusd_to_usd


def _drift(
    agent: str, baseline: str, window: str, version: str | None, database_url: str | None
) -> dict[str, Any]:
    with errors(), opened(database_url) as be:
        if isinstance(be, Local):
            from tether.store.drift import check_drift, parse_span
            from tether.store.watch import refresh

            spans = parse_span(baseline, "--baseline"), parse_span(window, "--window")
            now = datetime.now(UTC)
            refresh(be.engine, now=now)  # no server may be running the background pass
            report = check_drift(be.engine, agent, now=now, baseline=spans[0], window=spans[1],
                                 version=version)  # fmt: skip
            return report.to_dict()
        params = {k: v for k, v in {"baseline": baseline, "window": window,
                                    "version": version}.items() if v}  # fmt: skip
        result: dict[str, Any] = be.request("GET", f"/api/v1/drift/{agent}", params=params)
        return result
    raise AssertionError("unreachable")  # errors() exits on failure


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
        database_url: str = DB_OPTION,
    ) -> None:
        """What moved in an agent's behaviour: tool sequences, success, cost, tokens, latency."""
        report = _drift(agent, baseline, window, version, database_url)
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
        database_url: str = DB_OPTION,
    ) -> None:
        """List alerts, newest first (open ones by default)."""
        wanted = None if status == "all" else status
        with errors(), opened(database_url) as be:
            if isinstance(be, Local):
                from tether.store import alerts as alert_store

                found, _ = alert_store.list_alerts(be.engine, status=wanted, kind=kind,
                                                   agent=agent, limit=limit)  # fmt: skip
                items = [a.to_dict() for a in found]
            else:
                params = {k: v for k, v in {"status": wanted, "kind": kind, "agent": agent,
                                            "limit": limit}.items() if v}  # fmt: skip
                items = be.request("GET", "/api/v1/alerts", params=params)["items"]
        if as_json:
            print_json({"items": items})
            return
        table = Table(Column("id", no_wrap=True), "kind", "status", Column("when", no_wrap=True),
                      "alert")  # fmt: skip
        for a in items:
            table.add_row(a["id"], a["kind"], a["status"], a["created_at"][:16], a["message"])
        console.print(table)

    @group.command("check")
    def check_cmd(
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
        database_url: str = DB_OPTION,
    ) -> None:
        """Run the watch passes now: profiles, spend rollups, cost anomalies, drift."""
        with errors(), opened(database_url) as be:
            if isinstance(be, Local):
                from tether.config import load_settings
                from tether.server.watch_settings import watch_config
                from tether.store.watch import cost_pass, drift_pass

                config, now = watch_config(load_settings().watch), datetime.now(UTC)
                raised = [*cost_pass(be.engine, now=now, config=config),
                          *drift_pass(be.engine, now=now, config=config)]  # fmt: skip
                # no server here: nothing is sent to webhooks; a running tether sends them
                body: dict[str, Any] = {"raised": [r.alert.to_dict() for r in raised],
                                        "notified": 0}  # fmt: skip
            else:
                body = be.request("POST", "/api/v1/watch/evaluate")
        if as_json:
            print_json(body)
            return
        for a in body["raised"]:
            console.print(f"{a['id']}  {a['kind']}  {a['message']}", highlight=False)
        console.print(f"{len(body['raised'])} alerts raised or updated, {body['notified']} sent")

    @group.command("ack")
    def ack_cmd(
        alert_id: str = typer.Argument(..., help="alrt_..."),
        note: str = typer.Option(None, "--note", "-n", help="Why (shown in the history)."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
        database_url: str = DB_OPTION,
    ) -> None:
        """Acknowledge an alert."""
        with errors(), opened(database_url) as be:
            if isinstance(be, Local):
                from tether.store import alerts as alert_store

                done = alert_store.acknowledge(be.engine, alert_id, by="cli", note=note,
                                               now=datetime.now(UTC)).to_dict()  # fmt: skip
            else:
                path = f"/api/v1/alerts/{alert_id}/ack"
                done = be.request("POST", path, json={"note": note})
        if as_json:
            print_json(done)
        else:
            console.print(f"acknowledged {alert_id}: {done['message']}")
