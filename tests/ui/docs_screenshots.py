"""Regenerates the README's console screenshots (light mode, 1400x900) from seeded data:

    .venv/bin/python -m tests.ui.docs_screenshots docs/

Writes console-home.png, console-run.png, console-approvals.png and console-costs.png.
"""

from __future__ import annotations

import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from playwright.sync_api import sync_playwright

from tests.conftest import ServerProcess
from tests.ui.seed import seed
from tests.ui.test_console_browser import ARGS, CHROMIUM
from tether.store import runs as run_store
from tether.store.engine import make_engine
from tether.store.keys import create_key
from tether.store.migrate import upgrade


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        db_url = f"sqlite:///{Path(tmp) / 'tether.db'}"
        engine = make_engine(db_url)
        upgrade(engine)
        data = seed(engine, datetime.now(UTC), days=14, per_day=9)
        _, admin = create_key(engine, scopes="admin", name="ops-admin")
        done, _ = run_store.list_runs(
            engine, run_store.RunFilters(agent="invoice-triage", status="succeeded"), limit=50
        )
        run = max(done, key=lambda r: r["span_count"])
        engine.dispose()
        server = ServerProcess(Path(tmp) / "home", db_url)
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
                page = browser.new_page(viewport={"width": 1400, "height": 900},
                                        color_scheme="light")  # fmt: skip
                page.goto(server.url + "/login")
                page.get_by_label("API key").fill(admin)
                page.get_by_role("button", name="Sign in").click()
                page.wait_for_url(server.url + "/")
                page.locator(".chart canvas").first.wait_for()
                page.screenshot(path=str(out / "console-home.png"))
                page.goto(f"{server.url}/runs/{run['id']}")
                llm = page.locator("details.span-row").filter(has_text="chat gpt-4o-mini").first
                llm.locator("summary").click()
                llm.get_by_text("Tokens in / out").wait_for()
                page.screenshot(path=str(out / "console-run.png"))
                page.goto(f"{server.url}/approvals")
                page.locator(f"#{data.approval_id}").wait_for()
                page.screenshot(path=str(out / "console-approvals.png"))
                page.goto(f"{server.url}/costs?group=agent&window=14d")
                page.locator(".chart canvas").first.wait_for()
                page.screenshot(path=str(out / "console-costs.png"))
                browser.close()
        finally:
            server.stop()
    print(f"wrote {out}/console-{{home,run,approvals,costs}}.png")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs"))
