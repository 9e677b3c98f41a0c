"""The evals, rollouts and home pages in a real browser (Playwright, Debian's headless Chromium)
against `tether serve` on SQLite: the eval list shows the gate verdict, the grid links each
attempt to its run, compare names the regression, the rollout page shows the split and the
rule's state and its Pause button works, and home shows each agent's verdict and rollout.
Screenshots land in the test's tmp dir (`shots/`)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.conftest import ServerProcess
from tests.store.evals_seed import insert_runs, record_eval, start_rollout
from tests.ui.test_console_browser import ARGS, CHROMIUM, playwright_api
from tether.core.evals import GateCriteria, gate
from tether.store import evals as eval_store
from tether.store import gates, rollouts
from tether.store.engine import make_engine
from tether.store.keys import create_key
from tether.store.migrate import upgrade

pytestmark = pytest.mark.browser
SUITE = """\
suite: refunds
agent: refund-bot
repeats: 2
tasks:
  - {id: domestic, input: a, assert: [{name: quotes the window, output_contains: within}]}
  - {id: abroad, input: b, assert: [{name: quotes the window, output_contains: within}]}
"""


@dataclass
class Site:
    server: ServerProcess
    db_url: str
    admin: str
    shots: Path


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("evals-console")
    db_url = f"sqlite:///{root / 'tether.db'}"
    db = make_engine(db_url)
    upgrade(db)
    ok = {"domestic": "refund within 14 days", "abroad": "refund within 30 days"}
    base = record_eval(db, "eval_a000000001", SUITE, "v2", ok)
    cand = record_eval(db, "eval_b000000001", SUITE, "v3", {**ok, "abroad": "refund soon"})
    crit = GateCriteria(min_success=0.85)
    gates.save_verdict(
        db, verdict_id="gate_b000000001", ev=cand, baseline=base, criteria=crit,
        verdict=gate(eval_store.core_attempts(eval_store.attempt_rows(db, cand["id"])), crit,
                     eval_store.core_attempts(eval_store.attempt_rows(db, base["id"]))),
        actor="ci", now=datetime.now(UTC),
    )  # fmt: skip
    start_rollout(db, "ro_c000000001", agent="refund-bot", baseline="v1", candidate="v2")
    now = datetime.now(UTC)
    insert_runs(
        db,
        (
            {"id": f"run_r{i}", "agent": "refund-bot", "version": "v2" if i % 4 else "v1",
             "status": "succeeded" if i % 5 else "failed", "started_at": now, "cost_nusd": 10}
            for i in range(40)
        ),
    )  # fmt: skip
    _, admin = create_key(db, scopes="admin", name="ops-admin")
    db.dispose()
    server = ServerProcess(root / "home", db_url)
    shots = root / "shots"
    shots.mkdir()
    try:
        yield Site(server, db_url, admin, shots)
    finally:
        server.stop()


@pytest.fixture
def page(site: Site) -> Iterator[object]:  # type: ignore[no-untyped-def]
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        ctx = browser.new_context(viewport={"width": 1400, "height": 900}, color_scheme="light")
        pg = ctx.new_page()
        pg.set_default_timeout(15_000)
        errors: list[str] = []
        pg.on("pageerror", lambda e: errors.append(str(e)))
        pg.goto(site.server.url + "/")
        pg.get_by_label("API key").fill(site.admin)
        pg.get_by_role("button", name="Sign in").click()
        pg.wait_for_url(site.server.url + "/")
        yield pg
        browser.close()
        assert errors == [], errors


def test_evals_rollouts_and_home_in_a_browser(page, site: Site) -> None:  # type: ignore[no-untyped-def]
    expect = playwright_api.expect
    url = site.server.url
    home = page.locator("body")
    expect(home).to_contain_text("Shipping")
    expect(home).to_contain_text("refunds v3")  # the agent's last gate verdict
    expect(home).to_contain_text("v2 at 10 % vs v1")  # its rollout in progress
    page.screenshot(path=str(site.shots / "home.png"), full_page=True)

    page.goto(url + "/evals")
    verdicts = page.get_by_role("region", name="Gate verdicts")
    expect(verdicts.locator("tr").filter(has_text="v3")).to_contain_text("fail")
    page.screenshot(path=str(site.shots / "evals.png"), full_page=True)
    page.get_by_role("link", name="eval_b000000001").first.click()
    page.wait_for_url(url + "/evals/eval_b000000001")
    expect(page.locator('a[href="/runs/run_eval_b000000001_abroad_1"]')).to_have_count(1)
    expect(page.locator("body")).to_contain_text("quotes the window (2)")
    page.screenshot(path=str(site.shots / "eval.png"), full_page=True)
    page.locator('a[href="/evals/compare?a=eval_a000000001&b=eval_b000000001"]').first.click()
    expect(page.locator("body")).to_contain_text("1 regressed, 0 improved")
    expect(page.locator("body")).to_contain_text("paired sign-flip")
    page.screenshot(path=str(site.shots / "compare.png"), full_page=True)

    page.goto(url + "/rollouts")
    panel = page.get_by_role("region", name="Rollout ro_c000000001")
    expect(panel).to_contain_text("refund-bot: v2 vs v1")
    expect(panel).to_contain_text("10 % to v2, 90 % to v1")
    expect(panel).to_contain_text("Wilson 95 %")
    expect(panel).to_contain_text("Rule:")
    page.screenshot(path=str(site.shots / "rollouts.png"), full_page=True)
    panel.get_by_label("Reason").fill("hold for the launch")
    panel.get_by_role("button", name="Pause").click()
    expect(page.get_by_role("region", name="Rollout ro_c000000001")).to_contain_text("paused")
    db = make_engine(site.db_url)
    ro = rollouts.get(db, "ro_c000000001")
    db.dispose()
    assert (ro["status"], ro["reason"]) == ("paused", "hold for the launch")
