"""Budget arithmetic: caps per scope, the worst-case reservation of a request, and whether it fits.

Pure: no I/O, no clock. Money is integer nano-dollars (`*_nusd`, see core/money.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol

from tether.core.money import nusd_to_usd, parse_usd, usd_to_nusd, usd_to_nusd_ceil

# Byte-level BPE tokenizers (OpenAI's tiktoken encodings, Anthropic's, Llama's) map every
# token to at least one byte of the UTF-8 text they encode, so a text of N bytes is at most
# N tokens. What a provider bills beyond the text is added on top (prompt_overhead_tokens):
# this constant covers the request-level priming tokens.
REQUEST_OVERHEAD_TOKENS = 64
# Chat templates frame each message with role markers and separators (OpenAI: 3 tokens a
# message; Anthropic's are similar); 4 is an upper bound of both, counted per message.
MESSAGE_FRAMING_TOKENS = 4
# Tools are rendered into a hidden system prompt. Anthropic documents its tool-use system
# prompt per model: 530 tokens is the largest (Claude 3 Opus; Claude 4 and 3.7 use 346).
# OpenAI renders `tools` as a TypeScript-like namespace in the system message: a fixed
# preamble plus a few tokens of framing per tool (the schemas are in the request bytes).
TOOL_SYSTEM_PROMPT_TOKENS = {"anthropic": 530, "openai": 64}
TOOL_FRAMING_TOKENS = 16  # per tool definition

# An image is billed by its pixels, not by the bytes of its URL. The largest per-image counts
# documented by the providers: Anthropic ~1,600 (1.15 MP / 750), OpenAI gpt-4o high detail
# 85 + 170 x 8 tiles = 1,445; gpt-4o-mini and friends bill images as ~33x more tokens at a
# proportionally lower price (2,833 + 5,667 x 8 = 48,169 tokens), which is what this bounds.
IMAGE_TOKENS_BOUND = 48_169


class TokenPrice(Protocol):
    """USD per token (core.pricing.ModelPrice satisfies this)."""

    @property
    def input_per_token(self) -> Decimal: ...

    @property
    def output_per_token(self) -> Decimal: ...


@dataclass(frozen=True)
class Price:
    """A plain TokenPrice, for tests and callers without a pricing entry."""

    input_per_token: Decimal
    output_per_token: Decimal


@dataclass(frozen=True)
class RunLimits:
    max_cost_usd: Decimal | None = None
    max_tokens: int | None = None
    max_llm_calls: int | None = None
    max_duration_s: float | None = None


@dataclass(frozen=True)
class Limits:
    """Every cap that applies to one request: the run's, and the day caps of its owners."""

    run: RunLimits = field(default_factory=RunLimits)
    agent_day_usd: Decimal | None = None
    user_day_usd: Decimal | None = None
    key_day_usd: Decimal | None = None
    global_day_usd: Decimal | None = None


@dataclass(frozen=True)
class ScopeCap:
    """One counter and its caps; None means no cap on that measure."""

    scope: str
    cap_nusd: int | None = None
    cap_tokens: int | None = None
    cap_calls: int | None = None


@dataclass(frozen=True)
class CounterState:
    """A counter as stored: what is settled, what is held by open reservations, calls admitted."""

    spent_nusd: int = 0
    reserved_nusd: int = 0
    spent_tokens: int = 0
    reserved_tokens: int = 0
    calls: int = 0


@dataclass(frozen=True)
class Remaining:
    """What is left under a scope's caps (None: no cap); never negative."""

    scope: str
    nusd: int | None
    tokens: int | None
    calls: int | None

    @property
    def usd(self) -> Decimal | None:
        return None if self.nusd is None else nusd_to_usd(self.nusd)


def _usd(value: Decimal | None) -> int | None:
    return None if value is None else usd_to_nusd(value)


