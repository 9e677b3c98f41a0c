"""Benchmark: one policy decision for a 100-rule policy must take at most 50 microseconds p99.

Run: `.venv/bin/python bench/policy.py` (prints p50/p99, writes bench/results/policy.json with
its README row, bench/record.py).
Tool names cycle through every case: a match on the first rule, on the last, on a middle
wildcard, no match at all (on_uncertain), irreversible, data-flow (egress after untrusted),
argument conditions (an IBAN in a named list, an amount over a bound), a registry list of
10,000 vendors (resolved into an in-memory set once, as the gateway's store/lists.py does) and a
provenance finding.
"""

from __future__ import annotations

import gc
import platform
import statistics
import time

from record import Row, load, write

from tether.core.policy import DecisionRequest, Policy, RunState, decide
from tether.core.policy_args import normalize_list
from tether.core.provenance import Finding

RULES = 100
PAYEE = "DE89 3704 0044 0532 0130 00"
ROUNDS = 200_000
TARGET_P99_US = 50.0


def build_policy(n: int) -> Policy:
    lines = ["agent: bench", "on_uncertain: ask", "tools:"]
    for i in range(n - 7):
        kind = i % 4
        if kind == 0:
            lines.append(f'  - {{match: "svc{i}.read_*", allow: true}}')
        elif kind == 1:
            lines.append(f'  - {{match: "svc{i}.delete_*", allow: false}}')
        elif kind == 2:
            lines.append(f'  - {{match: "svc{i}.send", approval: required, rate_limit: "10/hour"}}')
        else:
            lines.append(f'  - {{match: "svc{i}.*[0-9]", allow: true, tags: [egress]}}')
    lines += [
        '  - {match: "web.fetch", allow: true, tags: [untrusted]}',
        "  - match: pay.transfer",
        "    when: {amount: {max: 500}, iban: {in_list: payees}}",
        "  - {match: pay.transfer, when: {iban: {not_in_list: payees}}, allow: false}",
        "  - {match: pay.transfer, approval: required, tags: [egress]}",
        "  - {match: pay.invoice, when: {vendor: {in_list: vendors}}, allow: true}",
        '  - {match: "mail.*", allow: true, tags: [egress]}',
        '  - {match: "last.*", allow: true}',
        "lists:",
        "  payees: [DE89370400440532013000, GB82WEST12345698765432]",
        "  vendors: {registry: finance-vendors}",
        "data_flow:",
        "  - {argument_from: untrusted, arguments: [to, iban], require_approval_for_tag: egress}",
        "  - {after_tag: untrusted, require_approval_for_tag: egress}",
    ]
    return Policy.parse("\n".join(lines) + "\n", "bench.yaml")


# the registry list as decisions receive it (store.lists.resolve's normalised entries)
VENDORS = {"vendors": normalize_list("vendors", [f"vendor-{i}@supplier.example"
                                                 for i in range(10_000)])}  # fmt: skip


def requests() -> list[DecisionRequest]:
    untrusted = RunState(frozenset({"untrusted"}), tool_calls=3)
    clean = RunState(frozenset(), tool_calls=1)
    tags = frozenset({"read"})
    return [
        DecisionRequest("bench", "svc0.read_invoice", tags, {}, clean),
        DecisionRequest("bench", "svc49.delete_all", tags, {}, clean),
        DecisionRequest("bench", "svc90.send", frozenset(), {}, clean),
        DecisionRequest("bench", "svc91.export7", frozenset(), {}, untrusted),
        DecisionRequest("bench", "mail.send", frozenset(), {"to": "x"}, untrusted),
        DecisionRequest("bench", "last.thing", frozenset(), {}, clean),
        DecisionRequest("bench", "unknown.tool", frozenset(), {}, clean),
        DecisionRequest("bench", "crm.wipe", frozenset({"irreversible"}), {}, clean),
        # argument conditions: a payee within bounds, one over the bound (falls through)
        DecisionRequest(
            "bench", "pay.transfer", frozenset(), {"amount": 120, "iban": PAYEE}, clean
        ),
        DecisionRequest(
            "bench", "pay.transfer", frozenset(), {"amount": "900.00", "iban": PAYEE}, clean
        ),
        # a registry list: a known vendor, then one not in it (falls through to on_uncertain)
        DecisionRequest(
            "bench",
            "pay.invoice",
            frozenset(),
            {"vendor": "Vendor-4242@Supplier.example"},
            clean,
            lists=VENDORS,
        ),
        DecisionRequest(
            "bench", "pay.invoice", frozenset(), {"vendor": "x@evil.example"}, clean, lists=VENDORS
        ),
        # provenance: the recipient came only from untrusted content
        DecisionRequest(
            "bench",
            "mail.send",
            frozenset(),
            {"to": "eve@evil.example"},
            untrusted,
            untrusted=(Finding("to", "eve@evil.example", "email", "web.fetch"),),
        ),
    ]


def main() -> dict[str, object]:
    before = load()
    policy = build_policy(RULES)
    reqs = requests()
    outcomes = {f"{r.tool} {r.arguments or {}}"[:80]: decide(policy, r).outcome
                for r in reqs}  # fmt: skip
    for _ in range(2000):  # warm-up
        for r in reqs:
            decide(policy, r)
    samples = []
    clock = time.perf_counter_ns
    gc.disable()
    try:
        for i in range(ROUNDS):
            r = reqs[i % len(reqs)]
            t0 = clock()
            decide(policy, r)
            samples.append(clock() - t0)
    finally:
        gc.enable()
    samples.sort()
    p50 = samples[len(samples) // 2] / 1000
    p99 = samples[int(len(samples) * 0.99)] / 1000
    result: dict[str, object] = {
        "benchmark": "policy.decide",
        "rules": len(policy.tools),
        "decisions": ROUNDS,
        "p50_us": round(p50, 2),
        "p99_us": round(p99, 2),
        "mean_us": round(statistics.fmean(samples) / 1000, 2),
        "max_us": round(samples[-1] / 1000, 2),
        "target_p99_us": TARGET_P99_US,
        "pass": p99 <= TARGET_P99_US,
        "outcomes": outcomes,
        "python": platform.python_version(),
    }
    print(
        f"policy.decide, {len(policy.tools)} rules, {ROUNDS} decisions: "
        f"p50 {p50:.2f} us, p99 {p99:.2f} us (target p99 <= {TARGET_P99_US:.0f} us) "
        f"{'PASS' if result['pass'] else 'FAIL'}"
    )
    rows = [
        Row(f"policy `decide()`, {len(policy.tools)} rules (argument conditions, a 10,000-entry "
            "registry list, provenance findings, data flow)",
            f"p50 {p50:.1f} µs, p99 {p99:.1f} µs", f"p99 ≤ {TARGET_P99_US:.0f} µs"),
    ]  # fmt: skip
    write("policy", command="bench/policy.py", figures=result, rows=rows, load_before=before)
    return result


if __name__ == "__main__":
    main()
