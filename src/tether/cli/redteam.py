"""`tether redteam run|env|list`: scripted attack packs against an agent as deployed behind
tether (its real policy, its gateways), scored per attempt, reported as JSON and Markdown and
stored on the server; or, with `--policy FILE`, against a local throwaway deployment of
tether's red-team world."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import typer
import yaml

from tether.cli.output import DB_OPTION, console, errors, print_json
from tether.core.errors import BadRequestError


def _agent_for(adapter: str) -> Any:
    """A scripted agent by name, else an eval adapter spec: a command, an http(s) URL or
    module:function (the agent as deployed, reached as `tether eval run --agent` reaches it)."""
    from tether.redteam.agents import AGENTS

    if adapter in AGENTS:
        return AGENTS[adapter]()
    from tether.cli.eval_adapters import make_adapter
    from tether.cli.redteam_adapter import AdapterAgent

    return AdapterAgent(make_adapter(adapter))


def _packs(text: str) -> list[str]:
    from tether.redteam.world import PACKS

    packs = [p.strip() for p in text.split(",") if p.strip()]
    bad = [p for p in packs if p not in PACKS]
    if bad or not packs:
        raise BadRequestError(f"unknown pack {bad[0] if bad else '(none)'!r}; use "
                              f"{', '.join(PACKS)}")  # fmt: skip
    return packs


def run_redteam(
    agent: str, adapter: str, packs: list[str], repeat: int, per_domain: int,
    *, url: str | None, agent_key: str | None, admin_key: str | None, policy: Path | None,
    attacker_model: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Runs the packs and returns the report (also stored on the server it ran against)."""
    from tether.redteam import report
    from tether.redteam.deploy import deploy
    from tether.redteam.runner import Target
    from tether.redteam.session import run_all
    from tether.redteam.world import scenarios

    chosen = scenarios(packs, per_domain=per_domain, benign_per_domain=per_domain)
    bot = _agent_for(adapter)
    if policy is not None and attacker_model:
        raise BadRequestError("--attacker-model needs the agent as deployed (TETHER_URL): the "
                              "local --policy world has no LLM provider")  # fmt: skip
    if policy is not None:
        source = policy.read_text(encoding="utf-8")
        if (yaml.safe_load(source) or {}).get("agent") != agent:
            raise BadRequestError(f"{policy}: its `agent:` is not {agent}")
        with tempfile.TemporaryDirectory(prefix="tether-redteam-") as tmp, \
                deploy(Path(tmp), agent) as dep:  # fmt: skip
            dep.apply(source)
            attempts = run_all(Target(dep.url, dep.agent_key, dep.admin_key), bot, chosen,
                               repeat=repeat)  # fmt: skip
            built = report.build(attempts, agent=agent)
            dep.api("POST", "/redteam/reports", json=built)
        return built
    if not (url and agent_key and admin_key):
        raise BadRequestError("give --policy FILE (a local run), or TETHER_URL with an admin "
                              "TETHER_API_KEY and --agent-key (the agent as deployed)")  # fmt: skip
    target = Target(url, agent_key, admin_key)
    attacker = None
    if attacker_model:
        from tether.cli.redteam_attacker import LLMAttacker

        attacker = LLMAttacker(target, attacker_model)
        chosen = attacker.craft(chosen)
    attempts = run_all(target, bot, chosen, repeat=repeat)
    built = report.build(attempts, agent=agent)
    if attacker is not None:
        built["attacker"] = attacker.report()
    stored = target.api("POST", "/redteam/reports", json=built)
    if stored.status_code != 201:
        raise BadRequestError(f"the server did not store the report: {stored.text[:200]}")
    return built


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="Red-team an agent with scripted attack packs.", no_args_is_help=True)
    app.add_typer(group, name="redteam")

    @group.command("run")
    def run_cmd(
        agent: str = typer.Option(..., "--agent", help="The agent under test."),
        adapter: str = typer.Option(
            "obedient",
            "--adapter",
            help="obedient | careful (scripted), or the agent: a command, an http(s) URL or "
            "module:function",
        ),
        packs: str = typer.Option(
            "injection,indirect,boundary,exhaustion,tool-poisoning",
            "--packs",
            help="Comma-separated packs.",
        ),
        repeat: int = typer.Option(1, "--repeat", min=1, max=100, help="Runs per scenario."),
        per_domain: int = typer.Option(
            4, "--per-domain", min=1, max=64, help="Indirect attacks (and benign tasks) per domain."
        ),
        policy: Path = typer.Option(None, "--policy", help="Run locally with this policy."),
        agent_key: str = typer.Option(None, "--agent-key", help="The agent's key (remote)."),
        attacker_model: str = typer.Option(
            None,
            "--attacker-model",
            help="Write the direct attacks with this model, through tether's LLM gateway.",
        ),
        output: Path = typer.Option(
            None, "--output", "-o", help="Write report.json and report.md into this folder."
        ),
        as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    ) -> None:
        """Run attack packs against the agent and report what got through and what stopped it."""
        from tether.config import load_settings
        from tether.redteam import report

        with errors():
            settings = load_settings()
            built = run_redteam(agent, adapter, _packs(packs), repeat, per_domain,
                                url=settings.url, agent_key=agent_key,
                                admin_key=settings.api_key, policy=policy,
                                attacker_model=attacker_model)  # fmt: skip
        text = report.markdown(built)
        if output is not None:
            import json

            output.mkdir(parents=True, exist_ok=True)
            (output / "report.json").write_text(json.dumps(built, indent=2, default=str))
            (output / "report.md").write_text(text)
        if as_json:
            print_json(built)
        else:
            console.print(text, highlight=False, markup=False)

    @group.command("env")
    def env_cmd() -> None:
        """Print the `mcp_servers` entries of tether's red-team world for tether.yaml."""
        from tether.redteam.deploy import env_servers

        console.print(yaml.safe_dump({"mcp_servers": env_servers()}, sort_keys=False),
                      highlight=False, markup=False)  # fmt: skip

    @group.command("list")
    def list_cmd(
        agent: str = typer.Option(None, "--agent"),
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
        database_url: str = DB_OPTION,
    ) -> None:
        """Stored red-team reports, newest first."""
        from tether.cli.client import Local, opened

        with errors(), opened(database_url) as be:
            if isinstance(be, Local):
                from tether.store import redteam

                items = redteam.list_reports(be.engine, agent=agent)
            else:
                params = {"agent": agent} if agent else {}
                items = be.request("GET", "/api/v1/redteam/reports", params=params)["items"]
        if as_json:
            print_json({"items": items})
            return
        for r in items:
            packs = r["summary"]["packs"]
            rates = ", ".join(f"{p} {v['attack_success_rate']['k']}/{v['attempts']}"
                              for p, v in packs.items())  # fmt: skip
            console.print(f"{r['id']}  {r['agent']}  {r['created_at'][:19]}  succeeded: {rates}",
                          highlight=False)  # fmt: skip
