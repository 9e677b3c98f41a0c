"""The console's pages and forms against the real app on SQLite and PostgreSQL: login, roles,
CSRF, every page rendering seeded data, feedback, approvals, kill, CSV export."""

from __future__ import annotations

import csv
import io
import json
import random
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select, update

from tests.ui.seed import Seeded, run_spans, seed
from tether.config import load_settings
from tether.core.records import SpanRecord
from tether.server.app import create_app
from tether.server.console import run_detail, sources
from tether.server.console.session import COOKIE
from tether.store import aggregates, threads
from tether.store import approvals as approval_store
from tether.store import checkpoints as cp_store
from tether.store import costs as cost_store
from tether.store import feedback as feedback_store
from tether.store import runs as run_store
from tether.store import tools as tool_store
from tether.store.ingest import write_spans
from tether.store.keys import create_key, revoke_key
from tether.store.tables import audit_log


@pytest.fixture
def env(db: Engine, tmp_path: Path) -> Iterator[tuple[TestClient, Seeded, dict[str, str]]]:
    settings = load_settings(home=tmp_path / "home", database_url=str(db.url))
    data = seed(db, datetime.now(UTC), days=8, per_day=3)
    keys = {}
    for scope in ("admin", "read", "ingest"):
        key, secret = create_key(db, scopes=scope, name=f"{scope}-key")
        keys[scope] = secret
        keys[scope + "_id"] = key.id
    with TestClient(create_app(settings, engine=db), follow_redirects=False) as client:
        yield client, data, keys


def login(client: TestClient, secret: str, next_path: str = "/") -> None:
    form = client.get("/login")
    token = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert token, form.text
    resp = client.post("/login", data={"api_key": secret, "csrf": token[1], "next": next_path})
    assert resp.status_code == 303, resp.text
    assert resp.headers["location"] == next_path


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found
    return found[1]


def test_pages_need_a_login_and_redirect_back(env: tuple[TestClient, Seeded, dict[str, str]]):
    client, _data, keys = env
    resp = client.get("/runs?status=failed")
    assert resp.status_code == 303
    assert resp.headers["location"] == "/login?next=%2Fruns%3Fstatus%3Dfailed"
    # htmx requests get a full-page redirect header instead of a login form swapped in
    hx = client.get("/runs/rows", headers={"HX-Request": "true"})
    assert hx.headers["HX-Redirect"].startswith("/login?next=")
    login(client, keys["read"], "/runs?status=failed")
    assert client.get("/runs?status=failed").status_code == 200


def test_login_rejects_bad_keys_forged_cookies_and_open_redirects(env):
    client, _data, keys = env
    form = client.get("/login")
    token = csrf_of(form.text)
    bad = client.post("/login", data={"api_key": "tth_nope", "csrf": token})
    assert bad.status_code == 401 and "unknown or revoked" in bad.text
    no_csrf = client.post("/login", data={"api_key": keys["admin"], "csrf": "wrong"})
    assert no_csrf.status_code == 400
    ingest = client.post("/login", data={"api_key": keys["ingest"], "csrf": token})
    assert ingest.status_code == 403 and "cannot open the console" in ingest.text
    ok = client.post(
        "/login", data={"api_key": keys["admin"], "csrf": token, "next": "//evil.example/x"}
    )
    assert ok.headers["location"] == "/"
    cookie = client.cookies[COOKIE]
    body, _, sig = cookie.partition(".")
    client.cookies.clear()
    client.cookies.set(COOKIE, body + "." + ("0" * len(sig)))
    assert client.get("/").status_code == 303


def test_revoked_key_ends_the_session(env, db: Engine):
    client, _data, keys = env
    login(client, keys["read"])
    assert client.get("/").status_code == 200
    revoke_key(db, keys["read_id"])
    client.app.state.tether.console_live_keys.clear()
    assert client.get("/").status_code == 303


