"""The LLM gateway's shared parts: who a call is for and which run it belongs to, admission
(kill switch, policy, budget), and the end of every call (settlement and its LLM span).

Runs: `X-Tether-Run-Id` names one (created on first use); else a W3C `traceparent` names the
trace whose run it is; else every request is a run of its own (its id comes back in the
`x-tether-run-id` response header).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import os
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import anyio
from sqlalchemy import Engine, select
from starlette.requests import Request

from tether.config import Settings
from tether.core.errors import AuthenticationError, BadRequestError, PermissionDeniedError
from tether.core.ids import make_id
from tether.core.money import nusd_to_float
from tether.core.pricing import PriceTable, load_price_table
from tether.core.records import RunAttribution, SpanRecord, run_id_for_trace, valid_run_id
from tether.core.semtext import redact_text
from tether.gateway.llm.forward import Upstream
from tether.gateway.llm.guard import (
    Admission,
    BudgetGuard,
    Caller,
    Overshoot,
    count_images,
    reserved_usd,
)
from tether.gateway.llm.killswitch import KillSwitch
from tether.gateway.llm.provider import Target, Usage
from tether.gateway.llm.registry import Registry
from tether.gateway.llm.spans import SpanWriter
from tether.gateway.llm.vault import VaultClient
from tether.store import threads as thread_store
from tether.store.budgets import hold_commit
from tether.store.eval_attempts import FIXTURES_TAG
from tether.store.eval_spans import is_eval_run, note_admitted
from tether.store.evals import fixtures_of
from tether.store.gateway_run_sqlite import RunState, ensure_run_sqlite
from tether.store.ingest import ensure_run, write_spans
from tether.store.inline import InlineSQLite
from tether.store.ledger import Ledger, SqlLedger
from tether.store.pg_async import AsyncPG
from tether.store.runs_pg import ensure_run_pg
from tether.store.tables import runs
from tether.store.writelock import span_writer

log = logging.getLogger("tether.gateway")
Authenticate = Callable[[Request], Awaitable[Any]]
OnOvershoot = Callable[[Overshoot], Awaitable[None]]
MAX_STORED_CHARS = 32_000
_RUN_CACHE = 20_000
_TRACEPARENT_LEN = 55
# a run's start, agent, kill reason, own caps, mock script, whether an eval attempt's
_RunRow = tuple[datetime, str | None, str | None, dict[str, int | None] | None, str | None, bool]


@dataclass
class Call:
    """One request through the gateway, from admission to its span."""

    api: Literal["openai", "anthropic"]
    endpoint: str
    caller: Caller
    model: str
    body: dict[str, Any]
    stream: bool
    trace_id: str
    span_id: str
    parent_id: str | None
    attribution: RunAttribution
    is_root: bool
    started_at: datetime
    t0: float = field(default_factory=time.perf_counter)
    admission: Admission = field(default_factory=lambda: Admission(None, None, None))
    targets: list[Target] = field(default_factory=list)
    served_by: Target | None = None
    ttft_ms: float | None = None
    request_bytes: int = 0
    tries: int = 0
    overshoot: Overshoot | None = None


class Gateway:
    """Everything the /llm routes share in one process."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        *,
        authenticate: Authenticate,
        ledger: Ledger,
        killswitch: KillSwitch,
        upstream: Upstream,
        prices: PriceTable | None = None,
        on_overshoot: OnOvershoot | None = None,
        pg: AsyncPG | None = None,
        inline: InlineSQLite | None = None,
    ) -> None:
        self.settings = settings
        # set on a SQLite file: a new run's row is written on the event loop when it can be
        self.inline = inline
        # secret-named keys in prompts (e.g. a tool result carrying an api_key) are not stored
        self.redact = tuple(f.lower() for f in settings.redact_fields)
        self.engine = engine
        self.authenticate = authenticate
        vault = VaultClient(settings.vault) if settings.vault is not None else None
        self.registry = Registry(settings.providers, vault)  # Vault keys are read here, once
        self.prices = prices or load_price_table(settings.pricing)
        self.guard = BudgetGuard(settings, engine, ledger, self.prices)
        self.killswitch = killswitch
        self.upstream = upstream
        self.writer = SpanWriter(engine, pg)
        self.pg = pg  # PostgreSQL: new runs' rows on the event loop once its lifespan opened it
        self.on_overshoot = on_overshoot
        # run id -> when it started (runs this process has already made sure exist)
        self._runs: dict[str, tuple[datetime, str | None]] = {}
        # run id -> the mock LLM script of an eval attempt's fixtures, as the header carrying it
        self.mock_scripts: dict[str, str] = {}
        # runs of eval attempts (and their judges): their calls must be countable by a finish on
        # another process before they go upstream (store.eval_spans)
        self.eval_runs: set[str] = set()
        self._background: set[asyncio.Task[Any]] = set()
        # ids need uniqueness, not secrecy: a seeded generator spares a syscall per id
        self._rand = random.Random(os.urandom(32))

    # ------------------------------------------------------------ who and which run

    async def principal(self, request: Request) -> Any:
        principal = await self.authenticate(request)
        if principal is None:
            raise AuthenticationError("missing API key: send `Authorization: Bearer <key>`")
        if not principal.has("agent"):
            raise PermissionDeniedError("this key lacks the `agent` scope needed for /llm")
        return principal

    def new_call(
        self, request: Request, principal: Any, api: Literal["openai", "anthropic"],
        endpoint: str, body: dict[str, Any],
    ) -> Call:  # fmt: skip
        h = request.headers
        run_id = h.get("x-tether-run-id")
        trace_id, parent_id = _traceparent(h.get("traceparent"))
        if run_id is not None and not valid_run_id(run_id):
            raise BadRequestError(
                "X-Tether-Run-Id must be 1-64 characters of letters, digits and _ . : -",
                code="invalid_run_id",
            )
        is_root = False
        if run_id is None and trace_id is not None:
            run_id = run_id_for_trace(trace_id)
        elif run_id is None:
            run_id = make_id("run", self._rand.randbytes(12))
            is_root = True
        if trace_id is None:
            trace_id = _trace_for(run_id)
        attribution = RunAttribution(
            agent=principal.agent, version=h.get("x-tether-agent-version"),
            task_id=h.get("x-tether-task-id"), user=h.get("x-tether-user"),
        )  # fmt: skip
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise BadRequestError("the request needs a `model` (a string)", code="missing_model")
        return Call(
            api=api, endpoint=endpoint,
            caller=Caller(principal.key_id, principal.agent, run_id, attribution.user,
                          attribution.task_id),
            model=model, body=body, stream=bool(body.get("stream")), trace_id=trace_id,
            span_id=self._rand.randbytes(8).hex(), parent_id=parent_id, attribution=attribution,
            is_root=is_root, started_at=datetime.now(UTC),
        )  # fmt: skip

    async def run_started_at(self, call: Call) -> tuple[datetime, str | None]:
        """Makes sure the run exists (once per process); when it started and its agent.

        A run of its own is new, so nobody can have killed it: it is written off the request
        path (a stream's run in the background, so that a kill can find it; otherwise by the
        span writer with the call's span). Any other run is read with its kill state in the
        transaction that creates it, so a run killed before this process saw it is refused.
        """
        run_id = call.caller.run_id
        hit = self._runs.get(run_id)
        if hit is not None:
            self._check_owner(call, hit[1])
            return hit
        if call.is_root:
            if call.stream:
                task = asyncio.create_task(self._ensure_run_later(call))
                self._background.add(task)
                task.add_done_callback(self._background.discard)
            return call.started_at, call.caller.agent
        started, agent, killed, caps, script, of_eval = await self._ensure_run_now(call)
        self.guard.note_run_caps(run_id, caps)
        if killed is not None:
            self.killswitch.note_killed(run_id, killed)
        if len(self._runs) > _RUN_CACHE:
            self._runs.clear()
            self.mock_scripts.clear()
            self.eval_runs.clear()
        self._runs[run_id] = (started, agent)
        if script is not None:
            self.mock_scripts[run_id] = script
        if of_eval:
            self.eval_runs.add(run_id)
        self._check_owner(call, agent)
        return started, agent

    def note_eval_run(
        self, run_id: str, started_at: datetime, agent: str, fixtures: dict[str, Any] | None
    ) -> None:
        """An eval attempt's run that this process has just created (its start committed): the
        first call in it reads nothing (it is new, so no kill, no caps of its own yet; a kill
        after this comes through the kill switch's feed like any run's)."""
        if len(self._runs) > _RUN_CACHE:
            self._runs.clear()
            self.mock_scripts.clear()
            self.eval_runs.clear()
        self._runs[run_id] = (started_at, agent)
        script = mock_script_header({FIXTURES_TAG: fixtures}) if fixtures else None
        if script is not None:
            self.mock_scripts[run_id] = script
        self.eval_runs.add(run_id)
        self.guard.note_run_caps(run_id, None)

    @staticmethod
    def _check_owner(call: Call, agent: str | None) -> None:
        """A run named by one agent cannot be spent from (or cut short) by another's key."""
        if agent is not None and call.caller.agent is not None and agent != call.caller.agent:
            raise PermissionDeniedError(
                f"run {call.caller.run_id} belongs to agent {agent}, not {call.caller.agent}; "
                "use a run id of your own",
                code="run_of_another_agent",
            )

    async def _ensure_run_later(self, call: Call) -> None:
        try:
            if self.pg is not None and self.pg.ready:
                await self._ensure_run_pg(self.pg, call)
            else:
                await anyio.to_thread.run_sync(self._ensure_run, call)
        except Exception:  # the span writer creates the run anyway; only an early kill misses it
            log.warning("could not create run %s ahead of its stream", call.caller.run_id,
                        exc_info=True)  # fmt: skip

    async def _ensure_run_now(self, call: Call) -> _RunRow:
        """On SQLite in plain SQL (store.gateway_run_sqlite), on the loop's thread when the
        writer lock is free (a thread hop costs more than the transaction), else on a worker
        thread that waits for it; on PostgreSQL in plain SQL awaited on the loop
        (store.runs_pg) once the pool is open, else _ensure_run on a worker thread."""
        if self.pg is not None and self.pg.ready:
            return _run_row(await self._ensure_run_pg(self.pg, call))
        if self.inline is not None:
            state = self._ensure_run_sqlite(call, True)
            if state is None:  # nothing was written: the thread waits for the lock
                state = await anyio.to_thread.run_sync(self._ensure_run_sqlite, call, False)
            assert state is not None  # only a `nowait` one gives up
            return _run_row(state)
        return await anyio.to_thread.run_sync(self._ensure_run, call)

    @staticmethod
    async def _ensure_run_pg(pg: AsyncPG, call: Call) -> RunState:
        return await ensure_run_pg(pg, call.caller.run_id, trace_id=call.trace_id,
                                   attribution=call.attribution, started_at=call.started_at,
                                   source="gateway", now=call.started_at)  # fmt: skip

    def _ensure_run_sqlite(self, call: Call, nowait: bool) -> RunState | None:
        return ensure_run_sqlite(
            self.engine, call.caller.run_id, trace_id=call.trace_id,
            attribution=call.attribution, started_at=call.started_at, source="gateway",
            now=call.started_at, nowait=nowait,
        )  # fmt: skip

    def _ensure_run(self, call: Call) -> _RunRow:
        with span_writer(self.engine):
            return self._ensure_run_in(self.engine, call)

    def _ensure_run_in(self, engine: Engine, call: Call) -> _RunRow:
        """Creates the run if new; its start, agent, kill reason, own caps, mock script and
        whether it is an eval attempt's, in one round trip. The commit does not wait for the WAL
        flush on PostgreSQL (hold_commit): a run row lost with a database crash is written again
        with the call's span."""
        with engine.begin() as conn:
            hold_commit(conn)
            ensure_run(conn, call.caller.run_id, trace_id=call.trace_id,
                       attribution=call.attribution, started_at=call.started_at,
                       source="gateway", now=call.started_at)  # fmt: skip
            row = conn.execute(
                select(runs.c.started_at, runs.c.agent, runs.c.status, runs.c.kill_reason,
                       runs.c.attributes).where(runs.c.id == call.caller.run_id)
            ).one()  # fmt: skip
            caps = thread_store.caps_in(conn, call.caller.run_id)
        return _run_row(RunState(row.started_at, row.agent, row.status, row.kill_reason,
                                 row.attributes, caps))  # fmt: skip

    # ------------------------------------------------------------ admission

    async def admit(self, call: Call, max_tokens: int | None, *, choices: int = 1) -> None:
        """Refuses a killed run, a model the policy forbids, or a call over budget; else holds
        the call's worst case."""
        call.targets = self.registry.targets(call.model, call.api)
        started, owner = await self.run_started_at(call)
        if owner is not None and owner != call.caller.agent:
            # a key with no agent of its own (admin, ingest+admin) on an agent's run: the run's
            # caps bind it and its spend counts on the run's (and that agent's day) counters
            call.caller = replace(call.caller, agent=owner)
        policy = self.guard.policy_cached(call.caller.agent)
        if policy is False:
            policy = await anyio.to_thread.run_sync(self.guard.policy, call.caller.agent)
        self.guard.check_model(policy, call.caller, call.model)
        limits = await self.guard.with_run_caps(self.guard.limits(policy), call.caller.run_id)
        now = datetime.now(UTC)
        if not call.is_root:
            deadline = None
            if limits.run.max_duration_s is not None:
                deadline = started + timedelta(seconds=limits.run.max_duration_s)
            await self.killswitch.ensure_alive(call.caller.run_id, now=now, deadline=deadline)
        messages, tools = call.body.get("messages"), call.body.get("tools")
        call.admission = await self.guard.admit(
            call.caller, limits, call.targets, request_bytes=call.request_bytes,
            max_tokens=max_tokens, choices=choices, images=_images(call.body),
            started_at=started, now=now, api=call.api, requested=call.model,
            messages=len(messages) if isinstance(messages, list) else 0,
            tools=len(tools) if isinstance(tools, list) else 0,
        )  # fmt: skip
        if call.caller.run_id in self.eval_runs and not self._held_in_db(call):
            await anyio.to_thread.run_sync(note_admitted, self.engine, call.caller.run_id, now)

    def _held_in_db(self, call: Call) -> bool:
        """Whether the call's admission left a hold naming its run in the database."""
        res = call.admission.reservation
        return res is not None and bool(res.scopes) and isinstance(self.guard.ledger, SqlLedger)

    async def record_refusal(self, span: SpanRecord) -> None:
        """Stores a refused call's span before the agent has its answer (a refusal is rare, and
        an eval attempt's check on another worker or replica must see it: it has no budget hold
        to count, store.eval_spans); queued for the writer if that fails."""
        try:
            await anyio.to_thread.run_sync(
                lambda: write_spans(self.engine, [span], now=datetime.now(UTC), source="gateway")
            )
        except Exception:
            log.warning("could not store the refusal span of run %s; queued", span.run_id,
                        exc_info=True)  # fmt: skip
            self.writer.submit(span)
            return
        self.writer.stored([span])

    # ------------------------------------------------------------ the end of a call

    async def finish(
        self,
        call: Call,
        *,
        usage: Usage | None,
        output: str | None,
        error: str | None,
        status_code: int,
        outcome: str = "ok",
    ) -> None:
        """Settles the hold to what was used (or releases it when nothing was) and queues the
        span. Never raises: it runs after the client has its answer."""
        now = datetime.now(UTC)
        model = call.served_by.model if call.served_by else call.model
        cost = None
        tokens = 0
        try:
            if usage is not None:
                if not usage.reported and usage.input_tokens == 0:
                    # no usage from upstream: a typical 4 bytes per token of the request
                    usage.input_tokens = math.ceil(call.request_bytes / 4)
                # priced as the model the hold was made for: a dated name the upstream reports
                # back (gpt-4o-2024-05-13) may carry another price than the one reserved
                cost = self.guard.cost_nusd(model, usage.model_served or model, usage)
                tokens = usage.input_tokens + usage.output_tokens
                self.guard.settle_later(call.admission, cost, tokens)
                await self._check_overshoot(call, model, cost, tokens)
            else:
                await self.guard.release(call.admission, now)
        except Exception:  # the agent has its answer; the hold expires and is swept
            log.exception("could not settle the budget hold of a call in run %s",
                          call.caller.run_id)  # fmt: skip
        finally:
            self.writer.submit(lambda: self._span(call, usage, cost, output, error, status_code,
                                                  outcome, now), call.caller.run_id)  # fmt: skip

    async def _check_overshoot(self, call: Call, model: str, cost: int | None, tokens: int) -> None:
        """A settle above its hold is an overshoot event (span attribute, audit, metric and
        webhook through `on_overshoot`)."""
        res = call.admission.reservation
        if res is None or not res.scopes or cost is None:
            return
        if cost <= res.amount_nusd and tokens <= res.tokens:
            return
        call.overshoot = Overshoot(
            run_id=call.caller.run_id, agent=call.caller.agent, key_id=call.caller.key_id,
            model=model, scopes=res.scopes, held_nusd=res.amount_nusd, charged_nusd=cost,
            held_tokens=res.tokens, charged_tokens=tokens,
        )  # fmt: skip
        log.warning("overshoot: a call in run %s settled at %d nano-USD above its hold of %d",
                    call.caller.run_id, call.overshoot.over_nusd, res.amount_nusd)  # fmt: skip
        if self.on_overshoot is not None:
            await self.on_overshoot(call.overshoot)

    def _span(
        self, call: Call, usage: Usage | None, cost: int | None, output: str | None,
        error: str | None, status_code: int, outcome: str, now: datetime,
    ) -> SpanRecord:  # fmt: skip
        provider = call.served_by.provider.config.name if call.served_by else None
        upstream_model = call.served_by.model if call.served_by else None
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": "embeddings" if call.endpoint == "embeddings" else "chat",
            "gen_ai.system": call.api,
            "gen_ai.request.model": call.model,
            "tether.provider": provider,
            "tether.upstream_model": upstream_model,
            "tether.stream": call.stream,
            "tether.outcome": outcome,
            "tether.key_id": call.caller.key_id,
            "http.response.status_code": status_code,
            "tether.attempts": call.tries,
        }
        if usage is not None:
            attrs["tether.usage_reported"] = usage.reported
            if usage.finish_reason:
                attrs["gen_ai.response.finish_reasons"] = [usage.finish_reason]
        if call.admission.reservation is not None:
            attrs["tether.reserved_usd"] = reserved_usd(call.admission)
        if call.admission.injected_max_tokens is not None:
            attrs["tether.injected_max_tokens"] = call.admission.injected_max_tokens
        if call.overshoot is not None:
            attrs["tether.overshoot_usd"] = nusd_to_float(call.overshoot.over_nusd)
            attrs["tether.overshoot_tokens"] = max(
                0, call.overshoot.charged_tokens - call.overshoot.held_tokens
            )
        kind = "embedding" if call.endpoint == "embeddings" else "llm"
        return SpanRecord(
            trace_id=call.trace_id, span_id=call.span_id, run_id=call.caller.run_id, kind=kind,
            name=f"{attrs['gen_ai.operation.name']} {call.model}", started_at=call.started_at,
            ended_at=now, parent_id=call.parent_id, is_root=call.is_root,
            input=_clip(redact_text(_prompt(call.body), self.redact)),
            output=_clip(redact_text(output, self.redact)),
            model=call.model, model_served=(usage.model_served if usage else None)
            or upstream_model,
            input_tokens=usage.input_tokens if usage else None,
            output_tokens=usage.output_tokens if usage else None,
            cached_tokens=usage.cached_tokens if usage else None,
            cost_nusd=cost, cost_unknown=usage is not None and cost is None,
            ttft_ms=call.ttft_ms, status="error" if error else "ok",
            error=redact_text(error, self.redact),
            attributes={k: v for k, v in attrs.items() if v is not None},
            attribution=call.attribution,
        )  # fmt: skip


