"""`tether keys create|list|rotate|revoke`: API keys, on the backend of cli/client.py (a running
server's /api/v1/keys with TETHER_URL, else the local store). `keys create` on a local store
creates and migrates it: that is how the first key is made, before any key can call the API."""

from __future__ import annotations

import getpass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from tether.cli.client import Local, opened
from tether.cli.output import DB_OPTION, console, errors, fail, print_json
from tether.core.durations import parse_duration


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def register(app: typer.Typer) -> None:
    keys = typer.Typer(help="API keys: create, list, rotate, revoke.", no_args_is_help=True)
    app.add_typer(keys, name="keys")

    @keys.command("create")
    def create(
        scopes: str = typer.Option(..., help="Comma-separated: admin, ingest, agent, read."),
        agent: str = typer.Option(None, help="The agent this key speaks for (agent scope)."),
        name: str = typer.Option(None, help="A label to tell keys apart."),
        as_json: bool = typer.Option(False, "--json", help='Print {"id", "key"} as JSON.'),
        expires_in: str = typer.Option(
            None, "--expires-in", help="A lifetime (90s, 15m, 1h, 30d, 2w): refused after it."
        ),
        secret_file: Path = typer.Option(
            None,
            "--secret-file",
            help="Import the secret in this "
            "file (e.g. a mounted Kubernetes Secret) into the local "
            "store; a no-op when it is already a key.",
        ),
        database_url: str = DB_OPTION,
    ) -> None:
        """Create a key. The secret is printed this once; tether keeps only its hash."""
        imported = _read_secret(secret_file) if secret_file is not None else None
        with errors(), opened(database_url, create=True) as be:
            lifetime = parse_duration(expires_in, what="--expires-in") if expires_in else None
            if isinstance(be, Local):
                from tether.store import keys as key_store

                if imported is not None and (
                    known := key_store.find_by_hash_of(be.engine, imported)
                ):
                    console.print(f"{known} already holds the secret in {secret_file}: nothing "
                                  "to do", highlight=False)  # fmt: skip
                    return
                key, secret = key_store.create_key(
                    be.engine, scopes=scopes, agent=agent, name=name, actor=_actor(),
                    secret=imported, expires_in=lifetime,
                )  # fmt: skip
                if imported is not None:
                    console.print(f"imported [bold]{key.id}[/] scopes={','.join(key.scopes)} "
                                  f"from {secret_file}", highlight=False)  # fmt: skip
                    return
                made: dict[str, Any] = {**_view(be, key), "key": secret}
            elif imported is not None:
                fail(
                    "--secret-file imports into the local store: unset TETHER_URL and pass "
                    "--database-url (the migration Job does)",
                    2,
                )
            else:
                body = {"scopes": scopes.split(","), "agent": agent, "name": name,
                        "expires_in": expires_in}  # fmt: skip
                made = be.request("POST", "/api/v1/keys", json=body)
        if as_json:
            print_json({"id": made["id"], "key": made["key"]})
            return
        console.print(f"created [bold]{made['id']}[/] scopes={','.join(made['scopes'])}"
                      + (f" agent={made['agent']}" if made.get("agent") else ""),
                      highlight=False)  # fmt: skip
        if made.get("expires_at"):
            console.print(f"expires {_when(made['expires_at'])} UTC", highlight=False)
        console.print(made["key"], highlight=False, soft_wrap=True)
        console.print("[yellow]store the secret now: it is not shown again[/]")

    @keys.command("rotate")
    def rotate(
        key_id: str = typer.Argument(..., help="The key's id (key_…)."),
        overlap: str = typer.Option(
            "1h", help="How long the old key keeps working (90s, 15m, 1h, 1d; 0s: not at all)."
        ),
        expires_in: str = typer.Option(
            None, "--expires-in", help="The new key's lifetime (default: the old key's)."
        ),
        as_json: bool = typer.Option(
            False, "--json", help='Print {"id", "key", "old": {...}} as JSON.'
        ),
        database_url: str = DB_OPTION,
    ) -> None:
        """Rotate a key: a new key with the same scopes and agent now; the old one keeps working
        until the overlap ends, then is refused (401 key_expired). Audited."""
        with errors(), opened(database_url) as be:
            if isinstance(be, Local):
                from tether.store import keys as key_store

                new, secret, old = key_store.rotate_key(
                    be.engine, key_id, overlap=parse_duration(overlap, what="--overlap"),
                    actor=_actor(),
                    expires_in=parse_duration(expires_in, what="--expires-in")
                    if expires_in else None,
                )  # fmt: skip
                made: dict[str, Any] = {**_view(be, new), "key": secret}
                before: dict[str, Any] = _view(be, old)
            else:
                body = {"overlap": overlap, "expires_in": expires_in}
                out = be.request("POST", f"/api/v1/keys/{key_id}/rotate", json=body)
                made, before = out["new"], out["old"]
        if as_json:
            print_json({"id": made["id"], "key": made["key"], "old": before})
            return
        until = _when(before["expires_at"])
        console.print(f"rotated [bold]{key_id}[/] -> [bold]{made['id']}[/]; {key_id} keeps "
                      f"working until {until} UTC", highlight=False)  # fmt: skip
        console.print(made["key"], highlight=False, soft_wrap=True)
        console.print("[yellow]store the secret now and switch to it before the overlap ends[/]")

    @keys.command("list")
    def list_(
        include_revoked: bool = typer.Option(False, "--all", help="Include revoked keys."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
        database_url: str = DB_OPTION,
    ) -> None:
        """List keys (never their secrets)."""
        with errors(), opened(database_url) as be:
            if isinstance(be, Local):
                from tether.store import keys as key_store

                found = key_store.list_keys(be.engine, include_revoked=include_revoked)
                items: list[dict[str, Any]] = [_view(be, k) for k in found]
            else:
                params = {"include_revoked": "true"} if include_revoked else {}
                items = be.request("GET", "/api/v1/keys", params=params)["items"]
        if as_json:
            print_json({"items": items, "next_cursor": None})
            return
        table = Table("id", "name", "prefix", "scopes", "agent", "created", "age", "expires",
                      "status", "last used", "revoked")  # fmt: skip
        for k in items:
            table.add_row(
                k["id"], k["name"] or "", k["prefix"] + "…", ",".join(k["scopes"]),
                k["agent"] or "", _when(k["created_at"]), _age(k.get("age_s")),
                _when(k.get("expires_at")), _STATUS.get(k.get("status") or "", ""),
                _when(k["last_used_at"]), _when(k["revoked_at"]),
            )  # fmt: skip
        console.print(table if items else "no API keys yet: `tether keys create --scopes admin`")

    @keys.command("revoke")
    def revoke(
        key_id: str = typer.Argument(..., help="The key's id (key_…)."),
        database_url: str = DB_OPTION,
    ) -> None:
        """Revoke a key; servers stop accepting it within seconds."""
        with errors(), opened(database_url) as be:
            if isinstance(be, Local):
                from tether.store import keys as key_store

                key_store.revoke_key(be.engine, key_id, actor=_actor())
            else:
                be.request("DELETE", f"/api/v1/keys/{key_id}")
        console.print(f"revoked {key_id}", highlight=False)


_STATUS = {"ok": "ok", "rotate_soon": "[yellow]rotate soon[/]", "rotating": "rotating out",
           "expired": "[red]expired[/]", "too_old": "[red]too old: rotate[/]",
           "revoked": "revoked"}  # fmt: skip


def _view(be: Local, key: Any) -> dict[str, Any]:
    from tether.store import keys as key_store

    policy = be.settings.keys
    return key_store.view(key, now=datetime.now(UTC), max_age_days=policy.max_age_days,
                          warn_days=policy.warn_days)  # fmt: skip


def _age(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds >= 86400:
        return f"{seconds / 86400:.0f}d"
    return f"{seconds / 3600:.1f}h" if seconds >= 3600 else f"{seconds / 60:.0f}m"


def _read_secret(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError as exc:
        fail(f"{path}: cannot read the key secret ({exc.strerror}); mount the Secret there", 2)


def _when(value: str | None) -> str:
    return datetime.fromisoformat(value).strftime("%Y-%m-%d %H:%M") if value else ""
