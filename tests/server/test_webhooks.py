"""Approval webhooks: a new hold is announced to a generic JSON hook and a Slack-compatible one;
a dead hook is counted and never blocks or breaks the decision."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from tests.conftest import free_port
from tether.config import Settings, load_settings
from tether.server.app import create_app
from tether.store import policies
from tether.store.keys import create_key

POLICY = "agent: triage\ntools:\n  - {match: 'mail.send', approval: required}\n"


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[tuple[str, dict[str, Any]]]]]:
    got: list[tuple[str, dict[str, Any]]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            got.append((self.path, json.loads(body)))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", got
    httpd.shutdown()
    httpd.server_close()


def test_hold_is_announced_to_json_and_slack_hooks(
    tmp_path: Any, sqlite_db: Engine, receiver: tuple[str, list[tuple[str, dict[str, Any]]]]
) -> None:
    url, got = receiver
    dead = f"http://127.0.0.1:{free_port()}/hook"
    settings: Settings = load_settings(
        home=tmp_path / "home", database_url=str(sqlite_db.url), public_url="https://tether.example",
        webhooks=[{"url": url + "/json"}, {"url": url + "/slack", "format": "slack"},
                  {"url": dead}],
    )  # fmt: skip
    policies.apply_policy(sqlite_db, POLICY, "test", datetime.now(UTC))
    key = create_key(sqlite_db, scopes="agent", agent="triage")[1]
    with TestClient(create_app(settings, engine=sqlite_db)) as client:
        r = client.post("/api/v1/decide", json={"tool": "mail.send", "run_id": "run_w",
                                                "arguments": {"to": "ada@example.com"}},
                        headers={"Authorization": f"Bearer {key}"})  # fmt: skip
        assert r.json()["decision"] == "approval_required"
        state = client.app.state.tether  # type: ignore[attr-defined]
        deadline = time.monotonic() + 10
        while state.webhooks.sent + state.webhooks.failed < 3:
            assert time.monotonic() < deadline, state.webhooks.stats()
            time.sleep(0.02)
    assert state.webhooks.stats() == {"sent": 2, "failed": 1}
    bodies = dict(got)
    generic = bodies["/json"]
    assert generic["type"] == "approval.requested"
    assert generic["approval"]["id"] == r.json()["approval_id"]
    assert generic["approval"]["arguments"] == {"to": "ada@example.com"}
    assert generic["url"] == f"https://tether.example/approvals/{r.json()['approval_id']}"
    slack = bodies["/slack"]
    assert "mail.send" in slack["text"] and r.json()["approval_id"] in slack["text"]
    assert slack["blocks"][0]["type"] == "section"
    assert any("tether approvals approve" in str(b) for b in slack["blocks"])


def test_a_failing_hook_is_logged_without_its_secret_path(
    tmp_path: Any, sqlite_db: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    class Refuse(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(500)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    secret_url = f"http://127.0.0.1:{httpd.server_address[1]}/services/T0/B0/SECRET123"
    settings = load_settings(home=tmp_path / "h", database_url=str(sqlite_db.url),
                             webhooks=[{"url": secret_url, "format": "slack"}])  # fmt: skip
    policies.apply_policy(sqlite_db, POLICY, "test", datetime.now(UTC))
    key = create_key(sqlite_db, scopes="agent", agent="triage")[1]
    try:
        with TestClient(create_app(settings, engine=sqlite_db)) as client:
            client.post("/api/v1/decide", json={"tool": "mail.send", "run_id": "run_s"},
                        headers={"Authorization": f"Bearer {key}"})  # fmt: skip
            state = client.app.state.tether  # type: ignore[attr-defined]
            deadline = time.monotonic() + 10
            while state.webhooks.failed < 1:
                assert time.monotonic() < deadline
                time.sleep(0.02)
    finally:
        httpd.shutdown()
        httpd.server_close()
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "answered HTTP 500" in logged and "SECRET123" not in logged
