"""Boundary policies compiled for speed, and the pure decision engine: given a policy, a tool
call and the run's state, `decide` says allow, deny, approval_required or rate_limited, and why.
"""

from __future__ import annotations

import fnmatch
import hashlib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

from tether.core.policy_args import Condition, compile_conditions, first_failure, normalize_list
from tether.core.policy_schema import (
    PolicyError,
    PolicyModel,
    Problem,
    glob_regex,
    parse_policy_model,
    parse_rate_limit,
)
from tether.core.provenance import Finding

if TYPE_CHECKING:
    from tether.core.budget import Limits

__all__ = [
    "DataFlowRule",
    "DayBudget",
    "Decision",
    "DecisionRequest",
    "Outcome",
    "Policy",
    "PolicyError",
    "Problem",
    "RateLimit",
    "RateState",
    "RunBudget",
    "RunState",
    "ToolRule",
    "decide",
    "decide_surface",
    "glob_regex",
    "lint",
    "rate_key",
    "with_rate_result",
]

Outcome = Literal["allow", "deny", "approval_required", "rate_limited"]
IRREVERSIBLE = "irreversible"


@dataclass(frozen=True)
class RateLimit:
    count: int
    window_s: int
    text: str


@dataclass(frozen=True)
class ToolRule:
    index: int
    match: str
    allow: bool
    approval_required: bool
    rate_limit: RateLimit | None
    tags: frozenset[str]
    reason: str | None
    conditions: tuple[Condition, ...] = ()
    pattern: re.Pattern[str] | None = field(default=None, repr=False, compare=False)

    @property
    def label(self) -> str:
        when = " when " + " and ".join(f"{c.argument} {c.text}" for c in self.conditions)
        return f'tools[{self.index}] match "{self.match}"' + (when if self.conditions else "")


@dataclass(frozen=True)
class DataFlowRule:
    """`after_tag` set: run-wide taint; `argument_from` set: the call's own arguments."""

    index: int
    after_tag: str | None
    tag: str
    action: Literal["approval_required", "deny"] = "approval_required"
    argument_from: Literal["untrusted"] | None = None
    arguments: frozenset[str] | None = None

    @property
    def require_approval_for_tag(self) -> str:
        return self.tag

    @property
    def label(self) -> str:
        verb = "approval for" if self.action == "approval_required" else "deny"
        if self.argument_from is None and self.action == "approval_required":
            return f"data_flow[{self.index}] after {self.after_tag} -> {self.tag}"
        if self.argument_from is None:
            return f"data_flow[{self.index}] after {self.after_tag} -> {verb} {self.tag}"
        which = ", ".join(sorted(self.arguments)) if self.arguments else "any argument"
        return f"data_flow[{self.index}] {which} from untrusted -> {verb} {self.tag}"


@dataclass(frozen=True)
class RunBudget:
    max_cost_usd: Decimal | None = None
    max_tokens: int | None = None
    max_llm_calls: int | None = None
    max_tool_calls: int | None = None
    max_duration_s: float | None = None


@dataclass(frozen=True)
class DayBudget:
    max_cost_usd: Decimal | None = None


@dataclass(frozen=True)
class Budgets:
    run: RunBudget
    day: DayBudget
    user_day: DayBudget


@dataclass(frozen=True)
class RunState:
    """What the run has done so far; `tags_seen` holds the tags of tools that returned into it."""

    tags_seen: frozenset[str] = frozenset()
    tool_calls: int = 0
    llm_calls: int = 0


@dataclass(frozen=True)
class RateState:
    """Calls already made in the current window for the matched rule's key, and when one frees."""

    count: int
    retry_after_s: float | None = None


