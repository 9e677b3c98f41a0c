"""Cost anomalies: a robust, seasonal baseline of settled spend per interval (hour or day) and
the band outside which an interval's spend raises an alert.

Expected spend for an interval is the median of the same interval in earlier seasons (the same
hour of the week, or the same day of the week), falling back to the same hour of earlier days
(hours) or to the trailing days (days) while history is short. The band's width comes from the
median absolute deviation (MAD) of recent residuals on a square-root scale — the variance of a
sum of random run costs grows with its mean, and the square root makes it constant — taken over
intervals of a similar expected spend. So one past spike neither moves the expected value nor
widens the band much, and a quiet night does not set a busy hour's band.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

Granularity = Literal["hour", "day"]
GRANULARITIES: tuple[Granularity, ...] = ("hour", "day")
Direction = Literal["above", "below"]

# MAD x 1.4826 estimates the standard deviation of normally distributed residuals.
MAD_TO_SIGMA = 1.4826


@dataclass(frozen=True)
class AnomalyConfig:
    # band half-width in robust standard deviations of the square-root residuals
    k: float = 4.0
    # the narrowest band: spend within 25 % of the expected value is never unusual
    min_relative: float = 0.25
    # spend levels are compared (for "a similar expected spend") with this added ($0.01)
    floor_nusd: int = 10_000_000
    # an interval must differ from the expected spend by at least this much to alert ($0.10)
    min_excess_nusd: int = 100_000_000
    seasons: int = 4
    # residuals needed before a band is drawn: a week of hours, ten days
    min_residuals_hour: int = 24
    min_residuals_day: int = 10
    # whether spend far below the band alerts as well (a silent agent); spikes always do
    alert_below: bool = False


@dataclass(frozen=True)
class Band:
    """The expected spend of one interval and the range within which it is normal."""

    expected_nusd: int
    low_nusd: int
    high_nusd: int
    basis: str
    points: int
    scale: float

    def to_dict(self) -> dict[str, Any]:
        return {"expected_nusd": self.expected_nusd, "low_nusd": self.low_nusd,
                "high_nusd": self.high_nusd, "basis": self.basis, "points": self.points,
                "scale": self.scale}  # fmt: skip


@dataclass(frozen=True)
class Anomaly:
    bucket_at: datetime
    value_nusd: int
    band: Band
    direction: Direction

    @property
    def factor(self) -> float | None:
        """Spend over expected spend (None when nothing was expected)."""
        if self.band.expected_nusd <= 0:
            return None
        return self.value_nusd / self.band.expected_nusd


def step(granularity: Granularity) -> timedelta:
    return timedelta(hours=1) if granularity == "hour" else timedelta(days=1)


def bucket_of(at: datetime, granularity: Granularity) -> datetime:
    """The start (UTC) of the interval `at` falls in."""
    at = at.astimezone(UTC)
    if granularity == "hour":
        return at.replace(minute=0, second=0, microsecond=0)
    return at.replace(hour=0, minute=0, second=0, microsecond=0)


def _median(values: list[float]) -> float:
    s = sorted(values)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


class _Series:
    """A spend series: buckets missing between its first bucket and now spent nothing."""

    def __init__(
        self, values: Mapping[datetime, int], granularity: Granularity, until: datetime
    ) -> None:
        self.values = values
        self.step = step(granularity)
        self.granularity = granularity
        self.until = until
        self.first = min((b for b in values if b < until), default=None)

    def at(self, bucket: datetime) -> float | None:
        if self.first is None or bucket < self.first:
            return None  # before the series began there is no history, not zero spend
        if bucket >= self.until:
            return None  # the bucket being judged, and later ones, are not its own history
        return float(self.values.get(bucket, 0))

    def _lagged(self, bucket: datetime, lag: timedelta, count: int) -> list[float]:
        out = [self.at(bucket - lag * i) for i in range(1, count + 1)]
        return [v for v in out if v is not None]

    def expected(self, bucket: datetime, cfg: AnomalyConfig) -> tuple[float, str, int] | None:
        """(expected spend, basis, points), or None while history is too short."""
        # the same hour of the week, or the same day of the week: a season is a week either way
        same = self._lagged(bucket, timedelta(weeks=1), cfg.seasons)
        if len(same) >= 2:
            basis = "hour_of_week" if self.granularity == "hour" else "day_of_week"
            return _median(same), basis, len(same)
        if self.granularity == "hour":
            daily = self._lagged(bucket, timedelta(days=1), 7)
            if len(daily) >= 3:
                return _median(daily), "hour_of_day", len(daily)
            return None  # hours follow the day: the hours just before say little about this one
        trailing = self._lagged(bucket, self.step, 7)
        if len(trailing) >= 5:
            return _median(trailing), "trailing", len(trailing)
        return None


def _similar(
    history: list[tuple[float, float]], level: float, c: float, minimum: int
) -> list[float] | None:
    """The residuals of intervals whose expected spend is near `level`: the square root evens
    out count noise, not every other kind (a busy hour may also vary in what its runs cost)."""
    for factor in (2.0, 4.0, math.inf):
        near = [r for e, r in history if 1 / factor <= (e + c) / level <= factor]
        if len(near) >= minimum:
            return near
    return None


def band_for(
    values: Mapping[datetime, int],
    bucket: datetime,
    granularity: Granularity,
    config: AnomalyConfig | None = None,
) -> Band | None:
    """The band for `bucket` from the spend of the buckets before it (the bucket's own spend,
    if present in `values`, is not used). None while the series is too young to judge."""
    cfg = config or AnomalyConfig()
    series = _Series(values, granularity, until=bucket)
    now = series.expected(bucket, cfg)
    if now is None:
        return None
    expected, basis, points = now
    c = float(cfg.floor_nusd)
    # residuals over the last week of intervals (four weeks of days), each against its own
    # expected value, as (expected, residual on the square-root scale)
    history: list[tuple[float, float]] = []
    span = 168 if granularity == "hour" else 28
    for i in range(1, span + 1):
        b = bucket - series.step * i
        v = series.at(b)
        if v is None:
            break
        e = series.expected(b, cfg)  # looks only at buckets before b
        if e is not None:
            history.append((e[0], math.sqrt(v) - math.sqrt(e[0])))
    minimum = cfg.min_residuals_hour if granularity == "hour" else cfg.min_residuals_day
    residuals = _similar(history, expected + c, c, minimum)
    if residuals is None:
        return None
    centre = _median(residuals)
    mad = _median([abs(r - centre) for r in residuals])
    root = math.sqrt(expected)
    narrowest = root * (math.sqrt(1.0 + cfg.min_relative) - 1.0) / cfg.k
    scale = max(narrowest, MAD_TO_SIGMA * mad)
    high = (root + cfg.k * scale) ** 2
    low = max(0.0, root - cfg.k * scale) ** 2
    return Band(round(expected), round(low), round(high), basis, points, scale)


def detect(
    values: Mapping[datetime, int],
    bucket: datetime,
    granularity: Granularity,
    config: AnomalyConfig | None = None,
) -> Anomaly | None:
    """An Anomaly when the spend of `bucket` (in `values`; absent = none) leaves its band."""
    cfg = config or AnomalyConfig()
    band = band_for(values, bucket, granularity, cfg)
    if band is None:
        return None
    value = int(values.get(bucket, 0))
    if value > band.high_nusd and value - band.expected_nusd >= cfg.min_excess_nusd:
        return Anomaly(bucket, value, band, "above")
    if (
        cfg.alert_below
        and value < band.low_nusd
        and band.expected_nusd - value >= cfg.min_excess_nusd
    ):
        return Anomaly(bucket, value, band, "below")
    return None
