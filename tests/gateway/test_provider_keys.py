"""Provider keys kept current without a restart: a key file re-read when it changes (a Kubernetes
Secret volume's atomic symlink swap, a Vault Agent sidecar's rewrite), Vault keys re-read by the
refresh loop, a 401 after an upstream rotation answered by re-reading the key and retrying, and
no call failing while a key is rotated under load (streams in flight keep theirs)."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import ServerProcess
from tests.gateway.llm_env import MAIN_SCRIPT, MockServer, new_run_id, poll
from tests.gateway.vault_server import VaultServer
from tether.config import ProviderConfig
from tether.core.errors import ConfigError
from tether.gateway.llm.provider_keys import FileKey, key_source
from tether.store.engine import make_engine
from tether.store.keys import create_key
from tether.store.migrate import upgrade


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def secret_volume(root: Path, value: str, generation: int) -> Path:
    """Writes `value` as the kubelet does: a new timestamped folder, `..data` swapped to it by
    an atomic rename, `api_key` a symlink through `..data`. Returns the key's path."""
    gen = root / f"..2026_12_01_{generation:02d}"
    gen.mkdir()
    (gen / "api_key").write_text(value + "\n")
    tmp = root / "..data_tmp"
    tmp.symlink_to(gen.name)
    os.replace(tmp, root / "..data")
    link = root / "api_key"
    if not link.is_symlink():
        link.symlink_to("..data/api_key")
    for old in root.glob("..2026_*"):
        if old != gen:
            (old / "api_key").unlink()
            old.rmdir()
    return link


def test_a_key_file_is_re_read_when_its_secret_volume_is_updated(tmp_path: Path) -> None:
    clock = Clock()
    path = secret_volume(tmp_path, "sk-one", 1)
    key = FileKey("openai", path, check_s=1.0, clock=clock)
    assert key.current() == "sk-one"
    secret_volume(tmp_path, "sk-two", 2)
    assert key.current() == "sk-one"  # checked at most once a second
    clock.t += 1.0
    assert key.current() == "sk-two"
    assert not key.refresh()  # unchanged: a stat, no read


