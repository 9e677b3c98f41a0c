"""Alert history: cost anomalies, drift and model changes, each with its de-duplication key,
a cool-down between notifications, and acknowledgement. Replicas sharing one database raise
each alert once: on PostgreSQL checks of one key take an advisory transaction lock, on SQLite
every writer holds the database's write lock.

Raising the same alert again (same `dedup_key` and interval) updates the stored one; a new
interval within the cool-down of an open alert of that key adds an occurrence to it and does
not notify again; after the cool-down, or once acknowledged, it is a new alert.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, get_args

from sqlalchemy import Engine, and_, func, or_, select, text, update

from tether.core.errors import BadRequestError, ConflictError, NotFoundError
from tether.core.ids import make_id
from tether.core.money import nusd_to_float
from tether.store.engine import reading
from tether.store.runs import decode_cursor, encode_cursor
from tether.store.tables import alerts

AlertKind = Literal["cost_anomaly", "drift", "model_change"]
ALERT_KINDS: tuple[str, ...] = get_args(AlertKind)
AlertStatus = Literal["open", "acknowledged"]
ALERT_STATUSES: tuple[str, ...] = get_args(AlertStatus)


@dataclass(frozen=True)
class Alert:
    id: str
    kind: str
    dedup_key: str
    agent: str | None
    subject: str
    message: str
    status: str
    occurrences: int
    created_at: datetime
    last_seen_at: datetime
    bucket_at: datetime | None = None
    value_nusd: int | None = None
    expected_nusd: int | None = None
    low_nusd: int | None = None
    high_nusd: int | None = None
    detail: dict[str, Any] | None = None
    notified_at: datetime | None = None
    acknowledged_at: datetime | None = None
    acknowledged_by: str | None = None
    ack_note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        def ts(v: datetime | None) -> str | None:
            return None if v is None else v.isoformat()

        return {
            "id": self.id, "kind": self.kind, "dedup_key": self.dedup_key, "agent": self.agent,
            "subject": self.subject, "message": self.message, "status": self.status,
            "occurrences": self.occurrences, "created_at": ts(self.created_at),
            "last_seen_at": ts(self.last_seen_at), "bucket_at": ts(self.bucket_at),
            "value_usd": nusd_to_float(self.value_nusd),
            "expected_usd": nusd_to_float(self.expected_nusd),
            "low_usd": nusd_to_float(self.low_nusd), "high_usd": nusd_to_float(self.high_nusd),
            "detail": self.detail or {}, "notified_at": ts(self.notified_at),
            "acknowledged_at": ts(self.acknowledged_at), "acknowledged_by": self.acknowledged_by,
            "ack_note": self.ack_note,
        }  # fmt: skip


@dataclass(frozen=True)
class AlertDraft:
    """What an evaluator found; `raise_alert` decides whether it is new and whether to notify."""

    kind: AlertKind
    dedup_key: str
    subject: str
    message: str
    agent: str | None = None
    bucket_at: datetime | None = None
    value_nusd: int | None = None
    expected_nusd: int | None = None
    low_nusd: int | None = None
    high_nusd: int | None = None
    detail: dict[str, Any] | None = None


@dataclass(frozen=True)
class Raised:
    alert: Alert
    new: bool
    notify: bool


def _alert(row: Any) -> Alert:
    return Alert(**{k: row._mapping[k] for k in Alert.__dataclass_fields__})


def raise_alert(engine: Engine, draft: AlertDraft, *, now: datetime, cooldown: timedelta) -> Raised:
    """Stores `draft` as a new alert or as an occurrence of the one it repeats."""
    t = alerts.c
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # Replicas run the same passes at once: the read-then-insert below must see the
            # other replica's alert of this key, so checks of one key take turns (SQLite's
            # BEGIN IMMEDIATE already serialises every writer).
            conn.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 11))"),
                         {"k": "alert:" + draft.dedup_key[:500]})  # fmt: skip
        q = select(alerts).where(t.dedup_key == draft.dedup_key[:500])
        latest = conn.execute(q.order_by(t.created_at.desc(), t.id.desc()).limit(1)).first()
        facts = {
            "value_nusd": draft.value_nusd, "expected_nusd": draft.expected_nusd,
            "low_nusd": draft.low_nusd, "high_nusd": draft.high_nusd, "detail": draft.detail,
            "message": draft.message,
        }  # fmt: skip
        if latest is not None:
            same_event = draft.bucket_at is not None and latest.bucket_at == draft.bucket_at
            quiet_since = latest.notified_at or latest.created_at
            cooling = latest.status == "open" and now - quiet_since < cooldown
            if same_event or cooling:
                values: dict[str, Any] = {"last_seen_at": now}
                if same_event:
                    values.update(facts)  # the interval's spend grew since it was first seen
                else:
                    values["occurrences"] = latest.occurrences + 1
                conn.execute(update(alerts).where(t.id == latest.id).values(**values))
                row = conn.execute(select(alerts).where(t.id == latest.id)).one()
                return Raised(_alert(row), new=False, notify=False)
        alert_id = make_id("alrt", os.urandom(12))
        conn.execute(
            alerts.insert().values(
                id=alert_id, kind=draft.kind, dedup_key=draft.dedup_key[:500],
                agent=draft.agent, subject=draft.subject[:500], bucket_at=draft.bucket_at,
                status="open", occurrences=1, created_at=now, last_seen_at=now, **facts,
            )
        )  # fmt: skip
        row = conn.execute(select(alerts).where(t.id == alert_id)).one()
    return Raised(_alert(row), new=True, notify=True)


def mark_notified(engine: Engine, alert_id: str, *, now: datetime) -> None:
    with engine.begin() as conn:
        conn.execute(update(alerts).where(alerts.c.id == alert_id).values(notified_at=now))


def get_alert(engine: Engine, alert_id: str) -> Alert:
    with reading(engine) as conn:
        row = conn.execute(select(alerts).where(alerts.c.id == alert_id)).first()
    if row is None:
        raise NotFoundError(f"alert {alert_id} not found; `tether alerts list` shows the ids")
    return _alert(row)


def list_alerts(
    engine: Engine,
    *,
    status: str | None = None,
    kind: str | None = None,
    agent: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> tuple[list[Alert], str | None]:
    """Newest first; `next_cursor` pages on."""
    if status is not None and status not in ALERT_STATUSES:
        raise BadRequestError(f"status: must be one of {', '.join(ALERT_STATUSES)}")
    if kind is not None and kind not in ALERT_KINDS:
        raise BadRequestError(f"kind: must be one of {', '.join(ALERT_KINDS)}")
    if not 1 <= limit <= 500:
        raise BadRequestError("limit: must be between 1 and 500")
    t = alerts.c
    q = select(alerts)
    if status is not None:
        q = q.where(t.status == status)
    if kind is not None:
        q = q.where(t.kind == kind)
    if agent is not None:
        q = q.where(t.agent == agent)
    if cursor:
        data = decode_cursor(cursor, "alerts")
        try:
            at, last = datetime.fromisoformat(data["at"]), str(data["id"])
        except (KeyError, TypeError, ValueError):
            raise BadRequestError(
                "cursor: damaged; start again without it", code="invalid_cursor"
            ) from None
        q = q.where(or_(t.created_at < at, and_(t.created_at == at, t.id < last)))
    q = q.order_by(t.created_at.desc(), t.id.desc()).limit(limit + 1)
    with reading(engine) as conn:
        rows = [_alert(r) for r in conn.execute(q)]
    page, more = rows[:limit], len(rows) > limit
    next_cursor = None
    if more:
        tail = page[-1]
        next_cursor = encode_cursor({"kind": "alerts", "at": tail.created_at.isoformat(),
                                     "id": tail.id})  # fmt: skip
    return page, next_cursor


def acknowledge(
    engine: Engine, alert_id: str, *, by: str, note: str | None, now: datetime
) -> Alert:
    """Marks an open alert acknowledged; acknowledging one twice is a 409 naming who did."""
    with engine.begin() as conn:
        t = alerts.c
        row = conn.execute(select(alerts).where(t.id == alert_id)).first()
        if row is None:
            raise NotFoundError(f"alert {alert_id} not found; `tether alerts list` shows the ids")
        if row.status == "acknowledged":
            raise ConflictError(
                f"alert {alert_id} was already acknowledged by {row.acknowledged_by} "
                f"at {row.acknowledged_at.isoformat()}",
                code="already_acknowledged",
            )
        conn.execute(
            update(alerts)
            .where(t.id == alert_id)
            .values(
                status="acknowledged", acknowledged_at=now, acknowledged_by=by[:200], ack_note=note
            )
        )
        return _alert(conn.execute(select(alerts).where(t.id == alert_id)).one())


@dataclass(frozen=True)
class AlertCounts:
    """What /metrics exports of the alert history (store/alerts.py is the one source)."""

    # (kind, agent or "", status) -> alerts; occurrences summed per (kind, agent)
    alerts: dict[tuple[str, str, str], int]
    occurrences: dict[tuple[str, str], int]
    # (agent, metric) moved in the agent's newest open drift alert
    drift_moved: list[tuple[str, str]]
    # open cost alerts: (granularity, dimension, key, value, expected, high) in nano-dollars
    cost_open: list[tuple[str, str, str, int, int, int]]


def alert_counts(engine: Engine) -> AlertCounts:
    t = alerts.c
    counts: dict[tuple[str, str, str], int] = {}
    occurrences: dict[tuple[str, str], int] = {}
    with reading(engine) as conn:
        q = select(t.kind, t.agent, t.status, func.count(), func.sum(t.occurrences)).group_by(
            t.kind, t.agent, t.status
        )
        for kind, agent, status, n, occ in conn.execute(q):
            counts[(kind, agent or "", status)] = int(n)
            pair = (kind, agent or "")
            occurrences[pair] = occurrences.get(pair, 0) + int(occ or 0)
        opened = conn.execute(
            select(t.kind, t.agent, t.detail, t.value_nusd, t.expected_nusd, t.high_nusd)
            .where(t.status == "open", t.kind.in_(("drift", "cost_anomaly")))
            .order_by(t.created_at.desc(), t.id.desc())
        ).all()
    moved: list[tuple[str, str]] = []
    seen_drift: set[str] = set()
    cost: dict[tuple[str, str, str], tuple[int, int, int]] = {}
    for kind, agent, detail, value, expected, high in opened:
        d = detail or {}
        if kind == "drift" and agent and agent not in seen_drift:
            seen_drift.add(agent)
            moved += [(agent, str(m)) for m in d.get("moved", [])]
        elif kind == "cost_anomaly":
            key = (
                str(d.get("granularity", "")),
                str(d.get("dimension", "")),
                str(d.get("key", "")),
            )
            cost.setdefault(key, (int(value or 0), int(expected or 0), int(high or 0)))
    cost_open = [(*k, *v) for k, v in sorted(cost.items())]
    return AlertCounts(counts, occurrences, sorted(moved), cost_open)


def update_detail(engine: Engine, alert_id: str, key: str, value: Any) -> Alert:
    """Sets one key of an alert's `detail` (a model change's eval, as it runs and ends)."""
    with engine.begin() as conn:
        t = alerts.c
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 11))"),
                         {"k": "alert-id:" + alert_id})  # fmt: skip
        row = conn.execute(select(alerts).where(t.id == alert_id)).first()
        if row is None:
            raise NotFoundError(f"alert {alert_id} not found; `tether alerts list` shows the ids")
        detail = dict(row.detail or {}) | {key: value}
        conn.execute(update(alerts).where(t.id == alert_id).values(detail=detail))
        return _alert(conn.execute(select(alerts).where(t.id == alert_id)).one())
