"""Durations as people type them on the command line and in requests: `90s`, `15m`, `1h`,
`30d`, `2w` (one number and one unit)."""

from __future__ import annotations

import re
from datetime import timedelta

from tether.core.errors import BadRequestError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
# a bound far beyond any key's life that keeps datetime arithmetic in range
MAX_SECONDS = 100 * 365 * 86400


def parse_duration(text: str, *, what: str = "duration") -> timedelta:
    """`1h` -> timedelta(hours=1); BadRequestError naming `what` for anything else."""
    found = re.fullmatch(r"\s*(\d{1,9})\s*([smhdw])\s*", text or "")
    if not found:
        raise BadRequestError(f"{what} {text!r} is not a duration: use e.g. 90s, 15m, 1h, 30d, 2w")
    seconds = int(found.group(1)) * _UNITS[found.group(2)]
    if seconds > MAX_SECONDS:
        raise BadRequestError(f"{what} {text!r} is longer than 100 years")
    return timedelta(seconds=seconds)
