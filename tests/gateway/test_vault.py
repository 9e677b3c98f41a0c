"""Provider keys from Vault KV v2 through hvac, against tests/gateway/vault_server.py (a stand-in
following Vault's documented API; no Vault server is installable here): token auth from the
environment or a token file, Kubernetes auth with a ServiceAccount JWT, the latest or a pinned
version, re-login when a token is refused, and clear errors that never carry a secret."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.gateway.vault_server import VaultServer
from tether.config import Settings, VaultConfig, VaultSecretRef, load_settings
from tether.core.errors import ConfigError
from tether.gateway.llm.provider_keys import VaultKey
from tether.gateway.llm.vault import VaultClient

REF = VaultSecretRef(path="tether/openai")


@pytest.fixture
def vault() -> Iterator[VaultServer]:
    server = VaultServer()
    server.put("tether/openai", {"api_key": "sk-one"})
    yield server
    server.stop()


def token_client(vault: VaultServer, monkeypatch: pytest.MonkeyPatch, token: str) -> VaultClient:
    monkeypatch.setenv("TEST_VAULT_TOKEN", token)
    return VaultClient(VaultConfig(url=vault.url, token_env="TEST_VAULT_TOKEN"))


def test_token_auth_reads_the_latest_version_and_follows_rotation(
    vault: VaultServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = token_client(vault, monkeypatch, vault.root_token)
    assert client.read(REF) == "sk-one"
    assert vault.put("tether/openai", {"api_key": "sk-two"}) == 2
    assert client.read(REF) == "sk-two"
    assert client.read(VaultSecretRef(path="tether/openai", version=1)) == "sk-one"
    key = VaultKey("openai", REF, client)
    assert key.current() == "sk-two" and key.ok
    vault.put("tether/openai", {"api_key": "sk-three"})
    assert key.current() == "sk-two"  # cached: the refresh loop (or a 401) reads it again
    assert key.refresh() and key.current() == "sk-three"
    assert not key.refresh()  # unchanged


def test_a_bad_token_missing_secret_or_field_is_a_clear_error_without_secrets(
    vault: VaultServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = token_client(vault, monkeypatch, "not-a-token")
    with pytest.raises(ConfigError, match="permission denied reading secret/data/tether/openai"):
        bad.read(REF)
    good = token_client(vault, monkeypatch, vault.root_token)
    with pytest.raises(ConfigError, match="no secret at secret/data/tether/nope"):
        good.read(VaultSecretRef(path="tether/nope"))
    with pytest.raises(ConfigError, match="has no field 'token'"):
        good.read(VaultSecretRef(path="tether/openai", key="token"))
    monkeypatch.delenv("TEST_VAULT_TOKEN")
    with pytest.raises(ConfigError, match="no token"):
        VaultClient(VaultConfig(url=vault.url, token_env="TEST_VAULT_TOKEN")).read(REF)
    # a key Vault cannot give is an error at call time, not at start, and keeps no secret
    key = VaultKey("openai", REF, bad)
    with pytest.raises(ConfigError, match="not read from Vault yet") as err:
        key.current()
    assert "sk-one" not in err.value.message and "not-a-token" not in err.value.message


def test_vault_unreachable_keeps_the_last_good_key(
    vault: VaultServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = VaultKey("openai", REF, token_client(vault, monkeypatch, vault.root_token))
    vault.stop()
    assert not key.refresh()
    assert key.current() == "sk-one"


def test_a_rotated_token_file_is_read_again_when_vault_refuses_the_old_token(
    vault: VaultServer, tmp_path: Path
) -> None:
    """Vault Agent's auto-auth sink rewrites its token file; the old token is revoked."""
    sink = tmp_path / "vault-token"
    vault.add_token("agent-token-1")
    sink.write_text("agent-token-1\n")
    client = VaultClient(VaultConfig(url=vault.url, token_file=sink))
    assert client.read(REF) == "sk-one"
    vault.add_token("agent-token-2")
    sink.write_text("agent-token-2\n")
    vault.revoke("agent-token-1")
    assert client.read(REF) == "sk-one"


