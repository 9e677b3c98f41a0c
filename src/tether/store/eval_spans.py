"""Whether the LLM gateway's spans of an attempt's runs are all stored, whichever process served
the calls. A call the gateway admits under a budget cap commits its hold (a `reservations` row
naming the run) before it goes upstream, so before the agent has its answer; its span is written
later, by the span writer of the process that served it, in a batch. Under several workers or
replicas the attempt's finish can land on another process than the calls: it compares the holds
with the spans stored (and those it took from its own writer) and waits for the difference.
The MCP gateway writes its tool spans before it answers, so they need no such wait."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, Engine, func, select

from tether.store.engine import reading
from tether.store.tables import reservations, spans

LLM_KINDS = ("llm", "embedding")


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
