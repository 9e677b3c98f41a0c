from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from tether.core import budget as b
from tether.core.budget import CounterState, Limits, Price, RunLimits, ScopeCap
from tether.core.money import usd_to_nusd
from tether.core.pricing import ModelPrice

DAY = date(2026, 11, 25)
prices = st.builds(
    Price,
    st.decimals(min_value=0, max_value=Decimal("0.0001"), places=12),
    st.decimals(min_value=0, max_value=Decimal("0.0003"), places=12),
)


def test_scopes_are_only_capped_ones_and_sorted_for_lock_order() -> None:
    limits = Limits(
        RunLimits(Decimal("2.00"), 50_000, 25, 600),
        agent_day_usd=Decimal(50),
        user_day_usd=Decimal(5),
        global_day_usd=Decimal("100.5"),
    )
    caps = b.scopes_for(limits, run_id="run_1", agent="triage", user="alice", key_id="key_1",
                        day=DAY)  # fmt: skip
    assert [c.scope for c in caps] == [
        "agent_day:triage:2026-11-25",
        "global_day:2026-11-25",
        "run:run_1",
        "user_day:alice:2026-11-25",
    ]
    run = caps[2]
    assert (run.cap_nusd, run.cap_tokens, run.cap_calls) == (2_000_000_000, 50_000, 25)
    assert caps[1].cap_nusd == 100_500_000_000
    # no user, no key cap, no run id: those scopes are absent
    caps = b.scopes_for(limits, run_id=None, agent="triage", user=None, key_id="k", day=DAY)
    assert [c.scope for c in caps] == ["agent_day:triage:2026-11-25", "global_day:2026-11-25"]
    assert b.scopes_for(Limits(), run_id="r", agent="a", user="u", key_id="k", day=DAY) == []


def test_duration_only_limit_gives_no_counter_but_a_deadline() -> None:
    limits = Limits(RunLimits(max_duration_s=60))
    assert b.scopes_for(limits, run_id="r", agent=None, user=None, key_id=None, day=DAY) == []
    start = datetime(2026, 11, 25, 12, tzinfo=UTC)
    assert b.deadline(start, limits.run) == datetime(2026, 11, 25, 12, 1, tzinfo=UTC)
    assert b.deadline(start, RunLimits()) is None


def test_limits_from_policy_budgets_block() -> None:
    lim = b.limits_from_mapping(
        {"run": {"max_cost_usd": 2.0, "max_tokens": 50000, "max_llm_calls": 25,
                 "max_duration_s": 600}, "day": {"max_cost_usd": 50},
         "user_day": {"max_cost_usd": "5"}},
        global_day_usd=Decimal(100),
    )  # fmt: skip
    assert lim == Limits(RunLimits(Decimal("2.0"), 50000, 25, 600), Decimal(50), Decimal(5),
                         None, Decimal(100))  # fmt: skip


@settings(deadline=None)
@given(
    text=st.text(max_size=300),
    max_tokens=st.integers(0, 100_000),
    tin=st.integers(0, 10_000),
    tout=st.integers(0, 100_000),
    price=prices,
)
def test_reservation_covers_any_usage_within_its_token_bounds(
    text: str, max_tokens: int, tin: int, tout: int, price: Price
) -> None:
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": text}]}).encode()
    nusd, tokens = b.reservation_estimate(len(body), max_tokens, price)
    bound_in = b.input_tokens_bound(len(body))
    # a token is >= 1 byte of UTF-8 text; JSON escaping only adds bytes
    assert bound_in >= len(text.encode("utf-8"))
    assert tokens == bound_in + max_tokens
    used_in, used_out = min(tin, bound_in), min(tout, max_tokens)
    mp = ModelPrice(price.input_per_token, price.output_per_token, None, None)
    assert usd_to_nusd(mp.cost(used_in, used_out)) <= nusd
    assert b.cost_nusd(used_in, used_out, price) <= nusd


def test_cache_write_price_above_input_price_stays_bounded() -> None:
    mp = ModelPrice(Decimal("1e-6"), Decimal("2e-6"), Decimal("1.25e-6"), None)
    nusd, _ = b.reservation_estimate(100, 10, mp)
    assert nusd == (100 + b.REQUEST_OVERHEAD_TOKENS) * 1250 + 10 * 2000


def test_images_get_a_token_floor() -> None:
    price = Price(Decimal("1e-6"), Decimal(0))
    plain, _ = b.reservation_estimate(100, 0, price)
    with_image, tokens = b.reservation_estimate(100, 0, price, images=2)
    assert with_image - plain == 2 * b.IMAGE_TOKENS_BOUND * 1000
    assert tokens == 100 + b.REQUEST_OVERHEAD_TOKENS + 2 * b.IMAGE_TOKENS_BOUND


def test_fits_and_remaining_name_what_is_left() -> None:
    cap = ScopeCap("run:r", 1_000, 100, 3)
    s = CounterState(spent_nusd=400, reserved_nusd=500, spent_tokens=10, reserved_tokens=80,
                     calls=2)  # fmt: skip
    assert b.fits(s, cap, 100, 10)
    assert not b.fits(s, cap, 101, 10)
    assert not b.fits(s, cap, 100, 11)
    assert not b.fits(replace(s, calls=3), cap, 0, 0)
    rem = b.remaining(s, cap)
    assert (rem.nusd, rem.tokens, rem.calls, rem.usd) == (100, 10, 1, Decimal("1E-7"))
    msg = b.refusal_message(rem, 101, 5)
    assert "run:r" in msg and "left" in msg and "max_tokens" in msg
    assert b.remaining(replace(s, spent_nusd=2_000), cap).nusd == 0


