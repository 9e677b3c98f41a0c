from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tether.core.errors import ConfigError
from tether.core.pricing import PriceTable, bundled_prices, load_price_table

TABLE = load_price_table({})
tokens = st.integers(min_value=0, max_value=10_000_000)


def test_bundled_table_has_the_expected_models_and_mock_prices() -> None:
    names = set(bundled_prices())
    assert len(names) >= 40
    for m in (
        "gpt-4o",
        "gpt-4o-mini",
        "gpt-4.1",
        "o3",
        "o4-mini",
        "gpt-5",
        "claude-opus-4-1",
        "claude-sonnet-4-5",
        "text-embedding-3-small",
        "mock-small",
        "mock-large",
    ):
        assert m in names, m
    small = TABLE.price("mock-small")
    large = TABLE.price("mock-large")
    assert small and large
    assert (small.input_per_token, small.output_per_token) == (Decimal("1e-6"), Decimal("2e-6"))
    assert (large.input_per_token, large.output_per_token) == (Decimal("1e-5"), Decimal("3e-5"))


@pytest.mark.parametrize(
    ("asked", "key"),
    [
        ("gpt-4o", "gpt-4o"),
        ("openai/gpt-4o", "gpt-4o"),
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("openai/gpt-4o-2024-08-06", "gpt-4o"),
        ("gpt-4o-2024-05-13", "gpt-4o-2024-05-13"),  # an exact dated entry wins
        ("GPT-4o-mini", "gpt-4o-mini"),
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("anthropic/claude-3-7-sonnet-20250219", "claude-3-7-sonnet-20250219"),
        ("deepseek-chat", "deepseek/deepseek-chat"),
        ("gemini-2.0-flash-001", "gemini/gemini-2.0-flash"),
        (
            "meta-llama/Llama-3.3-70B-Instruct-Turbo",
            "together_ai/meta-llama/Llama-3.3-70B-Instruct-Turbo",
        ),
        ("no-such-model", None),
        ("", None),
    ],
)
def test_lookup(asked: str, key: str | None) -> None:
    assert TABLE.resolve(asked) == key


def test_cost_is_exact_and_cached_tokens_are_not_double_charged() -> None:
    # gpt-4o: 2.5e-6 in, 1e-5 out, 1.25e-6 cached
    assert TABLE.cost("gpt-4o", 1000, 100) == Decimal("0.0035")
    assert TABLE.cost("gpt-4o", 1000, 100, cached_tokens=400) == Decimal("0.003")
    # cached tokens beyond the input are capped at the input
    assert TABLE.cost("gpt-4o", 10, 0, cached_tokens=50) == Decimal("0.0000125")
    assert TABLE.cost("unknown-model", 10, 10) is None


def test_model_without_cached_price_charges_input_price_for_cached() -> None:
    assert TABLE.cost("mock-small", 100, 0, cached_tokens=100) == TABLE.cost("mock-small", 100, 0)


def test_overrides_merge_per_field_and_add_models() -> None:
    t = load_price_table({
        "gpt-4o-mini": {"input_cost_per_token": 1e-7},
        "my-finetune": {"input_cost_per_token": "3e-6", "output_cost_per_token": 6e-6,
                        "max_output_tokens": 1000},
    })  # fmt: skip
    mini = t.price("gpt-4o-mini")
    assert mini and mini.input_per_token == Decimal("1e-7")
    assert mini.output_per_token == Decimal("6e-7")  # kept from the bundled entry
    assert t.cost("my-finetune", 1, 1) == Decimal("9e-6")
    assert t.price("openai/my-finetune") is not None
    # the bundled table is untouched for the next caller
    assert TABLE.price("gpt-4o-mini").input_per_token == Decimal("1.5e-7")  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"gpt-4o": {"input_cost_per_token": "cheap"}}, "gpt-4o.input_cost_per_token"),
        ({"gpt-4o": {"output_cost_per_token": -1}}, "gpt-4o.output_cost_per_token"),
        ({"gpt-4o": {"output_cost_per_token": float("nan")}}, "gpt-4o.output_cost_per_token"),
        ({"gpt-4o": {"cache_read_input_token_cost": True}}, "gpt-4o.cache_read_input_token_cost"),
        ({"gpt-4o": {"max_output_tokens": 0}}, "gpt-4o.max_output_tokens"),
        ({"gpt-4o": 5}, "pricing.gpt-4o"),
        ({"brand-new": {"output_cost_per_token": 1e-6}}, "brand-new.input_cost_per_token"),
    ],
)
def test_bad_overrides_name_model_and_field(overrides: dict, needle: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_price_table(overrides)
    assert needle in str(exc.value)


@given(st.sampled_from(sorted(bundled_prices())), tokens, tokens, tokens, tokens)
def test_cost_is_additive_over_calls(model: str, i1: int, o1: int, i2: int, o2: int) -> None:
    total = TABLE.cost(model, i1 + i2, o1 + o2)
    assert total == TABLE.cost(model, i1, o1) + TABLE.cost(model, i2, o2)  # type: ignore[operator]
    assert isinstance(total, Decimal)


@given(st.sampled_from(sorted(bundled_prices())), tokens, tokens, tokens, st.integers(0, 1000))
def test_cost_is_monotone_and_cached_never_costs_more(
    model: str, i: int, o: int, c: int, extra: int
) -> None:
    base = TABLE.cost(model, i, o)
    assert base is not None and base >= 0
    assert TABLE.cost(model, i + extra, o) >= base  # type: ignore[operator]
    assert TABLE.cost(model, i, o + extra) >= base  # type: ignore[operator]
    assert TABLE.cost(model, i, o, cached_tokens=c) <= base  # type: ignore[operator]


@given(
    st.dictionaries(st.text(min_size=1, max_size=10), st.decimals(0, 1, places=12), max_size=5),
    st.text(max_size=30),
)
def test_table_from_arbitrary_prices_never_errors_on_lookup(prices: dict, probe: str) -> None:
    from tether.core.pricing import ModelPrice

    t = PriceTable({k: ModelPrice(v, v, None, None) for k, v in prices.items()})
    for k in prices:
        assert t.price(k) is not None
    p = t.price(probe)
    assert p is None or p in t._prices.values()
    assert t.cost(probe, 1, 1) is None or p is not None


@given(
    st.sampled_from([*TABLE.models(), "openai/gpt-4o-mini", "gpt-4o-2024-08-06", "no-such-model"]),
    st.integers(0, 10**12), st.integers(0, 10**12), st.integers(0, 10**12),
)  # fmt: skip
def test_cost_nusd_is_the_decimal_cost_rounded(model: str, i: int, o: int, c: int) -> None:
    from tether.core.money import usd_to_nusd

    usd = TABLE.cost(model, i, o, c)
    assert TABLE.cost_nusd(model, i, o, c) == (None if usd is None else usd_to_nusd(usd))


def test_cost_nusd_keeps_sub_nano_prices_exact() -> None:
    from tether.core.money import usd_to_nusd

    t = load_price_table({"m": {"input_cost_per_token": 3.75e-8, "output_cost_per_token": 1e-7}})
    assert t.cost_nusd("m", 3, 1) == usd_to_nusd(Decimal("3.75e-8") * 3 + Decimal("1e-7")) == 212
