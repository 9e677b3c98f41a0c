"""The shipped alerting rules pass `promtool check rules` and their unit tests
(`promtool test rules`)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus"


def _promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool is missing: `make ops-tools` installs Debian's prometheus package"
    return path


def test_rules_are_valid_and_their_unit_tests_pass() -> None:
    check = subprocess.run([_promtool(), "check", "rules", "tether.rules.yaml"], cwd=RULES,
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS: 7 rules found" in check.stdout
    tested = subprocess.run([_promtool(), "test", "rules", "tether.rules.test.yaml"], cwd=RULES,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_a_broken_expectation_fails(tmp_path: Path) -> None:
    """The unit tests can fail: a test expecting an alert that does not fire is reported."""
    shutil.copy(RULES / "tether.rules.yaml", tmp_path)
    text = (RULES / "tether.rules.test.yaml").read_text()
    (tmp_path / "t.yaml").write_text(
        text.replace(
            "eval_time: 10m, alertname: TetherBudgetBurnHigh, exp_alerts: []",
            "eval_time: 3m, alertname: TetherBudgetBurnHigh, exp_alerts: [{}]",
        )
    )
    run = subprocess.run([_promtool(), "test", "rules", "t.yaml"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert run.returncode != 0 and "FAILED" in run.stdout + run.stderr
