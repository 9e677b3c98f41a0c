from __future__ import annotations

from pathlib import Path

import pytest

from tether.config import load_settings
from tether.core.errors import ConfigError


def test_precedence_flags_over_env_over_yaml_over_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "tether.yaml"
    cfg.write_text("port: 8001\nlog_level: debug\nhost: 127.0.0.2\npolicies: pol/\n")
    monkeypatch.setenv("TETHER_CONFIG", str(cfg))
    monkeypatch.setenv("TETHER_PORT", "8002")
    s = load_settings(host="127.0.0.3")
    assert s.host == "127.0.0.3"  # flag beats yaml
    assert s.port == 8002  # env beats yaml
    assert s.log_level == "debug"  # yaml beats default
    assert s.max_request_bytes == 16 * 1024 * 1024  # default
    assert s.policies == (tmp_path / "pol").resolve()  # relative to the config file


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    cfg = tmp_path / "tether.yaml"
    cfg.write_text("port: 1\nproviders: [\n  {name: a\n")
    with pytest.raises(ConfigError, match=r"tether\.yaml:\d+:\d+"):
        load_settings(config=cfg)


def test_unknown_and_invalid_settings_are_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "tether.yaml"
    cfg.write_text("prot: 1\n")
    with pytest.raises(ConfigError, match="prot"):
        load_settings(config=cfg)
    with pytest.raises(ConfigError, match="database_url"):
        load_settings(database_url="mysql://x")
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(config=tmp_path / "missing.yaml")


def test_postgres_url_gets_the_psycopg_driver() -> None:
    s = load_settings(database_url="postgresql://postgres@127.0.0.1/test")
    assert s.db_url == "postgresql+psycopg://postgres@127.0.0.1/test"


def test_unknown_mcp_tag_is_an_error_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "tether.yaml"
    path.write_text(
        "mcp_servers:\n  - name: demo\n    command: [x]\n    tags:\n"
        "      fetch_page: [untrusted]\n      send_email: [egres]\n"
    )
    with pytest.raises(ConfigError) as info:
        load_settings(config=str(path))
    assert info.value.message.startswith(f"{path}:6: invalid setting mcp_servers.0.tags.")
    assert "did you mean `egress`" in info.value.message


def test_a_misspelt_memory_embedder_is_an_error_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "tether.yaml"
    path.write_text("memory:\n  namespaces:\n    kb:\n      embedder: lokal:all-MiniLM-L6-v2\n")
    with pytest.raises(ConfigError) as info:
        load_settings(config=str(path))
    assert info.value.message.startswith(f"{path}:4: invalid setting memory.namespaces.kb.embedder")
    assert "local:MODEL" in info.value.message
    ok = load_settings(memory={"embedder": "local:all-MiniLM-L6-v2"})
    assert ok.memory.embedder == "local:all-MiniLM-L6-v2"


def test_remote_target_is_what_the_settings_say_when_the_environment_decides(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from tether.config import remote_target

    for name in ("TETHER_URL", "TETHER_API_KEY", "TETHER_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    assert remote_target() is None  # no TETHER_URL: the local store
    monkeypatch.setenv("TETHER_URL", "http://tether.internal:7337")
    monkeypatch.setenv("tether_api_key", "tth_k")  # any case, as pydantic-settings reads it
    target, settings = remote_target(), load_settings()
    assert target is not None and (target.url, target.api_key) == (settings.url, settings.api_key)
    # a tether.yaml may name the key: then only the settings model can say
    monkeypatch.delenv("tether_api_key")
    config = tmp_path / "tether.yaml"
    config.write_text("api_key: tth_from_yaml\n")
    monkeypatch.setenv("TETHER_CONFIG", str(config))
    assert remote_target() is None
    assert load_settings().api_key == "tth_from_yaml"


def test_the_servers_postgresql_pool_is_the_size_the_settings_say(tmp_path: Path) -> None:
    from tests.conftest import PG_URL
    from tether.server.app import create_app

    settings = load_settings(home=tmp_path, database_url=PG_URL, db_pool_size=3)
    state = create_app(settings).state.tether
    try:
        assert (state.engine.pool.size(), state.engine.pool._max_overflow) == (3, 6)
        assert state.pg_async is not None
        assert (state.pg_async.pool_size, state.pg_async.tx_size) == (3, 6)
    finally:
        state.engine.dispose()
    with pytest.raises(ConfigError, match="db_pool_size"):
        load_settings(home=tmp_path, database_url=PG_URL, db_pool_size=0)
