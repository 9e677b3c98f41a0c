"""Every table of tether, in SQLAlchemy Core; the Alembic migrations create exactly these.

Money is integer nano-dollars (`*_nusd`, see core/money.py); timestamps are timezone-aware UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both databases (SQLite would hand back naive ones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; tether stores UTC-aware timestamps")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


TS = UtcDateTime()

# ---------------------------------------------------------------- agents and runs

agents = Table(
    "agents",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("owner", String(200)),
    Column("description", Text),
    Column("created_at", TS, nullable=False),
    Column("last_seen_at", TS),
)

agent_versions = Table(
    "agent_versions",
    metadata,
    Column("agent", String(200), ForeignKey("agents.name", ondelete="CASCADE"), primary_key=True),
    Column("version", String(200), primary_key=True),
    Column("created_at", TS, nullable=False),
    Column("last_seen_at", TS),
)

runs = Table(
    "runs",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("trace_id", String(32), index=True),
    Column("task_id", String(200)),
    Column("agent", String(200)),
    Column("version", String(200)),
    Column("user", String(200)),
    # running | succeeded | failed | killed | awaiting_approval
    Column("status", String(32), nullable=False),
    Column("started_at", TS, nullable=False),
    Column("ended_at", TS),
    Column("input", Text),
    Column("output", Text),
    Column("input_tokens", BigInteger, nullable=False, default=0),
    Column("output_tokens", BigInteger, nullable=False, default=0),
    Column("cached_tokens", BigInteger, nullable=False, default=0),
    Column("cost_nusd", BigInteger, nullable=False, default=0),
    Column("cost_unknown", Boolean, nullable=False, default=False),
    Column("llm_calls", Integer, nullable=False, default=0),
    Column("tool_calls", Integer, nullable=False, default=0),
    Column("span_count", Integer, nullable=False, default=0),
    Column("error", Text),
    Column("score", Float),
    Column("kill_reason", Text),
    # where the run came from: otlp | sdk | gateway | api
    Column("source", String(32)),
    Column("attributes", JSON),
    Column("updated_at", TS, nullable=False),
)
Index("ix_runs_started", runs.c.started_at.desc(), runs.c.id)
Index("ix_runs_agent_started", runs.c.agent, runs.c.started_at.desc())
Index("ix_runs_status_started", runs.c.status, runs.c.started_at.desc())
Index("ix_runs_task", runs.c.task_id)
Index("ix_runs_user", runs.c.user)
# The run list sorted by cost (keyset on cost, id).
Index("ix_runs_cost", runs.c.cost_nusd.desc(), runs.c.id)
# Covers the cost, KPI and metrics aggregates, so they read this narrow index, not the wide rows.
Index(
    "ix_runs_rollup",
    runs.c.started_at, runs.c.agent, runs.c.version, runs.c.user, runs.c.status,
    runs.c.cost_nusd, runs.c.input_tokens, runs.c.output_tokens,
)  # fmt: skip

spans = Table(
    "spans",
    metadata,
    Column("trace_id", String(32), primary_key=True),
    Column("span_id", String(16), primary_key=True),
    Column("parent_id", String(16)),
    Column("run_id", String(64), nullable=False),
    # agent | llm | tool | retrieval | approval | chain | embedding | other
    Column("kind", String(32), nullable=False),
    Column("name", String(500), nullable=False),
    Column("started_at", TS, nullable=False),
    Column("ended_at", TS),
    Column("latency_ms", Float),
    Column("input", Text),
    Column("output", Text),
    Column("model", String(200)),
    Column("model_served", String(200)),
    Column("input_tokens", BigInteger),
    Column("output_tokens", BigInteger),
    Column("cached_tokens", BigInteger),
    Column("cost_nusd", BigInteger),
    Column("cost_unknown", Boolean, nullable=False, default=False),
    Column("ttft_ms", Float),
    # ok | error | unset
    Column("status", String(16), nullable=False),
    Column("error", Text),
    Column("attributes", JSON),
)
Index("ix_spans_run", spans.c.run_id, spans.c.started_at)
Index("ix_spans_started", spans.c.started_at)
# The error spans of a run (the rollout rule counts policy violations among them).
Index(
    "ix_spans_errors",
    spans.c.run_id,
    sqlite_where=spans.c.status == "error",
    postgresql_where=spans.c.status == "error",
)

scores = Table(
    "scores",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("run_id", String(64), nullable=False, index=True),
    Column("span_id", String(16)),
    Column("name", String(200), nullable=False),
    Column("value", Float, nullable=False),
    # sdk | eval | api | human
    Column("source", String(32), nullable=False),
    Column("comment", Text),
    Column("created_at", TS, nullable=False),
)

feedback = Table(
    "feedback",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("run_id", String(64), nullable=False, index=True),
    # thumbs | score | comment
    Column("kind", String(16), nullable=False),
    Column("value", Float),
    Column("comment", Text),
    Column("user", String(200)),
    Column("created_at", TS, nullable=False),
)

# ---------------------------------------------------------------- access

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(200)),
    # the first characters of the secret, shown in listings so people can tell keys apart
    Column("prefix", String(32), nullable=False),
    Column("hash", String(128), nullable=False, unique=True),
    Column("scopes", String(200), nullable=False),
    Column("agent", String(200)),
    Column("created_at", TS, nullable=False),
    Column("last_used_at", TS),
    Column("revoked_at", TS),
    # refused from then on (a lifetime given at creation, or the end of a rotation's overlap)
    Column("expires_at", TS),
    # a key rotated out: the key that replaces it
    Column("replaced_by", String(64)),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column(
        "seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("id", String(64), nullable=False, unique=True),
    Column("at", TS, nullable=False),
    Column("actor", String(200), nullable=False),
    # policy.decision | approval.decided | policy.applied | run.killed | key.created | ...
    Column("action", String(64), nullable=False),
    Column("subject", String(500)),
    Column("data", JSON),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
)

# ---------------------------------------------------------------- budgets

budget_counters = Table(
    "budget_counters",
    metadata,
    # e.g. "run:run_abc", "agent_day:triage:2026-11-25", "user_day:alice:2026-11-25",
    # "key:key_abc", "global_day:2026-11-25"
    Column("scope", String(300), primary_key=True),
    Column("cap_nusd", BigInteger),
    Column("spent_nusd", BigInteger, nullable=False, default=0),
    Column("reserved_nusd", BigInteger, nullable=False, default=0),
    Column("cap_tokens", BigInteger),
    Column("spent_tokens", BigInteger, nullable=False, default=0),
    Column("reserved_tokens", BigInteger, nullable=False, default=0),
    Column("cap_calls", Integer),
    Column("calls", Integer, nullable=False, default=0),
    Column("updated_at", TS, nullable=False),
)

reservations = Table(
    "reservations",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("run_id", String(64), index=True),
    Column("scopes", JSON, nullable=False),
    Column("amount_nusd", BigInteger, nullable=False),
    Column("tokens", BigInteger, nullable=False, default=0),
    # held | settled | released
    Column("status", String(16), nullable=False),
    Column("created_at", TS, nullable=False),
    Column("expires_at", TS, nullable=False),
)

# OTLP export: which spans went out (so a crash or a receiver outage neither loses nor repeats
# one), and how far the exporter has read the runs (its high-water mark on runs.updated_at).
span_exports = Table(
    "span_exports",
    metadata,
    Column("trace_id", String(32), primary_key=True),
    Column("span_id", String(16), primary_key=True),
    Column("exported_at", TS, nullable=False),
)

export_marks = Table(
    "export_marks",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("mark", TS, nullable=False),
)
# the exporter reads runs past its mark on updated_at (ix_runs_updated, made by 0005_watch)

# ---------------------------------------------------------------- enforcement (kill switch)

# One row per killed run, written in the kill's transaction. The kill switch of every process
# polls it by `killed_at` (indexed) instead of re-reading each run it watches; spans and OTLP
# ingest never touch it, so nothing an agent sends can hide a kill.
run_kills = Table(
    "run_kills",
    metadata,
    Column("run_id", String(64), primary_key=True),
    Column("reason", Text),
    Column("killed_at", TS, nullable=False, index=True),
)

# ---------------------------------------------------------------- governance

policies = Table(
    "policies",
    metadata,
    Column("agent", String(200), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("source", Text, nullable=False),
    Column("document", JSON, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("applied_by", String(200)),
    Column("created_at", TS, nullable=False),
)

tools = Table(
    "tools",
    metadata,
    # namespaced: "server.tool"
    Column("name", String(300), primary_key=True),
    Column("server", String(200), nullable=False),
    # mcp | http | sdk
    Column("kind", String(16), nullable=False),
    Column("description", Text),
    Column("input_schema", JSON),
    Column("tags", JSON, nullable=False),
    Column("owner", String(200)),
    Column("rate_limit", String(64)),
    Column("url", Text),
    Column("pinned_hash", String(64)),
    Column("current_hash", String(64)),
    # approved | changed | new
    Column("status", String(16), nullable=False),
    Column("annotations", JSON),
    Column("first_seen_at", TS, nullable=False),
    Column("updated_at", TS, nullable=False),
    # the systems the tool touches (policy `systems:`); empty: its server's name (0011)
    Column("systems", JSON),
)

approvals = Table(
    "approvals",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("run_id", String(64), index=True),
    Column("agent", String(200)),
    Column("tool", String(300), nullable=False),
    Column("arguments", JSON),
    Column("rule", Text),
    Column("reason", Text),
    # pending | approved | denied | expired
    Column("status", String(16), nullable=False, index=True),
    Column("default_decision", String(16), nullable=False),
    Column("decided_by", String(200)),
    Column("decision_reason", Text),
    Column("created_at", TS, nullable=False),
    Column("decided_at", TS),
    Column("expires_at", TS, nullable=False),
    # (governance, 0003) the argument value that made it a hold: {argument, value, kind, source}
    Column("finding", JSON),
    # (0003) sha256 of the canonical arguments: repeated holds of the same call are one
    Column("args_hash", String(64)),
    # (0003) what the approval covers: call | run (this tool + these arguments for the run)
    # | counterparty (this value for this agent)
    Column("scope", String(16)),
)

rate_events = Table(
    "rate_events",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("key", String(400), nullable=False),
    Column("at", TS, nullable=False),
)
Index("ix_rate_events_key_at", rate_events.c.key, rate_events.c.at)

# ---------------------------------------------------------------- LangGraph checkpoints
# (integrations: store/checkpoints.py, store/threads.py). A thread is one LangGraph thread_id,
# owned by one agent and linked to one tether run. Checkpoints keep their channel values
# apart, one blob per (channel, version), as LangGraph's own savers do, so a super-step
# that changes one channel stores one blob. `view` columns are JSON previews the saver
# sends beside the opaque blobs: the timeline and diffs read them, resumes never do.

checkpoint_threads = Table(
    "checkpoint_threads",
    metadata,
    Column("thread_id", String(200), primary_key=True),
    Column("agent", String(200)),
    Column("run_id", String(64), nullable=False, index=True),
    # the run config's hard caps (configurable max_iterations), counted by the saver
    Column("max_iterations", Integer),
    Column("steps", Integer, nullable=False, default=0),
    Column("created_at", TS, nullable=False),
    Column("updated_at", TS, nullable=False),
)

checkpoints = Table(
    "checkpoints",
    metadata,
    Column("thread_id", String(200), primary_key=True),
    Column("checkpoint_ns", String(200), primary_key=True),
    Column("checkpoint_id", String(64), primary_key=True),
    Column("parent_id", String(64)),
    Column("run_id", String(64), nullable=False, index=True),
    # LangGraph's own run id from the metadata (delete_for_runs)
    Column("lg_run_id", String(64), index=True),
    Column("step", Integer),
    Column("source", String(16)),
    Column("type", String(32), nullable=False),
    Column("checkpoint", LargeBinary, nullable=False),
    # channel -> version (as text) of every channel the checkpoint holds: which blobs it reads
    Column("versions", JSON, nullable=False),
    Column("metadata", JSON, nullable=False),
    Column("created_at", TS, nullable=False),
)

# ---------------------------------------------------------------- ops (metrics, export)

leases = Table(
    "leases",
    metadata,
    # one job that exactly one replica does at a time, e.g. "metrics.ledger", "export.otlp"
    Column("name", String(200), primary_key=True),
    Column("holder", String(200), nullable=False),
    Column("expires_at", TS, nullable=False),
)

checkpoint_blobs = Table(
    "checkpoint_blobs",
    metadata,
    Column("thread_id", String(200), primary_key=True),
    Column("checkpoint_ns", String(200), primary_key=True),
    Column("channel", String(200), primary_key=True),
    Column("version", String(64), primary_key=True),
    Column("type", String(32), nullable=False),
    Column("blob", LargeBinary),
    Column("view", JSON),
)

checkpoint_writes = Table(
    "checkpoint_writes",
    metadata,
    Column("thread_id", String(200), primary_key=True),
    Column("checkpoint_ns", String(200), primary_key=True),
    Column("checkpoint_id", String(64), primary_key=True),
    Column("task_id", String(64), primary_key=True),
    Column("idx", Integer, primary_key=True),
    Column("channel", String(200), nullable=False),
    Column("type", String(32), nullable=False),
    Column("blob", LargeBinary),
    Column("task_path", String(500), nullable=False, default=""),
    Column("view", JSON),
)

# An interrupt of a thread held as a tether approval (one approval per interrupt id).
checkpoint_interrupts = Table(
    "checkpoint_interrupts",
    metadata,
    Column("approval_id", String(64), primary_key=True),
    Column("thread_id", String(200), nullable=False),
    Column("interrupt_id", String(64), nullable=False),
    Column("checkpoint_ns", String(200), nullable=False),
    Column("checkpoint_id", String(64)),
    Column("created_at", TS, nullable=False),
)
Index("ix_checkpoint_interrupts_thread", checkpoint_interrupts.c.thread_id,
      checkpoint_interrupts.c.interrupt_id, unique=True)  # fmt: skip

# `tether runs resume`: a request the agent process takes through its saver.
checkpoint_resumes = Table(
    "checkpoint_resumes",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("thread_id", String(200), nullable=False, index=True),
    Column("run_id", String(64), nullable=False),
    Column("checkpoint_id", String(64)),
    Column("update", JSON),
    # pending | taken
    Column("status", String(16), nullable=False),
    Column("requested_by", String(200)),
    Column("created_at", TS, nullable=False),
    Column("taken_at", TS),
)

# Hard caps one run sets for itself (a LangGraph run config's max_tokens, cost_limit_usd,
# max_iterations); the LLM gateway applies them beside the agent's policy, the tighter wins.
run_caps = Table(
    "run_caps",
    metadata,
    Column("run_id", String(64), primary_key=True),
    Column("max_cost_nusd", BigInteger),
    Column("max_tokens", BigInteger),
    Column("max_llm_calls", Integer),
    Column("updated_at", TS, nullable=False),
)

# Idempotency keys of side-effecting tool calls in a thread: a call that re-runs when a node
# is replayed on resume gets the recorded result instead of running again.
tool_call_keys = Table(
    "tool_call_keys",
    metadata,
    Column("thread_id", String(200), primary_key=True),
    Column("key", String(300), primary_key=True),
    Column("tool", String(300), nullable=False),
    # started | done
    Column("status", String(16), nullable=False),
    Column("result", JSON),
    Column("created_at", TS, nullable=False),
    Column("done_at", TS),
)

# ---------------------------------------------------------------- evals and rollouts (issue 10)

evals = Table(
    "evals",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("suite", String(200), nullable=False),
    Column("agent", String(200), nullable=False),
    Column("version", String(200), nullable=False),
    # running | finished
    Column("status", String(32), nullable=False),
    Column("repeats", Integer, nullable=False),
    Column("target_cost_nusd", BigInteger),
    # the suite text as run, so a resumed or compared eval uses exactly these tasks
    Column("suite_source", Text, nullable=False),
    Column("suite_hash", String(64), nullable=False),
    Column("tasks", Integer, nullable=False),
    Column("attempts_done", Integer, nullable=False, default=0),
    Column("attempts_passed", Integer, nullable=False, default=0),
    Column("cost_nusd", BigInteger, nullable=False, default=0),
    Column("judge_cost_nusd", BigInteger, nullable=False, default=0),
    Column("created_by", String(200)),
    Column("created_at", TS, nullable=False),
    Column("finished_at", TS),
)
Index("ix_evals_agent_created", evals.c.agent, evals.c.created_at.desc())

eval_attempts = Table(
    "eval_attempts",
    metadata,
    Column("eval_id", String(64), ForeignKey("evals.id", ondelete="CASCADE"), primary_key=True),
    Column("task_id", String(200), primary_key=True),
    Column("attempt", Integer, primary_key=True),
    Column("run_id", String(64), nullable=False, index=True),
    # running | done
    Column("status", String(32), nullable=False),
    Column("passed", Boolean),
    Column("cost_nusd", BigInteger, nullable=False, default=0),
    Column("judge_cost_nusd", BigInteger, nullable=False, default=0),
    Column("duration_ms", Float),
    Column("agent_ms", Float),
    Column("results", JSON),
    Column("tools", JSON),
    Column("error", Text),
    Column("started_at", TS, nullable=False),
    Column("ended_at", TS),
)

gate_verdicts = Table(
    "gate_verdicts",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("suite", String(200), nullable=False),
    Column("agent", String(200), nullable=False),
    Column("version", String(200), nullable=False),
    Column("eval_id", String(64), nullable=False),
    Column("baseline_version", String(200)),
    Column("baseline_eval_id", String(64)),
    # pass | fail | inconclusive
    Column("outcome", String(32), nullable=False),
    Column("exit_code", Integer, nullable=False),
    Column("criteria", JSON, nullable=False),
    Column("successes", Integer, nullable=False),
    Column("total", Integer, nullable=False),
    Column("more_attempts", Integer),
    Column("reasons", JSON, nullable=False),
    Column("comparisons", JSON),
    Column("regressions", JSON),
    Column("actor", String(200)),
    Column("created_at", TS, nullable=False),
)
Index("ix_gate_verdicts_agent_created", gate_verdicts.c.agent, gate_verdicts.c.created_at.desc())

rollouts = Table(
    "rollouts",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("agent", String(200), nullable=False, index=True),
    Column("baseline", String(200), nullable=False),
    Column("candidate", String(200), nullable=False),
    Column("percent", Float, nullable=False),
    # running | paused | promoted | rolled_back | inconclusive
    Column("status", String(32), nullable=False),
    Column("rule_source", Text, nullable=False),
    Column("rule_file", String(500)),
    Column("reason", Text),
    Column("decision", JSON),
    Column("actor", String(200)),
    Column("started_at", TS, nullable=False),
    Column("step_started_at", TS, nullable=False),
    Column("evaluated_at", TS),
    Column("ended_at", TS),
    Column("updated_at", TS, nullable=False),
)

rollout_events = Table(
    "rollout_events",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column(
        "rollout_id",
        String(64),
        ForeignKey("rollouts.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column("at", TS, nullable=False),
    # started | step_up | promoted | rolled_back | paused | resumed | inconclusive
    Column("kind", String(32), nullable=False),
    Column("status", String(32), nullable=False),
    Column("percent", Float, nullable=False),
    Column("reason", Text),
    Column("actor", String(200)),
)

# The rollout rule's per-version aggregate reads only this index (agent, version, since, outcome).
Index(
    "ix_runs_agent_version_started",
    runs.c.agent, runs.c.version, runs.c.started_at, runs.c.status, runs.c.cost_nusd,
)  # fmt: skip

agent_endpoints = Table(
    "agent_endpoints",
    metadata,
    Column("agent", String(200), primary_key=True),
    Column("version", String(200), primary_key=True),
    # where POST /api/v1/agents/{agent}/tasks forwards a task routed to this version
    Column("url", String(2000), nullable=False),
    Column("created_at", TS, nullable=False),
)


# ---------------------------------------------------------------- governance: provenance,
# scoped approvals, red team (0003)

# Value provenance: every normalised value (core/provenance.py Atom) that entered a run, and
# whether a trusted and/or an untrusted source carried it.
run_values = Table(
    "run_values",
    metadata,
    Column("run_id", String(64), primary_key=True),
    Column("digest", String(32), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("value", Text, nullable=False),
    Column("trusted", Boolean, nullable=False),
    Column("untrusted", Boolean, nullable=False),
    # the first source of each kind: a tool name, "task input", "policy list", "declassified"
    Column("trusted_source", String(300)),
    Column("untrusted_source", String(300)),
    Column("first_seen_at", TS, nullable=False),
)

# What a person approved beyond one call: a tool with exact arguments for the rest of a run,
# or a counterparty value for an agent; a later hold the grant covers is allowed without asking.
approval_grants = Table(
    "approval_grants",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("agent", String(200), nullable=False),
    Column("tool", String(300), nullable=False),
    # run | counterparty
    Column("scope", String(16), nullable=False),
    Column("run_id", String(64)),
    Column("args_hash", String(64)),
    Column("value_digest", String(32)),
    Column("value", Text),
    Column("approval_id", String(64)),
    Column("granted_by", String(200), nullable=False),
    Column("created_at", TS, nullable=False),
    Column("revoked_at", TS),
)
Index("ix_approval_grants_agent_tool", approval_grants.c.agent, approval_grants.c.tool)

# Named lists kept in the registry (contacts, payees, allowed domains) that policies refer to
# with `lists: {NAME: {registry: LIST}}`; `version` grows with every change (0011).
named_lists = Table(
    "named_lists",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("description", Text),
    Column("entries", JSON, nullable=False),
    Column("version", Integer, nullable=False),
    Column("updated_by", String(200)),
    Column("created_at", TS, nullable=False),
    Column("updated_at", TS, nullable=False),
)

redteam_reports = Table(
    "redteam_reports",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("agent", String(200), nullable=False, index=True),
    Column("packs", JSON, nullable=False),
    # {attempts, succeeded, stopped, resisted, errored, unscored, per pack: rate and Wilson CI}
    Column("summary", JSON, nullable=False),
    Column("report", JSON, nullable=False),
    Column("created_at", TS, nullable=False),
)

# ---------------------------------------------------------------- memory

memory_namespaces = Table(
    "memory_namespaces",
    metadata,
    Column("name", String(200), primary_key=True),
    # the agent whose own namespace this is (None: a shared namespace others are granted)
    Column("owner_agent", String(200)),
    # "gateway:<model>" (embedded through tether's LLM gateway) | "local:<model>" | "client"
    Column("embedder", String(300)),
    # fixed by the first write; every vector of the namespace has this many dimensions
    Column("dim", Integer),
    Column("created_at", TS, nullable=False),
)

memories = Table(
    "memories",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("namespace", String(200), nullable=False),
    # a fact's identity: a new text under the same key supersedes the old one (kept for as_of)
    Column("key", String(300)),
    Column("text", Text, nullable=False),
    Column("metadata", JSON),
    Column("tags", JSON, nullable=False),
    # a partition, not a hint: a run for user A never sees memories written for user B
    Column("user", String(200)),
    Column("source_run_id", String(64)),
    Column("source_span_id", String(16)),
    Column("content_hash", String(64), nullable=False),
    # unit vector, float32 little-endian; the vector indexes are derived from this column
    Column("embedding", LargeBinary),
    Column("written_by", String(200)),
    Column("created_at", TS, nullable=False),
    Column("superseded_at", TS),
    Column("superseded_by", String(64)),
)
Index("ix_memories_ns_key", memories.c.namespace, memories.c.key)
Index("ix_memories_ns_hash", memories.c.namespace, memories.c.content_hash)
Index("ix_memories_ns_created", memories.c.namespace, memories.c.created_at)
Index("ix_memories_source_run", memories.c.source_run_id)
Index("ix_memories_user", memories.c.user)

# ---------------------------------------------------------------- watch: drift and cost alerts
# Materialised by store/profiles.py and store/rollups.py behind high-water marks, so a drift
# check or an anomaly pass reads one narrow row per run or per interval, never the spans.

run_profiles = Table(
    "run_profiles",
    metadata,
    Column("run_id", String(64), primary_key=True),
    Column("agent", String(200), nullable=False),
    Column("version", String(200)),
    Column("user", String(200)),
    # the root span's `tether.task_type`, when the agent says what kind of task a run is
    Column("task_type", String(200)),
    Column("status", String(32), nullable=False),
    Column("started_at", TS, nullable=False),
    Column("ended_at", TS),
    Column("cost_nusd", BigInteger, nullable=False),
    Column("tokens", BigInteger, nullable=False),
    Column("llm_calls", Integer, nullable=False),
    Column("latency_ms", Float),
    # the tool names called, in order, joined by U+001F (cheaper to split than JSON to parse)
    Column("tools", Text, nullable=False),
    # the model the provider reported serving (its dated name) for most of the run's LLM calls
    Column("model_served", String(200)),
    Column("profiled_at", TS, nullable=False),
)
Index("ix_run_profiles_agent_started", run_profiles.c.agent, run_profiles.c.started_at)
# the profiling pass reads runs changed since its high-water mark
Index("ix_runs_updated", runs.c.updated_at)

spend_rollups = Table(
    "spend_rollups",
    metadata,
    # hour | day
    Column("granularity", String(8), primary_key=True),
    # agent | version | user | task_type
    Column("dimension", String(16), primary_key=True),
    Column("key", String(400), primary_key=True),
    Column("bucket_at", TS, primary_key=True),
    Column("cost_nusd", BigInteger, nullable=False),
    # runs with spend in the interval (a run spanning two hours counts in both)
    Column("runs", Integer, nullable=False),
    # the runs that spent most in the interval: [[run_id, cost_nusd], ...]
    Column("top_runs", JSON),
)
Index("ix_spend_rollups_bucket", spend_rollups.c.granularity, spend_rollups.c.bucket_at)

watch_marks = Table(
    "watch_marks",
    metadata,
    # profiles | rollups: how far each background pass has read
    Column("name", String(64), primary_key=True),
    Column("mark_at", TS, nullable=False),
    Column("updated_at", TS, nullable=False),
)

agent_models = Table(
    "agent_models",
    metadata,
    Column("agent", String(200), primary_key=True),
    Column("model", String(200), primary_key=True),
    Column("first_run_at", TS, nullable=False),
    Column("last_run_at", TS, nullable=False),
)

# Drift histograms per agent, hour, version and served model ('' when unknown), kept by the
# profiling pass in the transaction that writes the profiles (store/drift_hist.py), so a check
# sums a few hundred rows per hour instead of reading every run.
drift_sequences = Table(
    "drift_sequences",
    metadata,
    Column("agent", String(200), primary_key=True),
    Column("hour_at", TS, primary_key=True),
    Column("version", String(200), primary_key=True),
    Column("model", String(200), primary_key=True),
    # sha1 of `tools` (a sequence can be longer than an index entry may be)
    Column("seq_hash", String(40), primary_key=True),
    Column("tools", Text, nullable=False),
    Column("runs", BigInteger, nullable=False),
)

drift_values = Table(
    "drift_values",
    metadata,
    Column("agent", String(200), primary_key=True),
    Column("hour_at", TS, primary_key=True),
    Column("version", String(200), primary_key=True),
    Column("model", String(200), primary_key=True),
    # cost | tokens | llm_calls | latency | ok_cost (the cost of the runs that succeeded)
    Column("metric", String(16), primary_key=True),
    # core/drift.py's value_bin
    Column("bin", Integer, primary_key=True),
    Column("runs", BigInteger, nullable=False),
)

alerts = Table(
    "alerts",
    metadata,
    Column("id", String(64), primary_key=True),
    # cost_anomaly | drift | model_change
    Column("kind", String(32), nullable=False),
    # what repeats of the same alert share ("cost:hour:user:alice"); cool-down is per key
    Column("dedup_key", String(500), nullable=False),
    Column("agent", String(200)),
    Column("subject", String(500), nullable=False),
    Column("bucket_at", TS),
    Column("value_nusd", BigInteger),
    Column("expected_nusd", BigInteger),
    Column("low_nusd", BigInteger),
    Column("high_nusd", BigInteger),
    Column("message", Text, nullable=False),
    Column("detail", JSON),
    # open | acknowledged
    Column("status", String(16), nullable=False),
    Column("occurrences", Integer, nullable=False),
    Column("created_at", TS, nullable=False),
    Column("last_seen_at", TS, nullable=False),
    Column("notified_at", TS),
    Column("acknowledged_at", TS),
    Column("acknowledged_by", String(200)),
    Column("ack_note", Text),
)
Index("ix_alerts_created", alerts.c.created_at, alerts.c.id)
Index("ix_alerts_dedup", alerts.c.dedup_key, alerts.c.created_at)
Index("ix_alerts_status", alerts.c.status, alerts.c.created_at)

__all__ = [
    "agent_endpoints",
    "agent_models",
    "agent_versions",
    "agents",
    "alerts",
    "api_keys",
    "approval_grants",
    "approvals",
    "audit_log",
    "budget_counters",
    "checkpoint_blobs",
    "checkpoint_interrupts",
    "checkpoint_resumes",
    "checkpoint_threads",
    "checkpoint_writes",
    "checkpoints",
    "drift_sequences",
    "drift_values",
    "eval_attempts",
    "evals",
    "export_marks",
    "feedback",
    "gate_verdicts",
    "leases",
    "memories",
    "memory_namespaces",
    "metadata",
    "named_lists",
    "policies",
    "rate_events",
    "redteam_reports",
    "reservations",
    "rollout_events",
    "rollouts",
    "run_caps",
    "run_kills",
    "run_profiles",
    "run_values",
    "runs",
    "scores",
    "span_exports",
    "spans",
    "spend_rollups",
    "tool_call_keys",
    "tools",
    "watch_marks",
]
