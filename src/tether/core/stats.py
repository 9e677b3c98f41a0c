"""Small statistics for rates: the Wilson score interval of a success proportion.

Used for "task success rate at target cost" (the KPI) so that a rate over few runs shows how
little it says: 2 of 2 is not 100 % with any confidence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# The 97.5th percentile of the standard normal distribution: a two-sided 95 % interval.
Z_95 = 1.959963984540054


@dataclass(frozen=True)
class Rate:
    """`successes` of `total`, the point estimate and its Wilson interval (all 0..1)."""

    successes: int
    total: int
    rate: float | None
    low: float | None
    high: float | None

    def to_dict(self) -> dict[str, float | int | None]:
        return {
            "successes": self.successes,
            "total": self.total,
            "rate": self.rate,
            "low": self.low,
            "high": self.high,
        }


def wilson_interval(successes: int, total: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval for `successes` out of `total` trials.

    >>> wilson_interval(0, 10)[0]
    0.0
    """
    if total <= 0:
        raise ValueError("total must be positive")
    if not 0 <= successes <= total:
        raise ValueError("successes must be between 0 and total")
    p = successes / total
    z2 = z * z
    denom = 1.0 + z2 / total
    centre = (p + z2 / (2 * total)) / denom
    half = (z / denom) * math.sqrt(p * (1.0 - p) / total + z2 / (4.0 * total * total))
    # Clamp float noise so that 0/n gives exactly 0 and n/n exactly 1.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == total else min(1.0, centre + half)
    return low, high


def success_rate(successes: int, total: int, z: float = Z_95) -> Rate:
    """A Rate with its interval; with no trials every figure is None (nothing is known)."""
    if total == 0:
        return Rate(0, 0, None, None, None)
    low, high = wilson_interval(successes, total, z)
    return Rate(successes, total, successes / total, low, high)