def scopes_for(
    limits: Limits,
    *,
    run_id: str | None,
    agent: str | None,
    user: str | None,
    key_id: str | None,
    day: date,
) -> list[ScopeCap]:
    """The capped scopes a request counts against, sorted by key (the lock order).

    Uncapped scopes get no counter: a hot uncapped row (global/day) would serialise every
    request for nothing. A cap added later counts spend from then on.
    """
    d = day.isoformat()
    out: list[ScopeCap] = []
    r = limits.run
    if run_id and any(v is not None for v in (r.max_cost_usd, r.max_tokens, r.max_llm_calls)):
        out.append(ScopeCap(f"run:{run_id}", _usd(r.max_cost_usd), r.max_tokens, r.max_llm_calls))
    pairs = (
        ("agent_day", agent, limits.agent_day_usd),
        ("user_day", user, limits.user_day_usd),
        ("key_day", key_id, limits.key_day_usd),
    )
    for kind, who, cap in pairs:
        if who and cap is not None:
            out.append(ScopeCap(f"{kind}:{who}:{d}", _usd(cap)))
    if limits.global_day_usd is not None:
        out.append(ScopeCap(f"global_day:{d}", _usd(limits.global_day_usd)))
    return merge_caps(out)


def prompt_overhead_tokens(api: str, *, messages: int, tools: int) -> int:
    """Prompt tokens a provider bills that are not in the request's text: per-message framing
    and, when tools are sent, its hidden tool-use system prompt and per-tool framing."""
    if messages < 0 or tools < 0:
        raise ValueError("message and tool counts must be >= 0")
    out = messages * MESSAGE_FRAMING_TOKENS
    if tools:
        out += TOOL_SYSTEM_PROMPT_TOKENS.get(api, max(TOOL_SYSTEM_PROMPT_TOKENS.values()))
        out += tools * TOOL_FRAMING_TOKENS
    return out


def input_tokens_bound(request_bytes: int, *, images: int = 0, overhead_tokens: int = 0) -> int:
    """A sound upper bound of the prompt tokens of a request body of `request_bytes` bytes,
    given the provider's `overhead_tokens` (prompt_overhead_tokens, plus an operator margin)."""
    if request_bytes < 0 or images < 0 or overhead_tokens < 0:
        raise ValueError("request size, image count and overhead must be >= 0")
    return request_bytes + REQUEST_OVERHEAD_TOKENS + images * IMAGE_TOKENS_BOUND + overhead_tokens


def cost_nusd(input_tokens: int, output_tokens: int, price: TokenPrice) -> int:
    """What a call costs, rounded half-even to the nano-dollar (how settled costs are rounded)."""
    usd = input_tokens * price.input_per_token + output_tokens * price.output_per_token
    return usd_to_nusd(usd)


def input_price(price: TokenPrice) -> Decimal:
    """The highest price an input token may be billed at: a cache write (Anthropic: 1.25x) or a
    cached-input price above the input price must not escape the bound."""
    found = [price.input_per_token]
    for name in ("cached_input_per_token", "cache_write_per_token"):
        value = getattr(price, name, None)
        if value is not None:
            found.append(value)
    return max(found)


def reservation_estimate(
    request_bytes: int,
    max_tokens: int,
    price: TokenPrice,
    *,
    images: int = 0,
    overhead_tokens: int = 0,
    margin_percent: Decimal = Decimal(0),
) -> tuple[int, int]:
    """(nusd, tokens): the worst case of a request, >= what it can really cost.

    Input at most `input_tokens_bound`, output at most `max_tokens` (the gateway injects a
    default when the request has none), at the highest price a token may be billed at, grown
    by the operator's `margin_percent`, rounded up. Any real usage within those bounds costs no
    more: cost is monotone in tokens and half-even <= ceiling.
    """
    if max_tokens < 0 or margin_percent < 0:
        raise ValueError("max_tokens and the margin must be >= 0")
    tin = input_tokens_bound(request_bytes, images=images, overhead_tokens=overhead_tokens)
    return _worst_nusd(tin, max_tokens, price, margin_percent), tin + max_tokens


def _worst_nusd(tin: int, tout: int, price: TokenPrice, margin_percent: Decimal) -> int:
    usd = tin * input_price(price) + tout * price.output_per_token
    return usd_to_nusd_ceil(usd * (1 + margin_percent / 100))


def max_tokens_that_fit(
    remaining_nusd: int | None,
    remaining_tokens: int | None,
    input_bound: int,
    price: TokenPrice,
    *,
    choices: int = 1,
    margin_percent: Decimal = Decimal(0),
) -> int:
    """The largest max_tokens whose worst case fits what a scope has left (0: none fits)."""
    fit: int | None = None
    if remaining_tokens is not None:
        fit = (remaining_tokens - input_bound) // choices
    if remaining_nusd is not None:
        grow = 1 + margin_percent / 100
        left = Decimal(remaining_nusd) / grow / 10**9 - input_bound * input_price(price)
        per_token = price.output_per_token * choices
        by_cost = int(left / per_token) if per_token > 0 else (2**31 if left >= 0 else -1)
        fit = by_cost if fit is None else min(fit, by_cost)
    out = 2**31 if fit is None else fit
    # rounding up the estimate may cost a token or two: step down until it really fits
    while out > 0 and remaining_nusd is not None:
        if _worst_nusd(input_bound, out * choices, price, margin_percent) <= remaining_nusd:
            break
        out -= 1
    return max(0, out)


