"""tether's mock LLM in process (httpx's ASGI transport): deterministic replies, scripts, usage,
max_tokens, faults, both API shapes; and `tether mock-llm` as a command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port
from tests.processes import Spawned
from tether.gateway.llm.mock import create_mock_app
from tether.gateway.llm.mock_script import Script, load_script, parse_script


def mock(script: object = None, **kw: object) -> httpx.AsyncClient:
    app = create_mock_app(parse_script(script), **kw)  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://mock")


def chat(text: str, **extra: object) -> dict[str, object]:
    return {"model": "mock-small", "messages": [{"role": "user", "content": text}], **extra}


async def test_default_reply_echoes_and_counts_words() -> None:
    async with mock() as c:
        a = (await c.post("/v1/chat/completions", json=chat("one two three"))).json()
        b = (await c.post("/v1/chat/completions", json=chat("one two three"))).json()
    assert a["choices"][0]["message"]["content"] == "mock reply: one two three"
    assert a["usage"] == {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}
    assert a["choices"] == b["choices"] and a["created"] == b["created"]


async def test_script_round_robin_markers_and_max_tokens() -> None:
    matched = {"match": "SECRET", "text": "matched", "model": "mock-large"}
    script = {"replies": ["first", {"text": "second reply"}, matched]}
    async with mock(script) as c:
        texts = []
        for prompt in ("a", "SECRET b", "c", "d"):
            r = (await c.post("/v1/chat/completions", json=chat(prompt))).json()
            texts.append((r["choices"][0]["message"]["content"], r["model"]))
        cut = (await c.post("/v1/chat/completions", json=chat("x", max_tokens=1))).json()
    assert texts == [("first", "mock-small"), ("matched", "mock-large"),
                     ("second reply", "mock-small"), ("first", "mock-small")]  # fmt: skip
    assert cut["choices"][0]["message"]["content"] == "second"
    assert cut["choices"][0]["finish_reason"] == "length"
    assert cut["usage"]["completion_tokens"] == 1


async def test_streams_in_both_shapes_with_usage_only_when_asked() -> None:
    async with mock({"replies": [{"output_tokens": 3}]}) as c:
        plain = (await c.post("/v1/chat/completions", json=chat("x", stream=True))).text
        counted = (await c.post("/v1/chat/completions", json=chat(
            "x", stream=True, stream_options={"include_usage": True}))).text  # fmt: skip
        msgs = (await c.post("/v1/messages", json={**chat("x", stream=True),
                                                   "max_tokens": 10})).text  # fmt: skip
    assert plain.count("data: ") == 1 + 3 + 1 + 1 and '"usage"' not in plain
    assert plain.endswith("data: [DONE]\n\n")
    assert '"completion_tokens":3' in counted
    events = [ln[7:] for ln in msgs.splitlines() if ln.startswith("event: ")]
    assert events[0] == "message_start" and events[-1] == "message_stop"
    assert events.count("content_block_delta") == 3
    assert '"output_tokens":3' in msgs


async def test_no_usage_mode_and_embeddings() -> None:
    async with mock({"usage": False}) as c:
        r = (await c.post("/v1/chat/completions", json=chat("hi"))).json()
        e1 = (await c.post("/v1/embeddings", json={"model": "m", "input": "hi there"})).json()
        e2 = (await c.post("/v1/embeddings", json={"model": "m", "input": ["hi there"]})).json()
    assert "usage" not in r and "usage" not in e1
    assert e1["data"][0]["embedding"] == e2["data"][0]["embedding"]


async def test_faults_and_api_key() -> None:
    script = {"replies": [{"match": "F500", "fault": "status", "status": 503},
                          {"match": "BAD", "fault": "malformed"}]}  # fmt: skip
    async with mock(script, api_key="sk-x") as c:
        denied = await c.post("/v1/chat/completions", json=chat("hi"))
        h = {"authorization": "Bearer sk-x"}
        failed = await c.post("/v1/chat/completions", json=chat("F500"), headers=h)
        broken = await c.post("/v1/chat/completions", json=chat("BAD"), headers=h)
        anth = await c.post("/v1/messages", json={**chat("F500"), "max_tokens": 5},
                            headers={"x-api-key": "sk-x"})  # fmt: skip
        bad = await c.post(
            "/v1/messages", json=chat("no max_tokens"), headers={"x-api-key": "sk-x"}
        )
    assert denied.status_code == 401 and denied.json()["error"]["code"] == "invalid_api_key"
    assert failed.status_code == 503 and failed.json()["error"]["type"] == "server_error"
    with pytest.raises(json.JSONDecodeError):
        broken.json()
    assert anth.status_code == 503 and anth.json()["type"] == "error"
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"


def test_script_validation(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown field"):
        parse_script([{"txt": "typo"}])
    with pytest.raises(ValueError, match="fault must be one of"):
        parse_script([{"fault": "explode"}])
    f = tmp_path / "s.yaml"
    f.write_text("latency_ms: 5\nreplies:\n  - hello\n  - {tool_calls: [{name: t}]}\n")
    s = load_script(f)
    assert isinstance(s, Script) and s.latency_ms == 5 and s.replies[1].tool_calls[0].name == "t"


def test_mock_llm_command(tmp_path: Path) -> None:
    script = tmp_path / "script.json"
    script.write_text(json.dumps([{"text": "from the script"}]))
    port = free_port()
    proc = Spawned(
        [sys.executable, "-m", "tether.cli.main", "mock-llm", "--port", str(port), "--script",
         str(script), "--no-usage"], log_path=tmp_path / "mock-llm.log",
    )  # fmt: skip
    try:
        proc.wait_ready(f"http://127.0.0.1:{port}/v1/models")
        r = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=chat("hi")).json()
        assert r["choices"][0]["message"]["content"] == "from the script" and "usage" not in r
    finally:
        proc.stop()
    missing = str(tmp_path / "missing.yaml")
    bad = subprocess.run([sys.executable, "-m", "tether.cli.main", "mock-llm", "--script", missing],
                         capture_output=True, text=True)  # fmt: skip
    assert bad.returncode == 2 and "cannot load mock script" in bad.stderr


async def test_a_request_may_bring_its_own_script_per_session() -> None:
    script = json.dumps({"replies": ["one", "two"]})

    def headers(session: str) -> dict[str, str]:
        return {"x-tether-mock-script": script, "x-tether-mock-session": session}

    def said(r: httpx.Response) -> str:
        return str(r.json()["choices"][0]["message"]["content"])

    async with mock(["global"]) as c:
        a1 = said(await c.post("/v1/chat/completions", json=chat("x"), headers=headers("a")))
        b1 = said(await c.post("/v1/chat/completions", json=chat("x"), headers=headers("b")))
        a2 = said(await c.post("/v1/chat/completions", json=chat("x"), headers=headers("a")))
        plain = said(await c.post("/v1/chat/completions", json=chat("x")))
        bad = await c.post(
            "/v1/chat/completions", json=chat("x"),
            headers={"x-tether-mock-script": "{not json", "x-tether-mock-session": "c"},
        )  # fmt: skip
        anthropic = await c.post(
            "/v1/messages",
            json={"model": "mock-small", "max_tokens": 20,
                  "messages": [{"role": "user", "content": "x"}]},
            headers=headers("d"),
        )  # fmt: skip
    assert (a1, b1, a2, plain) == ("one", "one", "two", "global")
    assert bad.status_code == 400
    assert anthropic.json()["content"][0]["text"] == "one"