def test_every_page_renders_seeded_data(env):
    client, data, keys = env
    login(client, keys["read"])
    home = client.get("/")
    assert home.status_code == 200
    for text in ("Success at target cost", "invoice-triage", "support-bot", "research-agent"):
        assert text in home.text
    # cost flags come from the watch passes' alerts (tests/ui/test_console_watch.py); none ran
    assert "Cost alerts (7 d)" in home.text and "Nothing unusual" in home.text
    waiting = sources.pending_approvals(client.app.state.tether)
    assert waiting == {("invoice-triage", "1.4.0"): 1, ("support-bot", "2.1"): 1}
    runs = client.get("/runs")
    assert data.held_run in runs.text and "awaiting approval" in runs.text
    run = client.get(f"/runs/{data.held_run}")
    assert run.status_code == 200
    for text in ("Trace", "chat gpt-4o-mini", "erp.get_invoice", "Budget burn", "mail.send"):
        assert text in run.text
    assert "$0.0500" in run.text  # the run cap from the invoice-triage policy
    assert client.get("/runs/run_missing").status_code == 404
    approvals = client.get("/approvals")
    assert "ap@vendor.example" in approvals.text and "requires approval" in approvals.text
    assert "disabled" in approvals.text  # read-only: no decision buttons
    costs = client.get("/costs?group=user&window=30d")
    assert "alice@acme.io" in costs.text
    agent = client.get("/agents/invoice-triage")
    assert "-  day: {max_cost_usd: 2}" in agent.text and "+  day: {max_cost_usd: 3}" in agent.text
    tools = client.get("/tools")
    assert "kb.search" in tools.text and "changed" in tools.text
    audit = client.get("/audit")
    assert "policy.applied" in audit.text and "approval.requested" in audit.text
    verify = client.get("/audit/verify")
    assert "Hash chain verified" in verify.text
    assert client.get("/static/htmx.min.js").status_code == 200
    assert client.get("/static/uPlot.iife.min.js").status_code == 200


def test_run_list_filters_sorts_pages_and_polls(env):
    client, data, keys = env
    login(client, keys["read"])
    failed = client.get("/runs/rows?status=failed")
    statuses = set(re.findall(r'class="badge s-([a-z_]+)"', failed.text))
    assert statuses <= {"failed"}
    by_task = client.get("/runs/rows?task_id=T-4711")
    assert data.held_run in by_task.text and data.live_run not in by_task.text
    search = client.get("/runs/rows?q=T-LIV")
    assert data.live_run in search.text
    first = client.get("/runs/rows?sort=-cost&limit=10")
    next_link = re.search(r'href="(/runs\?[^"]*cursor=[^"]+)"', first.text)
    assert next_link
    second = client.get(next_link[1].replace("/runs?", "/runs/rows?").replace("&amp;", "&"))
    first_ids = set(re.findall(r'href="/runs/(run_[0-9a-f]+)"', first.text))
    second_ids = set(re.findall(r'href="/runs/(run_[0-9a-f]+)"', second.text))
    assert len(first_ids) == len(second_ids) == 10 and not first_ids & second_ids
    # polling is on for the newest-first first page only
    assert 'hx-trigger="every 4s' in client.get("/runs/rows").text
    assert 'hx-trigger="every 4s' not in first.text
    bad = client.get("/runs/rows?min_cost=lots")
    assert bad.status_code == 200 and "min cost" in bad.text
    pushed = client.get("/runs/rows?agent=support-bot&push=1", headers={"HX-Request": "true"})
    assert pushed.headers["HX-Push-Url"] == "/runs?agent=support-bot"


def test_span_detail_shows_pretty_io_and_redacts_secrets(env, db: Engine):
    client, data, keys = env
    login(client, keys["read"])
    parent = run_store.run_spans(db, data.held_run)[0]
    now = datetime.now(UTC)
    long_input = json.dumps([{"role": "user", "content": "word " * 400}])
    span = SpanRecord(
        trace_id=parent["trace_id"], span_id="00000000000000aa", parent_id=parent["span_id"],
        run_id=data.held_run, kind="llm", name="chat big", started_at=now, ended_at=now,
        model="gpt-4o-mini", model_served="gpt-4o-mini-2024-07-18", input=long_input,
        output='{"answer": {"vendor": "ACME", "total": 42}}', status="ok",
        attributes={"http.request.header.authorization": "Bearer sk-live-123", "n": 1},
    )  # fmt: skip
    write_spans(db, [span], now=now, source="sdk")
    detail = client.get(f"/runs/{data.held_run}/spans/{span.trace_id}/{span.span_id}")
    assert detail.status_code == 200
    assert "gpt-4o-mini-2024-07-18" in detail.text
    assert 'class="msg role-user"' in detail.text  # chat messages read as a conversation
    assert "Show all 2,000 characters" in detail.text  # a long message is folded
    assert "&#34;answer&#34;: {\n    &#34;vendor&#34;" in detail.text  # other JSON indented
    assert "sk-live-123" not in detail.text and "[REDACTED]" in detail.text
    missing = client.get(f"/runs/{data.held_run}/spans/{span.trace_id}/ffffffffffffffff")
    assert missing.status_code == 404


