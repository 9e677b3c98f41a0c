"""The gateway's side of budgets: which caps apply to a call (agent policy + configuration), the
worst case it may cost, the reservation before forwarding and the settlement after it.

The arithmetic is core.budget's; the atomic counters are the ledger's (store/ledger.py).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import anyio
from sqlalchemy import Engine

from tether.config import Settings
from tether.core.budget import (
    Limits,
    Price,
    RunLimits,
    input_tokens_bound,
    max_tokens_that_fit,
    prompt_overhead_tokens,
    reservation_estimate,
    scopes_for,
)
from tether.core.errors import BadRequestError, BudgetExceededError, PolicyDeniedError
from tether.core.money import nusd_to_float, nusd_to_usd, usd_to_nusd
from tether.core.pricing import PriceTable
from tether.gateway.llm.provider import Target
from tether.gateway.llm.settler import SettleWriter
from tether.store import threads as thread_store
from tether.store.ledger import Ledger, Reservation

_POLICY_TTL_S = 2.0
# an injected max_tokens is lowered to what fits, but not below this: a reply cut shorter would
# rarely be of use, and a 402 says plainly that the run is spent
CLAMP_FLOOR_TOKENS = 256
# a run sets its own caps before its first LLM call (the saver's first checkpoint) and can only
# tighten them, so a short cache never lets a call through looser caps than the run had then
_RUN_CAPS_TTL_S = 1.0


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


@dataclass(frozen=True)
class Overshoot:
    """A call that settled above its hold: the provider billed more than tether's worst case
    (a hidden prompt the bound did not know, an upstream over-reporting). The real cost is
    charged all the same; this is the event operators are told about."""

    run_id: str
    agent: str | None
    key_id: str
    model: str
    scopes: tuple[str, ...]
    held_nusd: int
    charged_nusd: int
    held_tokens: int
    charged_tokens: int

    @property
    def over_nusd(self) -> int:
        return max(0, self.charged_nusd - self.held_nusd)


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
        self._run_caps: dict[str, tuple[float, dict[str, int | None] | None]] = {}
        # holds of calls in flight in this process, renewed until they settle (renew_live)
        self.live: dict[str, Reservation] = {}
        self.settler = SettleWriter(ledger, done=lambda r: self.live.pop(r.id, None))

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

    def note_run_caps(self, run_id: str, caps: dict[str, int | None] | None) -> None:
        """The run's own caps, read with the run when the gateway first saw it (one database
        round trip fewer on a run's first call)."""
        if len(self._run_caps) > 10_000:
            self._run_caps.clear()
        self._run_caps[run_id] = (time.monotonic(), caps)

    async def with_run_caps(self, limits: Limits, run_id: str) -> Limits:
        """`limits` tightened by the caps the run set for itself (a LangGraph run config's
        max_tokens, cost_limit_usd, max_iterations): on each measure the tighter one wins."""
        now = time.monotonic()
        hit = self._run_caps.get(run_id)
        if hit is None or now - hit[0] >= _RUN_CAPS_TTL_S:
            caps = await anyio.to_thread.run_sync(thread_store.caps, self.engine, run_id)
            if len(self._run_caps) > 10_000:
                self._run_caps.clear()
            self._run_caps[run_id] = hit = (now, caps)
        caps = hit[1]
        if not caps:
            return limits
        run = limits.run
        cost = caps["max_cost_nusd"]
        tighter = RunLimits(
            max_cost_usd=_least(run.max_cost_usd, nusd_to_usd(cost) if cost is not None else None),
            max_tokens=_least(run.max_tokens, caps["max_tokens"]),
            max_llm_calls=_least(run.max_llm_calls, caps["max_llm_calls"]),
            max_duration_s=run.max_duration_s,
        )
        return dataclasses.replace(limits, run=tighter)

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

    def margin(self, targets: list[Target], requested: str) -> tuple[int, Decimal]:
        """The operator's margin (extra input tokens, percent): the largest among the models a
        call may reach, by name, else the `*` entry."""
        margins = self.settings.budgets.margins
        found = [margins.get(name) or margins.get("*")
                 for name in {requested, *(t.model for t in targets)}]  # fmt: skip
        return (max((m.input_tokens for m in found if m), default=0),
                max((m.percent for m in found if m), default=Decimal(0)))  # fmt: skip

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
        api: str = "openai",
        messages: int = 0,
        tools: int = 0,
        requested: str = "",
    ) -> Admission:
        """Reserves the call's worst case on every capped scope, or raises BudgetExceededError
        saying which max_tokens would have fitted.

        When the client set no max_tokens, the injected default is lowered to what still fits
        (not below CLAMP_FLOOR_TOKENS): an agent near its cap gets a shorter answer, not a 402.
        A max_tokens the client chose is never changed."""
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
        extra_in, percent = self.margin(targets, requested)
        # the body grows by the injected field and the longest upstream model name
        extra = 32 + max(len(t.model) for t in targets)
        overhead = prompt_overhead_tokens(api, messages=messages, tools=tools) + extra_in
        bound_in = input_tokens_bound(request_bytes + extra, images=images,
                                      overhead_tokens=overhead)  # fmt: skip

        def estimate(out_tokens: int) -> tuple[int, int]:
            # every one of the `n` choices may use max_tokens
            return reservation_estimate(
                request_bytes + extra, out_tokens * choices, price, images=images,
                overhead_tokens=overhead, margin_percent=percent,
            )  # fmt: skip

        async def hold(out_tokens: int) -> Reservation:
            amount, tokens = estimate(out_tokens)
            return await self.ledger.reserve(scopes, amount_nusd=amount, tokens=tokens,
                                             run_id=caller.run_id, now=now)  # fmt: skip

        try:
            reservation = await hold(max_tokens)
        except BudgetExceededError as exc:
            fit = _fit(exc, bound_in, price, choices, percent)
            if injected is None or fit < min(CLAMP_FLOOR_TOKENS, injected):
                _say_fit(exc, fit)
                raise
            injected = fit
            try:
                reservation = await hold(fit)
            except BudgetExceededError as again:  # a concurrent call took the room meanwhile
                _say_fit(again, _fit(again, bound_in, price, choices, percent))
                raise
        if reservation.scopes:
            self.live[reservation.id] = reservation
        return Admission(reservation, injected, deadline)

    async def renew_live(self, now: datetime) -> int:
        """Renews the hold of every call still in flight here, so that a stream (or a slow
        upstream) outliving `reservation_ttl_s` is never swept while it can still spend."""
        return await self.ledger.renew(list(self.live), now=now)

    def cost_nusd(self, model: str | None, fallback: str, usage: Any) -> int | None:
        """Cost at `model`'s price, else `fallback`'s; None when neither is priced."""
        price = self.prices.price(model) if model else None
        price = price or self.prices.price(fallback)
        if price is None:
            return None
        counts = (max(0, int(n or 0)) for n in (usage.input_tokens, usage.output_tokens,
                  usage.cached_tokens, getattr(usage, "cache_write_tokens", 0)))  # fmt: skip
        return usd_to_nusd(price.cost(*counts))

    def settle_later(self, adm: Admission, cost_nusd: int | None, tokens: int) -> None:
        """Queues the settle on the settle writer (off the response path; see settler.py)."""
        if adm.reservation is None or adm.settled:
            return
        adm.settled = True
        if not adm.reservation.scopes:
            return
        self.settler.submit(adm.reservation, cost_nusd or 0, tokens)

    async def release(self, adm: Admission, now: datetime) -> None:
        if adm.reservation is None or adm.settled:
            return
        adm.settled = True
        res = adm.reservation
        self.live.pop(res.id, None)
        await self.ledger.release(res, now=now)


def _least(a: Any, b: Any) -> Any:
    if a is None:
        return b
    return a if b is None else min(a, b)


def _fit(exc: BudgetExceededError, bound_in: int, price: Any, choices: int,
         percent: Decimal) -> int:  # fmt: skip
    """The largest max_tokens that fits what the refusing scope has left."""
    d = exc.details
    if d.get("remaining_calls") == 0:
        return 0
    left = d.get("remaining_usd")
    # the ledgers report USD as a float of whole nano-dollars: back to the integer, rounded down
    nusd = None if left is None else int(Decimal(repr(left)) * 10**9)
    return max_tokens_that_fit(nusd, d.get("remaining_tokens"), bound_in, price,
                               choices=choices, margin_percent=percent)  # fmt: skip


def _say_fit(exc: BudgetExceededError, fit: int) -> None:
    exc.details["max_tokens_that_fit"] = fit
    if fit > 0:
        exc.message += f" A max_tokens of at most {fit} would fit."
    else:
        exc.message += " No max_tokens fits what is left."
    exc.args = (exc.message,)


def reserved_usd(adm: Admission) -> float | None:
    return None if adm.reservation is None else nusd_to_float(adm.reservation.amount_nusd)