@dataclass(frozen=True)
class DecisionRequest:
    agent: str
    tool: str
    tags: frozenset[str] = frozenset()
    arguments: Mapping[str, Any] | None = None
    run_state: RunState = RunState()
    rate: RateState | None = None
    # arguments carrying values seen only in untrusted content (core.provenance.findings)
    untrusted: tuple[Finding, ...] = ()
    # named lists beyond the policy's own (e.g. the registry's contacts); the policy's win
    lists: Mapping[str, frozenset[str]] | None = None
    # the systems the tool touches (the registry's, else its server's name), for `systems:`
    systems: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Decision:
    """The outcome, the rule that produced it and a sentence a person can read."""

    outcome: Outcome
    rule: str
    reason: str
    retry_after_s: float | None = None
    # the tool's tags plus the matched rule's: a caller adds them to the run's tags_seen on return
    tags: frozenset[str] = frozenset()
    # the limit the caller must count this call against (store/ratelimit.py), if any
    rate_limit: RateLimit | None = None
    # the argument value that made a data-flow rule fire
    finding: Finding | None = None

    @property
    def allowed(self) -> bool:
        return self.outcome == "allow"

    def to_dict(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "rule": self.rule,
            "reason": self.reason,
            "retry_after_s": self.retry_after_s,
            "tags": sorted(self.tags),
            "rate_limit": self.rate_limit.text if self.rate_limit else None,
            "finding": self.finding.to_dict() if self.finding else None,
        }


@dataclass(frozen=True, eq=False)
class Policy:
    """A validated, compiled boundary policy for one agent. Build with `Policy.parse`."""

    agent: str
    owner: str | None
    models: tuple[str, ...] | None
    budgets: Budgets
    systems_read: tuple[str, ...]
    systems_write: tuple[str, ...]
    tools: tuple[ToolRule, ...]
    data_flow: tuple[DataFlowRule, ...]
    resources: tuple[ToolRule, ...]
    prompts: tuple[ToolRule, ...]
    on_uncertain: Literal["ask", "deny", "allow"]
    memory_namespace: str | None
    memory_read_grants: tuple[str, ...]
    approval_timeout_s: int | None
    approval_default: Literal["deny", "allow"]
    source: str
    sha256: str
    document: dict[str, Any] = field(repr=False)
    lists: Mapping[str, frozenset[str]] = field(repr=False, default_factory=dict)
    # the policy's name for a list -> the registry list holding its entries (`tether lists`)
    registry_lists: Mapping[str, str] = field(repr=False, default_factory=dict)
    _matcher: re.Pattern[str] | None = field(repr=False, default=None)
    _models: re.Pattern[str] | None = field(repr=False, default=None)

    @classmethod
    def parse(cls, source: str, file: str = "<policy>") -> Policy:
        """Validates and compiles; raises PolicyError with `FILE:LINE: field: problem. Fix:`."""
        return cls.from_model(parse_policy_model(source, file), source)

    @classmethod
    def from_model(cls, m: PolicyModel, source: str) -> Policy:
        refs = {n: ref.registry for n, ref in m.lists.items() if not isinstance(ref, list)}
        rules = []
        for i, t in enumerate(m.tools):
            rate = None
            if t.rate_limit is not None:
                count, window = parse_rate_limit(t.rate_limit)
                rate = RateLimit(count, window, t.rate_limit)
            conditions: list[Condition] = []
            for arg, cond in (t.when or {}).items():
                conditions.extend(compile_conditions(arg, cond, refs))
            rules.append(
                ToolRule(
                    i, t.match, t.allow, t.approval == "required", rate, frozenset(t.tags),
                    t.reason, tuple(conditions), re.compile(glob_regex(t.match)),
                )
            )  # fmt: skip
        matcher = None
        if rules:
            matcher = re.compile("|".join(f"(?P<r{r.index}>{glob_regex(r.match)})" for r in rules))
        models = None
        if m.models is not None:
            models = re.compile("|".join(glob_regex(p) for p in m.models) or "(?!)")
        b = m.budgets
        return cls(
            agent=m.agent,
            owner=m.owner,
            models=tuple(m.models) if m.models is not None else None,
            budgets=Budgets(
                run=RunBudget(
                    b.run.max_cost_usd,
                    b.run.max_tokens,
                    b.run.max_llm_calls,
                    b.run.max_tool_calls,
                    b.run.max_duration_s,
                ),
                day=DayBudget(b.day.max_cost_usd),
                user_day=DayBudget(b.user_day.max_cost_usd),
            ),
            systems_read=tuple(m.systems.read),
            systems_write=tuple(m.systems.write),
            tools=tuple(rules),
            resources=_surface_rules(m.resources),
            prompts=_surface_rules(m.prompts),
            data_flow=tuple(
                DataFlowRule(
                    i,
                    d.after_tag,
                    d.require_approval_for_tag or d.deny_for_tag or "",
                    "deny" if d.deny_for_tag else "approval_required",
                    d.argument_from,
                    frozenset(d.arguments) if d.arguments is not None else None,
                )
                for i, d in enumerate(m.data_flow)
            ),
            on_uncertain=m.on_uncertain,
            memory_namespace=m.memory.namespace,
            memory_read_grants=tuple(
                g if isinstance(g, str) else g.namespace for g in m.memory.read_grants
            ),
            approval_timeout_s=m.approval.timeout_s,
            approval_default=m.approval.default,
            source=source,
            sha256=hashlib.sha256(source.encode()).hexdigest(),
            document=m.model_dump(mode="json", by_alias=True),
            lists={
                name: normalize_list(name, entries)
                for name, entries in m.lists.items()
                if isinstance(entries, list)
            },
            registry_lists=refs,
            _matcher=matcher,
            _models=models,
        )

    def rule_for(self, tool: str) -> ToolRule | None:
        """The first tool rule whose glob matches `tool`, or None."""
        if self._matcher is None:
            return None
        m = self._matcher.fullmatch(tool)
        if m is None:
            return None
        return self.tools[int(m.lastgroup[1:])] if m.lastgroup else None

    @property
    def uses_systems(self) -> bool:
        return bool(self.systems_read or self.systems_write)

    @property
    def uses_provenance(self) -> bool:
        """True when a data-flow rule looks at where the call's arguments came from."""
        return any(f.argument_from is not None for f in self.data_flow)

    def rule_for_call(
        self, tool: str, arguments: Mapping[str, Any] | None, lists: Mapping[str, frozenset[str]]
    ) -> tuple[ToolRule | None, str | None]:
        """The first rule whose glob matches `tool` and whose conditions hold, and why the
        first conditional rule that matched the name did not apply (for the reason)."""
        first = self.rule_for(tool)
        if first is None or not first.conditions:
            return first, None
        skipped = None
        for rule in self.tools[first.index :]:
            if rule.pattern is None or rule.pattern.fullmatch(tool) is None:
                continue
            failed = first_failure(rule.conditions, arguments, lists)
            if failed is None:
                return rule, skipped
            if skipped is None:
                skipped = f"{rule.label} did not apply: {failed.failure(arguments or {})}"
        return None, skipped

    def allows_model(self, model: str) -> bool:
        """True when `models` is absent or one of its globs matches."""
        return self._models is None or self._models.fullmatch(model) is not None

    def budget_limits(self) -> Limits:
        """The caps the LLM gateway enforces for this agent, as core.budget's Limits."""
        from tether.core.budget import Limits, RunLimits

        run = self.budgets.run
        duration = None if run.max_duration_s is None else math.ceil(run.max_duration_s)
        return Limits(
            run=RunLimits(run.max_cost_usd, run.max_tokens, run.max_llm_calls, duration),
            agent_day_usd=self.budgets.day.max_cost_usd,
            user_day_usd=self.budgets.user_day.max_cost_usd,
        )


