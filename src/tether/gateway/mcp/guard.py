"""One enforcement path for every tool call, through the MCP gateway or POST /api/v1/decide:
registry pin check, the agent's policy (core.policy.decide), rate limits, the run's data-flow
tags, an audit entry per decision, and a hold (store/approvals.py) when a person must decide.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, select

from tether.core.policy import (
    Decision,
    DecisionRequest,
    Policy,
    RunState,
    decide,
    rate_key,
    with_rate_result,
)
from tether.core.policy_schema import parse_rate_limit
from tether.core.records import TERMINAL_STATUSES, RunAttribution
from tether.gateway.mcp.spans import redacted
from tether.store import approvals, audit, kills, policies
from tether.store import tools as registry
from tether.store.engine import reading
from tether.store.ingest import ensure_run
from tether.store.kills import DURATION_REASON
from tether.store.ratelimit import RateLimiter, make_limiter
from tether.store.tables import runs


@dataclass(frozen=True)
class Verdict:
    """A decision about one call, the registry entry it was made on, and the hold if any."""

    decision: Decision
    tool: registry.Tool | None
    approval: approvals.Approval | None = None

    @property
    def outcome(self) -> str:
        return self.decision.outcome

    def to_dict(self) -> dict[str, Any]:
        d = self.decision
        return {
            "decision": d.outcome,
            "approval_id": self.approval.id if self.approval else None,
            "reason": d.reason,
            "rule": d.rule,
            "retry_after_s": d.retry_after_s,
        }


def blocked_decision(tool: registry.Tool) -> Decision:
    return Decision(
        "deny",
        "tool registry: description changed",
        f"the description or input schema of {tool.name} changed since it was approved "
        f"(pinned sha256 {(tool.pinned_hash or '')[:12]}, now {(tool.current_hash or '')[:12]}); "
        f"an admin must review it and run `tether tools approve {tool.name}`",
        tags=frozenset(tool.tags),
    )


class Guard:
    """Decides tool calls for one server process (sync: call it from a worker thread)."""

    def __init__(
        self,
        engine: Engine,
        *,
        redis: Any | None,
        approval_timeout_s: float,
        redact: tuple[str, ...] = (),
    ) -> None:
        self.engine = engine
        self.redact = redact
        self.limiter: RateLimiter = make_limiter(engine, redis)
        self.approval_timeout_s = approval_timeout_s

    def _run_state(self, run_id: str | None) -> tuple[RunState, Any | None]:
        if not run_id:
            return RunState(), None
        with reading(self.engine) as conn:
            row = conn.execute(
                select(runs.c.status, runs.c.tool_calls, runs.c.attributes, runs.c.started_at,
                       runs.c.kill_reason).where(runs.c.id == run_id)
            ).first()  # fmt: skip
        if row is None:
            return RunState(), None
        seen = (row.attributes or {}).get(registry.RUN_TAGS_KEY, ())
        return RunState(tags_seen=frozenset(seen), tool_calls=int(row.tool_calls or 0)), row

    def _closed(
        self, policy: Policy | None, run_id: str | None, row: Any, now: datetime, actor: str
    ) -> str | None:
        """Why the run takes no more calls: killed (max_duration_s passed kills it now, ended
        or not, as the LLM gateway does), or ended; None if it is open."""
        if row is None or run_id is None:
            return None
        if row.status != "killed" and policy is not None:
            limit = policy.budget_limits().run.max_duration_s
            if limit is not None and now >= row.started_at + timedelta(seconds=limit):
                with self.engine.begin() as conn:
                    if kills.kill(conn, run_id, reason=DURATION_REASON, now=now):
                        audit.append_in(conn, actor, "run.killed", run_id,
                                        {"reason": DURATION_REASON}, now)  # fmt: skip
                return f"run {run_id} was killed ({DURATION_REASON}); start a new run"
        if row.status == "killed":
            return f"run {run_id} was killed ({row.kill_reason or 'killed'}); start a new run"
        if row.status in TERMINAL_STATUSES:
            return f"run {run_id} is {row.status}; start a new run"
        return None

    def preview(self, policy: Policy | None, agent: str | None, tool: registry.Tool) -> Decision:
        """The decision without side effects (no rate counting, audit or hold): for tools/list."""
        if tool.blocked:
            return blocked_decision(tool)
        request = DecisionRequest(agent=agent or "", tool=tool.name, tags=frozenset(tool.tags))
        return decide(policy, request)

    def check(
        self,
        *,
        agent: str | None,
        run_id: str | None,
        name: str,
        arguments: Mapping[str, Any] | None,
        now: datetime,
        actor: str,
        extra_tags: Iterable[str] = (),
    ) -> Verdict:
        """Decides, counts the rate limit, audits, and holds the call when approval is needed."""
        tool = registry.get_tool(self.engine, name)
        tags = frozenset(tool.tags if tool else ()) | frozenset(extra_tags)
        state, row = self._run_state(run_id)
        policy = policies.get(self.engine, agent) if agent else None
        closed = self._closed(policy, run_id, row, now, actor)
        if tool is None:
            decision = Decision("deny", "tool registry: unknown tool",
                                f"{name} is not in the tool registry; tools are named "
                                "server.tool (see `tether tools list`)", tags=tags)  # fmt: skip
        elif tool.blocked:
            decision = blocked_decision(tool)
        elif closed is not None:
            rule = "run killed" if "was killed" in closed else "run ended"
            decision = Decision("deny", rule, closed, tags=tags)
        else:
            request = DecisionRequest(agent=agent or "", tool=name, tags=tags,
                                      arguments=arguments, run_state=state)  # fmt: skip
            decision = self._rate_limited(decide(policy, request), agent or "", tool, name, now)
        with self.engine.begin() as conn:
            audit.append_in(conn, actor, "policy.decision", name, {
                "agent": agent, "run_id": run_id, "outcome": decision.outcome,
                "rule": decision.rule, "reason": decision.reason,
                "retry_after_s": decision.retry_after_s,
            }, now)  # fmt: skip
        approval = None
        if decision.outcome == "approval_required":
            timeout = self.approval_timeout_s
            default = "deny"
            if policy is not None:
                timeout = policy.approval_timeout_s or timeout
                default = policy.approval_default
            approval = approvals.create(
                self.engine, tool=name, arguments=redacted(dict(arguments or {}), self.redact),
                run_id=run_id,
                agent=agent, rule=decision.rule, reason=decision.reason, timeout_s=timeout,
                now=now, default_decision=default,
            )  # fmt: skip
        return Verdict(decision, tool, approval)

    def _rate_limited(
        self, decision: Decision, agent: str, tool: registry.Tool | None, name: str, now: datetime
    ) -> Decision:
        """The policy rule's limit, then the registry's per-tool limit (its own window)."""
        if decision.outcome not in ("allow", "approval_required"):
            return decision
        if decision.rate_limit is not None:
            limit = decision.rate_limit
            ok, retry = self.limiter.check_and_record(
                rate_key(agent, name), limit.count, limit.window_s, now
            )
            decision = with_rate_result(decision, ok, retry)
            if not ok:
                return decision
        if tool is not None and tool.rate_limit:
            count, window = parse_rate_limit(tool.rate_limit)
            ok, retry = self.limiter.check_and_record(
                f"registry:{agent}:{name}", count, window, now
            )
            if not ok:
                return Decision("rate_limited", f"tool registry rate_limit {tool.rate_limit}",
                                f"over {name}'s rate limit of {tool.rate_limit}",
                                retry_after_s=retry, tags=decision.tags)  # fmt: skip
        return decision

    def mark_returned(
        self, run_id: str | None, tags: Iterable[str], *, now: datetime, agent: str | None = None
    ) -> None:
        """After a tool returned into a run, its tags join the run's `tags_seen`, so that any
        `data_flow` rule (`after_tag: untrusted` and every other tag) applies to later calls."""
        taint = set(tags)
        if run_id and taint:
            with self.engine.begin() as conn:
                ensure_run(conn, run_id, trace_id=None, attribution=RunAttribution(agent=agent),
                           started_at=now, source="gateway", now=now)  # fmt: skip
                registry.add_run_tags(conn, run_id, taint, now=now)
