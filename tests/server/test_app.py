"""create_app: what a started server holds in memory before anyone uses a feature."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sqlalchemy import Engine

# Loaded on first use only: the MCP SDK (~25 MB of RSS; the first /mcp request when no upstream
# is configured), Alembic (an upgrade to run), psycopg (a PostgreSQL database).
LAZY = ("mcp", "alembic", "mako", "psycopg", "psycopg_pool")

SCRIPT = """
import sys
from fastapi.testclient import TestClient
from tether.config import load_settings
from tether.server.app import create_app
from tether.store.migrate import upgrade
from tether.store.engine import make_engine

url, home = sys.argv[1], sys.argv[2]
upgrade(make_engine(url))
with TestClient(create_app(load_settings(home=home, database_url=url))) as client:
    assert client.get("/readyz").status_code == 200
    tools = client.get("/api/v1/tools", headers={"Authorization": "Bearer " + sys.argv[3]})
    assert "memory.search" in tools.text, tools.text  # registered without the SDK
    print(sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv[4].split(","))))
"""


def test_a_sqlite_server_starts_without_the_mcp_sdk_alembic_or_psycopg(
    sqlite_db: Engine, tmp_path: Path
) -> None:
    from tether.store.keys import create_key

    _, secret = create_key(sqlite_db, scopes="admin")
    args = [str(sqlite_db.url), str(tmp_path / "home"), secret, ",".join(LAZY)]
    done = subprocess.run([sys.executable, "-c", SCRIPT, *args], capture_output=True, text=True,
                          timeout=180)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"