def _surface_rules(models: Any) -> tuple[ToolRule, ...]:
    return tuple(
        ToolRule(i, r.match, r.allow, False, None, frozenset(r.tags), r.reason,
                 pattern=re.compile(glob_regex(r.match)))
        for i, r in enumerate(models)
    )  # fmt: skip


def decide_surface(
    policy: Policy | None, agent: str, surface: Literal["resources", "prompts"], name: str
) -> Decision:
    """A resource read (`name` is "server:uri") or a prompt get ("server.name"): the first rule
    of the policy's `resources` / `prompts` section that matches; none matching follows
    `on_uncertain` (`allow` allows; `ask` and `deny` refuse, as no person can be asked mid-read).
    Its output is untrusted: the decision's tags always carry `untrusted`."""
    base = frozenset({"untrusted"})
    if policy is None or agent != policy.agent:
        return Decision("deny", "no policy", f"agent {agent} has no boundary policy", tags=base)
    for rule in getattr(policy, surface):
        if rule.pattern is not None and rule.pattern.fullmatch(name):
            label = f'{surface}[{rule.index}] match "{rule.match}"'
            tags = base | rule.tags
            if not rule.allow:
                return Decision(
                    "deny", label, rule.reason or f"the policy forbids {name}", tags=tags
                )
            return Decision("allow", label, rule.reason or f"{name} is allowed", tags=tags)
    if policy.on_uncertain == "allow":
        return Decision("allow", "on_uncertain: allow", f"no {surface} rule matches", tags=base)
    return Decision("deny", f"on_uncertain: {policy.on_uncertain}",
                    f"no {surface} rule matches {name}; add one under `{surface}:`",
                    tags=base)  # fmt: skip


