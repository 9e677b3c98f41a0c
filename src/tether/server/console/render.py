"""Jinja2 environment of the console: template loading, display filters (money, durations,
relative times, pretty JSON) and the page response helper."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

UI_DIR = Path(__file__).resolve().parents[2] / "ui"
TEMPLATES_DIR = UI_DIR / "templates"
STATIC_DIR = UI_DIR / "static"
FOLD_CHARS = 600
# Approve, deny and kill buttons must not be clickable inside someone else's frame.
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def usd(nusd: int | float | None, *, unknown: bool = False) -> str:
    """Nano-dollars for people: $1,234.56, $0.0123, $0.000042."""
    if nusd is None:
        return "—"
    dollars = float(nusd) / 1e9
    mark = "≥" if unknown else ""
    if dollars == 0:
        return mark + "$0"
    a = abs(dollars)
    if a >= 100:
        text = f"${dollars:,.0f}"
    elif a >= 1:
        text = f"${dollars:,.2f}"
    elif a >= 0.01:
        text = f"${dollars:.4f}"
    else:
        text = f"${dollars:.6f}"
    return mark + text


def duration(ms: float | None) -> str:
    if ms is None:
        return "—"
    if ms < 1:
        return f"{ms:.2f} ms"
    if ms < 1000:
        return f"{ms:.0f} ms"
    s = ms / 1000
    if s < 60:
        return f"{s:.1f} s"
    m, sec = divmod(int(s), 60)
    if m < 60:
        return f"{m}m {sec:02d}s"
    h, m = divmod(m, 60)
    return f"{h}h {m:02d}m"


def ago(at: datetime | None, now: datetime | None = None) -> str:
    if at is None:
        return "—"
    secs = ((now or datetime.now(UTC)) - at).total_seconds()
    if secs < 0:
        return "in " + duration(-secs * 1000)
    if secs < 5:
        return "just now"
    if secs < 60:
        return f"{int(secs)}s ago"
    if secs < 3600:
        return f"{int(secs // 60)}m ago"
    if secs < 86400:
        return f"{int(secs // 3600)}h ago"
    return f"{int(secs // 86400)}d ago"


def stamp(at: datetime | None) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if at else "—"


def num(n: int | float | None) -> str:
    if n is None:
        return "—"
    if isinstance(n, float) and not n.is_integer():
        return f"{n:,.2f}"
    return f"{int(n):,}"


def pct(x: float | None) -> str:
    return "—" if x is None else f"{x * 100:.0f}%" if x >= 0.1 or x == 0 else f"{x * 100:.1f}%"


def pretty(value: Any) -> str:
    """JSON (or a JSON string) indented; any other text unchanged."""
    if value is None:
        return ""
    if isinstance(value, str):
        stripped = value.strip()
        if stripped[:1] in "[{":
            try:
                return json.dumps(json.loads(stripped), indent=2, ensure_ascii=False)
            except ValueError:
                return value
        return value
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def chat_messages(value: Any) -> list[dict[str, str]] | None:
    """Chat-shaped JSON (a list of {role, content}, or {"messages": [...]}) as role/text pairs,
    so an LLM span reads like a conversation; None for anything else."""
    data = value
    if isinstance(value, str):
        if value.strip()[:1] not in "[{":
            return None
        try:
            data = json.loads(value)
        except ValueError:
            return None
    if isinstance(data, dict):
        data = data.get("messages") if "messages" in data else [data] if "role" in data else None
    if not isinstance(data, list) or not data:
        return None
    out = []
    for m in data:
        if not isinstance(m, dict) or "role" not in m:
            return None
        content = m.get("content")
        if isinstance(content, list):  # content parts: keep the text ones
            content = "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        if content is None and m.get("tool_calls"):
            content = pretty(m["tool_calls"])
        out.append({"role": str(m["role"]), "content": "" if content is None else str(content)})
    return out


def is_long(text: str | None) -> bool:
    return bool(text) and (len(text or "") > FOLD_CHARS or (text or "").count("\n") > 12)


def spark(values: list[int], width: int = 120, height: int = 28) -> dict[str, str]:
    """SVG points of a sparkline (and its filled area) scaled to `width` x `height`."""
    if not values:
        return {"line": "", "area": ""}
    top = max(values) or 1
    step = width / max(len(values) - 1, 1)
    pts = [(round(i * step, 1), round(height - 1 - (v / top) * (height - 3), 1))
           for i, v in enumerate(values)]  # fmt: skip
    line = " ".join(f"{x},{y}" for x, y in pts)
    return {"line": line, "area": f"0,{height} {line} {pts[-1][0]},{height}"}


def make_env() -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES_DIR)),
        autoescape=select_autoescape(["html", "svg"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        usd=usd, duration=duration, ago=ago, stamp=stamp, num=num, pct=pct, pretty=pretty
    )
    env.globals.update(
        is_long=is_long, spark=spark, chat_messages=chat_messages, FOLD_CHARS=FOLD_CHARS
    )
    return env


def page(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """Renders `template` with the viewer, the current path and `context`."""
    env = request.app.state.tether.console_env
    assert isinstance(env, Environment), "console.install() sets the environment"
    ctx = {
        "request": request,
        "viewer": getattr(request.state, "viewer", None),
        "path": request.url.path,
        "now": datetime.now(UTC),
        **context,
    }
    html = env.get_template(template).render(ctx)
    return HTMLResponse(html, status_code=status_code, headers=SECURITY_HEADERS)
