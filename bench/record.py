"""What every benchmark writes: `bench/results/<name>.json` with its figures, the command that
produced them, the machine, the load average before and after, and the date; plus the rows it
contributes to the README's benchmark table (rendered by bench/report.py, checked by
tests/test_bench_report.py), so the README never states a figure no JSON file holds.

    from record import Row, write
    write("startup", command="bench/startup.py", figures={...},
          rows=[Row("`tether --help`", "p50 0.21 s wall, 0.11 s CPU", "<= 300 ms")])
"""

from __future__ import annotations

import json
import os
import platform
import sys
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Row:
    """One line of the README's benchmark table."""

    what: str
    measured: str
    target: str = ""


def machine() -> dict[str, Any]:
    """The machine the figures belong to."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
    }


def load() -> float:
    """The 1-minute load average (other work on the machine skews wall-clock figures)."""
    return round(os.getloadavg()[0], 2)


def write(
    name: str,
    *,
    command: str,
    figures: dict[str, Any],
    rows: list[Row],
    load_before: float,
) -> Path:
    """Writes bench/results/<name>.json and returns its path."""
    RESULTS.mkdir(exist_ok=True)
    doc = {
        "name": name,
        "command": command,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "load_avg_1m": {"before": load_before, "after": load()},
        "figures": figures,
        "readme_rows": [asdict(r) for r in rows],
    }
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}",
          file=sys.stderr)  # fmt: skip
    return path
