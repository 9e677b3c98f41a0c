"""`tether memory namespaces|list|search|forget`: agent memory on the backend of cli/client.py.
Search embeds the query, so it needs a running server (TETHER_URL); the rest also work on the
local store, as an operator."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import typer
from rich.table import Table

from tether.cli.client import Backend, Local, opened
from tether.cli.output import DB_OPTION, console, errors, print_json
from tether.core.errors import BadRequestError


def namespaces(be: Backend) -> dict[str, Any]:
    if isinstance(be, Local):
        from tether.store import memory as store

        items = [s.to_dict() for s in store.namespace_stats(be.engine)]
        return {"items": items, "index": "local store", "own": None}
    out: dict[str, Any] = be.request("GET", "/api/v1/memory/namespaces")
    return out


def list_memories(be: Backend, namespace: str, limit: int, key_prefix: str | None) -> list[Any]:
    if isinstance(be, Local):
        from tether.core.memory import Access
        from tether.store import memory as store

        ops = Access(None, None)
        now = datetime.now(UTC)
        rows = store.list_memories(
            be.engine, ops, namespace=namespace, now=now, key_prefix=key_prefix, limit=limit
        )
        return [m.to_dict() for m in rows]
    params: dict[str, Any] = {"limit": limit, **({"key_prefix": key_prefix} if key_prefix else {})}
    items: list[Any] = be.request("GET", f"/api/v1/memory/namespaces/{namespace}/memories",
                                  params=params)["items"]  # fmt: skip
    return items


def search(be: Backend, query: str, namespaces_: list[str] | None, k: int) -> list[Any]:
    if isinstance(be, Local):
        raise BadRequestError(
            "memory search embeds the query through a running tether: set TETHER_URL (and "
            "TETHER_API_KEY) to use one"
        )
    body: dict[str, Any] = {"query": query, "k": k}
    if namespaces_:
        body["namespaces"] = namespaces_
    items: list[Any] = be.request("POST", "/api/v1/memory/search", json=body)["items"]
    return items


def forget(be: Backend, memory_id: str | None, run_id: str | None, user: str | None) -> list[str]:
    if isinstance(be, Local):
        import getpass

        from tether.core.memory import Access
        from tether.store import memory as store

        return store.forget(be.engine, Access(None, None), now=datetime.now(UTC),
                            actor=f"cli:{getpass.getuser()}", memory_id=memory_id, run_id=run_id,
                            user=user)  # fmt: skip
    body = {"id": memory_id, "run_id": run_id, "user": user}
    gone: list[str] = be.request("POST", "/api/v1/memory/forget", json=body)["forgotten"]
    return gone


def register(app: typer.Typer) -> None:
    mem = typer.Typer(help="Agent memory: namespaces, list, search, forget.", no_args_is_help=True)
    app.add_typer(mem, name="memory")

    @mem.command("namespaces")
    def namespaces_cmd(
        as_json: bool = typer.Option(False, "--json", help="Print the API's JSON."),
        database_url: str = DB_OPTION,
    ) -> None:
        """Memory namespaces with their size, embedder and last write."""
        with errors(), opened(database_url) as be:
            data = namespaces(be)
        if as_json:
            print_json(data)
            return
        if not data["items"]:
            console.print("no memory namespaces yet", highlight=False)
            return
        table = Table(header_style="bold")
        for col in ("namespace", "owner", "memories", "superseded", "embedder", "last write"):
            table.add_column(col, justify="right" if col in ("memories", "superseded") else "left")
        for n in data["items"]:
            table.add_row(n["name"], n["owner_agent"] or "shared", f"{n['memories']:,}",
                          f"{n['superseded']:,}", n["embedder"] or "client",
                          (n["last_write_at"] or "")[:19])  # fmt: skip
        console.print(table)

    @mem.command("list")
    def list_cmd(
        namespace: str = typer.Argument(..., help="The namespace."),
        key_prefix: str = typer.Option(None, "--key-prefix", help="Only keys starting so."),
        limit: int = typer.Option(20, min=1, max=500, help="How many memories."),
        as_json: bool = typer.Option(False, "--json", help="Print the API's JSON."),
        database_url: str = DB_OPTION,
    ) -> None:
        """The newest memories of a namespace, with the run each came from."""
        with errors(), opened(database_url) as be:
            items = list_memories(be, namespace, limit, key_prefix)
        if as_json:
            print_json({"items": items})
            return
        _table(items, score=None)

    @mem.command("search")
    def search_cmd(
        query: str = typer.Argument(..., help="What to look for, in words."),
        namespace: list[str] = typer.Option(
            None, "--namespace", "-n", help="Namespaces to search."
        ),
        k: int = typer.Option(5, min=1, max=100, help="How many memories."),
        as_json: bool = typer.Option(False, "--json", help="Print the API's JSON."),
        database_url: str = DB_OPTION,
    ) -> None:
        """Search memory as the key's agent (an admin key names the namespaces)."""
        with errors(), opened(database_url) as be:
            hits = search(be, query, list(namespace or []) or None, k)
        if as_json:
            print_json({"items": hits})
            return
        _table([h["memory"] for h in hits], score=[h["score"] for h in hits])

    @mem.command("forget")
    def forget_cmd(
        memory_id: str = typer.Argument(None, help="The memory to erase (mem_...)."),
        run: str = typer.Option(None, "--run", help="Erase everything this run wrote."),
        user: str = typer.Option(None, "--user", help="Erase this user's memories (admin)."),
        as_json: bool = typer.Option(False, "--json", help="Print the JSON reply."),
        database_url: str = DB_OPTION,
    ) -> None:
        """Erase memories by id, by source run or by user; the audit keeps a tombstone."""
        with errors(), opened(database_url) as be:
            gone = forget(be, memory_id, run, user)
        if as_json:
            print_json({"forgotten": gone})
        else:
            console.print(f"forgot {len(gone)} memories", highlight=False)


def _table(items: list[dict[str, Any]], score: list[float] | None) -> None:
    if not items:
        console.print("no memories", highlight=False)
        return
    table = Table(header_style="bold")
    if score is not None:
        table.add_column("score", justify="right")
    for col in ("id", "namespace", "key", "text", "user", "run"):
        table.add_column(col, overflow="fold" if col == "text" else "ellipsis")
    for i, m in enumerate(items):
        row = [m["id"], m["namespace"], m["key"] or "", m["text"][:120], m["user"] or "",
               m["source_run_id"] or ""]  # fmt: skip
        table.add_row(*([f"{score[i]:.3f}"] if score is not None else []), *row)
    console.print(table)
