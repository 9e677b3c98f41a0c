"""Redaction of secrets, the one implementation every path uses (OTLP and SDK ingest, the LLM and
MCP gateways, run inputs, the console): secret-named fields at any depth, also inside JSON carried
in strings (message content, `tool_calls[].function.arguments`, tool results), and secret-looking
values in plain text (`api_key=...`, `Authorization: Bearer ...`, provider key shapes).

Pure and size-agnostic: it redacts the whole text; callers cut to size afterwards. A text with no
trigger (no secret-named word, no key shape) costs one regex scan and is returned as it is.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

REDACTED = "[REDACTED]"
DEFAULT_FIELDS = ("api_key", "authorization", "password", "secret", "token")
_MAX_DEPTH = 32
_SHORT, _SHORT_ENTRIES = 64, 8192

# Key shapes of the common providers, and tether's own. Each is preceded by something that is
# not part of an identifier, so "task-…" never reads as an OpenAI "sk-…" key.
_SHAPES = (
    r"sk-ant-[A-Za-z0-9_-]{16,}",  # Anthropic
    r"sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{16,}",  # OpenAI
    r"(?:AKIA|ASIA)[0-9A-Z]{16}",  # AWS access key id
    r"gh[pousr]_[A-Za-z0-9]{20,}",  # GitHub tokens
    r"github_pat_[A-Za-z0-9_]{20,}",  # GitHub fine-grained tokens
    r"xox[abposr]-[A-Za-z0-9-]{10,}",  # Slack
    r"AIza[0-9A-Za-z_-]{30,}",  # Google API keys
    r"eyJ[A-Za-z0-9_-]{6,}\.eyJ[A-Za-z0-9_-]{6,}\.[A-Za-z0-9_-]{6,}",  # JWTs
    r"tth_[A-Za-z0-9_-]{16,}",  # tether API keys
)
_SHAPE = r"(?<![A-Za-z0-9_-])(?:" + "|".join(_SHAPES) + r")"
# `Bearer <token>` anywhere; the token has a digit or symbol, so "bearer bonds" stays prose
_SCHEME = r"(?i:\bbearer\s+)(?=[A-Za-z._~+/=-]*[0-9._~+/=-])[A-Za-z0-9._~+/=-]{12,}"
_NUMBERISH = re.compile(r"(?:-?\d+(?:\.\d+)?|true|false|null|none)", re.IGNORECASE)
# The literal each shape above starts with (case-sensitive), under a one-character gate found
# by memchr: a text with none of them, no "bearer" and no secret-named `name: value` pair is
# left alone without running a regex. Searching a 1 KB text for a literal of several
# characters costs a few microseconds; for one character, tens of nanoseconds.
_ANCHORS = (
    ("-", ("sk-", "xox")),  # sk-…, sk-ant-…, xox?-…
    ("_", ("tth_", "github_pat_", "gho_", "ghp_", "ghs_", "ghu_", "ghr_")),
    ("A", ("AKIA", "ASIA", "AIza")),
    ("J", ("eyJ",)),
)


def _name_pattern(fields: tuple[str, ...]) -> str:
    # `api_key` also reads api-key / apikey / API_KEY; the rest of the identifier may follow.
    names = sorted({re.escape(f).replace("_", "[_-]?") for f in fields}, key=len, reverse=True)
    return r"(?:" + "|".join(names) + r")[A-Za-z0-9_.-]*"


@dataclass(frozen=True)
class Redactor:
    """Redacts secrets for a set of secret-bearing field names (settings.redact_fields, which
    match as case-insensitive substrings: `token` covers `x-auth-token`, not `input_tokens`'s
    numbers, since numbers and booleans are never redacted)."""

    fields: tuple[str, ...] = DEFAULT_FIELDS
    _pairs: re.Pattern[str] = field(init=False, repr=False, compare=False)
    _squashed: tuple[str, ...] = field(init=False, repr=False, compare=False)
    # short values repeat (models, systems, names): their redacted text is remembered; read-only
    # outside this class (semtext.clean_attributes looks values up here before calling text())
    short_texts: dict[str, str] = field(init=False, repr=False, compare=False, default_factory=dict)
    _values: re.Pattern[str] = field(init=False, repr=False, compare=False)
    # attribute names repeat in every span: their verdict is remembered (read-only outside)
    key_verdicts: dict[str, bool] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        fields = tuple(sorted({f.lower() for f in self.fields if f}))
        object.__setattr__(self, "fields", fields)
        squashed = {f.replace("_", "").replace("-", "") for f in fields}
        object.__setattr__(self, "_squashed", tuple(sorted(squashed)))
        name = _name_pattern(fields) if fields else None
        object.__setattr__(self, "_values", re.compile(_SHAPE + "|" + _SCHEME))
        # NAME then `:` or `=` (quoted or not, escaped quotes inside JSON text too), then a
        # quoted value or a bare one (a scheme such as `Bearer ` belongs to the value).
        pair = (
            rf"(?i:(?P<k>{name}))(?P<sep>\\?[\"']?\s*[:=]\s*)"
            r"(?:(?P<q>\\?[\"'])(?P<qv>.*?)(?P=q)"
            r"|(?P<v>(?i:(?:bearer|basic|token)\s+)?[^\s\"',;&}\]\\<>]+))"
        )
        object.__setattr__(self, "_pairs", re.compile(pair if name else r"(?!)"))

    def is_secret_key(self, key: str) -> bool:
        verdict = self.key_verdicts.get(key)
        if verdict is None:
            if len(self.key_verdicts) >= _SHORT_ENTRIES:
                self.key_verdicts.clear()
            verdict = self.key_verdicts[key] = _secret_key(key, self.fields)
        return verdict

    def text(self, text: str) -> str:
        """`text` with every secret replaced by REDACTED (JSON text stays valid JSON)."""
        if len(text) <= _SHORT:
            hit = self.short_texts.get(text)
            if hit is None:
                if len(self.short_texts) >= _SHORT_ENTRIES:
                    self.short_texts.clear()
                hit = self.short_texts[text] = self._redact(text)
            return text if hit == text else hit  # the caller's object when unchanged
        return self._redact(text)

    def _redact(self, text: str) -> str:
        if not text or not self._suspect(text):
            return text
        head = text.lstrip()[:1]
        if head in ("{", "["):
            try:
                parsed = json.loads(text)
            except (ValueError, RecursionError):
                parsed = None
            if isinstance(parsed, dict | list):
                try:
                    out, changed = self._walk(parsed, 0)
                except RecursionError:
                    changed = False
                else:
                    if changed:
                        return json.dumps(out, ensure_ascii=False, separators=(",", ":"))
                    return text
        return self._plain(text)

    def value(self, value: Any) -> Any:
        """A copy of JSON-like data with secret-named entries and secret-looking text redacted."""
        return self._walk(value, 0)[0]

    def _suspect(self, text: str) -> bool:
        """Cheap substring probes before any regex (most text has no secret). True whenever
        redaction could change `text`: a shape's literal, "bearer" in any case, or a
        secret-named field before the last `:` / `=` (a pair's name precedes its separator)."""
        for gate, literals in _ANCHORS:
            if gate in text:
                for literal in literals:
                    if literal in text:
                        return True
        low = text.lower()
        if "bearer" in low:
            return True
        end = max(text.rfind(":"), text.rfind("="))
        if end < 0:
            return False
        # `api_key`, `api-key` and `apikey` all read `apikey` once `_` and `-` are dropped
        head = low[:end].replace("_", "").replace("-", "")
        return any(p in head for p in self._squashed)

    def _plain(self, text: str) -> str:
        text = self._pairs.sub(self._pair, text)
        return self._values.sub(REDACTED, text)

    @staticmethod
    def _pair(m: re.Match[str]) -> str:
        if m.group("q") is not None:
            inner = m.group("qv")
            if not inner or _NUMBERISH.fullmatch(inner):
                return m.group(0)
            return f"{m.group('k')}{m.group('sep')}{m.group('q')}{REDACTED}{m.group('q')}"
        bare = m.group("v")
        if _NUMBERISH.fullmatch(bare):
            return m.group(0)
        return f"{m.group('k')}{m.group('sep')}{REDACTED}"

    def _walk(self, value: Any, depth: int) -> tuple[Any, bool]:
        if isinstance(value, str):
            out = self.text(value)
            return out, out is not value
        if depth >= _MAX_DEPTH or value is None or isinstance(value, bool | int | float):
            return value, False
        if isinstance(value, Mapping):
            changed = False
            items: dict[Any, Any] = {}
            for k, v in value.items():
                key = self.text(k) if isinstance(k, str) else k
                changed = changed or key is not k
                if isinstance(k, str) and _redactable(v) and self.is_secret_key(k):
                    items[key], changed = REDACTED, True
                    continue
                items[key], c = self._walk(v, depth + 1)
                changed = changed or c
            return (items if changed else value), changed
        if isinstance(value, list | tuple):
            changed = False
            seq = []
            for v in value:
                nv, c = self._walk(v, depth + 1)
                seq.append(nv)
                changed = changed or c
            return (seq if changed else value), changed
        return value, False


def _redactable(v: Any) -> bool:
    # numbers and booleans say nothing secret (`input_tokens: 1200`); empty values hide nothing
    return bool(v) and not isinstance(v, bool | int | float)


@lru_cache(maxsize=8192)
def _secret_key(key: str, fields: tuple[str, ...]) -> bool:
    # api_key also names api-key, apikey, X-Api-Key, OPENAI_API_KEY
    low = key.lower()
    squashed = low.replace("-", "").replace("_", "")
    return any(f in low or f.replace("_", "") in squashed for f in fields)


@lru_cache(maxsize=32)
def redactor(fields: tuple[str, ...] = DEFAULT_FIELDS) -> Redactor:
    """The Redactor for `fields`, built once (its regexes compile in about a millisecond)."""
    return Redactor(tuple(fields))