def test_a_key_file_caught_empty_or_missing_keeps_the_last_good_key(tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / "key"
    path.write_text("sk-one")
    key = FileKey("openai", path, clock=clock)
    path.write_text("")  # a writer that truncates, then writes
    clock.t += 1
    assert key.current() == "sk-one"
    path.write_text("sk-two")
    clock.t += 1
    assert key.current() == "sk-two"
    path.unlink()
    clock.t += 1
    assert key.current() == "sk-two"
    with pytest.raises(ConfigError, match="cannot read api_key_file"):
        FileKey("openai", tmp_path / "never").current()


def test_key_sources_follow_the_provider_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOME_KEY", "sk-env")
    (tmp_path / "k").write_text("sk-file")
    cfg = {"name": "p", "base_url": "http://x/v1"}
    assert key_source(ProviderConfig(**cfg, api_key_env="SOME_KEY"), None).current() == "sk-env"
    assert key_source(ProviderConfig(**cfg, api_key_file=tmp_path / "k"), None).current() == (
        "sk-file"
    )
    assert key_source(ProviderConfig(**cfg), None).current() is None


# ---------------------------------------------------------------- through `tether serve`


class Env:
    def __init__(self, tmp: Path) -> None:
        self.mock = MockServer(MAIN_SCRIPT, api_key="sk-file-1")
        self.vault = VaultServer()
        self.vault.put("tether/mock", {"api_key": "sk-file-1"})
        self.volume = tmp / "secret"
        self.volume.mkdir()
        self.key_file = secret_volume(self.volume, "sk-file-1", 1)
        config = {
            "vault": {"url": self.vault.url, "token_env": "TEST_VAULT_TOKEN", "refresh_s": 0.5},
            "providers": [
                {"name": "filed", "base_url": self.mock.url + "/v1", "max_retries": 0,
                 "api_key_file": str(self.key_file), "models": ["mock-small"]},
                {"name": "vaulted", "base_url": self.mock.url + "/v1", "max_retries": 0,
                 "api_key_vault": {"path": "tether/mock"},
                 "aliases": {"vault-model": "mock-small"}},
            ],
        }  # fmt: skip
        cfg = tmp / "tether.yaml"
        cfg.write_text(yaml.safe_dump(config))
        db_url = f"sqlite:///{tmp / 'tether.db'}"
        engine = make_engine(db_url)
        upgrade(engine)
        self.auth = {"authorization": f"Bearer {create_key(engine, scopes='agent', agent='a')[1]}"}
        engine.dispose()
        token = {"TEST_VAULT_TOKEN": self.vault.root_token}
        self.server = ServerProcess(tmp / "home", db_url, config=cfg, extra_env=token)

    def accept(self, key: str | None) -> None:
        """The provider now takes only `key` (None: any), as after it revoked the old one."""
        self.mock.app.state.mock.api_key = key

    def chat(self, client: httpx.Client, model: str = "mock-small", **kw: Any) -> httpx.Response:
        return client.post(f"{self.server.url}/llm/v1/chat/completions",
                           headers={**self.auth, "x-tether-run-id": new_run_id()},
                           json={"model": model, "max_tokens": 20, **kw,
                                 "messages": [{"role": "user", "content": "hi"}]})  # fmt: skip

    def stop(self) -> None:
        self.server.stop()
        self.mock.stop()
        self.vault.stop()


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    e = Env(tmp_path_factory.mktemp("keys"))
    yield e
    e.stop()


def test_a_rotated_key_file_is_used_without_restart_and_no_call_fails(env: Env) -> None:
    with httpx.Client(timeout=60) as client:
        assert env.chat(client).status_code == 200
    stop = threading.Event()
    codes: list[int] = []

    def load() -> None:
        with httpx.Client(timeout=60) as client:
            while not stop.is_set():
                codes.append(env.chat(client).status_code)

    stream_lines: list[str] = []
    with ThreadPoolExecutor(4) as pool, httpx.Client(timeout=60) as client:
        futures = [pool.submit(load) for _ in range(3)]
        with client.stream("POST", f"{env.server.url}/llm/v1/chat/completions",
                           headers={**env.auth, "x-tether-run-id": new_run_id()},
                           json={"model": "mock-small", "stream": True, "max_tokens": 500,
                                 "messages": [{"role": "user", "content": "[[long]]"}]},
                           ) as stream:  # fmt: skip
            lines = stream.iter_lines()
            stream_lines.append(next(lines))  # in flight with the old key
            poll(lambda: len(codes) >= 5, timeout=60)
            # the rotation: the Secret volume gets the new key and the provider drops the old
            secret_volume(env.volume, "sk-file-2", 2)
            env.accept("sk-file-2")
            rotated_at = len(codes)
            stream_lines += list(lines)
        poll(lambda: len(codes) >= rotated_at + 10, timeout=60)
        stop.set()
        for f in futures:
            f.result(60)
    assert set(codes) == {200}, codes  # calls that met the 401 re-read the file and retried
    events = [x for x in stream_lines if x]
    assert events[-1] == "data: [DONE]" and not any("error" in x for x in events)  # whole
    seen = {r["headers"].get("authorization") for r in env.mock.requests}
    assert "Bearer sk-file-2" in seen


def test_a_key_rotated_in_vault_is_used_without_restart(env: Env) -> None:
    env.accept(None)  # the provider takes both keys while the new one spreads
    with httpx.Client(timeout=60) as client:
        env.vault.put("tether/mock", {"api_key": "sk-vault-2"})

        def uses_new_key() -> bool:
            assert env.chat(client, "vault-model").status_code == 200
            last = env.mock.requests[-1]["headers"].get("authorization")
            return last == "Bearer sk-vault-2"

        poll(uses_new_key, timeout=60)  # the refresh loop (every 0.5 s here) read version 2
        # the provider revokes it at once after a second rotation: the 401 makes tether re-read
        env.vault.put("tether/mock", {"api_key": "sk-vault-3"})
        env.accept("sk-vault-3")
        assert env.chat(client, "vault-model").status_code == 200
    assert env.vault.reads >= 3
