"""`tether rollout start|status|promote|rollback|pause|resume|evaluate|endpoint`: canary rollouts
of agent versions through a running tether (every change is audited on the server)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from tether.cli.evals import _api, _read
from tether.cli.output import console, print_json
from tether.cli.policy import errors
from tether.core.rollout_rule import parse_rule

app = typer.Typer(
    help="Canary rollouts: route a share of tasks to a candidate version.", no_args_is_help=True
)


def show(ro: dict[str, Any]) -> None:
    color = {
        "running": "cyan",
        "paused": "yellow",
        "promoted": "green",
        "rolled_back": "red",
        "inconclusive": "yellow",
    }.get(ro["status"], "")
    console.print(
        f"[bold]{ro['id']}[/] {ro['agent']}: {ro['candidate']} at {ro['percent']:g} % "
        f"against {ro['baseline']}  [{color}]{ro['status']}[/]",
        highlight=False,
    )
    table = Table(
        "version",
        "role",
        "success at target (Wilson 95 %)",
        "errors",
        "kills",
        "policy violations",
        "cost/task",
    )
    for a in ro["arms"]:
        s = a["success"]
        rate = (
            "-"
            if s["rate"] is None
            else (
                f"{s['successes']}/{s['total']} = {s['rate']:.1%} ({s['low']:.1%}-{s['high']:.1%})"
            )
        )
        cost = "-" if a["cost_per_task_usd"] is None else f"${a['cost_per_task_usd']:.4f}"
        table.add_row(
            a["version"],
            a["role"],
            rate,
            str(a["errors"]),
            str(a["kills"]),
            str(a["policy_violations"]),
            cost,
        )
    console.print(table)
    decision = ro.get("decision") or {}
    now = decision.get("now") or decision
    if now:
        console.print(f"rule: {now.get('action')}: {now.get('reason')}", highlight=False)
    elif ro["reason"]:
        console.print(f"why: {ro['reason']}", highlight=False)


@app.command("start")
def start(
    agent: str,
    baseline: str = typer.Option(..., "--baseline"),
    candidate: str = typer.Option(..., "--candidate"),
    percent: float = typer.Option(10.0, "--percent", min=0.01, max=100),
    rule: Path | None = typer.Option(None, "--rule", help="the rule YAML (default rule if none)"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Send --percent of AGENT's tasks to --candidate, sticky by task id."""
    with errors():
        source = _read(rule) if rule else ""
        parse_rule(source, str(rule) if rule else "<rule>")  # FILE:LINE errors locally first
        ro = _api().call(
            "POST",
            "/api/v1/rollouts",
            json={
                "agent": agent,
                "baseline": baseline,
                "candidate": candidate,
                "percent": percent,
                "rule": source,
                "rule_file": str(rule) if rule else None,
            },
        )
    print_json(ro) if as_json else show(ro)


@app.command("status")
def status(
    target: str | None = typer.Argument(None, help="a rollout id or an agent (default: all)"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Rollouts with live success at target cost per version, and the rule's current state."""
    with errors():
        api = _api()
        if target and target.startswith("ro_"):
            items = [api.call("GET", f"/api/v1/rollouts/{target}")]
        else:
            params = {"agent": target} if target else {}
            items = api.call("GET", "/api/v1/rollouts", params=params)["items"]
    if as_json:
        print_json({"items": items})
        return
    if not items:
        console.print("no rollouts yet: `tether rollout start AGENT --baseline V1 --candidate V2`")
    for ro in items:
        show(ro)


def _change(action: str) -> Any:
    def command(
        rollout_id: str,
        reason: str | None = typer.Option(None, "--reason"),
        as_json: bool = typer.Option(False, "--json"),
    ) -> None:
        with errors():
            ro = _api().call(
                "POST", f"/api/v1/rollouts/{rollout_id}/{action}", json={"reason": reason}
            )
        print_json(ro) if as_json else show(ro)

    command.__doc__ = {
        "promote": "Send every task to the candidate.",
        "rollback": "Send every task back to the baseline.",
        "pause": "Stop applying the rule (the split stays).",
        "resume": "Apply the rule again.",
    }[action]
    return command


for _action in ("promote", "rollback", "pause", "resume"):
    app.command(_action)(_change(_action))


@app.command("evaluate")
def evaluate(rollout_id: str, as_json: bool = typer.Option(False, "--json")) -> None:
    """Apply the rule now instead of waiting for the next interval."""
    with errors():
        ro = _api().call("POST", f"/api/v1/rollouts/{rollout_id}/evaluate")
    print_json(ro) if as_json else show(ro)


@app.command("endpoint")
def endpoint(agent: str, version: str, url: str) -> None:
    """Register the HTTP endpoint that runs AGENT VERSION (for POST /api/v1/agents/A/tasks)."""
    with errors():
        _api().call("PUT", f"/api/v1/agents/{agent}/versions/{version}/endpoint", json={"url": url})
    console.print(f"{agent} {version} -> {url}", highlight=False)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="rollout")
