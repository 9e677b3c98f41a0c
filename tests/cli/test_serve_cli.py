from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ServerProcess
from tether.server.starting import KEEP_ALIVE_S
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


def _get_on(sock: socket.socket) -> bytes:
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: tether\r\n\r\n")
    reply = b""
    while b"\r\n\r\n" not in reply:
        chunk = sock.recv(65536)
        if not chunk:
            return reply
        reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length")))  # fmt: skip
    while len(body) < length:
        body += sock.recv(65536)
    return head


def test_serve_keeps_an_idle_connection_open_longer_than_clients_keep_theirs(
    tmp_path: Path,
) -> None:
    # httpx and the SDK expire idle connections after 5 s; a server that closes at 5 s too
    # resets requests sent on a connection it is closing at that moment.
    assert KEEP_ALIVE_S > 60
    server = ServerProcess(tmp_path / "home", f"sqlite:///{tmp_path / 'tether.db'}")
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            assert _get_on(sock).startswith(b"HTTP/1.1 200")
            time.sleep(6.0)  # idle past uvicorn's default keep-alive of 5 s
            assert _get_on(sock).startswith(b"HTTP/1.1 200")
    finally:
        server.stop()


def test_serve_caps_glibc_malloc_arenas_unless_the_operator_set_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tether.cli.serve import limit_malloc_arenas

    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert limit_malloc_arenas() is False  # glibc's own variable wins
    monkeypatch.delenv("MALLOC_ARENA_MAX")
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.arena_max=3")
    assert limit_malloc_arenas() is False
    monkeypatch.delenv("GLIBC_TUNABLES")
    if not sys.platform.startswith("linux") or os.confstr("CS_GNU_LIBC_VERSION") is None:
        pytest.skip("glibc only")
    assert limit_malloc_arenas() is True
