"""The gateway's side of budgets: which caps apply to a call (agent policy + configuration), the
worst case it may cost, the reservation before forwarding and the settlement after it.

The arithmetic is core.budget's; the atomic counters are the ledger's (store/ledger.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import anyio
from sqlalchemy import Engine

from tether.config import Settings
from tether.core.budget import Limits, Price, RunLimits, reservation_estimate, scopes_for
from tether.core.errors import BadRequestError, PolicyDeniedError
from tether.core.money import nusd_to_float, usd_to_nusd
from tether.core.pricing import PriceTable
from tether.gateway.llm.provider import Target
from tether.store.ledger import Ledger, Reservation

_POLICY_TTL_S = 2.0


@dataclass(frozen=True)
class Caller:
    """Who a call is for: the key, its agent, and the run it is attributed to."""

    key_id: str
    agent: str | None
    run_id: str
    user: str | None
    task_id: str | None


@dataclass
class Admission:
    """What admission decided: the hold (None when nothing is capped), the max_tokens tether
    injected (None when the request had its own), and when the run must end."""

    reservation: Reservation | None
    injected_max_tokens: int | None
    deadline: datetime | None
    settled: bool = False


def count_images(messages: Any) -> int:
    n = 0
    for m in messages if isinstance(messages, list) else ():
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, list):
            n += sum(
                1
                for p in content
                if isinstance(p, dict) and p.get("type") in ("image_url", "image", "input_image")
            )
    return n


class BudgetGuard:
    def __init__(
        self, settings: Settings, engine: Engine, ledger: Ledger, prices: PriceTable
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.ledger = ledger
        self.prices = prices
        self._policies: dict[str, tuple[float, Any]] = {}

    def policy_cached(self, agent: str | None) -> Any:
        """The cached policy (or None: no policy), or False when it must be looked up."""
        if not agent:
            return None
        hit = self._policies.get(agent)
        if hit is not None and time.monotonic() - hit[0] < _POLICY_TTL_S:
            return hit[1]
        return False

    def policy(self, agent: str | None) -> Any:
        """The agent's current policy (cached for 2 s so a policy change applies quickly)."""
        if not agent:
            return None
        hit = self._policies.get(agent)
        now = time.monotonic()
        if hit is not None and now - hit[0] < _POLICY_TTL_S:
            return hit[1]
        from tether.store import policies

        policy = policies.get(self.engine, agent)
        self._policies[agent] = (now, policy)
        return policy

    def limits(self, policy: Any) -> Limits:
        """The policy's caps, plus the configured per-key and global day caps."""
        cfg = self.settings.budgets
        if policy is None:
            return Limits(run=RunLimits(), key_day_usd=cfg.key_day_usd,
                          global_day_usd=cfg.global_day_usd)  # fmt: skip
        base: Limits = policy.budget_limits()
        return Limits(
            run=base.run,
            agent_day_usd=base.agent_day_usd,
            user_day_usd=base.user_day_usd,
            key_day_usd=base.key_day_usd if base.key_day_usd is not None else cfg.key_day_usd,
            global_day_usd=cfg.global_day_usd,
        )

    def check_model(self, policy: Any, caller: Caller, model: str) -> None:
        if policy is not None and not policy.allows_model(model):
            allowed = ", ".join(policy.models or ())
            raise PolicyDeniedError(
                f"agent {caller.agent}'s policy does not allow model {model!r} "
                f"(allowed: {allowed})",
                code="model_not_allowed",
            )

    def worst_price(self, targets: list[Target]) -> Price | None:
        """The highest input and output prices among the targets a call may reach."""
        found = [self.prices.price(t.model) for t in targets]
        if any(p is None for p in found):
            return None
        return Price(
            max(p.input_per_token for p in found if p),
            max(p.output_per_token for p in found if p),
        )

    def default_max_tokens(self, targets: list[Target]) -> int:
        cap = self.settings.budgets.default_max_tokens
        for t in targets:
            p = self.prices.price(t.model)
            if p is not None and p.max_output_tokens:
                cap = min(cap, p.max_output_tokens)
        return cap

    async def admit(
        self,
        caller: Caller,
        limits: Limits,
        targets: list[Target],
        *,
        request_bytes: int,
        max_tokens: int | None,
        images: int,
        started_at: datetime,
        now: datetime,
        choices: int = 1,
    ) -> Admission:
        """Reserves the call's worst case on every capped scope, or raises BudgetExceededError."""
        deadline = None
        if limits.run.max_duration_s is not None:
            deadline = started_at + timedelta(seconds=limits.run.max_duration_s)
        scopes = scopes_for(
            limits, run_id=caller.run_id, agent=caller.agent, user=caller.user,
            key_id=caller.key_id, day=now.date(),
        )  # fmt: skip
        if not scopes:
            return Admission(None, None, deadline)
        injected = None
        if max_tokens is None:
            injected = max_tokens = self.default_max_tokens(targets)
        price = self.worst_price(targets)
        if price is None:
            if any(s.cap_nusd is not None for s in scopes):
                unknown = [t.model for t in targets if self.prices.price(t.model) is None]
                raise BadRequestError(
                    f"model {unknown[0]!r} has no price, so its cost cannot be capped; add it "
                    "under `pricing:` in tether.yaml",
                    code="model_unpriced",
                )
            price = Price(Decimal(0), Decimal(0))
        # the body grows by the injected field and the longest upstream model name
        extra = 32 + max(len(t.model) for t in targets)
        # every one of the `n` choices may use max_tokens
        amount, tokens = reservation_estimate(request_bytes + extra, max_tokens * choices, price,
                                              images=images)  # fmt: skip
        reservation = await anyio.to_thread.run_sync(
            lambda: self.ledger.reserve(
                scopes, amount_nusd=amount, tokens=tokens, run_id=caller.run_id, now=now
            )
        )
        return Admission(reservation, injected, deadline)

    def cost_nusd(self, model: str | None, fallback: str, usage: Any) -> int | None:
        """Cost at `model`'s price, else `fallback`'s; None when neither is priced."""
        price = self.prices.price(model) if model else None
        price = price or self.prices.price(fallback)
        if price is None:
            return None
        counts = (max(0, int(n or 0)) for n in
                  (usage.input_tokens, usage.output_tokens, usage.cached_tokens))  # fmt: skip
        return usd_to_nusd(price.cost(*counts))

    async def settle(
        self, adm: Admission, cost_nusd: int | None, tokens: int, now: datetime
    ) -> None:
        if adm.reservation is None or adm.settled:
            return
        adm.settled = True
        res = adm.reservation
        await anyio.to_thread.run_sync(
            lambda: self.ledger.settle(
                res, actual_nusd=cost_nusd or 0, actual_tokens=tokens, now=now
            )
        )

    async def release(self, adm: Admission, now: datetime) -> None:
        if adm.reservation is None or adm.settled:
            return
        adm.settled = True
        res = adm.reservation
        await anyio.to_thread.run_sync(lambda: self.ledger.release(res, now=now))


def reserved_usd(adm: Admission) -> float | None:
    return None if adm.reservation is None else nusd_to_float(adm.reservation.amount_nusd)
