"""`tether runs list|show|kill`: read and kill runs on the backend of cli/client.py (a running
server with TETHER_URL, else the local store; a kill there reaches every server's streams
within one kill-switch poll)."""

from __future__ import annotations

import getpass
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import typer

from tether.cli.client import Backend, Local, opened
from tether.cli.output import DB_OPTION, console, errors, print_json

if TYPE_CHECKING:  # Rich is imported where a table is drawn: `--json` never loads it
    from rich.table import Table
    from rich.text import Text
    from rich.tree import Tree

# `tether runs list --sort` (the API's RunSort; the store validates it again)
RUN_SORTS = ("-started_at", "started_at", "-cost", "cost", "-duration", "duration")
STATUS_STYLE = {"running": "cyan", "succeeded": "green", "failed": "red", "killed": "magenta",
                "awaiting_approval": "yellow"}  # fmt: skip
KIND_ICON = {"agent": "🤖", "llm": "💬", "tool": "🔧", "retrieval": "📚", "embedding": "🧮",
             "approval": "✋", "chain": "🔗"}  # fmt: skip


def list_runs(
    be: Backend, filters: Mapping[str, str | None], sort: str, limit: int, cursor: str | None
) -> dict[str, Any]:
    """A page of runs as the API returns it (`{"items", "next_cursor"}`)."""
    if isinstance(be, Local):
        from tether.server import serialize
        from tether.store import runs as run_store

        chosen = run_store.RunFilters(
            agent=filters.get("agent"), version=filters.get("version"),
            status=filters.get("status"), user=filters.get("user"),
            task_id=filters.get("task_id"), q=filters.get("q"),
        )  # fmt: skip
        rows, next_cursor = run_store.list_runs(be.engine, chosen, sort, limit, cursor)
        return serialize.page([serialize.run_resource(r) for r in rows], next_cursor)
    params: dict[str, Any] = {k: v for k, v in filters.items() if v is not None}
    params.update(sort=sort, limit=limit, **({"cursor": cursor} if cursor else {}))
    page: dict[str, Any] = be.request("GET", "/api/v1/runs", params=params)
    return page


def get_run(be: Backend, run_id: str) -> dict[str, Any]:
    """One run with its span tree, as the API returns it."""
    if isinstance(be, Local):
        from tether.server import serialize
        from tether.store import runs as run_store

        row = run_store.get_run(be.engine, run_id)
        return serialize.run_detail(row, run_store.span_tree(be.engine, run_id))
    run: dict[str, Any] = be.request("GET", f"/api/v1/runs/{run_id}")
    return run


def kill_run(be: Backend, run_id: str, reason: str) -> dict[str, Any]:
    """The kill of POST /api/v1/runs/{id}/kill; locally the same store write and audit entry,
    which running servers pick up within one kill-switch poll."""
    if isinstance(be, Local):
        import anyio

        from tether.core.errors import ConflictError
        from tether.gateway.llm.killswitch import KillSwitch
        from tether.gateway.llm.killswitch import kill_run as kill

        now = datetime.now(UTC)
        if not anyio.run(lambda: kill(KillSwitch(be.engine), run_id, actor=_actor(),
                                      reason=reason, now=now)):  # fmt: skip
            raise ConflictError(f"run {run_id} already ended; there is nothing to kill")
        return {"id": run_id, "status": "killed", "kill_reason": reason}
    out: dict[str, Any] = be.request("POST", f"/api/v1/runs/{run_id}/kill", json={"reason": reason})
    return out


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def status_text(status: str) -> Text:
    from rich.text import Text

    return Text(status, style=STATUS_STYLE.get(status, ""))


def money(usd: float | None) -> str:
    if usd is None:
        return ""
    if usd >= 1:
        return f"${usd:,.2f}"
    return f"${usd:.4f}" if usd >= 0.0001 or usd == 0 else f"${usd:.6f}"


def duration(ms: float | None) -> str:
    if ms is None:
        return ""
    return f"{ms:.0f}ms" if ms < 1000 else f"{ms / 1000:.1f}s"