ops = st.lists(
    st.tuples(st.sampled_from(["reserve", "settle", "release"]), st.integers(0, 400),
              st.floats(0, 1)),
    max_size=80,
)  # fmt: skip


@settings(max_examples=300, deadline=None)  # no timing flakes on a loaded CI machine
@given(ops=ops, cap_nusd=st.integers(0, 2_000), cap_calls=st.one_of(st.none(), st.integers(0, 20)))
def test_settled_spend_never_exceeds_cap_for_any_sequence(
    ops: list[tuple[str, int, float]], cap_nusd: int, cap_calls: int | None
) -> None:
    """A reference ledger built on fits(): the store and Redis ledgers apply the same rule."""
    cap = ScopeCap("run:r", cap_nusd, None, cap_calls)
    state = CounterState()
    held: list[int] = []
    for op, size, frac in ops:
        if op == "reserve":
            if b.fits(state, cap, size, 0):
                state = replace(state, reserved_nusd=state.reserved_nusd + size,
                                calls=state.calls + 1)  # fmt: skip
                held.append(size)
        elif held:
            amount = held.pop(0)
            actual = int(amount * frac) if op == "settle" else 0
            assert actual <= amount
            before = state.spent_nusd + state.reserved_nusd
            state = replace(
                state,
                spent_nusd=state.spent_nusd + actual,
                reserved_nusd=state.reserved_nusd - amount,
                calls=state.calls - (1 if op == "release" else 0),
            )
            # settling never raises what is committed; release gives back exactly the hold
            assert state.spent_nusd + state.reserved_nusd == before - (amount - actual)
        assert state.spent_nusd + state.reserved_nusd <= cap_nusd
        assert state.spent_nusd <= cap_nusd
        assert cap_calls is None or state.calls <= cap_calls
    assert state.reserved_nusd == sum(held)


def test_duplicate_scopes_merge_to_the_tightest_caps() -> None:
    caps = b.merge_caps([ScopeCap("run:r", 10, None, 5), ScopeCap("a", 1),
                         ScopeCap("run:r", 20, 7, None)])  # fmt: skip
    assert caps == [ScopeCap("a", 1), ScopeCap("run:r", 10, 7, 5)]


def test_refusal_says_how_to_go_on_for_each_kind_of_scope() -> None:
    run = b.refusal_message(b.Remaining("run:r", 0, None, None), 5, 0)
    day = b.refusal_message(b.Remaining("agent_day:a:2026-11-25", 0, None, None), 5, 0)
    assert "start a new run" in run and "next UTC day" in day


@settings(deadline=None)
@given(
    messages=st.integers(0, 50),
    tools=st.integers(0, 20),
    api=st.sampled_from(["openai", "anthropic", "other"]),
    margin_tokens=st.integers(0, 5000),
    percent=st.decimals(min_value=0, max_value=200, places=2),
    used_in=st.integers(0, 20_000),
    written=st.integers(0, 20_000),
    used_out=st.integers(0, 5000),
    max_tokens=st.integers(0, 5000),
)
def test_the_hold_bounds_what_the_provider_bills_with_its_hidden_prompt_and_cache_writes(
    messages: int, tools: int, api: str, margin_tokens: int, percent: Decimal, used_in: int,
    written: int, used_out: int, max_tokens: int,
) -> None:  # fmt: skip
    """Any bill within the input bound (hidden tool prompt, framing, margin included) and
    max_tokens, cache writes at 1.25x included, costs no more than the hold."""
    price = ModelPrice(Decimal("3e-6"), Decimal("1.5e-5"), Decimal("3e-7"), None,
                       cache_write_per_token=Decimal("3.75e-6"))  # fmt: skip
    overhead = b.prompt_overhead_tokens(api, messages=messages, tools=tools) + margin_tokens
    if tools:
        assert overhead >= b.TOOL_SYSTEM_PROMPT_TOKENS.get(api, 530) + tools * 16
    nusd, tokens = b.reservation_estimate(300, max_tokens, price, overhead_tokens=overhead,
                                          margin_percent=percent)  # fmt: skip
    bound = b.input_tokens_bound(300, overhead_tokens=overhead)
    tin = min(used_in, bound)
    billed = price.cost(tin, min(used_out, max_tokens), 0, min(written, tin))
    assert usd_to_nusd(billed) <= nusd
    assert tokens == bound + max_tokens


@settings(deadline=None)
@given(
    left=st.integers(0, 10**9),
    left_tokens=st.one_of(st.none(), st.integers(0, 10**6)),
    bound=st.integers(64, 50_000),
    choices=st.integers(1, 4),
    percent=st.decimals(min_value=0, max_value=100, places=1),
    price=prices,
)
def test_max_tokens_that_fit_fits_and_one_more_does_not(
    left: int, left_tokens: int | None, bound: int, choices: int, percent: Decimal, price: Price
) -> None:
    fit = b.max_tokens_that_fit(left, left_tokens, bound, price, choices=choices,
                                margin_percent=percent)  # fmt: skip
    over = b.REQUEST_OVERHEAD_TOKENS

    def fits(n: int) -> bool:
        amount, tokens = b.reservation_estimate(0, n * choices, price, overhead_tokens=bound - over,
                                                margin_percent=percent)  # fmt: skip
        return amount <= left and (left_tokens is None or tokens <= left_tokens)

    if fit > 0:
        assert fits(fit)
    if fit < 2**31 and price.output_per_token > 0:
        assert not fits(fit + 1)