# An eval attempt's mock LLM script (its task's `fixtures.llm`), sent to the upstream with the
# run id: tether's mock LLM answers the run's calls from it; any other upstream ignores it.
MOCK_SCRIPT_HEADER = "x-tether-mock-script"
MOCK_SESSION_HEADER = "x-tether-mock-session"


def mock_script_header(attributes: Any) -> str | None:
    fixtures = fixtures_of(attributes if isinstance(attributes, dict) else None)
    script = fixtures.get("llm") if fixtures else None
    return json.dumps(script, separators=(",", ":")) if script is not None else None


def _run_row(state: RunState) -> _RunRow:
    killed = (state.kill_reason or "killed") if state.status == "killed" else None
    return (state.started_at, state.agent, killed, state.caps,
            mock_script_header(state.attributes),
            is_eval_run(state.attributes, state.agent))  # fmt: skip


def _traceparent(value: str | None) -> tuple[str | None, str | None]:
    if not value or len(value) < _TRACEPARENT_LEN:
        return None, None
    parts = value.split("-")
    if len(parts) < 4 or len(parts[1]) != 32 or len(parts[2]) != 16:
        return None, None
    try:
        int(parts[1], 16), int(parts[2], 16)
    except ValueError:
        return None, None
    if parts[1] == "0" * 32:
        return None, None
    return parts[1].lower(), parts[2].lower()


def _trace_for(run_id: str) -> str:
    """A run's calls share one trace: `run_<32 hex>` is the trace's own run, else a hash."""
    tail = run_id[4:] if run_id.startswith("run_") else ""
    if len(tail) == 32:
        try:
            int(tail, 16)
            return tail.lower()
        except ValueError:
            pass
    return hashlib.sha256(run_id.encode()).hexdigest()[:32]


def _images(body: dict[str, Any]) -> int:
    return count_images(body.get("messages"))


def _prompt(body: dict[str, Any]) -> str:
    if "messages" in body:
        data: Any = {"messages": body["messages"]}
        if body.get("system"):
            data["system"] = body["system"]
        if body.get("tools"):
            data["tools"] = [t.get("function", t).get("name") for t in body["tools"]
                             if isinstance(t, dict)]  # fmt: skip
    else:
        data = {"input": body.get("input")}
    return json.dumps(data, ensure_ascii=False, default=str)


def _clip(text: str | None) -> str | None:
    if text is None or len(text) <= MAX_STORED_CHARS:
        return text
    return text[:MAX_STORED_CHARS] + f"... [{len(text) - MAX_STORED_CHARS} more characters]"