def fits(state: CounterState, cap: ScopeCap, amount_nusd: int, tokens: int) -> bool:
    """Whether one more call reserving `amount_nusd` and `tokens` stays within every cap.

    The same predicate as the conditional UPDATE in store/budgets.py and the Redis script.
    """
    if (
        cap.cap_nusd is not None
        and state.spent_nusd + state.reserved_nusd + amount_nusd > cap.cap_nusd
    ):
        return False
    if cap.cap_tokens is not None and (
        state.spent_tokens + state.reserved_tokens + tokens > cap.cap_tokens
    ):
        return False
    return cap.cap_calls is None or state.calls + 1 <= cap.cap_calls


def remaining(state: CounterState, cap: ScopeCap) -> Remaining:
    def left(c: int | None, used: int) -> int | None:
        return None if c is None else max(0, c - used)

    return Remaining(
        cap.scope,
        left(cap.cap_nusd, state.spent_nusd + state.reserved_nusd),
        left(cap.cap_tokens, state.spent_tokens + state.reserved_tokens),
        left(cap.cap_calls, state.calls),
    )


def refusal_message(rem: Remaining, amount_nusd: int, tokens: int) -> str:
    """The sentence a 402 carries: which scope, what the call needed, what is left."""
    parts = []
    if rem.nusd is not None and rem.nusd < amount_nusd:
        parts.append(f"${nusd_to_usd(amount_nusd):.6f} needed (worst case), ${rem.usd:.6f} left")
    if rem.tokens is not None and rem.tokens < tokens:
        parts.append(f"{tokens} tokens needed (worst case), {rem.tokens} left")
    if rem.calls is not None and rem.calls < 1:
        parts.append("no LLM calls left")
    detail = "; ".join(parts) or "the cap is reached"
    if rem.scope.startswith("run:"):
        fix = "Lower max_tokens, raise the run budget in the agent's policy, or start a new run."
    else:
        fix = "Lower max_tokens, raise the cap, or wait for the next UTC day."
    return f"budget {rem.scope} exceeded: {detail}. {fix}"


def merge_caps(caps: Iterable[ScopeCap]) -> list[ScopeCap]:
    """One cap per scope (the tightest of each measure), sorted: the order locks are taken in."""
    out: dict[str, ScopeCap] = {}

    def tight(a: int | None, b: int | None) -> int | None:
        return b if a is None else a if b is None else min(a, b)

    for c in caps:
        seen = out.get(c.scope)
        out[c.scope] = c if seen is None else ScopeCap(
            c.scope, tight(seen.cap_nusd, c.cap_nusd), tight(seen.cap_tokens, c.cap_tokens),
            tight(seen.cap_calls, c.cap_calls),
        )  # fmt: skip
    return [out[k] for k in sorted(out)]


def deadline(started_at: datetime, run: RunLimits) -> datetime | None:
    """When a run must be killed by `max_duration_s`, or None."""
    if run.max_duration_s is None:
        return None
    return started_at + timedelta(seconds=run.max_duration_s)


def limits_from_mapping(
    budgets: Mapping[str, Any] | None, *, global_day_usd: Decimal | None = None
) -> Limits:
    """Limits from a policy's `budgets:` block (`run`, `day`, `user_day`, `key_day`)."""
    b = budgets or {}
    run = b.get("run") or {}

    def usd(block: Any) -> Decimal | None:
        v = (block or {}).get("max_cost_usd")
        return None if v is None else parse_usd(v)

    def num(key: str) -> int | None:
        v = run.get(key)
        return None if v is None else int(v)

    secs = None if run.get("max_duration_s") is None else float(run["max_duration_s"])
    return Limits(
        run=RunLimits(usd(run), num("max_tokens"), num("max_llm_calls"), secs),
        agent_day_usd=usd(b.get("day")),
        user_day_usd=usd(b.get("user_day")),
        key_day_usd=usd(b.get("key_day")),
        global_day_usd=global_day_usd,
    )
