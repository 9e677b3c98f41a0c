"""The tag vocabulary: annotations split reading the open world from sending to it, config
keys are names or globs, and a key that matches no served tool is reported, not ignored."""

from __future__ import annotations

from tether.core.tags import suggest_tag, tags_for_tools, tags_from_annotations, unknown_tags


def test_open_world_reading_is_not_egress() -> None:
    fetch = tags_from_annotations({"read_only_hint": True, "open_world_hint": True})
    assert fetch == {"read", "ingress", "untrusted"}
    send = tags_from_annotations({"destructive_hint": True, "open_world_hint": True})
    assert send == {"irreversible", "egress", "write"}
    assert tags_from_annotations(None) == set()


def test_globs_and_unmatched_keys() -> None:
    tags, unmatched = tags_for_tools(
        {"*": ["untrusted"], "send_*": ["egress"], "fetch_pgae": ["ingress"]},
        ["fetch_page", "send_email"],
    )
    assert tags == {"fetch_page": {"untrusted"}, "send_email": {"untrusted", "egress"}}
    assert unmatched == ["fetch_pgae"]


def test_unknown_tags_and_suggestions() -> None:
    assert unknown_tags(["egress", "egres", "pii"], declared=["pii"]) == ["egres"]
    assert suggest_tag("egres") == "did you mean `egress`?"
    assert "declare it under `tags:`" in suggest_tag("zzz")
