"""The red-team pages in a real browser (Playwright, Debian's headless Chromium) against a
`tether serve` subprocess: from the nav to the list, then a report; screenshots of both."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.conftest import ServerProcess
from tests.ui.redteam_seed import seed_report
from tests.ui.test_console_browser import ARGS, CHROMIUM
from tether.store.engine import make_engine
from tether.store.keys import create_key
from tether.store.migrate import upgrade

pytestmark = pytest.mark.browser
playwright_api = pytest.importorskip("playwright.sync_api")
if not os.path.exists(CHROMIUM):
    pytest.skip("Debian's chromium is missing: `make chromium`", allow_module_level=True)
SHOTS = os.environ.get("TETHER_SCREENSHOTS")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[ServerProcess, str, str]]:
    db_url = f"sqlite:///{tmp_path / 'tether.db'}"
    engine = make_engine(db_url)
    upgrade(engine)
    now = datetime.now(UTC)
    seed_report(engine, agent="billing", now=now - timedelta(days=120))
    rid = seed_report(engine, agent="support", now=now)
    _, reader = create_key(engine, scopes="read", name="viewer")
    engine.dispose()
    server = ServerProcess(tmp_path / "home", db_url)
    try:
        yield server, reader, rid
    finally:
        server.stop()


def test_red_team_report_in_a_browser(served: tuple[ServerProcess, str, str],
                                      tmp_path: Path) -> None:  # fmt: skip
    server, reader, rid = served
    shots = Path(SHOTS) if SHOTS else tmp_path
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        ctx = browser.new_context(viewport={"width": 1400, "height": 900}, color_scheme="light")
        page = ctx.new_page()
        page.set_default_timeout(15_000)
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(server.url + "/")
        page.get_by_label("API key").fill(reader)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(server.url + "/")
        page.get_by_role("link", name="Red team", exact=True).first.click()
        page.get_by_role("heading", name="Red-team reports").wait_for()
        assert "120 d old" in page.inner_text("main")
        page.screenshot(path=str(shots / "redteam.png"), full_page=True)
        page.locator(f'a[href="/redteam/{rid}"]').click()
        page.get_by_role("heading", name="Attack success per pack").wait_for()
        main = page.inner_text("main")
        assert "payments.transfer[1]" in main and "argument_from: untrusted" in main
        page.screenshot(path=str(shots / "redteam_report.png"), full_page=True)
        ctx.close()
        browser.close()
    assert errors == [], errors
