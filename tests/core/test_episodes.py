from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tether.core.episodes import bm25, tokens

_words = st.lists(st.sampled_from(["refund", "invoice", "late", "acme", "email", "ship", "q4"]),
                  min_size=1, max_size=8).map(" ".join)  # fmt: skip


def test_the_related_task_ranks_first() -> None:
    docs = ["ship the q4 report to finance", "refund invoice INV-7 for acme", "book a flight"]
    ranked = bm25("acme wants a refund on an invoice", docs, 3)
    assert [r.index for r in ranked] == [1]


def test_tokens_ignore_case_and_punctuation() -> None:
    assert tokens("Refund the INV-7, please!") == ["refund", "inv", "7"]


@given(docs=st.lists(_words, min_size=1, max_size=20), pick=st.integers(0, 19))
def test_a_document_matches_itself_at_least_as_well_as_any_other(
    docs: list[str], pick: int
) -> None:
    query = docs[pick % len(docs)]
    ranked = bm25(query, docs, len(docs))
    assert ranked, "a non-empty query always matches its own document"
    own = next(r.score for r in ranked if r.index == pick % len(docs))
    assert all(r.score > 0 for r in ranked)
    assert ranked[0].score >= own - 1e-9
    assert len({r.index for r in ranked}) == len(ranked)


@given(docs=st.lists(_words, max_size=10))
def test_nothing_matches_an_empty_query(docs: list[str]) -> None:
    assert bm25("", docs, 5) == [] and bm25("   ", docs, 5) == []
