"""Model prices (LiteLLM's `model_prices_and_context_window.json` format) and token -> USD cost.

The bundled table is `core/data/model_prices.json`; `tether.yaml` `pricing:` overrides it per model.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from importlib import resources
from typing import Any

from tether.core.errors import ConfigError
from tether.core.money import usd_to_nusd

_PRICE_FIELDS = {
    "input_cost_per_token": "input_per_token",
    "output_cost_per_token": "output_per_token",
    "cache_read_input_token_cost": "cached_input_per_token",
    "cache_creation_input_token_cost": "cache_write_per_token",
}
_INT_FIELDS = ("max_input_tokens", "max_output_tokens", "max_tokens")
# "gpt-4o-2024-08-06", "claude-sonnet-4-20250514", "gemini-2.0-flash-001"
_DATED = re.compile(r"(-\d{4}-\d{2}-\d{2}|-\d{8}|-\d{3}|@\d{8})$")


@dataclass(frozen=True)
class ModelPrice:
    """USD per token. `cached_input_per_token` None means cached input costs the input price."""

    input_per_token: Decimal
    output_per_token: Decimal
    cached_input_per_token: Decimal | None
    max_output_tokens: int | None
    max_input_tokens: int | None = None
    provider: str | None = None
    mode: str = "chat"
    # a prompt-cache write (Anthropic bills 1.25x the input price); None: the input price
    cache_write_per_token: Decimal | None = None

    def cost(
        self, input_tokens: int, output_tokens: int, cached_tokens: int = 0,
        cache_write_tokens: int = 0,
    ) -> Decimal:  # fmt: skip
        """`input_tokens` includes `cached_tokens` and `cache_write_tokens` (OpenAI / OTel GenAI
        convention): each is billed at its own price, the rest of the input at the input price."""
        if min(input_tokens, output_tokens, cached_tokens, cache_write_tokens) < 0:
            raise ValueError("token counts must be >= 0")
        cached = min(cached_tokens, input_tokens)
        written = min(cache_write_tokens, input_tokens - cached)
        cached_price = self.cached_input_per_token
        if cached_price is None:
            cached_price = self.input_per_token
        write_price = self.cache_write_per_token
        if write_price is None:
            write_price = self.input_per_token
        return (
            (input_tokens - cached - written) * self.input_per_token
            + cached * cached_price
            + written * write_price
            + output_tokens * self.output_per_token
        )


class PriceTable:
    """Looks a model up by exact name, without a provider prefix, then without a date suffix."""

    def __init__(self, prices: Mapping[str, ModelPrice]) -> None:
        self._prices = dict(prices)
        # model name as given -> its nano-dollar prices per token (see cost_nusd)
        self._nano: dict[str, tuple[int, int, int] | ModelPrice | None] = {}
        # "deepseek-chat" finds "deepseek/deepseek-chat"; an exact key always wins over a suffix.
        self._index: dict[str, str] = {}
        for name in sorted(self._prices, key=lambda n: n.count("/"), reverse=True):
            parts = name.split("/")
            for i in range(len(parts)):
                self._index["/".join(parts[i:]).lower()] = name
        for name in self._prices:
            self._index[name.lower()] = name

    def __len__(self) -> int:
        return len(self._prices)

    def __contains__(self, model: object) -> bool:
        return isinstance(model, str) and self.price(model) is not None

    def models(self) -> list[str]:
        return sorted(self._prices)

    def resolve(self, model: str) -> str | None:
        """The table key that prices `model`, or None when it is unknown."""
        if not model:
            return None
        if model in self._prices:
            return model
        for candidate in _candidates(model.strip().lower()):
            hit = self._index.get(candidate)
            if hit is not None:
                return hit
        return None

    def price(self, model: str) -> ModelPrice | None:
        key = self.resolve(model)
        return None if key is None else self._prices[key]

    def cost(
        self, model: str, input_tokens: int, output_tokens: int, cached_tokens: int = 0
    ) -> Decimal | None:
        """USD for one call, exact; None when the model is not in the table."""
        p = self.price(model)
        return None if p is None else p.cost(input_tokens, output_tokens, cached_tokens)

    def cost_nusd(
        self, model: str, input_tokens: int, output_tokens: int, cached_tokens: int = 0
    ) -> int | None:
        """`usd_to_nusd(self.cost(...))`, which OTLP ingest asks of every LLM span: in integers
        when the model's prices are whole nano-dollars per token (the sum is then exact, as the
        Decimal one is), with the model's lookup remembered; in Decimal otherwise."""
        nano: tuple[int, int, int] | ModelPrice | None = self._nano.get(model, _UNSEEN)
        if nano is _UNSEEN:
            if len(self._nano) >= _NANO_ENTRIES:  # names come from senders: keep it bounded
                self._nano.clear()
            nano = self._nano[model] = _nano_prices(self.price(model))
        if nano is None:
            return None
        if isinstance(nano, ModelPrice):
            return usd_to_nusd(nano.cost(input_tokens, output_tokens, cached_tokens))
        if min(input_tokens, output_tokens, cached_tokens) < 0:
            raise ValueError("token counts must be >= 0")
        per_input, per_output, per_cached = nano
        cached = min(cached_tokens, input_tokens)
        uncached = input_tokens - cached
        return uncached * per_input + cached * per_cached + output_tokens * per_output


