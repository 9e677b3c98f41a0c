"""`tether demo`'s MCP tour in a real browser (Playwright, Debian's headless Chromium): the demo
serves its own tether, an agent goes through /mcp with tether's demo MCP server, and the console
then shows the registry with tags, annotations and systems, the rug pull and its re-approval in
the audit log, the held email to the page's address, and the run's provenance."""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port
from tests.processes import Spawned
from tests.ui.test_console_browser import ARGS, CHROMIUM

pytestmark = [pytest.mark.browser, pytest.mark.slow]
playwright_api = pytest.importorskip("playwright.sync_api")
if not os.path.exists(CHROMIUM):
    pytest.skip("Debian's chromium is missing: `make chromium`", allow_module_level=True)
SHOTS = os.environ.get("TETHER_SCREENSHOTS")
DEMO_TIMEOUT_S = 600.0  # the whole tour, on a loaded machine


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    home = tmp_path_factory.mktemp("demo")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
    env.update(TETHER_HOME=str(home), TETHER_LOG_LEVEL="warning", COLUMNS="200")
    proc = Spawned([sys.executable, "-m", "tether.cli.main", "demo", "--pace", "0", "--port",
                    str(port)], env=env, log_path=home / "demo.log")  # fmt: skip
    try:
        deadline = time.monotonic() + DEMO_TIMEOUT_S
        while "serving until Ctrl-C" not in proc.output():
            assert proc.proc.poll() is None, f"tether demo exited:\n{proc.output()}"
            assert time.monotonic() < deadline, f"the demo did not finish:\n{proc.output()}"
            time.sleep(0.5)
        found = re.search(r"demo admin key: (tth_\S+)", proc.output())
        assert found, proc.output()
        yield f"http://127.0.0.1:{port}", found.group(1)
    finally:
        proc.stop()


def test_the_demos_mcp_tour_in_the_console(demo: tuple[str, str], tmp_path: Path) -> None:
    url, admin = demo
    shots = Path(SHOTS) if SHOTS else tmp_path
    api = httpx.Client(base_url=url + "/api/v1", headers={"Authorization": f"Bearer {admin}"})
    [run] = api.get("/runs", params={"agent": "mcp-support"}).json()["items"]
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        ctx = browser.new_context(viewport={"width": 1500, "height": 950}, color_scheme="light")
        page = ctx.new_page()
        page.set_default_timeout(15_000)
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto(url + "/")
        page.get_by_label("API key").fill(admin)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(url + "/")

        page.goto(url + "/tools")
        row = page.locator("tr").filter(has_text="demo.fetch_page")
        text = row.inner_text()
        assert "approved" in text and "untrusted" in text and "ingress" in text
        assert "read-only" in text and "open world" in text and "system demo" in text
        assert "Follows redirects" in text  # re-approved at its new description
        send = page.locator("tr").filter(has_text="demo.send_email").inner_text()
        assert "destructive" in send and "irreversible" in send and "egress" in send
        page.screenshot(path=str(shots / "demo-tools.png"), full_page=True)

        page.goto(url + "/audit")
        audit = page.inner_text("main")
        assert "tool.changed" in audit and "tool.approved" in audit

        page.goto(url + f"/runs/{run['id']}")
        page.get_by_role("heading", name="Taint and provenance").wait_for()
        prov = page.locator("#provenance").inner_text()
        assert "attacker@evil.example" in prov and "demo.fetch_page" in prov
        main = page.inner_text("main")
        assert "demo.delete_record" in main and "demo.send_email" in main
        page.screenshot(path=str(shots / "demo-run.png"), full_page=True)

        page.goto(url + "/approvals")
        held = page.inner_text("main")
        # the email to the page's address, denied by a person; the run-scoped approval
        assert "demo.send_email" in held and "prompt injection on the page" in held
        page.screenshot(path=str(shots / "demo-approvals.png"), full_page=True)
        ctx.close()
        browser.close()
    api.close()
    assert errors == [], errors