def test_a_renewable_token_is_renewed_before_its_ttl_ends(
    vault: VaultServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    vault.add_token("periodic-token", ttl=3600)
    client = token_client(vault, monkeypatch, "periodic-token")
    assert client.read(REF) == "sk-one" and vault.renewals == 0
    assert client._renew_at is not None  # half its TTL from now
    client._renew_at = 0.0  # as when half the TTL has passed
    assert client.read(REF) == "sk-one" and vault.renewals == 1
    root = token_client(vault, monkeypatch, vault.root_token)
    root.read(REF)
    assert root._renew_at is None  # a token without a TTL is never renewed


def test_kubernetes_auth_logs_in_with_the_service_account_token_and_again_on_expiry(
    vault: VaultServer, tmp_path: Path
) -> None:
    jwt = tmp_path / "token"
    jwt.write_text("eyJ.service-account.jwt")
    vault.add_role("tether", "eyJ.service-account.jwt")
    cfg = VaultConfig(url=vault.url, auth="kubernetes", role="tether", jwt_file=jwt)
    client = VaultClient(cfg)
    assert client.read(REF) == "sk-one" and vault.logins == 1
    assert client.read(REF) == "sk-one" and vault.logins == 1  # the token is kept
    vault.expire_tokens()  # its lease ended
    assert client.read(REF) == "sk-one" and vault.logins == 2
    jwt.write_text("eyJ.another.jwt")
    vault.expire_tokens()
    with pytest.raises(ConfigError, match=r"Kubernetes login as role 'tether'.*permission denied"):
        client.read(REF)
    wrong_role = VaultClient(cfg.model_copy(update={"role": "nobody"}))
    with pytest.raises(ConfigError, match="invalid role name"):
        wrong_role.read(REF)


def test_a_short_lease_is_renewed_by_logging_in_before_it_ends(
    tmp_path: Path,
) -> None:
    vault = VaultServer(lease_duration=1)
    try:
        vault.put("tether/openai", {"api_key": "sk-one"})
        jwt = tmp_path / "token"
        jwt.write_text("jwt")
        vault.add_role("tether", "jwt")
        client = VaultClient(VaultConfig(url=vault.url, auth="kubernetes", role="tether",
                                         jwt_file=jwt))  # fmt: skip
        client.read(REF)
        client._relogin_at = 0.0  # as when 80 % of the lease has passed
        client.read(REF)
        assert vault.logins == 2
    finally:
        vault.stop()


def test_settings_name_vault_keys_and_check_the_vault_section(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "tether.yaml"
    cfg.write_text(
        "vault: {url: 'https://vault:8200/', auth: kubernetes, role: tether, refresh_s: 60}\n"
        "providers:\n"
        "  - name: openai\n"
        "    base_url: https://api.openai.com/v1\n"
        "    api_key_vault: {path: tether/openai, key: api_key}\n"
    )
    s: Settings = load_settings(config=cfg)
    assert s.vault is not None and s.vault.url == "https://vault:8200"
    assert s.providers[0].api_key_vault == REF
    cfg.write_text(cfg.read_text().split("providers:")[0].replace("role: tether, ", ""))
    with pytest.raises(ConfigError, match=r"needs vault\.role"):
        load_settings(config=cfg)
    cfg.write_text("providers:\n  - {name: x, base_url: u, api_key_vault: {path: p}}\n")
    with pytest.raises(ConfigError, match="add a `vault:` section"):
        load_settings(config=cfg)
    cfg.write_text("providers:\n  - {name: x, base_url: u, api_key_env: A, api_key_file: /f}\n")
    with pytest.raises(ConfigError, match="give one of api_key_env, api_key_file"):
        load_settings(config=cfg)
