"""Reads Prometheus exposition text back into samples, for assertions that ignore label order."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """{(sample name, labels): value} for every sample in `text`."""
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(text: str, name: str, /, **labels: str) -> float | None:
    return samples(text).get((name, frozenset(labels.items())))


def total(text: str, name: str, /, **match: str) -> float:
    """The sum of `name` over the samples whose labels include `match`."""
    want = set(match.items())
    return sum(v for (n, ls), v in samples(text).items() if n == name and want <= ls)