def rate_key(agent: str, tool: str) -> str:
    """The sliding-window key a tool rule's rate limit counts against, per agent per tool."""
    return f"tool:{agent}:{tool}"


def _uncertain(policy: Policy, tags: frozenset[str]) -> Decision:
    if policy.on_uncertain == "deny":
        return Decision(
            "deny",
            "on_uncertain: deny",
            "no tool rule matches this tool and the policy denies what it does not name",
            tags=tags,
        )
    if IRREVERSIBLE in tags:
        return Decision(
            "approval_required",
            "tag irreversible (no explicit rule)",
            "the tool is irreversible and no tool rule names it",
            tags=tags,
        )
    if policy.on_uncertain == "ask":
        return Decision(
            "approval_required",
            "on_uncertain: ask",
            "no tool rule matches this tool, so a person decides",
            tags=tags,
        )
    return Decision(
        "allow", "on_uncertain: allow", "no tool rule matches; the policy allows it", tags=tags
    )


def decide(policy: Policy | None, request: DecisionRequest) -> Decision:
    """The decision for one tool call. Pure: same inputs, same answer.

    Order: no policy -> deny; run tool-call cap; `systems:` (a tool outside the agent's
    systems is denied whatever the rules say); first matching rule (deny, approval, allow);
    no rule -> on_uncertain (an irreversible tool needs approval unless on_uncertain is deny);
    data_flow turns an allow into approval_required; rate limit (when `rate` is given) last.
    """
    tags = request.tags
    if policy is None:
        return Decision(
            "deny",
            "no policy",
            f"agent {request.agent} has no boundary policy; apply one with "
            "`tether policy apply FILE`",
            tags=tags,
        )
    if request.agent != policy.agent:
        return Decision(
            "deny",
            "agent mismatch",
            f"the policy is for agent {policy.agent}, not {request.agent}",
            tags=tags,
        )
    cap = policy.budgets.run.max_tool_calls
    if cap is not None and request.run_state.tool_calls >= cap:
        return Decision(
            "deny",
            "budgets.run.max_tool_calls",
            f"the run already made {request.run_state.tool_calls} tool calls; the cap is {cap}",
            tags=tags,
        )
    if policy.uses_systems:
        outside = _outside_systems(policy, request)
        if outside is not None:
            return outside
    lists = policy.lists if not request.lists else {**request.lists, **policy.lists}
    rule, skipped = policy.rule_for_call(request.tool, request.arguments, lists)
    if rule is None:
        decision = _uncertain(policy, tags)
        if skipped:
            decision = replace(decision, reason=f"{decision.reason}; {skipped}")
    else:
        if rule.tags:
            tags = tags | rule.tags
        if not rule.allow:
            why = rule.reason or f"the policy forbids {request.tool}" + _held_because(rule)
            if skipped and rule.reason is None:
                why += f"; {skipped}"
            return Decision("deny", rule.label, why, tags=tags)
        if rule.approval_required:
            decision = Decision(
                "approval_required",
                rule.label,
                rule.reason or f"{request.tool} needs a person's approval" + _held_because(rule),
                tags=tags,
                rate_limit=rule.rate_limit,
            )
        else:
            decision = Decision(
                "allow",
                rule.label,
                rule.reason or f"{request.tool} is allowed" + _held_because(rule),
                tags=tags,
                rate_limit=rule.rate_limit,
            )
    if skipped and rule is not None and rule.reason is None:
        decision = replace(decision, reason=f"{decision.reason}; {skipped}")
    if decision.outcome in ("allow", "approval_required") and policy.data_flow:
        flowed = _data_flow(policy, request, tags, decision)
        if flowed is not None:
            decision = flowed
    if request.rate is not None and decision.rate_limit is not None:
        return with_rate_result(
            decision, request.rate.count < decision.rate_limit.count, request.rate.retry_after_s
        )
    return decision


