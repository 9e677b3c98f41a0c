"""The test-process helper: a server that never becomes ready is stopped with its output in the
error, and stop() ends the whole tree, including a child in a session of its own that ignores
SIGTERM (as the MCP SDK starts stdio upstreams)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.processes import Spawned, descendants

# A parent that prints, starts a child in a new session, and ignores SIGTERM; both sleep.
STUBBORN = """
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"],
    start_new_session=True)
print("child", child.pid, flush=True)
time.sleep(600)
"""


def _child_pid(proc: Spawned) -> int:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for line in proc.output().splitlines():
            if line.startswith("child "):
                return int(line.split()[1])
        time.sleep(0.05)
    raise AssertionError(f"the child never started: {proc.output()!r}")


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] == "Z"  # a zombie has ended
    except FileNotFoundError:
        return True


def test_stop_ends_the_tree_even_children_in_their_own_session(tmp_path: Path) -> None:
    proc = Spawned([sys.executable, "-c", STUBBORN], log_path=tmp_path / "out.log")
    child = _child_pid(proc)
    assert child in {pid for pid, _ in descendants(proc.pid)}
    assert os.getpgid(child) != os.getpgid(proc.pid)  # out of reach of a group kill
    proc.stop(grace_s=1)  # it ignores SIGTERM: the default 15 s of grace would only be waited
    assert proc.proc.returncode is not None
    deadline = time.monotonic() + 30
    while not _gone(child):
        assert time.monotonic() < deadline, f"child {child} survived stop()"
        time.sleep(0.05)


def test_a_server_that_never_answers_is_stopped_and_its_output_shown(tmp_path: Path) -> None:
    script = "print('listening nowhere', flush=True); import time; time.sleep(600)"
    proc = Spawned([sys.executable, "-c", script], log_path=tmp_path / "out.log")
    deadline = time.monotonic() + 60
    while "listening nowhere" not in proc.output():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    with pytest.raises(TimeoutError, match="listening nowhere"):
        proc.wait_ready(f"http://127.0.0.1:{free_port()}/healthz", timeout=0.5)
    assert proc.proc.returncode is not None


def test_a_server_that_exits_says_what_it_printed(tmp_path: Path) -> None:
    script = "import sys; print('port 1 is taken', flush=True); sys.exit(3)"
    proc = Spawned([sys.executable, "-c", script], log_path=tmp_path / "out.log")
    with pytest.raises(RuntimeError, match=r"exited with 3(.|\n)*port 1 is taken"):
        proc.wait_ready(f"http://127.0.0.1:{free_port()}/healthz")
