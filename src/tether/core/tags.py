"""The data-flow tag vocabulary shared by the registry, the policy and the gateway, and how MCP
tool annotations map onto it. A tag outside this vocabulary must be declared (policy `tags:`),
so a typo such as `egres` is an error instead of a rule that silently never fires.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any

# What each built-in tag means; the README's tag table is written from this.
BUILTIN_TAGS: Mapping[str, str] = {
    "read": "reads data inside the organisation's systems",
    "write": "changes data inside the organisation's systems",
    "ingress": "reads the open world (web pages, third-party APIs); its output is untrusted",
    "egress": "sends data to the open world (email, chat, payments, posts)",
    "untrusted": "its output may carry third-party instructions (mail, pages, tickets)",
    "irreversible": "cannot be undone (deletes, payments, sends); held unless a rule names it",
}
TAGS = frozenset(BUILTIN_TAGS)


def unknown_tags(tags: Iterable[str], declared: Iterable[str] = ()) -> list[str]:
    """The tags that are neither built in nor declared, in the order given."""
    known = TAGS | frozenset(declared)
    return [t for t in tags if t not in known]


def suggest_tag(tag: str, declared: Iterable[str] = ()) -> str:
    """A did-you-mean fix for an unknown tag."""
    known = sorted(TAGS | frozenset(declared))
    close = difflib.get_close_matches(tag, known, n=1, cutoff=0.6)
    if close:
        return f"did you mean `{close[0]}`?"
    return f"use one of {', '.join(known)}, or declare it under `tags:`"


def tags_from_annotations(annotations: Mapping[str, Any] | None) -> set[str]:
    """MCP annotations feed the tags. destructive -> irreversible; open world splits in two:
    a read-only open-world tool (a web fetch) reads the open world (ingress, untrusted output),
    any other open-world tool sends to it (egress). So a fetch after taint is not held like mail.
    """
    if not annotations:
        return set()
    tags: set[str] = set()
    read_only = annotations.get("read_only_hint")
    if annotations.get("destructive_hint"):
        tags.add("irreversible")
    if annotations.get("open_world_hint"):
        tags |= {"ingress", "untrusted"} if read_only else {"egress"}
    if read_only:
        tags.add("read")
    elif read_only is False or annotations.get("destructive_hint") is not None:
        tags.add("write")
    return tags


def tags_for_tools(
    configured: Mapping[str, Iterable[str]], tools: Iterable[str]
) -> tuple[dict[str, set[str]], list[str]]:
    """The tags `mcp_servers[].tags` gives each served tool (keys are names or globs), and the
    keys that match no served tool: a typo there would silently drop a tag, so it is an error."""
    import fnmatch

    names = list(tools)
    out: dict[str, set[str]] = {name: set() for name in names}
    unmatched = []
    for key, tags in configured.items():
        hits = [n for n in names if fnmatch.fnmatchcase(n, key)]
        if not hits:
            unmatched.append(key)
        for n in hits:
            out[n].update(tags)
    return out, unmatched
