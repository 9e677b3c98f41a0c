"""Subprocesses the tests start (`tether serve`, mock LLMs, MCP servers): each in a process group
of its own, its output in a log file (a pipe nobody reads fills up and blocks the child), ready
when a URL answers within a generous bound, and stopped with everything it started.

The machine is shared (a load average of 8+ on 2 cores is normal), so readiness waits up to
`READY_TIMEOUT_S` and a failure says what the process printed. `stop()` ends the whole tree:
the group, and also descendants that moved to groups of their own (the MCP SDK starts stdio
upstreams with `start_new_session`), which a SIGKILL of the server alone would orphan.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import weakref
from collections.abc import Sequence
from pathlib import Path

import httpx

READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 15.0
TAIL_CHARS = 6000

_live: weakref.WeakSet[Spawned] = weakref.WeakSet()


# a process is (pid, start time in clock ticks since boot): a pid alone may be reused by then
Proc = tuple[int, int]


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time) of `pid` from /proc, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
    except OSError:
        return None
    # the command name is in parentheses and may contain spaces: split after the last ")"
    fields = stat.rsplit(")", 1)[-1].split()
    return int(fields[1]), int(fields[19])


def descendants(pid: int) -> set[Proc]:
    """Every live process below `pid` (Linux /proc), whatever its process group."""
    children: dict[int, list[Proc]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (st := _stat(int(entry))) is not None:
            children.setdefault(st[0], []).append((int(entry), st[1]))
    found: set[Proc] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child[0])
    return found


def _kill_still_running(procs: set[Proc]) -> None:
    for pid, started in procs:
        st = _stat(pid)
        if st is not None and st[1] == started:  # the same process, not a reused pid
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


class Spawned:
    """A child process in its own process group, with its output in `log_path`."""

    def __init__(
        self,
        args: Sequence[str],
        *,
        log_path: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.args = list(args)
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.args,
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group: stop() can end it and its children
            )
        _live.add(self)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        """The tail of what the process printed so far."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no output)"
        return text[-TAIL_CHARS:] if len(text) > TAIL_CHARS else text

    def wait_ready(self, url: str, timeout: float = READY_TIMEOUT_S) -> None:
        """Returns once `url` answers below 500; else stops the process and raises with its
        output (it exited, or did not answer within `timeout` seconds)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(
                    f"{' '.join(self.args)} exited with {self.proc.returncode} before {url} "
                    f"answered; it printed:\n{self.output()}"
                )
            try:
                if httpx.get(url, timeout=2.0).status_code < 500:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(
            f"{url} did not answer within {timeout:.0f}s ({' '.join(self.args)}); "
            f"it printed:\n{self.output()}"
        )

    def stop(self, grace_s: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM to the group (a graceful shutdown stops its own children), then SIGKILL to
        whatever of the tree is left after `grace_s`. Safe to call twice."""
        _live.discard(self)
        tree = descendants(self.proc.pid) if self.proc.poll() is None else set()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            tree |= descendants(self.proc.pid)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        # children in groups of their own (stdio MCP upstreams) that outlived their parent
        _kill_still_running(tree)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)


def live_logs() -> list[tuple[str, str]]:
    """(command, tail of its output) of every process still running: what a failing test shows."""
    return [(" ".join(s.args), s.output()) for s in list(_live) if s.proc.poll() is None]


def stop_all() -> None:
    """Stops every process a test started and did not stop (called at the end of the session)."""
    for spawned in list(_live):
        spawned.stop()
