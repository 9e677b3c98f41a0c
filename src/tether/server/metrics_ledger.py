"""The store-derived metric families (money, runs, refusals, kills, approvals, policy
decisions, key ages, red-team ages, drift and cost anomaly alerts), exported by exactly one
replica at a time.

Every replica reads the same tables, so if each exported these, `sum()` over the replicas
would count every dollar N times. The replica holding the `metrics.ledger` lease exports them;
the others export `tether_ledger_exporter 0` and nothing else from here. A replica that dies
loses the lease after LEASE_TTL_S and another takes over, its values continuing from the
store (a counter never restarts from zero, so `rate()` sees no reset).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy import Engine

from tether.core.money import nusd_to_usd
from tether.store import lease
from tether.store.alerts import AlertCounts, alert_counts
from tether.store.metrics import APPROVAL_BUCKETS, DecisionTally, Ledger, read_ledger

log = logging.getLogger("tether.metrics")
LEASE = "metrics.ledger"
LEASE_TTL_S = 60.0


class LedgerCollector(Collector):
    """Yields the store-derived families from a snapshot at most `cache_s` old."""

    def __init__(self, engine: Engine, replica_id: str, *, cache_s: float) -> None:
        self.engine = engine
        self.replica_id = replica_id
        self.cache_s = cache_s
        self._lock = threading.Lock()
        self._tally = DecisionTally()
        self._at = -1e9
        self._snapshot: Ledger | None = None
        self._leader_at = -1e9
        self._leader = False

    def is_leader(self) -> bool:
        """Renews (or takes) the lease at most every cache_s seconds."""
        now = time.monotonic()
        if now - self._leader_at >= min(self.cache_s, LEASE_TTL_S / 3):
            self._leader = lease.acquire(
                self.engine, LEASE, self.replica_id, ttl_s=LEASE_TTL_S, now=datetime.now(UTC)
            )
            self._leader_at = now
        return self._leader

    def snapshot(self) -> Ledger:
        with self._lock:
            now = time.monotonic()
            if self._snapshot is None or now - self._at >= self.cache_s:
                self._snapshot = read_ledger(self.engine, self._tally, now=datetime.now(UTC))
                self._at = now
            return self._snapshot

    @property
    def leader(self) -> bool:
        """Whether the last check found this replica holding the lease."""
        return self._leader

    def release(self) -> None:
        if self._leader:
            lease.release(self.engine, LEASE, self.replica_id)
            self._leader = False

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            leader = self.is_leader()
        exporter = GaugeMetricFamily(
            "tether_ledger_exporter",
            "1 on the one replica exporting the store-derived families, 0 on the others.",
            labels=["replica"],
        )
        exporter.add_metric([self.replica_id], 1.0 if leader else 0.0)
        yield exporter
        if leader:
            yield from families(self.snapshot())
            yield self._redteam_ages()
            yield from alert_families(alert_counts(self.engine))

    def _redteam_ages(self) -> Metric:
        """Seconds since each agent's newest red-team report (the console flags > 90 days)."""
        from datetime import UTC, datetime

        from tether.store import redteam

        gauge = GaugeMetricFamily("tether_redteam_age_seconds", "Seconds since the agent's "
                                  "newest red-team report.", labels=["agent"])  # fmt: skip
        agents = sorted(redteam.last_run_at(self.engine))
        for agent, days in sorted(
            redteam.age_days(self.engine, agents, now=datetime.now(UTC)).items()
        ):
            if days is not None:
                gauge.add_metric([agent], days * 86400)
        return gauge


def alert_families(a: AlertCounts) -> Iterator[Metric]:
    """Drift and cost anomaly alerts from the alert history (a store read, so the same on
    every replica; exported by the lease holder only, like the ledger)."""
    stored = GaugeMetricFamily("tether_alerts", "Stored alerts by kind, agent and status.",
                               labels=["kind", "agent", "status"])  # fmt: skip
    for (kind, agent, status), n in sorted(a.alerts.items()):
        stored.add_metric([kind, agent, status], n)
    yield stored
    seen = CounterMetricFamily("tether_alert_occurrences", "Times an alert condition was seen "
                               "(repeats within the cool-down included), by kind and agent.",
                               labels=["kind", "agent"])  # fmt: skip
    for (kind, agent), n in sorted(a.occurrences.items()):
        seen.add_metric([kind, agent], n)
    yield seen
    moved = GaugeMetricFamily("tether_drift_moved", "1 for each metric that moved in the "
                              "agent's open drift alert.", labels=["agent", "metric"])  # fmt: skip
    for agent, metric in a.drift_moved:
        moved.add_metric([agent, metric], 1)
    yield moved
    labels = ["granularity", "dimension", "key"]
    spend = GaugeMetricFamily("tether_cost_anomaly_spend_usd", "Spend of the interval an open "
                              "cost anomaly alert is about.", labels=labels)  # fmt: skip
    expected = GaugeMetricFamily("tether_cost_anomaly_expected_usd", "Expected spend of that "
                                 "interval.", labels=labels)  # fmt: skip
    high = GaugeMetricFamily("tether_cost_anomaly_high_usd", "Top of that interval's normal "
                             "range.", labels=labels)  # fmt: skip
    for granularity, dimension, key, value_nusd, expected_nusd, high_nusd in a.cost_open:
        who = [granularity, dimension, key]
        spend.add_metric(who, float(nusd_to_usd(value_nusd)))
        expected.add_metric(who, float(nusd_to_usd(expected_nusd)))
        high.add_metric(who, float(nusd_to_usd(high_nusd)))
    yield spend
    yield expected
    yield high


