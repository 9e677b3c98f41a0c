"""Whether the LLM gateway's spans of an attempt's runs are all stored, whichever process served
the calls. A call the gateway admits under a budget cap commits its hold (a `reservations` row
naming the run) before it goes upstream, so before the agent has its answer; its span is written
later, by the span writer of the process that served it, in a batch. Under several workers or
replicas the attempt's finish can land on another process than the calls: it compares the holds
with the spans stored (and those it took from its own writer) and waits for the difference.
A call of an eval run that took no hold in the database (no cap applies to it, or the holds are
in Redis) is recorded the same way by the gateway before it goes upstream (`note_admitted`: a
row holding nothing, already settled). The MCP gateway writes its tool spans before it answers,
so they need no such wait."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, func, insert, select

from tether.store.budgets import hold_commit, new_reservation_id
from tether.store.engine import reading
from tether.store.tables import reservations, spans
from tether.store.writelock import span_writer

LLM_KINDS = ("llm", "embedding")
EVAL_ID_TAG = "tether.eval.id"
# The agent the CLI's LLM judges run under (tether.cli.eval_judge); its runs are an attempt's too.
JUDGE_AGENT = "tether-judge"


def is_eval_run(attributes: Any, agent: str | None) -> bool:
    """Whether a run is an eval attempt's (tagged by its start) or one of its judges'."""
    return agent == JUDGE_AGENT or (isinstance(attributes, dict) and EVAL_ID_TAG in attributes)


def note_admitted(engine: Engine, run_id: str, now: datetime) -> None:
    """Records an admitted LLM call of an eval run that took no hold in the database: a
    reservations row naming the run that holds nothing (settled from the start, so no settle,
    renewal or sweep touches it), committed before the call goes upstream (so before any other
    process's finish of the attempt could look), which `gap_in` counts like a hold."""
    with span_writer(engine), engine.begin() as conn:
        hold_commit(conn)
        conn.execute(
            insert(reservations).values(
                id=new_reservation_id(), run_id=run_id, scopes=[], amount_nusd=0, tokens=0,
                status="settled", created_at=now, expires_at=now,
            )
        )  # fmt: skip


class SpansMissing(Exception):
    """The gateways committed more calls of the runs than there are spans stored."""

    def __init__(self, missing: int) -> None:
        super().__init__(f"{missing} gateway span(s) of the attempt not stored yet")
        self.missing = missing


def gap_in(conn: Connection, run_ids: Sequence[str]) -> int:
    """How many admitted LLM calls of `run_ids` have no span stored (0 when all are)."""
    ids = list(run_ids)
    held = conn.execute(select(func.count()).where(reservations.c.run_id.in_(ids))).scalar_one()
    if not held:
        return 0
    stored = conn.execute(
        select(func.count()).where(spans.c.run_id.in_(ids), spans.c.kind.in_(LLM_KINDS))
    ).scalar_one()
    return max(0, int(held) - int(stored))


def gap(engine: Engine, run_ids: Sequence[str], pending: int = 0) -> int:
    """`gap_in` counting `pending` spans taken but not stored yet as stored."""
    with reading(engine) as conn:
        return max(0, gap_in(conn, run_ids) - pending)
