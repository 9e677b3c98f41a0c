"""`tether mock-llm`: run the scripted OpenAI/Anthropic-compatible mock upstream."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import typer

from tether.cli.output import console, fail


def register(app: typer.Typer) -> None:
    @app.command("mock-llm")
    def mock_llm(
        port: int = typer.Option(9999, help="Port to listen on."),
        host: str = typer.Option("127.0.0.1", help="Address to bind."),
        script: Path = typer.Option(None, "--script", "-s", help="YAML/JSON list of replies."),
        latency_ms: float = typer.Option(None, help="Delay before every reply (ms)."),
        chunk_delay_ms: float = typer.Option(None, help="Delay between stream chunks (ms)."),
        usage: bool = typer.Option(None, "--usage/--no-usage", help="Report token usage."),
        api_key: str = typer.Option(None, help="Refuse requests that do not carry this key."),
    ) -> None:
        """Serve a deterministic mock LLM (OpenAI /v1/chat/completions, /v1/embeddings,
        /v1/models; Anthropic /v1/messages) for tests, the demo and benchmarks."""
        import uvicorn

        from tether.gateway.llm.mock import create_mock_app
        from tether.gateway.llm.mock_script import Script, load_script

        try:
            parsed = load_script(script) if script else Script()
        except (OSError, ValueError) as exc:
            fail(f"cannot load mock script {script}: {exc}", 2)
        changes: dict[str, object] = {}
        if latency_ms is not None:
            changes["latency_ms"] = latency_ms
        if chunk_delay_ms is not None:
            changes["chunk_delay_ms"] = chunk_delay_ms
        if usage is not None:
            changes["usage"] = usage
        parsed = dataclasses.replace(parsed, **changes)  # type: ignore[arg-type]
        console.print(
            f"[bold]mock-llm[/] on http://{host}:{port}/v1  models: mock-small, mock-large  "
            f"({len(parsed.replies)} scripted replies)",
            highlight=False,
        )
        uvicorn.run(create_mock_app(parsed, api_key=api_key), host=host, port=port,
                    log_level="warning", access_log=False)  # fmt: skip
