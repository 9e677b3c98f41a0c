"""Value provenance, pure: which values entered a run from untrusted sources and which from
trusted ones, and whether a tool call's arguments carry values seen *only* in untrusted content.

Values are compared as normalised atoms, not as raw text:
- emails: trimmed, lower-cased (`Bob@Example.COM` == `bob@example.com`); `mailto:` dropped;
- URLs: scheme and host lower-cased, default port, fragment and a trailing `/` dropped; the
  host also counts as a `domain` atom;
- IBANs: spaces and dashes removed, upper-cased, and only when the ISO 13616 checksum holds;
- numbers: thousands separators (`1,250.00`) and trailing zeros dropped (`1250`); a decimal
  comma (`1.250,00`) is not understood; numbers under 100 are ignored (too common to mean much);
- identifiers: tokens mixing letters and digits of 5+ characters (`inv_8842`, `F-2931-X`),
  and channel names and handles (`#ext-partners`, `@mallory`);
- text: a short value (<= 200 characters) whole, and every line of 8-300 characters of a longer
  text, whitespace collapsed and case-folded, so a command copied verbatim is recognised.
Limits: a value the agent rewrites (spells out, splits, translates, re-encodes) is a new value
with no provenance; a phrase inside a longer line matches only through the atoms above.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

Kind = Literal["email", "url", "domain", "iban", "number", "id", "text"]
Trust = Literal["trusted", "untrusted"]

MAX_SHORT_TEXT = 200
MIN_LINE, MAX_LINE = 8, 300
MIN_NUMBER = Decimal(100)
MAX_TEXT_SCAN = 200_000  # characters of one output scanned; the rest is not indexed

_EMAIL_RE = re.compile(r"(?:mailto:)?([A-Za-z0-9._%+'-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,})")
_URL_RE = re.compile(r"\b(?:https?|ftp)://[^\s<>\"'`)\]]+", re.IGNORECASE)
_IBAN_RE = re.compile(r"\b[A-Z]{2}\d{2}(?:[ -]?[A-Z0-9]){11,30}\b")
_NUMBER_RE = re.compile(
    r"(?<![\w.])\d{1,3}(?:,\d{3})+(?:\.\d+)?(?![\w,])|(?<![\w.])\d+(?:\.\d+)?(?![\w])"
)
_ID_RE = re.compile(
    r"\b(?=[A-Za-z0-9_-]*\d)(?=[A-Za-z0-9_-]*[A-Za-z])[A-Za-z0-9][A-Za-z0-9_-]{4,63}\b"
)
# channel names and handles (#ops, @mallory): counterparties in chat tools
_HANDLE_RE = re.compile(r"(?<![\w@#])[#@][A-Za-z][\w.-]{1,60}(?![\w@])")
_SPACE_RE = re.compile(r"\s+")
_DOMAIN_RE = re.compile(r"(?:[a-z0-9-]+\.)+[a-z]{2,}\.?")


@dataclass(frozen=True, order=True)
class Atom:
    """One normalised value: its kind and canonical text."""

    kind: Kind
    value: str

    @property
    def digest(self) -> str:
        return hashlib.sha256(f"{self.kind}:{self.value}".encode()).hexdigest()[:32]


def normalize_email(text: str) -> str | None:
    t = text.strip()
    if t.lower().startswith("mailto:"):
        t = t[7:]
    m = _EMAIL_RE.fullmatch(t)
    return m.group(1).lower() if m else None


def normalize_url(text: str) -> str | None:
    t = text.strip().rstrip(".,;:")
    if not _URL_RE.fullmatch(t):
        return None
    try:
        parts = urlsplit(t)
        port = parts.port
    except ValueError:
        return None
    host = (parts.hostname or "").lower().rstrip(".")
    if not host:
        return None
    scheme = parts.scheme.lower()
    netloc = host if port in (None, {"http": 80, "https": 443}.get(scheme)) else f"{host}:{port}"
    path = parts.path.rstrip("/")
    return urlunsplit((scheme, netloc, path, parts.query, ""))


def normalize_iban(text: str) -> str | None:
    t = re.sub(r"[\s-]", "", text).upper()
    if not re.fullmatch(r"[A-Z]{2}\d{2}[A-Z0-9]{11,30}", t):
        return None
    digits = "".join(str(int(c, 36)) for c in t[4:] + t[:4])
    return t if int(digits) % 97 == 1 else None


def normalize_number(text: str | int | float | Decimal) -> str | None:
    if isinstance(text, bool):
        return None
    raw = str(text).strip().replace(",", "") if isinstance(text, str) else str(text)
    if isinstance(text, str) and not re.fullmatch(r"-?\d+(?:\.\d+)?", raw):
        return None
    try:
        d = Decimal(raw)
    except InvalidOperation:
        return None
    if not d.is_finite():
        return None
    out = format(d.normalize(), "f")
    return out.rstrip("0").rstrip(".") if "." in out else out


def domain_of(text: str) -> str | None:
    """The domain of an email address or URL, or of a bare domain name; lower-cased."""
    email = normalize_email(text)
    if email is not None:
        return email.rpartition("@")[2]
    url = normalize_url(text)
    if url is not None:
        return (urlsplit(url).hostname or "").lower() or None
    t = text.strip().lower().rstrip(".")
    return t if re.fullmatch(r"(?:[a-z0-9-]+\.)+[a-z]{2,}", t) else None


def normalize_for_list(value: Any) -> str:
    """How a value is compared with the entries of a named list (contacts, payees, domains)."""
    if isinstance(value, str):
        return _normalize_text_for_list(value) if len(value) <= 512 else _text(value)
    number = normalize_number(value) if isinstance(value, int | float | Decimal) else None
    return number if number is not None else str(value)


@lru_cache(maxsize=4096)  # pure; decide() meets the same recipients and payees again and again
def _normalize_text_for_list(value: str) -> str:
    for norm in (normalize_email, normalize_iban, normalize_url):
        found = norm(value)
        if found is not None:
            return found
    return _text(value)


def _text(value: str) -> str:
    return _SPACE_RE.sub(" ", value.strip()).casefold()


def _scan(text: str) -> Iterator[Atom]:
    """The atoms embedded anywhere in a text."""
    text = text[:MAX_TEXT_SCAN]
    for m in _EMAIL_RE.finditer(text):
        yield Atom("email", m.group(1).lower())
    for m in _URL_RE.finditer(text):
        url = normalize_url(m.group(0))
        if url is not None:
            yield Atom("url", url)
            yield Atom("domain", (urlsplit(url).hostname or ""))
    for m in _IBAN_RE.finditer(text):
        iban = normalize_iban(m.group(0))
        if iban is not None:
            yield Atom("iban", iban)
    for m in _NUMBER_RE.finditer(text):
        number = normalize_number(m.group(0))
        if number is not None and abs(Decimal(number)) >= MIN_NUMBER:
            yield Atom("number", number)
    for m in _ID_RE.finditer(text):
        token = m.group(0)
        if not token.isdigit():
            yield Atom("id", token.casefold())
    for m in _HANDLE_RE.finditer(text):
        yield Atom("id", m.group(0).rstrip(".").casefold())


def _whole(value: str) -> Iterator[Atom]:
    """A short value as a whole, typed when it is an email, URL, IBAN or number."""
    for kind, norm in (("email", normalize_email), ("iban", normalize_iban),
                       ("url", normalize_url)):  # fmt: skip
        found = norm(value)
        if found is not None:
            yield Atom(kind, found)  # type: ignore[arg-type]
            if kind == "email":
                yield Atom("domain", found.rpartition("@")[2])
            return
    number = normalize_number(value)
    if number is not None:
        yield Atom("number", number)
        return
    text = _text(value)
    if _DOMAIN_RE.fullmatch(text):
        yield Atom("domain", text.rstrip("."))
        return
    if text:
        yield Atom("text", text)


def atoms_of(value: Any) -> set[Atom]:
    """Every atom of a value as it enters a run (a tool output, a task input, a list entry):
    typed atoms anywhere in its text, the whole of a short value and each mid-length line."""
    out: set[Atom] = set()
    for text in _strings(value):
        out.update(_scan(text))
        if len(text) <= MAX_SHORT_TEXT:
            out.update(_whole(text))
        else:
            for line in text[:MAX_TEXT_SCAN].splitlines():
                if MIN_LINE <= len(line.strip()) <= MAX_LINE:
                    out.add(Atom("text", _text(line)))
    for number in _numbers(value):
        out.add(Atom("number", number))
    return out


def argument_atoms(value: Any) -> set[Atom]:
    """The atoms an argument value carries: the whole of a short string (typed) and the typed
    atoms inside a long one; numbers as numbers."""
    out: set[Atom] = set()
    for text in _strings(value):
        if len(text) <= MAX_SHORT_TEXT:
            out.update(_whole(text))
        out.update(a for a in _scan(text) if a.kind != "number" or len(text) > MAX_SHORT_TEXT)
    for number in _numbers(value):
        out.add(Atom("number", number))
    return out


def _json(value: str) -> Any:
    """A JSON object or array carried as text (MCP tools often return JSON in a text block)."""
    t = value.strip()
    if len(t) < 2 or t[0] not in "{[" or len(t) > MAX_TEXT_SCAN:
        return None
    try:
        parsed = json.loads(t)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict | list) else None


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        parsed = _json(value)
        if parsed is not None:
            yield from _strings(parsed)
            return
        yield value
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _strings(v)


def _numbers(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        parsed = _json(value)
        if parsed is not None:
            yield from _numbers(parsed)
    elif isinstance(value, int | float | Decimal) and not isinstance(value, bool):
        n = normalize_number(value)
        if n is not None:
            yield n
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from _numbers(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _numbers(v)


@dataclass(frozen=True)
class Seen:
    """What a run knows about one atom: whether trusted and untrusted sources carried it."""

    trusted: bool
    untrusted: bool
    source: str | None = None  # the first untrusted source, e.g. "mail.read_inbox"


@dataclass(frozen=True)
class Finding:
    """An argument carrying a value seen only in untrusted content."""

    argument: str
    value: str
    kind: Kind
    source: str | None

    def describe(self) -> str:
        where = f" (from {self.source})" if self.source else ""
        return (
            f'argument `{self.argument}` = "{self.value}" appeared only in untrusted content{where}'
        )

    def to_dict(self) -> dict[str, Any]:
        return {"argument": self.argument, "value": self.value, "kind": self.kind,
                "source": self.source}  # fmt: skip


# Kinds that identify a counterparty or an object; a short free text is one too.
IDENTIFYING: frozenset[str] = frozenset({"email", "url", "iban", "id", "text", "number", "domain"})


def findings(
    arguments: Mapping[str, Any] | None,
    known: Mapping[str, Seen],
    *,
    only: Iterable[str] | None = None,
) -> list[Finding]:
    """The arguments (all, or those in `only`) carrying atoms that untrusted sources brought
    and no trusted source did. `known` maps Atom.digest to what the run has seen of it.
    A domain atom counts only when the argument is a bare domain (an email's domain being
    untrusted-only is implied by the email)."""
    if not arguments:
        return []
    names = set(only) if only is not None else None
    out: list[Finding] = []
    for name in sorted(arguments):
        if names is not None and name not in names:
            continue
        atoms = argument_atoms(arguments[name])
        bare_domain = {a.kind for a in atoms} == {"domain"}
        for atom in sorted(atoms):
            if atom.kind == "domain" and not bare_domain:
                continue
            seen = known.get(atom.digest)
            if seen is not None and seen.untrusted and not seen.trusted:
                out.append(Finding(name, atom.value, atom.kind, seen.source))
                break
    return out


def trusted_atoms(value: Any, echo: Any = None) -> set[Atom]:
    """The atoms a trusted source adds, minus those it only echoed from the call's own
    arguments (a lookup that answers "no customer attacker@x" must not launder the address)."""
    atoms = atoms_of(value)
    if echo:
        atoms -= atoms_of(echo) | argument_atoms(echo)
    return atoms
