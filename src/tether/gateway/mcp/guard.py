"""One enforcement path for every tool call, through the MCP gateway or POST /api/v1/decide:
registry pin check, the agent's policy (core.policy.decide), rate limits, the run's data-flow
tags, an audit entry per decision, and a hold (store/approvals.py) when a person must decide.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import Engine, select

from tether.core.policy import (
    Decision,
    DecisionRequest,
    Policy,
    RunState,
    decide,
    decide_surface,
    rate_key,
    with_rate_result,
)
from tether.core.policy_schema import parse_rate_limit
from tether.core.provenance import (
    Atom,
    Finding,
    argument_atoms,
    atoms_of,
    findings,
    trusted_atoms,
)
from tether.core.records import TERMINAL_STATUSES, RunAttribution
from tether.gateway.mcp.spans import redacted
from tether.store import approvals, audit, grants, kills, lists, policies
from tether.store import provenance as provenance_store
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
        self._list_atoms: dict[str, frozenset[Atom]] = {}

    def _run_state(self, run_id: str | None) -> tuple[RunState, str | None, str | None]:
        """The run's tags and counts, its status and its task input (a trusted source)."""
        if not run_id:
            return RunState(), None, None
        with reading(self.engine) as conn:
            row = conn.execute(
                select(runs.c.status, runs.c.tool_calls, runs.c.attributes, runs.c.input).where(
                    runs.c.id == run_id
                )
            ).first()
        if row is None:
            return RunState(), None, None
        seen = (row.attributes or {}).get(registry.RUN_TAGS_KEY, ())
        state = RunState(tags_seen=frozenset(seen), tool_calls=int(row.tool_calls or 0))
        return state, row.status, row.input

    def _closed(
        self, policy: Policy | None, run_id: str | None, status: str | None, now: datetime,
        actor: str,
    ) -> str | None:  # fmt: skip
        """Why the run takes no more calls: killed (max_duration_s passed kills it now, ended
        or not, as the LLM gateway does), or ended; None if it is open."""
        if status is None or run_id is None:
            return None
        limit = policy.budget_limits().run.max_duration_s if policy is not None else None
        if status != "killed" and limit is None and status not in TERMINAL_STATUSES:
            return None
        with reading(self.engine) as conn:
            row = conn.execute(
                select(runs.c.started_at, runs.c.kill_reason).where(runs.c.id == run_id)
            ).one()
        overdue = limit is not None and now >= row.started_at + timedelta(seconds=limit)
        if status != "killed" and overdue:
            with self.engine.begin() as conn:
                if kills.kill(conn, run_id, reason=DURATION_REASON, now=now):
                    audit.append_in(conn, actor, "run.killed", run_id,
                                    {"reason": DURATION_REASON}, now)  # fmt: skip
            return f"run {run_id} was killed ({DURATION_REASON}); start a new run"
        if status == "killed":
            return f"run {run_id} was killed ({row.kill_reason or 'killed'}); start a new run"
        if status in TERMINAL_STATUSES:
            return f"run {run_id} is {status}; start a new run"
        return None

    def registry_lists(self, policy: Policy | None) -> Mapping[str, lists.Resolved]:
        """The registry lists the policy names, by the policy's name for each, as in-memory
        sets (store/lists.py re-reads a list only when its version moved)."""
        if policy is None or not policy.registry_lists:
            return {}
        resolved = lists.resolve(self.engine, policy.registry_lists.values())
        return {local: resolved[name] for local, name in policy.registry_lists.items()
                if name in resolved}  # fmt: skip

    def findings(
        self,
        run_id: str | None,
        policy: Policy | None,
        arguments: Mapping[str, Any] | None,
        task_input: str | None,
        registry_lists: Mapping[str, lists.Resolved] | None = None,
    ) -> tuple[Finding, ...]:
        """The arguments carrying values this run saw only from untrusted sources. The task
        input and the policy's lists (inline and registry) count as trusted sources (they are
        not stored per run)."""
        if not run_id or not arguments or policy is None or not policy.uses_provenance:
            return ()
        digests = {a.digest for v in arguments.values() for a in argument_atoms(v)}
        seen = provenance_store.known(self.engine, run_id, digests)
        suspect = {d for d, s in seen.items() if s.untrusted and not s.trusted}
        if not suspect:
            return ()
        trusted = {a for a in atoms_of(task_input) if a.digest in suspect} if task_input else set()
        trusted |= {a for a in self._policy_atoms(policy) if a.digest in suspect}
        vouched = {d for r in (registry_lists or {}).values() for d in r.digests & suspect}
        known = provenance_store.overlay_trusted(seen, trusted)
        for digest in vouched:
            known[digest] = replace(known[digest], trusted=True)
        return tuple(findings(arguments, known))

    def _policy_atoms(self, policy: Policy) -> frozenset[Atom]:
        """The provenance atoms of the policy's inline lists, computed once per version."""
        found = self._list_atoms.get(policy.sha256)
        if found is None:
            entries = [list(v) for v in policy.document.get("lists", {}).values()
                       if isinstance(v, list)]  # fmt: skip
            found = frozenset(atoms_of(entries))
            if len(self._list_atoms) > 256:
                self._list_atoms.clear()
            self._list_atoms[policy.sha256] = found
        return found

    def record_values(
        self,
        run_id: str | None,
        *,
        source: str,
        output: Any,
        untrusted: bool,
        arguments: Mapping[str, Any] | None,
        now: datetime,
        agent: str | None = None,
    ) -> None:
        """Indexes what a tool, resource or prompt returned into the run: untrusted values as
        they are; trusted ones minus what the output only echoed from the call's arguments."""
        if not run_id or output is None:
            return
        atoms = atoms_of(output) if untrusted else trusted_atoms(output, echo=arguments)
        if not atoms:
            return
        with self.engine.begin() as conn:
            ensure_run(conn, run_id, trace_id=None, attribution=RunAttribution(agent=agent),
                       started_at=now, source="gateway", now=now)  # fmt: skip
            provenance_store.record(conn, run_id, atoms, trusted=not untrusted, source=source,
                                    now=now)  # fmt: skip

    def preview(self, policy: Policy | None, agent: str | None, tool: registry.Tool) -> Decision:
        """The decision without side effects (no rate counting, audit or hold): for tools/list."""
        if tool.blocked:
            return blocked_decision(tool)
        request = DecisionRequest(agent=agent or "", tool=tool.name, tags=frozenset(tool.tags),
                                  systems=tool.systems)  # fmt: skip
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
        state, status, task_input = self._run_state(run_id)
        policy = policies.get(self.engine, agent) if agent else None
        closed = self._closed(policy, run_id, status, now, actor)
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
            named = self.registry_lists(policy)
            untrusted = self.findings(run_id, policy, arguments, task_input, named)
            request = DecisionRequest(agent=agent or "", tool=name, tags=tags,
                                      arguments=arguments, run_state=state, untrusted=untrusted,
                                      lists={k: r.entries for k, r in named.items()} or None,
                                      systems=tool.systems)  # fmt: skip
            decision = self._rate_limited(decide(policy, request), agent or "", tool, name, now)
        approval: approvals.Approval | None = None
        if decision.outcome == "approval_required":
            decision, approval = self._hold(decision, policy, agent, run_id, name, arguments, now)
        with self.engine.begin() as conn:
            audit.append_in(conn, actor, "policy.decision", name, {
                "agent": agent, "run_id": run_id, "outcome": decision.outcome,
                "rule": decision.rule, "reason": decision.reason,
                "retry_after_s": decision.retry_after_s,
                "finding": decision.finding.to_dict() if decision.finding else None,
                "approval_id": approval.id if approval else None,
            }, now)  # fmt: skip
        return Verdict(decision, tool, approval)

    def check_surface(
        self,
        *,
        agent: str | None,
        run_id: str | None,
        surface: Literal["resources", "prompts"],
        name: str,
        now: datetime,
        actor: str,
    ) -> Decision:
        """A resource read or prompt get, decided by the policy's `resources` / `prompts`
        rules and audited like a tool call."""
        _, status, _ = self._run_state(run_id)
        policy = policies.get(self.engine, agent) if agent else None
        if status in TERMINAL_STATUSES:
            decision = Decision("deny", "run ended", f"run {run_id} is {status}; start a new run",
                                tags=frozenset({"untrusted"}))  # fmt: skip
        else:
            decision = decide_surface(policy, agent or "", surface, name)
        with self.engine.begin() as conn:
            audit.append_in(conn, actor, "policy.decision", name, {
                "agent": agent, "run_id": run_id, "outcome": decision.outcome,
                "rule": decision.rule, "reason": decision.reason, "surface": surface,
            }, now)  # fmt: skip
        return decision

    def _hold(
        self,
        decision: Decision,
        policy: Policy | None,
        agent: str | None,
        run_id: str | None,
        name: str,
        arguments: Mapping[str, Any] | None,
        now: datetime,
    ) -> tuple[Decision, approvals.Approval | None]:
        """A hold, unless a person already answered this question: a grant (scope run or
        counterparty) allows it; the same call in the same run joins the pending hold, or is
        refused again if it was denied. Otherwise a new hold naming the value that caused it."""
        digest = grants.args_hash(arguments)
        finding = decision.finding.to_dict() if decision.finding else None
        grant = grants.covering(self.engine, agent=agent, tool=name, run_id=run_id,
                                arguments_hash=digest, finding=finding)  # fmt: skip
        if grant is not None:
            why = f"{grant.describe()} (approval {grant.approval_id}); was: {decision.reason}"
            return replace(decision, outcome="allow", rule=f"approval grant {grant.id} "
                           f"({grant.scope})", reason=why), None  # fmt: skip
        same = approvals.find_same(self.engine, run_id=run_id, tool=name, args_hash=digest)
        if same is not None and same.pending:
            return decision, same
        if same is not None and same.status in ("denied", "expired"):
            why = (f"the same call was {same.status} earlier in this run ({same.id} by "
                   f"{same.decided_by}: {same.decision_reason or 'no reason given'})")  # fmt: skip
            return replace(decision, outcome="deny", rule=f"approval {same.id}", reason=why), None
        timeout = self.approval_timeout_s
        default = "deny"
        if policy is not None:
            timeout = policy.approval_timeout_s or timeout
            default = policy.approval_default
        approval = approvals.create(
            self.engine, tool=name, arguments=redacted(dict(arguments or {}), self.redact),
            run_id=run_id, agent=agent, rule=decision.rule, reason=decision.reason,
            timeout_s=timeout, now=now, default_decision=default, finding=finding,
            args_hash=digest,
        )  # fmt: skip
        return decision, approval

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
