"""Red-team pages: every stored report with each agent's red-team age (flagged past
STALE_DAYS), and one report: attack success per pack with its Wilson interval, what stopped
each attack, cost contained against cost attempted, and the policy change for each success."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool

from tether.core.errors import TetherError
from tether.server.console.render import page
from tether.server.console.session import Viewer, viewer
from tether.server.deps import State, get_state
from tether.store import redteam as redteam_store

router = APIRouter()


def _list_context(state: State) -> dict[str, Any]:
    reports = redteam_store.list_reports(state.engine, limit=100)
    agents = sorted({r["agent"] for r in reports})
    ages = redteam_store.age_days(state.engine, agents, now=datetime.now(UTC))
    return {"reports": reports, "ages": ages, "stale_days": redteam_store.STALE_DAYS}


@router.get("/redteam", response_class=HTMLResponse)
async def redteam_page(
    request: Request, who: Viewer = Depends(viewer), state: State = Depends(get_state)
) -> HTMLResponse:
    ctx = await run_in_threadpool(_list_context, state)
    return page(request, "redteam.html", title="Red team", **ctx)


def _stopped(report: dict[str, Any]) -> list[tuple[str, str, int]]:
    """(pack, what stopped it, attacks) most frequent first."""
    rows = [(pack, rule, int(n)) for pack, p in (report.get("packs") or {}).items()
            for rule, n in (p.get("stopped_by") or {}).items()]  # fmt: skip
    return sorted(rows, key=lambda r: (-r[2], r[0], r[1]))


@router.get("/redteam/{report_id}", response_class=HTMLResponse)
async def report_page(
    report_id: str,
    request: Request,
    who: Viewer = Depends(viewer),
    state: State = Depends(get_state),
) -> HTMLResponse:
    try:
        stored = await run_in_threadpool(redteam_store.get_report, state.engine, report_id)
    except TetherError as exc:
        return page(request, "error.html", status_code=exc.http_status, title="Red team",
                    message=exc.message)  # fmt: skip
    report = stored["report"]
    attacks = [a for a in report.get("attempts_detail") or [] if not a.get("benign")]
    return page(request, "redteam_report.html", title=f"Red team: {stored['agent']}",
                stored=stored, report=report, stopped=_stopped(report),
                attacks=attacks)  # fmt: skip
