from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tether.store.migrate import head_revision


def _tether(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TETHER_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "tether.cli.main", *args],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_serve_refuses_public_bind_without_any_key(tmp_path: Path) -> None:
    res = _tether("serve", "--host", "0.0.0.0", "--port", "7", home=tmp_path)
    assert res.returncode == 2
    assert "no API key" in res.stderr and "tether keys create" in res.stderr
    assert "Traceback" not in res.stderr


def test_db_upgrade_then_current(tmp_path: Path) -> None:
    head = head_revision()
    first = _tether("db", "upgrade", home=tmp_path)
    assert first.returncode == 0 and f"upgraded from empty to {head}" in first.stdout
    again = _tether("db", "upgrade", home=tmp_path)
    assert f"already at revision {head}" in again.stdout
    assert f"current: {head}" in _tether("db", "current", home=tmp_path).stdout


def test_version_and_bad_config_exit_cleanly(tmp_path: Path) -> None:
    assert _tether("version", home=tmp_path).stdout.startswith("tether ")
    bad = tmp_path / "bad.yaml"
    bad.write_text("port: [\n")
    res = _tether("serve", "--config", str(bad), home=tmp_path)
    assert res.returncode == 2 and "bad.yaml:" in res.stderr and "Traceback" not in res.stderr