def test_feedback_is_stored_and_csrf_checked(env, db: Engine):
    client, data, keys = env
    login(client, keys["read"])
    page = client.get(f"/runs/{data.run_ids[0]}")
    token = csrf_of(page.text)
    url = f"/runs/{data.run_ids[0]}/feedback"
    forged = client.post(url, data={"choice": "up", "csrf": "x"})
    assert forged.status_code == 403
    up = client.post(url, data={"choice": "up", "comment": "clean run", "csrf": token},
                     headers={"HX-Request": "true"})  # fmt: skip
    assert up.status_code == 200 and "feedback stored" in up.text
    client.post(url, data={"choice": "score", "score": "0.7", "csrf": token})
    bad = client.post(url, data={"choice": "comment", "comment": " ", "csrf": token},
                      headers={"HX-Request": "true"})  # fmt: skip
    assert "non-empty comment" in bad.text
    stored = feedback_store.list_feedback(db, data.run_ids[0])
    assert [(f["kind"], f["value"], f["comment"]) for f in stored] == [
        ("thumbs", 1.0, "clean run"),
        ("score", 0.7, None),
    ]
    assert stored[0]["user"].startswith("console:key_")


def test_approvals_need_admin_and_release_the_run(env, db: Engine):
    client, data, keys = env
    login(client, keys["read"])
    token = csrf_of(client.get("/approvals").text)
    denied = client.post(f"/approvals/{data.approval_id}/decide",
                         data={"decision": "approve", "csrf": token})  # fmt: skip
    assert denied.status_code == 403 and "read-only" in denied.text
    client.cookies.clear()
    login(client, keys["admin"])
    token = csrf_of(client.get("/approvals").text)
    resp = client.post(
        f"/approvals/{data.approval_id}/decide",
        data={"decision": "approve", "reason": "recipient checked", "csrf": token},
        headers={"HX-Request": "true"},
    )
    assert resp.status_code == 200 and "mail.send: approved" in resp.text
    decided = approval_store.get(db, data.approval_id)
    assert decided.status == "approved" and decided.decision_reason == "recipient checked"
    assert run_store.get_run(db, data.held_run)["status"] == "running"
    again = client.post(
        f"/approvals/{data.approval_id}/decide",
        data={"decision": "deny", "csrf": token},
        headers={"HX-Request": "true"},
    )
    assert "already approved" in again.text


def test_kill_from_the_console(env, db: Engine):
    client, data, keys = env
    login(client, keys["admin"])
    page = client.get(f"/runs/{data.live_run}")
    assert "Kill run" in page.text
    token = csrf_of(page.text)
    resp = client.post(f"/runs/{data.live_run}/kill", data={"csrf": token},
                       headers={"HX-Request": "true"})  # fmt: skip
    assert resp.status_code == 200 and resp.headers.get("HX-Refresh") == "true"
    run = run_store.get_run(db, data.live_run)
    assert run["status"] == "killed" and "console" in run["kill_reason"]
    with db.connect() as conn:
        actions = conn.execute(select(audit_log.c.action, audit_log.c.subject)).all()
    assert ("run.killed", data.live_run) in [tuple(a) for a in actions]
    assert "Kill run" not in client.get(f"/runs/{data.live_run}").text
    # a page that was polling a live run reloads once when the run ends
    ended = client.get(f"/runs/{data.live_run}/live?part=summary")
    assert ended.headers["HX-Refresh"] == "true" and "killed" in ended.text
    live = client.get(f"/runs/{data.held_run}/live?part=summary")
    assert "HX-Refresh" not in live.headers and 'hx-trigger="every 3s"' in live.text
    twice = client.post(f"/runs/{data.live_run}/kill", data={"csrf": token},
                        headers={"HX-Request": "true"})  # fmt: skip
    assert "already ended" in twice.text


