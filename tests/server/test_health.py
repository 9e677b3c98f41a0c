from __future__ import annotations

import httpx

from tests.conftest import ServerProcess


def test_served_process_is_healthy_and_ready(server: ServerProcess) -> None:
    assert httpx.get(server.url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(server.url + "/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ok"
    missing = httpx.get(server.url + "/api/v1/nope")
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found"
