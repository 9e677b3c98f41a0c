"""The console's view of other areas' modules: budget burn from the budget counters and
policies, held calls and audit entries of a run, attribute redaction, and the kill switch."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from tether.core.errors import ConflictError, TetherError
from tether.core.money import usd_to_nusd
from tether.core.redact import redactor
from tether.gateway.llm.killswitch import kill_run
from tether.server.deps import State
from tether.store import approvals as approval_store
from tether.store import audit as audit_store
from tether.store import budgets as budget_store
from tether.store import policies as policy_store
from tether.store.engine import reading
from tether.store.tables import runs


@dataclass(frozen=True)
class Burn:
    """Spend on one budget scope against its cap (None: uncapped)."""

    label: str
    spent: int | float
    cap: int | float | None
    unit: str = "usd"  # usd (nano-dollars) | tokens | calls | seconds

    @property
    def ratio(self) -> float | None:
        if not self.cap:
            return None
        return self.spent / float(self.cap)


def _policy(state: State, agent: str | None) -> Any | None:
    if not agent:
        return None
    try:
        return policy_store.get(state.engine, agent)
    except TetherError:
        return None  # a stored policy that no longer parses: show no caps rather than fail


def day_budgets(state: State, spent_today: dict[str, int], now: datetime) -> dict[str, Burn]:
    """Per agent, today's spend against its day cap. Spend is the larger of the gateway's
    budget counter and the runs' attributed cost (traces sent over OTLP bypass the counter)."""
    day = now.date().isoformat()
    out: dict[str, Burn] = {}
    for agent, from_runs in sorted(spent_today.items()):
        snap = budget_store.snapshot(state.engine, f"agent_day:{agent}:{day}")
        cap: int | None = snap[0].cap_nusd if snap else None
        if cap is None:
            pol = _policy(state, agent)
            raw = pol.budgets.day.max_cost_usd if pol is not None else None
            cap = usd_to_nusd(raw) if raw is not None else None
        out[agent] = Burn("day", max(snap[1].spent_nusd if snap else 0, from_runs), cap)
    return out


def run_burn(state: State, run: dict[str, Any], now: datetime) -> list[Burn]:
    """A run's cost, tokens, calls and duration against its caps (budget counter, else policy)."""
    snap = budget_store.snapshot(state.engine, f"run:{run['id']}")
    pol = _policy(state, run.get("agent"))
    caps = pol.budgets.run if pol is not None else None
    cap_cost = snap[0].cap_nusd if snap else None
    if cap_cost is None and caps is not None and caps.max_cost_usd is not None:
        cap_cost = usd_to_nusd(caps.max_cost_usd)
    cap_tokens = (snap[0].cap_tokens if snap else None) or (caps.max_tokens if caps else None)
    cap_calls = (snap[0].cap_calls if snap else None) or (caps.max_llm_calls if caps else None)
    end = run.get("ended_at") or now
    # seconds as a float: a 276 ms run is 0.276 s, not int() of it (which showed 0.00 ms)
    elapsed = max(0.0, (end - run["started_at"]).total_seconds())
    tokens = int(run["input_tokens"] or 0) + int(run["output_tokens"] or 0)
    return [
        Burn("cost", int(run["cost_nusd"] or 0), cap_cost),
        Burn("tokens", tokens, cap_tokens, "tokens"),
        Burn("LLM calls", int(run["llm_calls"] or 0), cap_calls, "calls"),
        Burn("tool calls", int(run["tool_calls"] or 0),
             caps.max_tool_calls if caps else None, "calls"),
        Burn("duration", elapsed, caps.max_duration_s if caps else None, "seconds"),
    ]  # fmt: skip


def pending_approvals(state: State) -> dict[tuple[str, str | None], int]:
    """Waiting holds per (agent, version of the held run); holds without a run count under
    version None."""
    held = approval_store.list_approvals(state.engine, status="pending", limit=1000)
    run_ids = sorted({a.run_id for a in held if a.run_id})
    versions: dict[str, str | None] = {}
    if run_ids:
        with reading(state.engine) as conn:
            q = select(runs.c.id, runs.c.version).where(runs.c.id.in_(run_ids))
            versions = {rid: v for rid, v in conn.execute(q)}
    counts: dict[tuple[str, str | None], int] = {}
    for a in held:
        key = (a.agent or "—", versions.get(a.run_id) if a.run_id else None)
        counts[key] = counts.get(key, 0) + 1
    return counts


def run_approvals(state: State, run_id: str) -> list[Any]:
    return approval_store.list_approvals(state.engine, run_id=run_id, limit=200)


def run_decisions(state: State, run_id: str) -> list[Any]:
    """Audit entries about the run: its kill, its holds and their decisions, policy decisions."""
    subjects = [run_id] + [a.id for a in run_approvals(state, run_id)]
    entries: list[Any] = []
    for subject in subjects:
        found, _ = audit_store.list_entries(state.engine, subject=subject, limit=100)
        entries.extend(found)
    return sorted(entries, key=lambda e: e.seq)


def redacted(state: State, value: Any) -> Any:
    """Secrets are never shown, even in data stored before redaction covered them."""
    return redactor(tuple(state.settings.redact_fields)).value(value)


# ---------------------------------------------------------------- the kill switch


async def kill(state: State, run_id: str, *, actor: str, reason: str) -> None:
    """The same kill as POST /api/v1/runs/{id}/kill: streams cut, later calls refused, audited."""
    if not await kill_run(
        state.killswitch, run_id, actor=actor, reason=reason, now=datetime.now(UTC)
    ):
        raise ConflictError(f"run {run_id} already ended; there is nothing to kill")
