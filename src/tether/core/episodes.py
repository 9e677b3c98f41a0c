"""Episodic recall: which past runs' tasks are most like a new one (Okapi BM25 over their task
inputs), so an agent can be shown how it handled similar work before. Pure: no I/O."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

_WORD = re.compile(r"[^\W_]+", re.UNICODE)
K1 = 1.2
B = 0.75


# Words too common in task text to tell two tasks apart (BM25's idf only discounts them when
# the history is large).
_STOP = frozenset(
    {
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "for",
        "from",
        "has",
        "have",
        "i",
        "in",
        "is",
        "it",
        "of",
        "on",
        "or",
        "please",
        "the",
        "this",
        "to",
        "was",
        "we",
        "with",
        "you",
        "your",
    }
)


def tokens(text: str) -> list[str]:
    return [w for w in (m.lower() for m in _WORD.findall(text or "")) if w not in _STOP]


@dataclass(frozen=True)
class Ranked:
    index: int
    score: float


def bm25(query: str, documents: Sequence[str], k: int) -> list[Ranked]:
    """The `k` documents that best match `query` (score > 0), best first; ties keep input order
    (callers pass newest first, so a tie goes to the more recent run)."""
    q = set(tokens(query))
    if not q or not documents:
        return []
    docs = [Counter(tokens(d)) for d in documents]
    n = len(docs)
    avg = sum(sum(d.values()) for d in docs) / n or 1.0
    df = {t: sum(1 for d in docs if t in d) for t in q}
    idf = {t: math.log(1 + (n - df[t] + 0.5) / (df[t] + 0.5)) for t in q}
    scored: list[Ranked] = []
    for i, d in enumerate(docs):
        length = sum(d.values())
        s = 0.0
        for t in q:
            f = d.get(t, 0)
            if f:
                s += idf[t] * f * (K1 + 1) / (f + K1 * (1 - B + B * length / avg))
        if s > 0:
            scored.append(Ranked(i, s))
    scored.sort(key=lambda r: (-r.score, r.index))
    return scored[:k]
