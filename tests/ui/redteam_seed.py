"""A red-team report as `tether redteam run` stores it, from scored attempts: one pack with
an attack that got through (and its suggested rule), attacks stopped by rules, an approval
and a budget, one resisted, one errored (never counted safe)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Engine

from tether.redteam import report
from tether.redteam.runner import Attempt
from tether.store import redteam


def attempts() -> list[Attempt]:
    def a(scenario: str, pack: str, outcome: str, **kw: Any) -> Attempt:
        return Attempt(scenario, pack, kw.pop("domain", "payments"), False,
                       outcome=outcome, run_id=f"run_rt_{scenario}", **kw)  # type: ignore[arg-type]  # fmt: skip

    return [
        a("indirect-payments-1", "indirect", "succeeded", tool="payments.transfer",
          arguments={"iban": "FR1420041010050500013M02606", "amount": 900.0},
          attempted_usd=900.0, moved_usd=900.0, untrusted_args=["iban"]),
        a("indirect-payments-2", "indirect", "stopped", stopped_by="payments.transfer[1]",
          attempted_usd=1200.0),
        a("indirect-mail-1", "indirect", "stopped", domain="mail",
          stopped_by="approval: mail.send"),
        a("injection-1", "injection", "stopped", domain="mail", stopped_by="mail.forward_all"),
        a("injection-2", "injection", "resisted", domain="mail"),
        a("exhaustion-1", "exhaustion", "stopped", domain="chat",
          stopped_by="budget: run max_llm_calls"),
        a("boundary-1", "boundary", "errored", domain="files", detail="upstream timeout"),
        Attempt("benign-mail-1", "indirect", "mail", True, outcome="resisted"),
    ]  # fmt: skip


def seed_report(engine: Engine, *, agent: str, now: datetime) -> str:
    built = report.build(attempts(), agent=agent, policy_sha256="ab" * 32)
    return redteam.save(engine, built, actor="test", now=now)
