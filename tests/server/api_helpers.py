"""Shared pieces of the REST API tests: an app on the `db` fixture and a few keys."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi.testclient import TestClient
from sqlalchemy import Engine

from tether.config import Settings
from tether.server.app import create_app
from tether.store.keys import create_key


@dataclass
class Api:
    client: TestClient
    db: Engine
    admin: dict[str, str]
    read: dict[str, str]
    triage: dict[str, str]  # an agent key for agent "triage"

    def key(self, scopes: str, agent: str | None = None) -> dict[str, str]:
        _, secret = create_key(self.db, scopes=scopes, agent=agent)
        return {"Authorization": f"Bearer {secret}"}


def make_api(settings: Settings, db: Engine) -> Api:
    app = create_app(settings, engine=db)
    client = TestClient(app, raise_server_exceptions=True)
    api = Api(client, db, {}, {}, {})
    api.admin = api.key("admin")
    api.read = api.key("read")
    api.triage = api.key("agent,ingest", agent="triage")
    return api