# A tool with one of these tags changes something: it needs a system under `systems.write`.
WRITE_TAGS = frozenset({"write", "egress", "irreversible"})


def _covers(grant: str, system: str) -> bool:
    return system == grant or system.startswith(grant + ".") or fnmatch.fnmatchcase(system, grant)


def _outside_systems(policy: Policy, request: DecisionRequest) -> Decision | None:
    """`systems:` is a boundary no tool rule can widen: a tool that writes (tagged write,
    egress or irreversible) needs one of its systems under `write`; any other needs one under
    `read` or `write`. A tool that names no system is outside every system."""
    writes = bool(request.tags & WRITE_TAGS)
    grants = policy.systems_write if writes else policy.systems_read + policy.systems_write
    systems = request.systems
    if any(_covers(g, s) for s in systems for g in grants):
        return None
    key = "systems.write" if writes else "systems.read"
    verb = "writes to" if writes else "reads"
    where = ", ".join(sorted(systems)) if systems else "no system"
    granted = ", ".join(grants) or "none"
    return Decision(
        "deny", key,
        f"{request.tool} {verb} {where}, outside this policy's {key} ({granted}); add the "
        f"system under `systems: {'write' if writes else 'read'}:` if the agent may",
        tags=request.tags,
    )  # fmt: skip


def _held_because(rule: ToolRule) -> str:
    if not rule.conditions:
        return ""
    return " (" + " and ".join(f"argument `{c.argument}` {c.text}" for c in rule.conditions) + ")"


def _data_flow(
    policy: Policy, request: DecisionRequest, tags: frozenset[str], decision: Decision
) -> Decision | None:
    """The first data-flow rule that turns this decision stricter, or None.

    A run-wide rule fires once any tool with `after_tag` returned into the run; a provenance
    rule only when an argument (of those it names) carries an untrusted-only value. A deny
    applies to an allow or a hold; an approval only to an allow.
    """
    seen = request.run_state.tags_seen
    annotated: Decision | None = None
    for flow in policy.data_flow:
        if flow.tag not in tags:
            continue
        if flow.action == "approval_required" and decision.outcome != "allow":
            # already held by a tool rule: still name the untrusted value it carries, so the
            # reviewer sees it and can approve that counterparty
            found = _finding_for(flow, request)
            if found is not None and annotated is None and decision.finding is None:
                annotated = replace(decision, finding=found,
                                    reason=f"{decision.reason}; {found.describe()}")  # fmt: skip
            continue
        finding = None
        if flow.argument_from is not None:
            finding = _finding_for(flow, request)
            if finding is None:
                continue
            why = f"{finding.describe()}, and {flow.tag} tools "
        elif flow.after_tag in seen:
            why = f"a tool tagged {flow.after_tag} returned into this run, so {flow.tag} tools "
        else:
            continue
        why += "need approval" if flow.action == "approval_required" else "are refused"
        return Decision(flow.action, flow.label, why, tags=tags, rate_limit=decision.rate_limit,
                        finding=finding)  # fmt: skip
    return annotated


def _finding_for(flow: DataFlowRule, request: DecisionRequest) -> Finding | None:
    if flow.argument_from is None:
        return None
    return next((f for f in request.untrusted
                 if flow.arguments is None or f.argument in flow.arguments), None)  # fmt: skip


def with_rate_result(decision: Decision, allowed: bool, retry_after_s: float | None) -> Decision:
    """Turns `decision` into rate_limited when its limit's window is full."""
    if allowed or decision.rate_limit is None or decision.outcome == "deny":
        return decision
    limit = decision.rate_limit
    return Decision(
        "rate_limited",
        f"{decision.rule} rate_limit {limit.text}",
        f"over the rate limit of {limit.text}",
        retry_after_s=retry_after_s,
        tags=decision.tags,
        rate_limit=limit,
    )


def lint(policy: Policy, source: str, file: str = "<policy>") -> list[Problem]:
    """Warnings about a valid policy. Whatever would disable a rule (a rule that can never be
    reached, an unknown tag, a missing list) is an error at parse time instead
    (`policy_schema.cross_check`); this stays for the callers that print warnings."""
    return []
