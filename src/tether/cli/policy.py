"""`tether policy check|apply|show|list`: boundary policies, validated locally with
`FILE:LINE: field: problem. Fix: ...` errors, stored on the backend of cli/client.py (a running
server's API with TETHER_URL, else the local store, which `apply` creates if need be)."""

from __future__ import annotations

import getpass
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import typer
from rich.syntax import Syntax
from rich.table import Table

from tether.cli import client
from tether.cli.output import DB_OPTION, console, fail, print_json
from tether.core.errors import BadRequestError, ConfigError, TetherError
from tether.core.policy import Policy, PolicyError, lint


@contextmanager
def errors() -> Iterator[None]:
    """Policy problems print one line each and exit 2; other TetherErrors exit 1 (2 for usage)."""
    try:
        yield
    except PolicyError as exc:
        for problem in exc.problems:
            typer.echo(problem.format(exc.file), err=True)
        raise typer.Exit(2) from None
    except (BadRequestError, ConfigError) as exc:
        fail(exc.message, 2)
    except TetherError as exc:
        fail(exc.message, 1)


def actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


class Backend(Protocol):
    where: str

    def apply(self, source: str, file: str) -> dict[str, Any]: ...
    def get(self, agent: str, version: int | None) -> dict[str, Any]: ...
    def history(self, agent: str) -> list[dict[str, Any]]: ...
    def diff(self, agent: str, v1: int, v2: int) -> str: ...
    def list(self) -> list[dict[str, Any]]: ...
    def suggest(self, agent: str) -> dict[str, Any]: ...


class LocalBackend:
    def __init__(self, local: client.Local) -> None:
        from tether.store import policies as policy_store

        self.store = policy_store
        self.engine = local.engine
        self.where = local.where

    def apply(self, source: str, file: str) -> dict[str, Any]:
        now = datetime.now(UTC)
        done = self.store.apply_policy(self.engine, source, actor(), now, file=file)
        return {"agent": done.agent, "version": done.version, "changed": done.changed}

    def get(self, agent: str, version: int | None) -> dict[str, Any]:
        return self.store.describe(self.engine, agent, version)

    def history(self, agent: str) -> list[dict[str, Any]]:
        self.store.require(self.engine, agent)
        return [v.to_dict() for v in self.store.history(self.engine, agent)]

    def diff(self, agent: str, v1: int, v2: int) -> str:
        return self.store.diff(self.engine, agent, v1, v2)

    def list(self) -> list[dict[str, Any]]:
        return [v.to_dict() for v in self.store.list_latest(self.engine)]

    def suggest(self, agent: str) -> dict[str, Any]:
        got: dict[str, Any] = self.store.suggestion(self.engine, agent)
        return got


