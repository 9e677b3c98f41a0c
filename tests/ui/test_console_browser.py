"""The console in a real browser: Playwright drives Debian's headless Chromium against a
`tether serve` subprocess on SQLite, seeded with runs, a held call and a live run."""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.conftest import ServerProcess
from tests.ui.seed import Seeded, run_spans, seed
from tether.core.records import RunAttribution, SpanRecord
from tether.store import approvals as approval_store
from tether.store import feedback as feedback_store
from tether.store import runs as run_store
from tether.store.engine import make_engine
from tether.store.ingest import write_spans
from tether.store.keys import create_key
from tether.store.migrate import upgrade

pytestmark = pytest.mark.browser
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
playwright_api = pytest.importorskip("playwright.sync_api")
if not os.path.exists(CHROMIUM):
    pytest.skip("Debian's chromium is missing: `make chromium`", allow_module_level=True)


@dataclass
class Console:
    server: ServerProcess
    data: Seeded
    db_url: str
    admin: str
    reader: str
    shots: Path


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    root = tmp_path_factory.mktemp("console")
    db_url = f"sqlite:///{root / 'tether.db'}"
    engine = make_engine(db_url)
    upgrade(engine)
    data = seed(engine, datetime.now(UTC), days=10, per_day=4)
    _, admin = create_key(engine, scopes="admin", name="ops-admin")
    _, reader = create_key(engine, scopes="read", name="viewer")
    engine.dispose()
    server = ServerProcess(root / "home", db_url)
    shots = root / "screenshots"
    shots.mkdir()
    try:
        yield Console(server, data, db_url, admin, reader, shots)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, console: Console) -> Iterator[object]:  # type: ignore[no-untyped-def]
    ctx = browser.new_context(viewport={"width": 1400, "height": 900}, color_scheme="light")
    pg = ctx.new_page()
    pg.set_default_timeout(10_000)
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    yield pg
    ctx.close()
    assert errors == [], errors


def log_in(page, console: Console, secret: str) -> None:  # type: ignore[no-untyped-def]
    page.goto(console.server.url + "/")
    assert "/login" in page.url
    page.get_by_label("API key").fill(secret)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(console.server.url + "/")


def test_log_in_find_a_run_open_its_trace_and_give_feedback(page, console: Console):
    log_in(page, console, console.reader)
    page.get_by_role("heading", name="Agents and versions").wait_for()
    page.screenshot(path=str(console.shots / "home.png"))
    page.get_by_role("link", name="Runs", exact=True).click()
    page.wait_for_url(console.server.url + "/runs")
    page.wait_for_load_state()
    page.keyboard.press("/")  # the search shortcut
    page.keyboard.type("T-4711")
    expect = playwright_api.expect
    expect(page.locator("#runs-rows tbody tr")).to_have_count(1)
    expect(page).to_have_url(console.server.url + "/runs?q=T-4711")  # shareable filter
    row_link = page.locator(f'#runs-rows a[href="/runs/{console.data.held_run}"]')
    row_link.click()
    page.get_by_role("heading", name="Trace").wait_for()
    llm = page.locator("details.span-row").filter(has_text="chat gpt-4o-mini").first
    llm.locator("summary").click()
    llm.get_by_text("Tokens in / out").wait_for()
    assert "gpt-4o-mini-2024-07-18" in llm.inner_text()
    page.screenshot(path=str(console.shots / "run.png"))
    page.get_by_label("Comment (optional with a thumb)").fill("good triage, right vendor")
    page.get_by_role("button", name="Thumbs up").click()
    page.get_by_text("Thanks: feedback stored.").wait_for()
    engine = make_engine(console.db_url)
    stored = feedback_store.list_feedback(engine, console.data.held_run)
    engine.dispose()
    assert [(f["kind"], f["value"], f["comment"]) for f in stored] == [
        ("thumbs", 1.0, "good triage, right vendor")
    ]


def _agent_waiting_for(db_url: str, approval_id: str, run_id: str, done: threading.Event) -> None:
    """Plays the agent: waits for the decision, then calls the tool and finishes the run."""
    engine = make_engine(db_url)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if not approval_store.get(engine, approval_id).pending:
                break
            time.sleep(0.05)
        time.sleep(1.0)  # long enough for the browser to see the run running again
        root = run_store.run_spans(engine, run_id)[0]
        now = datetime.now(UTC)
        who = RunAttribution(agent="invoice-triage", version="1.4.0", task_id="T-4711")
        tool = SpanRecord(
            trace_id=root["trace_id"], span_id="0000000000000abc", parent_id=root["span_id"],
            run_id=run_id, kind="tool", name="mail.send", started_at=now,
            ended_at=now + timedelta(milliseconds=120), status="ok",
            input='{"to": "ap@vendor.example"}', output='{"sent": true}', attribution=who,
            attributes={"tether.decision": {"decision": "approval_required", "rule": "mail.send",
                                            "reason": "mail.send needs approval",
                                            "approval_id": approval_id}},
        )  # fmt: skip
        end = SpanRecord(
            trace_id=root["trace_id"], span_id=root["span_id"], run_id=run_id, kind="agent",
            name=root["name"], started_at=root["started_at"], is_root=True,
            ended_at=now + timedelta(milliseconds=200), status="ok", output='{"result": "sent"}',
            attribution=who,
        )  # fmt: skip
        write_spans(engine, [tool, end], now=now, source="sdk")
        done.set()
    finally:
        engine.dispose()