def families(s: Ledger) -> Iterator[Metric]:
    """The metric families of one ledger snapshot."""
    runs = GaugeMetricFamily("tether_runs", "Stored runs by agent, version and current status.",
                             labels=["agent", "version", "status"])  # fmt: skip
    created = CounterMetricFamily("tether_runs_created", "Runs ever recorded, by agent and "
                                  "version.", labels=["agent", "version"])  # fmt: skip
    per_version: dict[tuple[str, str], int] = {}
    for r in s.runs:
        runs.add_metric([r["agent"], r["version"], r["status"]], r["n"])
        key = (r["agent"], r["version"])
        per_version[key] = per_version.get(key, 0) + r["n"]
    for (agent, version), n in sorted(per_version.items()):
        created.add_metric([agent, version], n)
    yield runs
    yield created

    labels = ["agent", "version", "user", "model"]
    cost = CounterMetricFamily("tether_cost_usd", "USD spent, by agent, version, user and model.",
                               labels=labels)  # fmt: skip
    tokens = CounterMetricFamily("tether_tokens", "LLM tokens by agent, version, user, model and "
                                 "direction.", labels=[*labels, "direction"])  # fmt: skip
    for u in s.usage:
        who = [u["agent"], u["version"], u["user"], u["model"]]
        cost.add_metric(who, float(nusd_to_usd(u["cost_nusd"])))
        tokens.add_metric([*who, "input"], u["input_tokens"])
        tokens.add_metric([*who, "output"], u["output_tokens"])
    yield cost
    yield tokens

    ratio = GaugeMetricFamily(
        "tether_success_at_target_cost_ratio",
        "Share of finished runs that succeeded at or under the target cost (the policy's run "
        "budget), by agent and version.", labels=["agent", "version"],
    )  # fmt: skip
    finished = GaugeMetricFamily(
        "tether_runs_finished",
        "Finished runs (succeeded, failed, killed), by agent and version.",
        labels=["agent", "version"],
    )
    for k in s.kpi:
        pair = [k["agent"] or "", k["version"] or ""]
        if k["rate"] is not None:
            ratio.add_metric(pair, float(k["rate"]))
        finished.add_metric(pair, int(k["total"]))
    yield ratio
    yield finished

    refusals = CounterMetricFamily(
        "tether_budget_refusals",
        "LLM calls refused (HTTP 402) by the kind of budget scope that had no room.",
        labels=["scope"],
    )
    for scope, n in sorted(s.refusals.items()):
        refusals.add_metric([scope], n)
    yield refusals
    yield from _budget_families(s)
    kills = CounterMetricFamily("tether_kills", "Runs killed (by people or caps), by agent.",
                                labels=["agent"])  # fmt: skip
    for agent, n in sorted(s.kills.items()):
        kills.add_metric([agent], n)
    yield kills

    yield from _approval_families(s)
    policy = CounterMetricFamily("tether_policy_decisions", "Tool-call policy decisions by "
                                 "outcome and agent.", labels=["outcome", "agent"])  # fmt: skip
    for (outcome, agent), n in sorted(s.policy.items()):
        policy.add_metric([outcome, agent], n)
    yield policy
    ages = GaugeMetricFamily("tether_api_key_age_seconds", "Age of each usable API key "
                             "(neither revoked nor expired).",
                             labels=["key_id", "name", "agent"])  # fmt: skip
    left = GaugeMetricFamily("tether_api_key_expires_in_seconds", "Seconds until an API key "
                             "with an expiry (a lifetime or a rotation's overlap) is refused.",
                             labels=["key_id", "name", "agent"])  # fmt: skip
    for key_id, name, agent, age, expires_in in s.key_ages:
        ages.add_metric([key_id, name, agent], age)
        if expires_in is not None:
            left.add_metric([key_id, name, agent], expires_in)
    yield ages
    yield left


def _budget_families(s: Ledger) -> Iterator[Metric]:
    """Today's capped day budgets (agent_day, user_day, key_day, global_day): spent and cap."""
    spent = GaugeMetricFamily(
        "tether_budget_spent_usd",
        "USD settled today on a capped day budget, by kind and subject.",
        labels=["kind", "subject"],
    )
    cap = GaugeMetricFamily("tether_budget_cap_usd", "The cap of a day budget, by kind and "
                            "subject.", labels=["kind", "subject"])  # fmt: skip
    for kind, subject, spent_nusd, cap_nusd in s.budgets:
        spent.add_metric([kind, subject], float(nusd_to_usd(spent_nusd)))
        cap.add_metric([kind, subject], float(nusd_to_usd(cap_nusd)))
    yield spent
    yield cap


def _approval_families(s: Ledger) -> Iterator[Metric]:
    waiting = GaugeMetricFamily("tether_approvals_waiting", "Tool calls held for a person's "
                                "decision, by agent.", labels=["agent"])  # fmt: skip
    for agent, n in sorted(s.approvals_waiting.items()):
        waiting.add_metric([agent], n)
    yield waiting
    yield GaugeMetricFamily("tether_approvals_oldest_waiting_seconds", "How long the oldest "
                            "pending approval has waited (0 when none).",
                            value=s.oldest_waiting_s)  # fmt: skip
    latency = HistogramMetricFamily(
        "tether_approval_decision_seconds",
        "Time from a held call to its decision, by decision.",
        labels=["decision"],
    )
    for decision, (buckets, total, n) in sorted(s.decisions.items()):
        pairs = [(_bound(b), c) for b, c in zip(APPROVAL_BUCKETS, buckets, strict=True)]
        latency.add_metric([decision], [*pairs, ("+Inf", n)], total)
    yield latency


def _bound(b: float) -> str:
    return f"{b:g}" if b != int(b) else f"{b:.1f}"