def test_costs_csv_export(env):
    client, _data, keys = env
    login(client, keys["read"])
    resp = client.get("/costs.csv?group=agent&window=30d")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(resp.text)))
    assert rows[0] == ["agent", "runs", "input_tokens", "output_tokens", "cost_usd"]
    agents = {r[0] for r in rows[1:]}
    assert {"invoice-triage", "support-bot", "research-agent"} <= agents
    assert client.get("/costs.csv?group=planet").status_code == 400


def test_empty_console_says_how_to_send_a_first_trace(tmp_path: Path, sqlite_db: Engine):
    settings = load_settings(home=tmp_path / "home", database_url=str(sqlite_db.url))
    _, secret = create_key(sqlite_db, scopes="admin")
    with TestClient(create_app(settings, engine=sqlite_db), follow_redirects=False) as client:
        login(client, secret)
        home = client.get("/")
        assert "send your first trace" in home.text and "/v1/traces" in home.text
        assert "No runs yet" in client.get("/runs").text
        assert "Nothing is waiting" in client.get("/approvals").text
        tools = client.get("/tools").text  # only tether's own memory.* tools: still a hint
        assert "No upstream tools yet" in tools and "memory.search" in tools
        assert "No agents yet" in client.get("/agents").text
        assert "No spend in this window" in client.get("/costs").text
        now = datetime.now(UTC)
        write_spans(sqlite_db, run_spans(random.Random(1), "bot", "1", [], now, task="t", user="u"),
                    now=now, source="sdk")  # fmt: skip
        home = client.get("/")
        assert "no agent has a boundary policy yet" in home.text and "bot" in home.text


def test_admin_re_pins_a_changed_tool_and_pages_refuse_framing(env, db: Engine):
    client, _data, keys = env
    login(client, keys["admin"])
    assert client.get("/login").status_code == 303  # already signed in
    page = client.get("/tools")
    assert page.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    assert "Approve and pin" in page.text
    resp = client.post("/tools/kb.search/approve", data={"csrf": csrf_of(page.text)})
    assert resp.status_code == 303
    assert tool_store.require_tool(db, "kb.search").status == "approved"
    missing = client.post("/tools/nope.nothing/approve", data={"csrf": csrf_of(page.text)})
    assert missing.status_code == 404 and "no tool named" in missing.text


def test_audit_page_shows_a_broken_chain(env, db: Engine):
    client, _data, keys = env
    login(client, keys["read"])
    with db.begin() as conn:
        conn.execute(update(audit_log).where(audit_log.c.seq == 2).values(actor="someone-else"))
    verify = client.get("/audit/verify")
    assert "Hash chain broken at entry #2" in verify.text


def test_run_page_shows_its_checkpoint_timeline(env, db: Engine):
    client, data, keys = env
    login(client, keys["read"])
    now = datetime.now(UTC)
    caller = threads.Caller(agent=None, admin=True)
    with db.begin() as conn:
        thread = threads.claim(conn, "thread-7", caller,
                               threads.RunLink(run_id=data.held_run), now=now)  # fmt: skip
        for i, (cid, step) in enumerate(
            [("ckpt-0001", "extract"), ("ckpt-0002", "await_approval")]
        ):
            blob = cp_store.Blob("step", str(i + 1), "json", b"x", view=step)
            cp_store.put(conn, cp_store.NewCheckpoint(
                thread_id="thread-7", checkpoint_ns="", checkpoint_id=cid,
                parent_id="ckpt-0001" if i else None, type="json", data=b"{}",
                versions={"step": str(i + 1)}, metadata={"source": "loop", "step": i},
                blobs=[blob]), run_id=thread.run_id, now=now)  # fmt: skip
    page = client.get(f"/runs/{data.held_run}")
    assert "ckpt-0002" in page.text and "thread-7" in page.text
    assert "await_approval" in page.text and "extract" in page.text
    assert "No checkpoints" in client.get(f"/runs/{data.run_ids[0]}").text


