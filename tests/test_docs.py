"""The README documents every setting, CLI command, route and error type (datasette's idea)."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest
import typer

from tether.cli.main import app as cli_app
from tether.config import Settings
from tether.core.errors import ERROR_TYPES
from tether.server.app import create_app

README = (Path(__file__).parent.parent / "README.md").read_text()


def _commands(group: click.Group, prefix: str) -> list[str]:
    out = []
    # list_commands/get_command, not .commands: the root loads its command groups lazily
    for name in group.list_commands(None):  # type: ignore[arg-type]
        cmd = group.get_command(None, name)  # type: ignore[arg-type]
        path = f"{prefix} {name}"
        if hasattr(cmd, "commands"):
            out += _commands(cmd, path)  # type: ignore[arg-type]
        else:
            out.append(path)
    return out


@pytest.mark.parametrize("field", sorted(Settings.model_fields))
def test_every_setting_is_documented(field: str) -> None:
    assert f"`{field}`" in README


@pytest.mark.parametrize(
    "command",
    _commands(typer.main.get_command(cli_app), "tether"),  # type: ignore[arg-type]
)
def test_every_cli_command_is_documented(command: str) -> None:
    assert command in README


@pytest.mark.parametrize("error", sorted(e.type for e in ERROR_TYPES))
def test_every_error_type_is_documented(error: str) -> None:
    assert f"`{error}`" in README


def _routes() -> list[str]:
    from tether.config import load_settings

    app = create_app(load_settings(database_url="sqlite:///:memory:"))
    paths = set()
    for path in app.openapi()["paths"]:
        paths.add(re.sub(r"\{[^}]+\}", "{}", path))
    return sorted(paths)


@pytest.mark.parametrize("route", _routes())
def test_every_route_is_documented(route: str) -> None:
    normalised = re.sub(r"\{[^}]+\}", "{}", README)
    assert route in normalised
