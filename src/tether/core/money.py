"""Money: Decimal in memory, integer nano-dollars (1e-9 USD) at rest, so sums and caps are exact."""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_HALF_EVEN, Decimal

NANO = Decimal("1e-9")
_PER_USD = 1_000_000_000


def usd_to_nusd(usd: Decimal) -> int:
    """Settled amounts round half-even to the nano-dollar."""
    return int((usd / NANO).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def usd_to_nusd_ceil(usd: Decimal) -> int:
    """Reservations round up, so a reservation is never smaller than what it covers."""
    return int((usd / NANO).quantize(Decimal(1), rounding=ROUND_CEILING))


def nusd_to_usd(nusd: int) -> Decimal:
    return Decimal(nusd) / _PER_USD


def nusd_to_float(nusd: int | None) -> float | None:
    """For JSON: dollars as a number (exact to the nano-dollar up to ~$9M)."""
    return None if nusd is None else float(nusd_to_usd(nusd))


def parse_usd(value: str | float | int | Decimal) -> Decimal:
    """Accepts `2`, `"2.50"`, `0.1` (floats go through str so 0.1 stays 0.1)."""
    if isinstance(value, Decimal):
        return value
    if isinstance(value, float):
        return Decimal(repr(value))
    return Decimal(value)