class RemoteBackend:
    def __init__(self, remote: client.Remote) -> None:
        self.client = remote
        self.where = remote.where

    def apply(self, source: str, file: str) -> dict[str, Any]:
        body = {"source": source, "file": file}
        done: dict[str, Any] = self.client.request("POST", "/api/v1/policies", json=body)
        return done

    def get(self, agent: str, version: int | None) -> dict[str, Any]:
        params = {"version": version} if version else {}
        got: dict[str, Any] = self.client.request("GET", f"/api/v1/policies/{agent}", params=params)
        return got

    def history(self, agent: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.client.request(
            "GET", f"/api/v1/policies/{agent}/history"
        )["items"]
        return items

    def diff(self, agent: str, v1: int, v2: int) -> str:
        params = {"from": v1, "to": v2}
        return str(
            self.client.request("GET", f"/api/v1/policies/{agent}/diff", params=params)["diff"]
        )

    def list(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.client.request("GET", "/api/v1/policies")["items"]
        return items

    def suggest(self, agent: str) -> dict[str, Any]:
        got: dict[str, Any] = self.client.request("GET", f"/api/v1/policies/{agent}/suggest")
        return got


def backend(database_url: str | None, *, create: bool = False) -> Backend:
    """The policy operations on the one CLI backend (cli/client.py's precedence)."""
    be = client.backend(database_url, create=create)
    return LocalBackend(be) if isinstance(be, client.Local) else RemoteBackend(be)


def read_file(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BadRequestError(f"{path}: no such file") from None
    except UnicodeDecodeError:
        raise BadRequestError(f"{path}: not UTF-8 text; save the policy as UTF-8") from None
    except OSError as exc:
        raise BadRequestError(f"{path}: cannot read ({exc.strerror})") from None


def check_file(path: Path) -> tuple[Policy, list[str]]:
    """The compiled policy and its warnings; PolicyError names the file and line."""
    source = read_file(path)
    policy = Policy.parse(source, str(path))
    return policy, [w.format(str(path)) for w in lint(policy, source, str(path))]


def parse_range(text: str) -> tuple[int, int]:
    a, sep, b = text.partition("..")
    if not sep or not a.isdigit() or not b.isdigit():
        raise BadRequestError(f'--diff "{text}" is not A..B; write it like --diff 1..2')
    return int(a), int(b)


def register(app: typer.Typer) -> None:
    policy = typer.Typer(help="Boundary policies: check, apply, show.", no_args_is_help=True)
    app.add_typer(policy, name="policy")

    @policy.command("check")
    def check(files: list[Path] = typer.Argument(..., help="Policy YAML files.")) -> None:
        """Validate policy files; problems print as FILE:LINE: field: problem. Fix: ... (exit 2)."""
        failed = False
        for path in files:
            try:
                pol, warnings = check_file(path)
            except PolicyError as exc:
                failed = True
                for problem in exc.problems:
                    typer.echo(problem.format(exc.file), err=True)
                continue
            except BadRequestError as exc:
                failed = True
                typer.echo(f"error: {exc.message}", err=True)
                continue
            for w in warnings:
                typer.echo(f"warning: {w}", err=True)
            typer.echo(f"{path}: ok (agent {pol.agent}, {len(pol.tools)} tool rules)")
        if failed:
            raise typer.Exit(2)

    @policy.command("apply")
    def apply(
        file: Path = typer.Argument(..., help="Policy YAML file."),
        as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
        database_url: str = DB_OPTION,
    ) -> None:
        """Store a policy as the agent's next version (unchanged text keeps the version).

        Uses the local store, or the server at TETHER_URL (with TETHER_API_KEY, admin scope)."""
        with errors():
            _, warnings = check_file(file)
            for w in warnings:
                typer.echo(f"warning: {w}", err=True)
            out = backend(database_url, create=True).apply(read_file(file), str(file))
        if as_json:
            print_json(out)
        elif out["changed"]:
            console.print(f"applied policy for {out['agent']}: version {out['version']}")
        else:
            console.print(f"policy for {out['agent']} unchanged at version {out['version']}")

    @policy.command("show")
    def show(
        agent: str = typer.Argument(..., help="Agent name."),
        version: int = typer.Option(None, "--version", min=1, help="A version (default latest)."),
        history: bool = typer.Option(False, "--history", help="List every version."),
        diff: str = typer.Option(None, "--diff", metavar="A..B", help="Diff two versions."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
        database_url: str = DB_OPTION,
    ) -> None:
        """Show an agent's policy, its history, or a diff between versions."""
        with errors():
            be = backend(database_url)
            if diff:
                a, b = parse_range(diff)
                text = be.diff(agent, a, b)
                if as_json:
                    print_json({"agent": agent, "from_version": a, "to_version": b, "diff": text})
                else:
                    console.print(Syntax(text, "diff") if text else "(no differences)")
                return
            if history:
                items = be.history(agent)
                if as_json:
                    print_json({"items": items})
                    return
                table = Table("version", "applied at", "applied by", "sha256")
                for v in items:
                    table.add_row(
                        str(v["version"]),
                        v["created_at"][:19],
                        v["applied_by"] or "",
                        v["sha256"][:12],
                    )
                console.print(table)
                return
            got = be.get(agent, version)
        if as_json:
            print_json(got)
            return
        console.print(
            f"[bold]{got['agent']}[/] version {got['version']}, applied "
            f"{got['created_at'][:19]} by {got['applied_by']}",
            highlight=False,
        )
        console.print(Syntax(got["source"], "yaml"))

    @policy.command("suggest")
    def suggest_cmd(
        agent: str = typer.Argument(..., help="The agent to propose a policy for."),
        output: Path = typer.Option(None, "--output", "-o", help="Write the YAML here."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
        database_url: str = DB_OPTION,
    ) -> None:
        """Propose a policy from the registry's tools and the agent's recorded runs."""
        with errors():
            got = backend(database_url).suggest(agent)
        if as_json:
            print_json(got)
        elif output is not None:
            output.write_text(got["source"], encoding="utf-8")
            console.print(f"wrote {output}: review it, then `tether policy apply {output}`")
        else:
            console.print(got["source"], highlight=False, markup=False, end="")

    @policy.command("list")
    def list_(
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
        database_url: str = DB_OPTION,
    ) -> None:
        """The latest policy version of every agent."""
        with errors():
            items = backend(database_url).list()
        if as_json:
            print_json({"items": items})
            return
        table = Table("agent", "version", "applied at", "applied by")
        for v in items:
            table.add_row(
                v["agent"], str(v["version"]), v["created_at"][:19], v["applied_by"] or ""
            )
        console.print(table)
