"""The README's benchmark figures are the ones in bench/results/*.json: bench/report.py renders
the table from those files, and the README must hold exactly that rendering."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_benchmark_table_matches_the_results_files() -> None:
    done = subprocess.run([sys.executable, "bench/report.py", "--check"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_every_results_file_says_how_when_and_where() -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import report
    finally:
        sys.path.remove(str(ROOT / "bench"))
    docs = report.results()
    assert any(d["name"] == "startup" for d in docs)
    for doc in docs:
        assert (ROOT / doc["command"].split()[0]).exists(), doc["command"]
        assert doc["measured_at"] and doc["machine"]["cpus"]
        assert {"before", "after"} <= set(doc["load_avg_1m"])


def test_every_benchmark_imports_what_exists() -> None:
    """`make bench` must not stop at an import of something renamed (lint does not run bench/
    through mypy): each script is imported, without running its main, in one fresh interpreter."""
    names = sorted(p.stem for p in (ROOT / "bench").glob("*.py"))
    code = (
        "import importlib, sys; sys.path[:0] = ['bench', '.']\n"
        "for n in sys.argv[1:]: importlib.import_module(n)"
    )
    done = subprocess.run([sys.executable, "-c", code, *names], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
