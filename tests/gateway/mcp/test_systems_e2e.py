"""`systems:` through the real /mcp gateway and the official MCP client: tools touch the systems
`tether.yaml` gives them (else their server's), and an agent may read only in its read or write
systems and write only in its write systems, whatever its tool rules allow; a tool outside is
neither listed nor callable, and the denial names the system and the policy's grants."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import mcp_types as types
import pytest
import yaml

from tests.conftest import ServerProcess
from tests.gateway.mcp.conftest import mcp_client
from tether.store.engine import make_engine
from tether.store.keys import create_key
from tether.store.migrate import upgrade
from tether.store.policies import apply_policy

pytestmark = pytest.mark.slow

POLICY = """\
agent: bounded
systems: {read: [crm, demo], write: [crm.records]}
tools:
  - {match: "demo.*", allow: true}
on_uncertain: deny
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, str]]:
    base = tmp_path_factory.mktemp("systems")
    db_url = f"sqlite:///{base / 'tether.db'}"
    engine = make_engine(db_url)
    upgrade(engine)
    apply_policy(engine, POLICY, "test", datetime.now(UTC))
    key = create_key(engine, scopes="agent", agent="bounded")[1]
    engine.dispose()
    config = base / "tether.yaml"
    config.write_text(yaml.safe_dump({"mcp_servers": [{
        "name": "demo", "command": [sys.executable, "-m", "tether.gateway.mcp.demo_server"],
        "tags": {"fetch_page": ["untrusted"]},
        "systems": {"lookup_customer": ["crm.customers"], "delete_record": ["crm.records"],
                    "send_email": ["mail.outbox"]},
    }]}))  # fmt: skip
    server = ServerProcess(base / "home", db_url, config=config)
    try:
        yield server, key
    finally:
        server.stop()


def text(result: types.CallToolResult) -> str:
    return "\n".join(b.text for b in result.content if isinstance(b, types.TextContent))


async def test_reads_and_writes_inside_the_systems_pass_outside_are_denied(
    served: tuple[ServerProcess, str],
) -> None:
    server, key = served
    run_id = "run_" + uuid.uuid4().hex[:20]
    async with mcp_client(server.url, key, run_id) as client:
        listed = {t.name for t in (await client.list_tools()).tools}
        assert {"demo.lookup_customer", "demo.fetch_page", "demo.delete_record"} <= listed
        assert "demo.send_email" not in listed  # writes to mail.outbox: not its system
        read = await client.call_tool("demo.lookup_customer", {"email": "ada@example.com"})
        assert not read.is_error and "Ada Lovelace" in text(read)  # crm covers crm.customers
        page = await client.call_tool("demo.fetch_page", {"url": "https://x.example"})
        assert not page.is_error  # no systems configured: the server's, `demo`
        wrote = await client.call_tool("demo.delete_record", {"table": "customers", "id": "7"})
        assert not wrote.is_error and "deleted customers/7" in text(wrote)  # crm.records: write
        refused = await client.call_tool(
            "demo.send_email", {"to": "ada@example.com", "subject": "hi", "body": "x"}
        )
    assert refused.is_error
    decision = (refused.structured_content or {})["tether"]
    assert (decision["decision"], decision["rule"]) == ("deny", "systems.write")
    assert decision["reason"] == (
        "demo.send_email writes to mail.outbox, outside this policy's systems.write "
        "(crm.records); add the system under `systems: write:` if the agent may"
    )
    shown = subprocess.run([sys.executable, "-m", "tether.cli.main", "tools", "show",
                            "demo.lookup_customer", "--json"], env=server.env,
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    assert json.loads(shown.stdout)["systems"] == ["crm.customers"]