_UNSEEN: Any = object()
_NANO_ENTRIES = 4096


def _nano_prices(p: ModelPrice | None) -> tuple[int, int, int] | ModelPrice | None:
    """(input, output, cached input) in whole nano-dollars per token, or `p` itself when one of
    them has a fraction of a nano-dollar."""
    if p is None:
        return None
    cached = p.cached_input_per_token
    prices = [d.scaleb(9) for d in (p.input_per_token, p.output_per_token,
                                     p.input_per_token if cached is None else cached)]  # fmt: skip
    if any(d != d.to_integral_value() for d in prices):
        return p
    return int(prices[0]), int(prices[1]), int(prices[2])


def _candidates(name: str) -> list[str]:
    """`name`, then with leading `provider/` segments dropped, each also without a date suffix."""
    parts = name.split("/")
    bare = ["/".join(parts[i:]) for i in range(len(parts))]
    out = list(bare)
    for b in bare:
        undated = _DATED.sub("", b)
        if undated != b:
            out.append(undated)
    return out


def parse_entry(model: str, raw: Any, base: ModelPrice | None = None) -> ModelPrice:
    """One LiteLLM-format entry -> ModelPrice; fields missing from `raw` come from `base`.

    Raises ConfigError naming the model and the field for a bad value.
    """
    if not isinstance(raw, Mapping):
        raise ConfigError(
            f"pricing.{model}: expected a mapping like "
            "{input_cost_per_token: 1.5e-7, output_cost_per_token: 6e-7}"
        )
    values: dict[str, Any] = {}
    for src, dst in _PRICE_FIELDS.items():
        if src in raw and raw[src] is not None:
            values[dst] = _price_value(model, src, raw[src])
    for src in _INT_FIELDS:
        if src in raw and raw[src] is not None:
            values[src] = _int_value(model, src, raw[src])
    if "max_output_tokens" not in values and "max_tokens" in values:
        values["max_output_tokens"] = values["max_tokens"]
    values.pop("max_tokens", None)
    for src in ("litellm_provider", "mode"):
        if src in raw and raw[src] is not None and not isinstance(raw[src], str):
            raise ConfigError(f"pricing.{model}.{src}: expected a string, got {raw[src]!r}")
    if base is None and "input_per_token" not in values:
        raise ConfigError(
            f"pricing.{model}.input_cost_per_token: required for a model not in the bundled "
            "table (USD per token, e.g. 1.5e-7)"
        )
    return ModelPrice(
        input_per_token=values.get("input_per_token", base.input_per_token if base else Decimal(0)),
        output_per_token=values.get(
            "output_per_token", base.output_per_token if base else Decimal(0)
        ),
        cached_input_per_token=values.get(
            "cached_input_per_token", base.cached_input_per_token if base else None
        ),
        cache_write_per_token=values.get(
            "cache_write_per_token", base.cache_write_per_token if base else None
        ),
        max_output_tokens=values.get("max_output_tokens", base.max_output_tokens if base else None),
        max_input_tokens=values.get("max_input_tokens", base.max_input_tokens if base else None),
        provider=raw.get("litellm_provider") or (base.provider if base else None),
        mode=raw.get("mode") or (base.mode if base else "chat"),
    )


def _price_value(model: str, field: str, value: Any) -> Decimal:
    if isinstance(value, bool):
        raise ConfigError(f"pricing.{model}.{field}: expected USD per token, got {value!r}")
    try:
        if isinstance(value, float):
            if not math.isfinite(value):
                raise InvalidOperation
            d = Decimal(repr(value))
        elif isinstance(value, (int, str, Decimal)):
            d = Decimal(value)
        else:
            raise InvalidOperation
    except (InvalidOperation, ValueError):
        raise ConfigError(
            f"pricing.{model}.{field}: expected USD per token as a number, got {value!r}"
        ) from None
    if not d.is_finite() or d < 0:
        raise ConfigError(f"pricing.{model}.{field}: must be a finite number >= 0, got {value!r}")
    return d


def _int_value(model: str, field: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"pricing.{model}.{field}: expected a positive integer, got {value!r}")
    return value


@lru_cache(maxsize=1)
def _bundled_raw() -> dict[str, Any]:
    text = resources.files("tether.core").joinpath("data/model_prices.json").read_text()
    data: dict[str, Any] = json.loads(text, parse_float=Decimal)
    return data


@lru_cache(maxsize=1)
def bundled_prices() -> dict[str, ModelPrice]:
    """The table shipped with tether (LiteLLM format; `sample_spec` entries are skipped)."""
    return {
        name: parse_entry(name, entry)
        for name, entry in _bundled_raw().items()
        if name != "sample_spec"
    }


def load_price_table(overrides: Mapping[str, Any] | None = None) -> PriceTable:
    """The bundled table with `overrides` (tether.yaml `pricing:`) merged over it, per field."""
    prices = dict(bundled_prices())
    base_table = PriceTable(prices)
    for model, raw in (overrides or {}).items():
        if not isinstance(model, str) or not model.strip():
            raise ConfigError(f"pricing: model names must be non-empty strings, got {model!r}")
        base_key = base_table.resolve(model)
        base = prices.get(model) or (prices[base_key] if base_key else None)
        prices[model] = parse_entry(model, raw, base)
    return PriceTable(prices)
