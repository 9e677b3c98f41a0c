"""A command group whose subcommands load on first use, so `tether --help` and each command
import only what they need (a module of the store or the server costs seconds on a busy
machine). The root help lists each lazy command from a static one-line summary."""

from __future__ import annotations

import importlib
import sys
from typing import Any

import typer
from typer.core import TyperGroup

from tether.cli import missing_server_extra, server_extra_message

try:
    from tether.cli.coercion import plain, plain_param
except ImportError:  # a typer that coerces with click's own types: no pydantic to skip

    def plain(command: Any) -> None:
        """Nothing to do."""

    def plain_param(param: Any) -> None:
        """Nothing to do."""


# command name -> (module whose `register(app)` adds it, its summary in `tether --help`)
Lazy = dict[str, tuple[str, str]]


def load(name: str, module: str) -> Any:
    """The click command `name` as `module.register` builds it."""
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if not missing_server_extra(exc):
            raise
        print(server_extra_message(exc), file=sys.stderr)
        raise SystemExit(2) from None
    holder = typer.Typer()
    mod.register(holder)
    group = typer.main.get_group(holder)
    if name not in group.commands:
        raise LookupError(f"{module}.register() does not add a command named {name!r}")
    command = group.commands[name]
    plain(command)  # its str/int options read without importing pydantic (cli/coercion.py)
    return command


class LazyGroup(TyperGroup):
    """The root group: `lazy` commands are imported when invoked (or asked for by name)."""

    lazy: Lazy = {}

    def list_commands(self, ctx: Any) -> list[str]:
        return [*self.lazy, *(n for n in super().list_commands(ctx) if n not in self.lazy)]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in self.commands and cmd_name in self.lazy:
            self.commands[cmd_name] = load(cmd_name, self.lazy[cmd_name][0])
        return super().get_command(ctx, cmd_name)

    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)
        plain_param(option)  # `--help` read without pydantic (cli/coercion.py)
        return option

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        rows = []
        for name in self.list_commands(ctx):
            if name in self.lazy and name not in self.commands:
                rows.append((name, self.lazy[name][1]))
                continue
            cmd = self.commands[name]
            if not cmd.hidden:
                rows.append((name, cmd.get_short_help_str(formatter.width - 6 - len(name))))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)