def when(iso: str | None, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    return datetime.fromisoformat(iso).strftime(fmt) if iso else ""


# Columns by importance: on a narrow terminal the later ones are left out, never the id.
_COLUMNS: tuple[tuple[str, Callable[[dict[str, Any]], str | Text]], ...] = (
    ("status", lambda r: status_text(r["status"])),
    ("agent", lambda r: r["agent"] or ""),
    ("cost", lambda r: money(r["cost_usd"])),
    ("started", lambda r: when(r["started_at"], "%m-%d %H:%M:%S")),
    ("task", lambda r: r["task_id"] or ""),
    ("duration", lambda r: duration(r.get("duration_ms"))),
    ("version", lambda r: r["version"] or ""),
    ("user", lambda r: r["user"] or ""),
    ("tokens", lambda r: f"{r['input_tokens'] + r['output_tokens']:,}"),
)
_ORDER = ("agent", "version", "status", "task", "user", "cost", "tokens", "duration", "started")
_RIGHT = ("cost", "tokens", "duration")


def runs_table(items: list[dict[str, Any]], width: int) -> Table:
    from rich.table import Table

    cells = {name: [get(r) for r in items] for name, get in _COLUMNS}
    id_width = max((len(r["id"]) for r in items), default=2)
    budget, shown = width - id_width - 4, set()
    for name, _ in _COLUMNS:
        need = max([len(name), *(len(str(c)) for c in cells[name])]) + 3  # padding and border
        if budget >= need:
            shown.add(name)
            budget -= need
    table = Table(header_style="bold")
    table.add_column("id", no_wrap=True, min_width=id_width)
    names = [n for n in _ORDER if n in shown]
    for name in names:
        table.add_column(name, justify="right" if name in _RIGHT else "left", no_wrap=True)
    for i, r in enumerate(items):
        table.add_row(r["id"], *(cells[n][i] for n in names))
    return table


def span_label(s: dict[str, Any]) -> Text:
    from rich.text import Text

    label = Text(f"{KIND_ICON.get(s['kind'], '•')} ")
    label.append(s["name"], style="bold")
    parts = [duration(s["latency_ms"])]
    if s.get("model"):
        parts.append(s["model"])
    if s.get("input_tokens") or s.get("output_tokens"):
        parts.append(f"{s.get('input_tokens') or 0}→{s.get('output_tokens') or 0} tok")
    if s.get("cost_usd"):
        parts.append(money(s["cost_usd"]))
    label.append("  " + "  ".join(p for p in parts if p), style="dim")
    if s.get("error") or s["status"] == "error":
        label.append(f"  ✗ {s.get('error') or 'error'}", style="red")
    return label


def span_tree(run: dict[str, Any]) -> Tree:
    from rich.text import Text
    from rich.tree import Tree

    tree = Tree(Text(run["id"], style="bold"))

    def add(node: Tree, spans: list[dict[str, Any]]) -> None:
        for s in spans:
            add(node.add(span_label(s)), s.get("children", []))

    add(tree, run.get("spans", []))
    return tree


def header(run: dict[str, Any]) -> Table:
    from rich.table import Table
    from rich.text import Text

    grid = Table.grid(padding=(0, 2))
    who = f"{run['agent'] or '?'}" + (f"@{run['version']}" if run["version"] else "")
    tokens = f"{run['input_tokens']:,} in / {run['output_tokens']:,} out"
    fb = run["feedback"]
    rows = [
        ("run", Text(run["id"], style="bold")), ("agent", Text(who)),
        ("status", status_text(run["status"])), ("task", Text(run["task_id"] or "")),
        ("user", Text(run["user"] or "")), ("started", Text(when(run["started_at"]))),
        ("duration", Text(duration(run.get("duration_ms")))),
        ("cost", Text(money(run["cost_usd"]))), ("tokens", Text(tokens)),
        ("calls", Text(f"{run['llm_calls']} LLM, {run['tool_calls']} tool")),
        ("score", Text("" if run["score"] is None else f"{run['score']:g}")),
        ("feedback", Text(f"👍 {fb['thumbs_up']}  👎 {fb['thumbs_down']}  "
                          f"💬 {len(fb['comments'])}")),
    ]  # fmt: skip
    if run.get("error"):
        rows.append(("error", Text(run["error"], style="red")))
    if run.get("kill_reason"):
        rows.append(("killed", Text(run["kill_reason"], style="magenta")))
    for k, v in rows:
        grid.add_row(Text(k, style="dim"), v)
    return grid


def register(app: typer.Typer) -> None:
    runs = typer.Typer(help="Agent runs: list, show, kill, replay, checkpoints, resume.",
                       no_args_is_help=True)  # fmt: skip
    app.add_typer(runs, name="runs")
    from tether.cli import replay
    from tether.cli.checkpoints import add_commands

    replay.register(runs)
    add_commands(runs)  # `runs checkpoints` and `runs resume` (LangGraph runs)

    @runs.command("list")
    def list_(
        agent: str = typer.Option(None, help="Only this agent."),
        version: str = typer.Option(None, help="Only this agent version."),
        status: str = typer.Option(None, help="running|succeeded|failed|killed|awaiting_approval"),
        user: str = typer.Option(None, help="Only this user."),
        task: str = typer.Option(None, help="Only this task id."),
        search: str = typer.Option(None, "--search", "-q", help="Search id, task, agent, user."),
        sort: str = typer.Option("-started_at", help=f"One of {', '.join(RUN_SORTS)}."),
        limit: int = typer.Option(20, min=1, max=500, help="How many runs."),
        cursor: str = typer.Option(None, help="Continue from a previous --json next_cursor."),
        as_json: bool = typer.Option(False, "--json", help="Print the API's JSON page."),
        database_url: str = DB_OPTION,
    ) -> None:
        """List runs, newest first (from TETHER_URL if set, else the local database)."""
        filters = {"agent": agent, "version": version, "status": status, "user": user,
                   "task_id": task, "q": search}  # fmt: skip
        with errors(), opened(database_url) as be:
            data = list_runs(be, filters, sort, limit, cursor)
        if as_json:
            print_json(data)
        elif not data["items"]:
            console.print("no runs match", highlight=False)
        else:
            console.print(runs_table(data["items"], console.width))
            if data["next_cursor"]:
                console.print(f"[dim]more: --cursor {data['next_cursor']}[/]", highlight=False)

    @runs.command("show")
    def show(
        run_id: str = typer.Argument(..., help="The run's id."),
        as_json: bool = typer.Option(False, "--json", help="Print the API's JSON."),
        database_url: str = DB_OPTION,
    ) -> None:
        """Show one run: its header and its span tree."""
        with errors(), opened(database_url) as be:
            run = get_run(be, run_id)
        if as_json:
            print_json(run)
            return
        from rich.text import Text

        console.print(header(run))
        if run.get("input"):
            console.print(Text("input  ", style="dim") + Text(run["input"][:500]))
        if run.get("output"):
            console.print(Text("output ", style="dim") + Text(run["output"][:500]))
        console.print(span_tree(run) if run.get("spans") else "[dim]no spans yet[/]")

    @runs.command("kill")
    def kill(
        run_id: str = typer.Argument(..., help="The run to stop."),
        reason: str = typer.Option("killed from the CLI", "--reason", help="Why (audited)."),
        as_json: bool = typer.Option(False, "--json", help="Print the JSON reply."),
        database_url: str = DB_OPTION,
    ) -> None:
        """Kill a run: its streams are cut and later calls refused (409 run_killed), audited.
        Through TETHER_URL (with an admin TETHER_API_KEY), else on the local store, which
        every running server watches."""
        with errors(), opened(database_url) as be:
            out = kill_run(be, run_id, reason)
        if as_json:
            print_json(out)
        else:
            console.print(f"killed {run_id}: {reason}", highlight=False)