def test_approve_a_held_call_and_watch_the_run_go_on(page, console: Console):
    done = threading.Event()
    agent = threading.Thread(
        target=_agent_waiting_for,
        args=(console.db_url, console.data.approval_id, console.data.held_run, done),
        daemon=True,
    )
    agent.start()
    log_in(page, console, console.admin)
    page.get_by_role("link", name="Approvals").first.click()
    card = page.locator(f"#{console.data.approval_id}")
    card.get_by_text("ap@vendor.example").wait_for()
    card.get_by_text("requires approval").wait_for()
    page.screenshot(path=str(console.shots / "approvals.png"))
    card.get_by_label("Reason (recorded in the audit log)").fill("vendor confirmed by phone")
    card.get_by_role("button", name="Approve").click()
    page.get_by_text("mail.send: approved.").wait_for()
    page.get_by_text("vendor confirmed by phone").wait_for()  # in "Recently decided"
    page.goto(f"{console.server.url}/runs/{console.data.held_run}")
    # the summary polls while the run is live: it turns `succeeded` without a reload
    page.locator("#run-summary .s-succeeded").wait_for(timeout=15_000)
    assert done.is_set()
    page.reload()
    sent = page.locator("details.span-row").filter(has_text="mail.send")
    assert sent.count() == 1 and "approval required" in sent.inner_text()
    assert "vendor confirmed by phone" in page.locator("main").inner_text()


def test_kill_a_running_run(page, console: Console):
    log_in(page, console, console.admin)
    page.goto(f"{console.server.url}/runs/{console.data.live_run}")
    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name="Kill run").click()
    page.locator("#run-summary .s-killed").wait_for()
    assert "Killed: killed from the console" in page.locator("#run-summary").inner_text()
    assert page.get_by_role("button", name="Kill run").count() == 0
    engine = make_engine(console.db_url)
    assert run_store.get_run(engine, console.data.live_run)["status"] == "killed"
    engine.dispose()


def test_costs_page_draws_a_chart_and_dark_mode_toggles(page, console: Console):
    log_in(page, console, console.reader)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Costs").click()
    page.locator(".chart canvas").first.wait_for()
    page.screenshot(path=str(console.shots / "costs.png"))
    page.get_by_role("button", name="Switch light or dark theme").click()
    assert page.evaluate("document.documentElement.dataset.theme") == "dark"
    bg = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert bg == "rgb(13, 17, 23)"
    page.reload()
    assert page.evaluate("document.documentElement.dataset.theme") == "dark"  # remembered
    # a read-only key sees no decision buttons enabled
    page.goto(console.server.url + "/approvals")
    assert page.get_by_role("button", name="Approve").count() == 0 or (
        page.get_by_role("button", name="Approve").first.is_disabled()
    )


def test_new_runs_and_new_holds_appear_without_a_reload(page, console: Console):
    log_in(page, console, console.reader)
    page.goto(console.server.url + "/runs")
    page.locator("#runs-rows tbody tr").first.wait_for()
    engine = make_engine(console.db_url)
    try:
        now = datetime.now(UTC)
        spans = run_spans_for_test(now)
        write_spans(engine, spans, now=now, source="sdk")
        fresh = page.locator(f'#runs-rows tr.new a[href="/runs/{spans[0].run_id}"]')
        fresh.wait_for(timeout=12_000)  # the 4 s poll brought it in, highlighted
        page.goto(console.server.url + "/approvals")
        page.get_by_role("heading", name="Waiting for a decision").wait_for()
        held = approval_store.create(
            engine, tool="payments.refund", arguments={"amount_usd": 99}, run_id=spans[0].run_id,
            agent="support-bot", rule="payments.*", reason="refunds need a person",
            timeout_s=600, now=datetime.now(UTC),
        )  # fmt: skip
        page.locator(f"#{held.id}").get_by_text("refunds need a person").wait_for(timeout=10_000)
    finally:
        engine.dispose()


def run_spans_for_test(now: datetime) -> list[SpanRecord]:
    return run_spans(random.Random(99), "support-bot", "2.1", ["kb.search"], now,
                     task="T-NEW", user="erin@acme.io", finished=False)  # fmt: skip
