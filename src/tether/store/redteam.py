"""Red-team reports: stored per agent, newest first; the age of each agent's last red team
(the console flags agents older than 90 days; a metric exports the age)."""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, func, insert, select

from tether.core.errors import NotFoundError
from tether.core.ids import make_id
from tether.store import audit
from tether.store.engine import reading
from tether.store.tables import redteam_reports

STALE_DAYS = 90


def save(engine: Engine, report: dict[str, Any], *, actor: str, now: datetime) -> str:
    """Stores a report (report.build's dict); returns its id. Audited as `redteam.reported`."""
    rid = make_id("rt", os.urandom(12))
    summary = {
        "attempts": report.get("attempts"), "benign_tasks": report.get("benign_tasks"),
        "packs": {p: {"attempts": v["attempts"], "outcomes": v["outcomes"],
                      "attack_success_rate": v["attack_success_rate"]}
                  for p, v in (report.get("packs") or {}).items()},
        "cost": report.get("cost"), "successes": len(report.get("successes") or []),
    }  # fmt: skip
    agent = str(report.get("agent") or "")
    with engine.begin() as conn:
        conn.execute(insert(redteam_reports).values(
            id=rid, agent=agent, packs=sorted(report.get("packs") or {}), summary=summary,
            report=report, created_at=now))  # fmt: skip
        audit.append_in(conn, actor=actor, action="redteam.reported", subject=rid,
                        data={"agent": agent, "attempts": summary["attempts"],
                              "successes": summary["successes"]}, now=now)  # fmt: skip
    return rid


def list_reports(
    engine: Engine, *, agent: str | None = None, limit: int = 50
) -> list[dict[str, Any]]:
    c = redteam_reports.c
    q = select(c.id, c.agent, c.packs, c.summary, c.created_at).order_by(c.created_at.desc())
    if agent:
        q = q.where(c.agent == agent)
    with reading(engine) as conn:
        rows = conn.execute(q.limit(limit)).all()
    return [{"id": r.id, "agent": r.agent, "packs": r.packs, "summary": r.summary,
             "created_at": r.created_at.isoformat()} for r in rows]  # fmt: skip


def get_report(engine: Engine, report_id: str) -> dict[str, Any]:
    with reading(engine) as conn:
        row = conn.execute(select(redteam_reports).where(redteam_reports.c.id == report_id)).first()
    if row is None:
        raise NotFoundError(f"no red-team report {report_id!r}; see GET /api/v1/redteam/reports")
    return {"id": row.id, "agent": row.agent, "created_at": row.created_at.isoformat(),
            "report": row.report}  # fmt: skip


def last_run_at(engine: Engine) -> dict[str, datetime]:
    """Each agent's newest red-team report time."""
    c = redteam_reports.c
    with reading(engine) as conn:
        rows = conn.execute(select(c.agent, func.max(c.created_at)).group_by(c.agent)).all()
    return {str(agent): at for agent, at in rows}


def age_days(engine: Engine, agents: list[str], *, now: datetime) -> dict[str, float | None]:
    """Days since each agent's last red team (None: never red-teamed)."""
    last = last_run_at(engine)
    out: dict[str, float | None] = {}
    for a in agents:
        at = last.get(a)
        out[a] = None if at is None else round((now - at).total_seconds() / 86400, 2)
    return out
