"""Drift histograms: per agent, hour, version and served model, the runs per tool sequence and
per value bin of cost, tokens, LLM calls and latency (and the cost of the runs that succeeded,
so success at any target cost can be counted). The profiling pass applies each run's change
(its old profile out, its new one in) in the transaction that writes the profile, so the
histograms always agree with `run_profiles`; a drift check sums them for the whole hours of
its windows and reads the profiles only for the partial hours at the edges.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Table, and_, func, select
from sqlalchemy.dialects import postgresql, sqlite

from tether.core.drift import WindowStats, bin_value, value_bin
from tether.store.tables import drift_sequences, drift_values, run_profiles

SEP = "\x1f"
HOUR = timedelta(hours=1)
METRICS = ("cost", "tokens", "llm_calls", "latency")


def hour_of(at: datetime) -> datetime:
    return at.replace(minute=0, second=0, microsecond=0)


def _key(p: Mapping[str, Any]) -> tuple[str, datetime, str, str]:
    return (p["agent"], hour_of(p["started_at"]), p["version"] or "", p["model_served"] or "")


def _bins(p: Mapping[str, Any]) -> list[tuple[str, int]]:
    out = [("cost", value_bin(p["cost_nusd"])), ("tokens", value_bin(p["tokens"])),
           ("llm_calls", value_bin(p["llm_calls"]))]  # fmt: skip
    if p["latency_ms"] is not None:
        out.append(("latency", value_bin(p["latency_ms"])))
    if p["status"] == "succeeded":
        out.append(("ok_cost", value_bin(p["cost_nusd"])))
    return out


def apply_profiles(
    conn: Connection, old: Iterable[Mapping[str, Any]], new: Iterable[Mapping[str, Any]]
) -> None:
    """Takes the `old` profiles out of the histograms and puts the `new` ones in."""
    seqs: Counter[tuple[Any, ...]] = Counter()
    vals: Counter[tuple[Any, ...]] = Counter()
    for sign, profiles in ((-1, old), (1, new)):
        for p in profiles:
            key = _key(p)
            seqs[(*key, p["tools"])] += sign
            for metric, b in _bins(p):
                vals[(*key, metric, b)] += sign
    cols = ("agent", "hour_at", "version", "model")
    seq_rows = [dict(zip(cols, k[:4], strict=True)) | {
        "seq_hash": hashlib.sha1(k[4].encode()).hexdigest(), "tools": k[4], "runs": n}
        for k, n in seqs.items() if n]  # fmt: skip
    val_rows = [dict(zip((*cols, "metric", "bin"), k, strict=True)) | {"runs": n}
                for k, n in vals.items() if n]  # fmt: skip
    _add(conn, drift_sequences, seq_rows, (*cols, "seq_hash"))
    _add(conn, drift_values, val_rows, (*cols, "metric", "bin"))


def _add(conn: Connection, table: Table, rows: list[dict[str, Any]], keys: Sequence[str]) -> None:
    """INSERT, or add `runs` to the row already there."""
    if not rows:
        return
    mod: Any = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = mod.insert(table)
    stmt = stmt.on_conflict_do_update(
        index_elements=list(keys), set_={"runs": table.c.runs + stmt.excluded.runs}
    )
    conn.execute(stmt, rows)


# ---------------------------------------------------------------- reading windows


@dataclass
class _Acc:
    sequences: Counter[tuple[str, ...]]
    ok_cost: Counter[int]
    values: dict[str, Counter[float]]

    @classmethod
    def empty(cls) -> _Acc:
        return cls(Counter(), Counter(), {m: Counter() for m in METRICS})

    def stats(self, target_cost_nusd: int | None) -> WindowStats:
        runs = sum(self.sequences.values())
        ok = sum(n for b, n in self.ok_cost.items()
                 if target_cost_nusd is None or bin_value(b) <= target_cost_nusd)  # fmt: skip
        return WindowStats(dict(self.sequences), runs, ok,
                           {m: dict(c) for m, c in self.values.items() if c})  # fmt: skip


def split_hours(lo: datetime, hi: datetime) -> tuple[list[tuple[datetime, datetime]],
                                                     tuple[datetime, datetime] | None]:  # fmt: skip
    """[lo, hi) as the partial hours at its edges (read from the profiles) and the range of
    whole hours between them (read from the histograms)."""
    if hi <= lo:
        return [], None
    first = hour_of(lo) if hour_of(lo) == lo else hour_of(lo) + HOUR
    last = hour_of(hi)
    if first >= last:
        return [(lo, hi)], None
    edges = [(a, b) for a, b in ((lo, first), (last, hi)) if a < b]
    return edges, (first, last)


def read_window(
    conn: Connection,
    agent: str,
    lo: datetime,
    hi: datetime,
    *,
    version: str | None,
    model: str | None,
    target_cost_nusd: int | None,
) -> WindowStats:
    """The runs of `agent` started in [lo, hi), as drift's aggregated input."""
    acc = _Acc.empty()
    edges, whole = split_hours(lo, hi)
    if whole is not None:
        _from_histograms(conn, acc, agent, whole, version, model)
    for a, b in edges:
        _from_profiles(conn, acc, agent, a, b, version, model)
    return acc.stats(target_cost_nusd)


def _from_histograms(
    conn: Connection,
    acc: _Acc,
    agent: str,
    hours: tuple[datetime, datetime],
    version: str | None,
    model: str | None,
) -> None:
    for table in (drift_sequences, drift_values):
        t = table.c
        conds = [t.agent == agent, t.hour_at >= hours[0], t.hour_at < hours[1]]
        if version is not None:
            conds.append(t.version == version)
        if model is not None:
            conds.append(t.model == model)
        if table is drift_sequences:
            seq_q = select(t.tools, func.sum(t.runs)).where(*conds).group_by(t.tools)
            for tools, n in conn.execute(seq_q):
                if n:
                    acc.sequences[tuple(tools.split(SEP)) if tools else ()] += int(n)
        else:
            val_q = select(t.metric, t.bin, func.sum(t.runs)).where(*conds)
            for metric, b, n in conn.execute(val_q.group_by(t.metric, t.bin)):
                _count(acc, str(metric), int(b), int(n or 0))


def _count(acc: _Acc, metric: str, b: int, n: int) -> None:
    if not n:
        return
    if metric == "ok_cost":
        acc.ok_cost[b] += n
    elif metric in acc.values:
        acc.values[metric][bin_value(b)] += n


def _from_profiles(
    conn: Connection,
    acc: _Acc,
    agent: str,
    lo: datetime,
    hi: datetime,
    version: str | None,
    model: str | None,
) -> None:
    p = run_profiles.c
    conds = [p.agent == agent, p.started_at >= lo, p.started_at < hi]
    if version is not None:
        conds.append(p.version == version)
    if model is not None:
        conds.append(p.model_served == model)
    q = select(p.status, p.tools, p.cost_nusd, p.tokens, p.llm_calls, p.latency_ms, p.version,
               p.model_served, p.agent, p.started_at).where(and_(*conds))  # fmt: skip
    for row in conn.execute(q):
        m = dict(row._mapping)
        acc.sequences[tuple(m["tools"].split(SEP)) if m["tools"] else ()] += 1
        for metric, b in _bins(m):
            _count(acc, metric, b, 1)


def histogram_rows(conn: Connection, agent: str) -> int:
    """How many histogram rows an agent has (for the benchmark's figures)."""
    n = 0
    for table in (drift_sequences, drift_values):
        n += int(conn.execute(
            select(func.count()).select_from(table).where(table.c.agent == agent)
        ).scalar_one())  # fmt: skip
    return n
