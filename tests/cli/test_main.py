"""The root command loads its groups lazily: `tether --help` lists every command without
importing the store, the server or the SDK, and each lazy entry is the command it names."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading

import pytest
import typer

from tether.cli.lazy import load
from tether.cli.main import COMMANDS, app

HEAVY = ("sqlalchemy", "fastapi", "starlette", "alembic", "opentelemetry", "tether.store",
         "tether.server", "tether.gateway", "tether.sdk", "tether.config", "tether._settings",
         "pydantic", "rich", "yaml", "pygments", "mcp", "uvicorn", "httpx", "httpcore", "h11",
         "anyio", "importlib.metadata")  # fmt: skip

PROBE = """
import contextlib, io, sys
sys.argv = ["tether", *sys.argv[1:]]
from tether.cli import main
out = io.StringIO()
with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
    main()
print(out.getvalue())
print("LOADED", " ".join(sorted(m for m, mod in sys.modules.items()
                                if mod is not None and m.startswith(HEAVY))))
"""


def _probe(*args: str, env: dict[str, str] | None = None) -> tuple[str, set[str]]:
    code = f"HEAVY = {HEAVY!r}\n" + PROBE
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=120, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    text, _, loaded = done.stdout.rpartition("LOADED")
    return text, set(loaded.split())


def test_help_lists_every_command_and_imports_none_of_them() -> None:
    text, loaded = _probe("--help")
    flat = " ".join(text.split())  # the help wraps to the terminal's width
    for name, (_, summary) in COMMANDS.items():
        assert f"{name} {summary}" in flat
    assert "version" in text
    assert loaded == set()


def test_a_command_imports_what_it_uses_only() -> None:
    _, loaded = _probe("policy", "--help")
    assert "tether.store" not in loaded and "sqlalchemy" not in loaded


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_each_lazy_entry_is_the_command_it_names(name: str) -> None:
    module, summary = COMMANDS[name]
    cmd = load(name, module)
    assert cmd.name == name
    # the summary says what the command's own help says (its first words)
    own = (cmd.help or "").split("\n")[0]
    first = " ".join(summary.split()[:3]).rstrip(".:,")
    assert own.startswith(first), (own, summary)


def test_the_root_has_the_lazy_commands() -> None:
    group = typer.main.get_command(app)
    assert set(COMMANDS) <= set(group.list_commands(None))  # type: ignore[attr-defined, arg-type]


class _Runs(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"items": [], "next_cursor": None}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_a_remote_json_read_loads_no_store_no_server_no_yaml() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Runs)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env = {**os.environ, "TETHER_URL": f"http://127.0.0.1:{server.server_port}",
               "TETHER_API_KEY": "k"}  # fmt: skip
        env.pop("TETHER_CONFIG", None)
        text, loaded = _probe("runs", "list", "--json", env=env)
    finally:
        server.shutdown()
    assert json.loads(text) == {"items": [], "next_cursor": None}
    # TETHER_URL decides the backend: not even the settings model (pydantic-settings), nothing
    # of the store or the server, no Rich for a `--json` read, no httpx (the standard library's
    # HTTP client does), no pydantic (typer's own coercion of the options)
    assert loaded == {"tether.config"}


RUN = {"id": "run_1", "agent": "triage", "version": "v2", "status": "failed", "task_id": "T-1",
       "user": "alice", "cost_usd": 0.0123, "started_at": "2026-12-01T10:00:00+00:00",
       "duration_ms": 1500.0, "input_tokens": 10, "output_tokens": 5}  # fmt: skip


class _OneRun(_Runs):
    def do_GET(self) -> None:
        assert self.path.startswith("/api/v1/runs?"), self.path
        assert "limit=5" in self.path and "sort=-cost" in self.path, self.path
        body = json.dumps({"items": [RUN], "next_cursor": None}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_a_remote_table_loads_rich_and_nothing_else_heavy() -> None:
    # the import budget of `tether runs list` on a server (<= 300 ms, bench/startup.py), kept
    # structurally: options given on the command line still read without pydantic
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _OneRun)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env = {**os.environ, "TETHER_URL": f"http://127.0.0.1:{server.server_port}",
               "TETHER_API_KEY": "k", "COLUMNS": "200"}  # fmt: skip
        env.pop("TETHER_CONFIG", None)
        text, loaded = _probe("runs", "list", "--limit", "5", "--sort", "-cost", env=env)
    finally:
        server.shutdown()
    assert "run_1" in text and "triage" in text and "$0.0123" in text and "1.5s" in text
    assert {m for m in loaded if m.split(".")[0] != "rich"} == {"tether.config"}, loaded


def test_serve_listens_before_it_imports_the_server() -> None:
    # what `tether serve` imports before its socket listens (server/starting.py builds the
    # app behind it): no store, no FastAPI, no MCP SDK, no migrations
    code = (
        f"HEAVY = {HEAVY!r}\n"
        + """
import sys
from tether.cli import serve
from tether.config import load_settings
from tether.server.starting import Starting
app = Starting(lambda: serve.build_app(load_settings(), migrate=True))
print("LOADED", " ".join(sorted(m for m in sys.modules if m.startswith(HEAVY))))
"""
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    loaded = set(done.stdout.rpartition("LOADED")[2].split())
    assert not loaded & {"sqlalchemy", "fastapi", "starlette", "alembic", "tether.store",
                         "tether.server.app", "mcp", "tether.gateway"}, loaded  # fmt: skip
