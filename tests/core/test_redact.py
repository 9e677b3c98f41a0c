"""core/redact.py: secret-named fields at any depth (also inside JSON carried in strings), provider
key shapes and `name: value` pairs in plain text; prose and numbers left alone."""

from __future__ import annotations

import json
import string
from typing import Any

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tether.core.redact import REDACTED, redactor
from tether.core.semtext import MAX_TEXT_BYTES, redact_text

R = redactor()
ALNUM = string.ascii_letters + string.digits


def _tail(n: int, alphabet: str = ALNUM) -> st.SearchStrategy[str]:
    return st.text(alphabet, min_size=n, max_size=n + 8)


# one strategy per key shape tether knows (core/redact.py _SHAPES)
SHAPED = st.one_of(
    _tail(24).map(lambda t: "sk-" + t),
    _tail(24).map(lambda t: "sk-proj-" + t),
    _tail(24).map(lambda t: "sk-ant-api03-" + t),
    st.text(string.ascii_uppercase + string.digits, min_size=16, max_size=16).map(
        lambda t: "AKIA" + t
    ),
    _tail(36).map(lambda t: "ghp_" + t),
    _tail(30).map(lambda t: "github_pat_11A" + t),
    _tail(24).map(lambda t: "xoxb-1234-" + t),
    _tail(35).map(lambda t: "AIza" + t),
    st.tuples(_tail(12), _tail(12), _tail(16)).map(lambda p: f"eyJ{p[0]}.eyJ{p[1]}.{p[2]}"),
    _tail(24).map(lambda t: "tth_" + t),
)
# a value that is secret only by the name it is given
NAMED_VALUE = st.tuples(st.text(ALNUM + "!#$%*+-./@^_~", min_size=6, max_size=24),
                        st.integers(10, 99)).map(lambda p: f"{p[0]}{p[1]}q")  # fmt: skip
NAMES = st.sampled_from(["api_key", "API-KEY", "password", "client_secret", "x-auth-token",
                         "Authorization", "OPENAI_API_KEY"])  # fmt: skip
PROSE = st.text(string.ascii_letters + " ,.!?\n", max_size=80)


def test_each_shape_and_pair_in_plain_text() -> None:
    cases = {
        "key sk-proj-abcdefghijklmnopqrstuv end": "key [REDACTED] end",
        "Authorization: Bearer abc.def-123456789": "Authorization: [REDACTED]",
        "curl -H 'Authorization: Bearer abcdefghijkl123'": "curl -H 'Authorization: [REDACTED]'",
        "export OPENAI_API_KEY=sk-abcdefghijklmnopqrstuvwx": "export OPENAI_API_KEY=[REDACTED]",
        '"password": "correct horse battery"': '"password": "[REDACTED]"',
        "aws AKIAABCDEFGHIJKLMNOP.": "aws [REDACTED].",
    }
    for text, want in cases.items():
        assert R.text(text) == want


def test_prose_numbers_and_ids_stay() -> None:
    for text in ("max_tokens=800 and input_tokens: 1200", "task-1234567890abcdefghijkl",
                 "bearer bonds are old", "the secret is out", "a basic understanding",
                 '{"query": "refund invoice"}', "password: 12345"):  # fmt: skip
        assert R.text(text) == text


def test_json_in_strings_is_redacted_and_stays_json() -> None:
    args = json.dumps({"token": "hunter2-xyz", "city": "Paris"})
    body = {"messages": [
        {"role": "user", "content": json.dumps({"api_key": "abc-secret-value"})},
        {"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": args}}]},
        {"role": "user", "content": [{"type": "text", "text": "use sk-abcdefghijklmnopqrstu"}]},
    ], "max_tokens": 5}  # fmt: skip
    out = json.loads(R.text(json.dumps(body)))
    assert json.loads(out["messages"][0]["content"]) == {"api_key": REDACTED}
    called = out["messages"][1]["tool_calls"][0]["function"]["arguments"]
    assert json.loads(called) == {"token": REDACTED, "city": "Paris"}
    assert out["messages"][2]["content"][0]["text"] == f"use {REDACTED}"
    assert out["max_tokens"] == 5


def test_redaction_comes_before_the_size_cut() -> None:
    big = json.dumps({"blob": "x" * (300 * 1024), "password": "pa55-word-x"})
    out = redact_text(big, ("password",)) or ""
    assert "pa55-word-x" not in out and len(out.encode()) <= MAX_TEXT_BYTES
    plain = "y" * (300 * 1024) + " sk-abcdefghijklmnopqrstuvwx"
    assert "sk-abcdefghijklmnopqrstuvwx" not in (redact_text(plain, ()) or "")


def _place(secret: str, name: str, where: int, prose: str) -> tuple[Any, str]:
    """`secret` in one of several positions; returns (data, the text form tether receives)."""
    pair = {name: secret}
    shapes: list[Any] = [
        f"{prose} {secret} {prose}",
        f"{prose}\n{name}: {secret}\n",
        pair,
        {"messages": [{"role": "user", "content": json.dumps(pair)}]},
        {"choices": [{"message": {"tool_calls": [{"function": {"arguments": json.dumps(pair)}}]}}]},
        [{"type": "text", "text": f"{prose} {name}={secret}"}],
        {"result": json.dumps({"content": [{"type": "text", "text": json.dumps(pair)}]})},
    ]
    data = shapes[where % len(shapes)]
    return data, data if isinstance(data, str) else json.dumps(data)


@settings(max_examples=300, deadline=None)
@given(secret=SHAPED, name=NAMES, where=st.integers(0, 6), prose=PROSE)
def test_a_shaped_secret_never_survives_anywhere(
    secret: str, name: str, where: int, prose: str
) -> None:
    data, text = _place(secret, name, where, prose)
    assert secret not in R.text(text)
    assert secret not in json.dumps(R.value(data))


@settings(max_examples=300, deadline=None)
@given(secret=NAMED_VALUE, name=NAMES, where=st.integers(1, 6), prose=PROSE)
def test_a_secret_named_value_never_survives(
    secret: str, name: str, where: int, prose: str
) -> None:
    assume(secret not in prose and secret not in name)
    _, text = _place(secret, name, where, prose)
    out = R.text(text)
    assert secret not in out.replace(REDACTED, "")
    if text.startswith(("{", "[")):
        json.loads(out)  # still JSON


@given(st.text(string.ascii_letters + string.digits + " .,:;-'\"!?()\n", max_size=200))
def test_text_without_secret_names_or_shapes_is_untouched(text: str) -> None:
    low = text.lower()
    if any(w in low for w in ("key", "password", "secret", "token", "authorization", "bearer")):
        return
    if any(a in text for a in ("sk-", "AKIA", "ASIA", "xox", "AIza", "eyJ", "_")):
        return
    assert R.text(text) == text
