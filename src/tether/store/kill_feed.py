"""The push side of the kill log on PostgreSQL: a kill NOTIFYs `tether_kills` in its own
transaction (delivered on commit, never for a kill that rolled back), and `listen` hands each
one to a callback as it arrives, so a kill reaches every replica's streams in milliseconds.

SQLite has no such channel: there the kill switch keeps polling the log (store/kills.py).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

from sqlalchemy import Connection, Engine, text

CHANNEL = "tether_kills"
# NOTIFY payloads are limited to 8000 bytes; a reason longer than this is cut in the message
# only (the log keeps it whole)
MAX_REASON = 1000


def notify_in(conn: Connection, run_id: str, reason: str) -> None:
    """Announces a kill in the caller's transaction (a no-op off PostgreSQL)."""
    if conn.dialect.name != "postgresql":
        return
    payload = json.dumps({"run_id": run_id, "reason": reason[:MAX_REASON]})
    conn.execute(text("SELECT pg_notify(:channel, :payload)"),
                 {"channel": CHANNEL, "payload": payload})  # fmt: skip


def parse(payload: str) -> tuple[str, str] | None:
    """(run_id, reason) of a notification, None for one that is not a kill of ours."""
    try:
        doc = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("run_id"), str):
        return None
    reason = doc.get("reason")
    return doc["run_id"], reason if isinstance(reason, str) and reason else "killed"


def supported(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


def conninfo(engine: Engine) -> str:
    """The libpq URL of `engine` (its options, e.g. a search_path, included)."""
    return engine.url.set(drivername="postgresql").render_as_string(hide_password=False)


async def listen(
    engine: Engine, on_kill: Callable[[str, str], None], on_ready: Callable[[], Awaitable[None]]
) -> None:
    """LISTENs on a connection of its own and calls `on_kill(run_id, reason)` per kill until
    cancelled; `on_ready` runs once LISTEN is in place. Raises ConnectionError when the
    connection fails or ends (the caller falls back to polling and calls again)."""
    import psycopg

    try:
        async with await psycopg.AsyncConnection.connect(conninfo(engine),
                                                         autocommit=True) as conn:  # fmt: skip
            await conn.execute(f"LISTEN {CHANNEL}")
            await on_ready()
            async for note in conn.notifies():
                found = parse(note.payload)
                if found is not None:
                    on_kill(*found)
    except (psycopg.Error, OSError) as exc:
        raise ConnectionError(f"the {CHANNEL} listener lost its connection: {exc}") from exc
    raise ConnectionError(f"the {CHANNEL} listener's connection closed")
