"""The console's memory pages on SQLite and PostgreSQL: namespaces, a namespace's writes with
provenance links, grants from policies, who read what; the empty state."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import Engine

from tests.store.test_episodes import _run
from tests.ui.test_console import login
from tether.config import load_settings
from tether.core.memory import Access
from tether.server.app import create_app
from tether.store import memory as memory_store
from tether.store.keys import create_key
from tether.store.policies import apply_policy

NOW = datetime.now(UTC)


def test_memory_pages(db: Engine, tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path / "home", database_url=str(db.url))
    _, secret = create_key(db, scopes="read", name="reader")
    with TestClient(create_app(settings, engine=db), follow_redirects=False) as client:
        login(client, secret)
        empty = client.get("/memory")
        assert empty.status_code == 200 and "No memories yet" in empty.text
        support = Access("support", "support")
        memory_store.write(db, support, namespace=None, text="customer 42 <b>prefers</b> email",
                           embedding=[1.0, 0.0], now=NOW, actor="key:k1(support)",
                           run_id="run_console_mem_1", key="contact:42")  # fmt: skip
        memory_store.search(db, support, vector=[1.0, 0.0], now=NOW, actor="key:k1(support)",
                            run_id="run_console_mem_2")  # fmt: skip
        apply_policy(db, "agent: billing\nmemory:\n  read_grants: [support]\n", "test", NOW)
        overview = client.get("/memory")
        assert 'href="/memory/support"' in overview.text
        assert "billing · read" in overview.text
        page = client.get("/memory/support")
        assert page.status_code == 200
        assert "customer 42 &lt;b&gt;prefers&lt;/b&gt; email" in page.text  # escaped, not HTML
        assert 'href="/runs/run_console_mem_1"' in page.text  # provenance link
        assert 'href="/runs/run_console_mem_2"' in page.text  # who read it
        assert "billing</a> may <strong>read</strong>" in page.text
        assert client.get("/memory/nobody").status_code == 404
        _run(db, "run_console_mem_1", "support", "remember gina")
        _run(db, "run_console_mem_2", "support", "look gina up")
        wrote = client.get("/runs/run_console_mem_1")
        assert wrote.status_code == 200 and 'id="mem-h"' in wrote.text
        assert "1 written · 0 searches" in wrote.text and "contact:42" in wrote.text
        read = client.get("/runs/run_console_mem_2")
        assert "0 written · 1 searches" in read.text and "→ 1 memories" in read.text
        _run(db, "run_console_no_mem", "support", "nothing to do with memory")
        assert 'id="mem-h"' not in client.get("/runs/run_console_no_mem").text
        assert client.get("/memory/bad%20name!").status_code == 400
