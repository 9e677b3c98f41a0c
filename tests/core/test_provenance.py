"""Value provenance, pure: normalisation of emails, IBANs, URLs and numbers, atoms of outputs
and arguments, and the rule that only values seen solely in untrusted content are findings."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from tether.core.provenance import (
    Seen,
    argument_atoms,
    atoms_of,
    findings,
    normalize_email,
    normalize_iban,
    normalize_number,
    normalize_url,
    trusted_atoms,
)

_local = st.from_regex(r"[a-z][a-z0-9._+-]{0,10}", fullmatch=True)
_host = st.from_regex(r"[a-z][a-z0-9-]{0,8}\.(com|org|example|io)", fullmatch=True)


def _iban(country: str, bban: str) -> str:
    """A valid IBAN for `bban` (ISO 13616 check digits)."""
    digits = "".join(str(int(c, 36)) for c in bban + country + "00")
    return f"{country}{98 - int(digits) % 97:02d}{bban}"


@given(local=_local, host=_host, upper=st.booleans(), pad=st.sampled_from(["", " ", "\t"]))
@settings(max_examples=200, deadline=None)
def test_email_normalisation_ignores_case_and_padding(
    local: str, host: str, upper: bool, pad: str
) -> None:
    raw = f"{local}@{host}"
    shown = pad + (raw.upper() if upper else raw) + pad
    assert normalize_email(shown) == raw.lower() == normalize_email("mailto:" + raw)
    assert normalize_email(normalize_email(shown) or "") == normalize_email(shown)


@given(country=st.sampled_from(["DE", "GB", "FR", "NL"]),
       bban=st.from_regex(r"[A-Z0-9]{14,20}", fullmatch=True), lower=st.booleans())  # fmt: skip
@settings(max_examples=200, deadline=None)
def test_iban_grouping_and_case_do_not_matter_but_the_checksum_does(
    country: str, bban: str, lower: bool
) -> None:
    iban = _iban(country, bban)
    grouped = " ".join(iban[i : i + 4] for i in range(0, len(iban), 4))
    assert normalize_iban(grouped.lower() if lower else grouped) == iban
    # one changed check digit breaks the checksum
    broken = iban[:2] + f"{(int(iban[2:4]) + 1) % 100:02d}" + iban[4:]
    assert normalize_iban(broken) is None


@given(host=_host, path=st.from_regex(r"(/[a-z0-9]{1,6}){0,3}", fullmatch=True),
       query=st.sampled_from(["", "?a=1"]))  # fmt: skip
@settings(max_examples=200, deadline=None)
def test_url_normalisation(host: str, path: str, query: str) -> None:
    canonical = f"https://{host}{path}{query}"
    variants = [f"HTTPS://{host.upper()}:443{path}/{query}", f"https://{host}{path}{query}#frag"]
    if not query:
        variants.append(f"https://{host}{path}/")
    for v in variants:
        assert normalize_url(v) == normalize_url(canonical)


@given(st.decimals(min_value=0, max_value=10**9, places=2, allow_nan=False))
@settings(max_examples=200, deadline=None)
def test_number_normalisation(d: Decimal) -> None:
    assert normalize_number(f"{d:,}") == normalize_number(str(d)) == normalize_number(d)


def _known(trusted: set[str], untrusted: set[str]) -> dict[str, Seen]:
    out: dict[str, Seen] = {}
    for text in trusted | untrusted:
        for atom in atoms_of(text):
            prior = out.get(atom.digest)
            out[atom.digest] = Seen(
                (prior.trusted if prior else False) or text in trusted,
                (prior.untrusted if prior else False) or text in untrusted,
                "web.fetch",
            )
    return out


@given(
    trusted=st.sets(st.builds(lambda a, b: f"{a}@{b}", _local, _host), max_size=4),
    untrusted=st.sets(st.builds(lambda a, b: f"{a}@{b}", _local, _host), max_size=4),
    pick=st.integers(min_value=0, max_value=50),
)
@settings(max_examples=300, deadline=None)
def test_only_untrusted_only_values_are_findings(
    trusted: set[str], untrusted: set[str], pick: int
) -> None:
    known = _known(trusted, untrusted)
    pool = sorted(trusted | untrusted | {"nobody@unseen.example"})
    to = pool[pick % len(pool)]
    found = findings({"to": to.upper()}, known)
    expected = to in untrusted and to.lower() not in {t.lower() for t in trusted}
    assert bool(found) == expected
    if found:
        assert found[0].argument == "to" and found[0].value == to.lower()


def test_values_inside_long_text_and_json_outputs() -> None:
    page = (
        "Invoice 2291 from ACME. " * 12
        + "\nPay to DE89 3704 0044 0532 0130 00 by Friday, ref inv_8842, see https://acme.example/pay"
        + "\nrm -rf /srv/data --no-preserve-root\n"
    )
    atoms = {(a.kind, a.value) for a in atoms_of(page)}
    assert ("iban", "DE89370400440532013000") in atoms
    assert ("id", "inv_8842") in atoms and ("url", "https://acme.example/pay") in atoms
    assert ("text", "rm -rf /srv/data --no-preserve-root") in atoms
    crm = '{"name": "Ada Lovelace", "email": "ada@example.com", "balance": 1250.0}'
    crm_atoms = {(a.kind, a.value) for a in atoms_of(crm)}
    assert {("email", "ada@example.com"), ("text", "ada lovelace"), ("number", "1250")} <= crm_atoms


def test_argument_atoms_and_echoes() -> None:
    assert {(a.kind, a.value) for a in argument_atoms(" Bob@X.example ")} == {
        ("email", "bob@x.example"), ("domain", "x.example")}  # fmt: skip
    assert {(a.kind, a.value) for a in argument_atoms(42)} == {("number", "42")}
    echo = trusted_atoms(
        "no customer with email eve@evil.example", echo={"email": "eve@evil.example"}
    )
    assert all(a.value != "eve@evil.example" for a in echo)


def test_a_domain_alone_is_a_finding_only_for_a_bare_domain_argument() -> None:
    known = _known(set(), {"https://evil.example/x"})
    assert findings({"site": "evil.example"}, known)[0].kind == "domain"
    # an email at that domain was never seen itself: unseen, not untrusted-only
    assert findings({"to": "ceo@evil.example"}, known) == []
