"""The root `tether` command; each command group registers itself from its own module."""

from __future__ import annotations

import importlib
import sys

import typer

from tether import __version__
from tether.cli.output import err_console
from tether.core.errors import ConfigError, TetherError

app = typer.Typer(
    name="tether",
    help="tether: the AgentOps control plane. Trace, cost, cap and govern AI agents.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# Command groups, one module each; every module exposes `register(app)`.
GROUPS = (
    "tether.cli.serve",
    "tether.cli.db",
    "tether.cli.keys",
    "tether.cli.runs",
    "tether.cli.checkpoints",  # adds `runs checkpoints` and `runs resume`
    "tether.cli.demo",
    "tether.cli.llm",
    "tether.cli.policy",
    "tether.cli.audit",
    "tether.cli.tools",
    "tether.cli.approvals",
)
for _name in GROUPS:
    importlib.import_module(_name).register(app)


@app.command()
def version() -> None:
    """Print tether's version."""
    typer.echo(f"tether {__version__}")


def main() -> None:
    """Entry point: TetherErrors become one-line messages (exit 2 for config, 1 otherwise)."""
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
