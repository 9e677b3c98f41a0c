"""Renders the README's benchmark table from bench/results/*.json (the files each benchmark
writes with bench/record.py), between the `<!-- bench:start -->` and `<!-- bench:end -->`
markers. `make bench` runs it last; `--check` exits 1 when the README says something the JSON
files do not (tests/test_bench_report.py runs that check).

Run: `.venv/bin/python bench/report.py [--check]`
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
README = ROOT / "README.md"
START, END = "<!-- bench:start -->", "<!-- bench:end -->"


def results() -> list[dict[str, Any]]:
    """Every results file that carries README rows, by name."""
    docs = []
    for path in sorted(RESULTS.glob("*.json")):
        doc = json.loads(path.read_text())
        if isinstance(doc, dict) and doc.get("readme_rows"):
            docs.append(doc)
    return docs


def conditions(doc: dict[str, Any]) -> str:
    m, load = doc["machine"], doc["load_avg_1m"]
    return (f"{doc['measured_at'][:10]}, {m['cpus']} CPUs, load {load['before']:g}"
            f"→{load['after']:g}")  # fmt: skip


def render(docs: list[dict[str, Any]]) -> str:
    lines = [
        "| what | command | measured | target | when, machine, load |",
        "|---|---|---|---|---|",
    ]
    for doc in docs:
        for row in doc["readme_rows"]:
            lines.append(f"| {row['what']} | `{doc['command']}` | {row['measured']} | "
                         f"{row['target']} | {conditions(doc)} |")  # fmt: skip
    return "\n".join(lines)


def updated(readme: str, table: str) -> str:
    head, start, rest = readme.partition(START)
    _, end, tail = rest.partition(END)
    if not start or not end:
        raise SystemExit(f"README.md has no {START} ... {END} block")
    return f"{head}{START}\n{table}\n{END}{tail}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="fail if the README is stale")
    args = parser.parse_args()
    readme = README.read_text()
    new = updated(readme, render(results()))
    if args.check:
        if new != readme:
            sys.exit("README.md's benchmark table differs from bench/results/*.json: "
                     "run `.venv/bin/python bench/report.py`")  # fmt: skip
        return
    README.write_text(new)


if __name__ == "__main__":
    main()
