"""The root `tether` command. Each command group lives in a module of its own, registered in
COMMANDS with its one-line summary and imported only when that command runs, so that
`tether --help` and remote commands start fast (bench/startup.py measures both)."""

from __future__ import annotations

import importlib
import sys

import typer

from tether.cli.lazy import Lazy, LazyGroup
from tether.cli.output import err_console
from tether.core.errors import ConfigError, TetherError

# name -> (module with `register(app)`, summary shown by `tether --help`); a new command group
# adds one line here (tests/cli/test_main.py checks that each loads and its summary is true).
COMMANDS: Lazy = {
    "serve": ("tether.cli.serve", "Run the tether server (API, OTLP ingest, gateways, console)."),
    "demo": ("tether.cli.demo", "A guided tour on a fresh demo database, then the console URL."),
    "runs": ("tether.cli.runs", "Agent runs: list, show, kill, replay, checkpoints, resume."),
    "keys": ("tether.cli.keys", "API keys: create, list, rotate, revoke."),
    "policy": ("tether.cli.policy", "Boundary policies: check, apply, show."),
    "tools": ("tether.cli.tools", "The tool registry: tags, pins and rug-pull approvals."),
    "lists": ("tether.cli.lists", "Named lists in the registry: contacts, payees, domains."),
    "approvals": ("tether.cli.approvals", "Held tool calls waiting for a person."),
    "drift": (
        "tether.cli.watch",
        "What moved in an agent's behaviour: tool sequences, success, cost.",
    ),
    "alerts": ("tether.cli.watch", "Cost anomaly, drift and model change alerts: list, ack."),
    "audit": ("tether.cli.audit", "The audit log: verify, export, list."),
    "redteam": ("tether.cli.redteam", "Red-team an agent with scripted attack packs."),
    "db": ("tether.cli.db", "Database migrations."),
    "memory": ("tether.cli.memory", "Agent memory: namespaces, list, search, forget."),
    "mock-llm": ("tether.cli.llm", "Serve a deterministic mock LLM for tests and benchmarks."),
    "deploy": ("tether.cli.deploy", "Deployment manifests for agents."),
    "eval": ("tether.cli.evals", "Eval suites, CI gates and comparisons of agent versions."),
    "rollout": (
        "tether.cli.rollouts",
        "Canary rollouts: route a share of tasks to a candidate version.",
    ),
}

# Modules registered eagerly at start-up (slower `tether --help`): move them into COMMANDS.
GROUPS: tuple[str, ...] = ()


class Root(LazyGroup):
    lazy = COMMANDS


app = typer.Typer(
    name="tether",
    cls=Root,
    help="tether: the AgentOps control plane. Trace, cost, cap and govern AI agents.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # plain help for the root: Rich's would load every command to render the table
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
for _name in GROUPS:
    importlib.import_module(_name).register(app)


@app.callback()
def root() -> None:
    """tether: the AgentOps control plane. Trace, cost, cap and govern AI agents."""


@app.command()
def version() -> None:
    """Print tether's version."""
    from tether._version import __version__

    typer.echo(f"tether {__version__}")


def main() -> None:
    """Entry point: TetherErrors become one-line messages (exit 2 for config, 1 otherwise)."""
    # httpx imports its own command line (click, Rich, Pygments: about half of its import time)
    # unless that import fails; tether never runs httpx's CLI, so this process skips it.
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
    try:
        app()
    except ConfigError as exc:
        err_console.print(f"[bold red]error:[/] {exc.message}", highlight=False)
        sys.exit(2)
    except TetherError as exc:
        err_console.print(f"[bold red]error:[/] {exc.message}", highlight=False)
        sys.exit(1)


if __name__ == "__main__":
    main()