def test_home_aggregates_cache_closed_days_and_count_today_live(db: Engine):
    now = datetime.now(UTC).replace(hour=12)
    cache: dict = {}

    def runs_per_day() -> list[int]:
        stats = aggregates.agent_overview(db, now=now, cache=cache)
        return next(s for s in stats if s.agent == "support-bot").runs_per_day

    seed_rng = random.Random(5)
    first = run_spans(
        seed_rng, "support-bot", "2.1", [], now - timedelta(days=1), task="A", user="u"
    )
    write_spans(db, first, now=now, source="sdk")
    before = runs_per_day()
    assert before[-2:] == [1, 0]
    today = run_spans(
        seed_rng, "support-bot", "2.1", [], now - timedelta(hours=1), task="B", user="u"
    )
    late = run_spans(
        seed_rng, "support-bot", "2.1", [], now - timedelta(days=1), task="C", user="u"
    )
    write_spans(db, today + late, now=now, source="sdk")
    assert runs_per_day()[-2:] == [1, 1]  # today is live; yesterday's late run waits for the TTL
    cache.clear()
    assert runs_per_day()[-2:] == [2, 1]


def test_console_cost_tables_agree_with_the_api_breakdown(env, db: Engine):
    _client, _data, _keys = env
    now = datetime.now(UTC)
    start = now - timedelta(days=30)
    for group in ("task", "user"):
        full = cost_store.cost_breakdown(db, group, start=start)
        top, count, total = aggregates.top_costs(db, group, start=start, agent=None, limit=5)
        assert count == len(full) and total == sum(r["cost_nusd"] for r in full)
        assert [r["cost_nusd"] for r in top] == [r["cost_nusd"] for r in full[:5]]
        assert {r["key"] for r in top} <= {r["key"] for r in full}
    days = aggregates.day_list(now, 30)
    midnight = datetime.fromisoformat(days[0]).replace(tzinfo=UTC)
    assert aggregates.cost_by_day(db, days=days) == cost_store.cost_breakdown(
        db, "day", start=midnight
    )


def test_run_page_decides_its_held_call_inline(env, db: Engine):
    client, data, keys = env
    login(client, keys["admin"])
    page = client.get(f"/runs/{data.held_run}")
    assert f'action="/approvals/{data.approval_id}/decide"' in page.text
    resp = client.post(
        f"/approvals/{data.approval_id}/decide",
        data={"decision": "deny", "reason": "wrong vendor", "next": f"/runs/{data.held_run}",
              "csrf": csrf_of(page.text)},
    )  # fmt: skip
    assert resp.status_code == 303 and resp.headers["location"] == f"/runs/{data.held_run}"
    assert approval_store.get(db, data.approval_id).status == "denied"
    again = client.post(
        f"/approvals/{data.approval_id}/decide",
        data={"decision": "deny", "next": "//evil.example/", "csrf": csrf_of(page.text)},
    )
    assert again.headers["location"] == "/approvals"


def test_pasted_ids_search_exactly_and_substrings_on_request(env):
    client, data, keys = env
    login(client, keys["read"])
    by_task = client.get("/runs/rows?q=T-4711")
    assert data.held_run in by_task.text and "task id is exactly" in by_task.text
    by_id = client.get(f"/runs/rows?q={data.live_run}")
    ids = set(re.findall(r'href="/runs/(run_[0-9a-f]+)"', by_id.text))
    assert ids == {data.live_run} and "id is exactly" in by_id.text
    by_user = client.get("/runs/rows?q=carol@acme.io&status=failed")
    assert "user is exactly" in by_user.text
    assert set(re.findall(r'class="badge s-([a-z_]+)"', by_user.text)) <= {"failed"}
    partial = client.get("/runs/rows?q=4711")
    assert data.held_run in partial.text and "exactly" not in partial.text
    substring = client.get("/runs/rows?q=T-4711&substring=1")
    assert data.held_run in substring.text and "exactly" not in substring.text


def test_a_huge_trace_is_cut_and_says_so(env, monkeypatch: pytest.MonkeyPatch):
    client, data, keys = env
    monkeypatch.setattr(run_detail, "MAX_TREE_SPANS", 3)
    login(client, keys["read"])
    page = client.get(f"/runs/{data.held_run}")
    assert page.text.count('class="span-row"') == 3
    assert "Showing the first 3 of" in page.text and "/api/v1/spans?run_id=" in page.text
