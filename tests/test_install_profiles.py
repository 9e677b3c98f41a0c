"""`pip install tether` is the agent SDK alone: `import tether`, a traced run and a tool call work
with every package of the `server` extra made unimportable (a meta-path finder in a fresh
interpreter refuses them), and the `tether` command then says what to install."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Import names of what the `server` extra brings and the SDK's own dependencies do not.
SERVER_ONLY = [
    "alembic", "click", "fastapi", "httpx2", "jinja2", "mcp", "mcp_types", "multipart",
    "numpy", "openai", "psycopg", "python_multipart", "redis", "rich", "sqlalchemy",
    "starlette", "typer", "uvicorn",
]  # fmt: skip

BLOCKER = f"""
import importlib.abc, sys
BLOCKED = {SERVER_ONLY!r}
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None
sys.meta_path.insert(0, Blocker())
"""

SDK_RUN = """
import http.server, threading
got = []
class Sink(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["content-length"]))
        got.append((self.path, self.headers["content-type"], len(body)))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
sink = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Sink)
threading.Thread(target=sink.serve_forever, daemon=True).start()

import tether
tether.init(f"http://127.0.0.1:{sink.server_port}")

@tether.tool
def lookup(q: str) -> str:
    return q.upper()

with tether.run(agent="triage", task_id="T-1", user="ann") as run:
    assert lookup("x") == "X"
    run.set_output("done")
assert tether.flush(30), "spans were not exported"
assert tether.sdk_stats()["exported"] == 2, tether.sdk_stats()
# the tool's result also goes to /api/v1/runs/{id}/values (value provenance), in any order
assert any(g[:2] == ("/v1/traces", "application/x-protobuf") for g in got), got
leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
assert not leaked, leaked
print("sdk ok", tether.__version__)
"""


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT
    )


def test_the_sdk_works_without_the_server_extra() -> None:
    done = _python(BLOCKER + SDK_RUN)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("sdk ok ")
    assert "0+unknown" not in done.stdout  # the version comes from the installed metadata


def test_the_blocker_really_blocks() -> None:
    done = _python(BLOCKER + "import tether.server.app")
    assert done.returncode != 0 and "ModuleNotFoundError" in done.stderr


def test_the_command_says_to_install_the_server_extra() -> None:
    done = _python(BLOCKER + "from tether.cli import main; main()")
    assert done.returncode == 2, done.stderr
    assert "pip install 'tether[server]'" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_base_install_declares_no_server_package() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = {_dist(d) for d in project["dependencies"]}
    server = {_dist(d) for d in project["optional-dependencies"]["server"]}
    assert base == {
        "opentelemetry-api", "opentelemetry-sdk", "opentelemetry-exporter-otlp-proto-http",
        "opentelemetry-exporter-otlp-proto-common", "httpx", "pydantic", "pydantic-settings",
        "pyyaml",
    }  # fmt: skip
    assert {"fastapi", "sqlalchemy", "typer", "mcp", "uvicorn"} <= server
    assert project["scripts"]["tether"] == "tether.cli:main"


def _dist(requirement: str) -> str:
    for sep in "[<>=!~ ;":
        requirement = requirement.split(sep, 1)[0]
    return requirement.strip().lower()
